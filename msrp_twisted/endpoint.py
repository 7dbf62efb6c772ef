"""The endpoint API: MSRP sessions for applications (chat, file transfer).

An Endpoint owns one transport and transaction layer (and optionally a
listener). A Session is one MSRP session: a local URI with an unguessable
session-id, optionally reached through relays it authenticated to, and the
peer's path. Messages are sent with chunking and reports; received messages
are reassembled (spooled to disk when large) and delivered whole.

Path shapes (RFC 4975 section 6, RFC 4976 section 6)
-----------------------------------------------------
* Our URI: ``msrp://HOST:PORT/SESSION-ID;tcp`` (``msrps`` over TLS). HOST and
  PORT are our listener's; an endpoint that does not listen is only ever
  reached on connections it opened, so its URI names 127.0.0.1:2855 and the
  scheme of the relay or peer it talks to.
* Relays are authenticated to in order, each one through the ones before
  it: ``create_session(relays=[(R1, user, pw), (R2, user, pw)])`` yields our
  Use-Paths ``[U1, U2]`` (nearest first).
* Our advertised path (``session.path_text``, what SDP's a=path carries) is
  the Use-Paths from the far end inward, then our URI: ``U2 U1 OURS``; with
  no relay it is just ``OURS``.
* We send toward our Use-Paths, nearest first, then the peer's advertised
  path: To-Path ``U1 U2 P2 P1 PEER``. The passive side may skip connect()
  and answer along the From-Path of what it received, which already has
  that shape.

Building a chat application
---------------------------
::

    ep = Endpoint()
    yield ep.listen("msrp:127.0.0.1:0")      # or relays=[...] below
    session = yield ep.create_session(on_message=show)
    signal_to_peer(session.path_text)         # e.g. a=path in SDP
    yield session.connect(peer_path_text)     # active: empty SEND first
    out = session.send_message("hello")       # bytes, text or a file path
    yield out.result                          # 200s / success REPORT
    ...
    yield ep.close()

``show(message)`` gets each complete ReceivedMessage (``data`` in memory or
``path`` of the spooled file, ``sha256``, ``content_type``, ``headers``).
Without on_message, ``yield session.next_message()`` or ``async for``.
"""

from twisted.internet import defer
from twisted.logger import Logger

from .connections import ConnectionManager, SendError, parse_listener
from .core import digest
from .core.errors import HeaderError
from .core.ids import new_message_id, new_session_id
from .core.uri import MSRPURI, parse_path, parse_uri
from .protocol import TransportSettings
from .transactions import TransactionError, TransactionManager

log = Logger()


class EndpointError(Exception):
    """An endpoint operation failed; ``code`` is the MSRP status when there is one."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


class AuthError(EndpointError):
    """A relay refused to authenticate us."""


@defer.inlineCallbacks
def authenticate(tm, relay_uri, local_uri, username, password, via=(), expires=None, tls=None):
    """AUTH to relay_uri (through the Use-Paths in via) and return
    (use_path, granted_expires). Follows 401 challenges and 423 bounds once.

    Fails with AuthError when the relay refuses, with the transport's
    SendError / TransactionError when no answer comes.
    """
    to_path = list(via) + [relay_uri]
    headers = []
    if expires is not None:
        headers.append(("Expires", str(expires)))

    def request(extra):
        return tm.send_request(to_path, [local_uri], "AUTH", extra, tls=tls)

    response = yield request(headers)
    for _ in range(4):
        if response.code == 200:
            break
        if response.code == 401:
            challenge = response.www_authenticate
            if not challenge:
                raise AuthError("relay %s answered 401 without a challenge" % relay_uri, 401)
            # Every challenge carries a fresh nonce, so the count restarts at 1.
            cred = digest.make_authorization(challenge, username, password, "AUTH", str(relay_uri), nc=1)
            auth_headers = [("Authorization", digest.format_credentials(cred))] + headers
            response = yield request(auth_headers)
            if response.code == 401 and response.www_authenticate and \
                    response.www_authenticate.get("stale", "").lower() != "true":
                raise AuthError("relay %s refused the credentials of %s (401)" % (relay_uri, username), 401)
            continue
        if response.code == 423:
            bound = response.min_expires or response.max_expires
            if bound is None:
                raise AuthError("relay %s refused Expires %s (423) without a bound" % (relay_uri, expires), 423)
            headers = [("Expires", str(bound))]
            response = yield request(headers)
            continue
        raise AuthError("relay %s refused AUTH of %s: %d %s"
                        % (relay_uri, username, response.code, response.comment or ""), response.code)
    if response.code != 200:
        raise AuthError("relay %s: AUTH of %s failed: %d %s"
                        % (relay_uri, username, response.code, response.comment or ""), response.code)
    try:
        use_path = response.use_path
    except ValueError as e:
        raise AuthError("relay %s sent a bad Use-Path: %s" % (relay_uri, e)) from None
    if not use_path:
        raise AuthError("relay %s answered 200 without Use-Path" % relay_uri)
    try:
        granted = response.expires
    except HeaderError:
        granted = None
    return list(use_path), granted


class Endpoint:
    """A local MSRP endpoint: transport + transactions + sessions."""

    def __init__(self, reactor=None, tls=None, settings=None, host="127.0.0.1",
                 transaction_timeout=30.0, observers=()):
        self._closing = {}
        self.connections = ConnectionManager(settings=settings or TransportSettings(),
                                             reactor=reactor, tls=tls,
                                             observers=list(observers) + [self])
        self.reactor = self.connections.reactor
        self.transactions = TransactionManager(self.connections, self.reactor, transaction_timeout)
        self.tls = tls
        self.host = host
        self.scheme = "msrp"
        self.port = None
        self.sessions = {}

    @defer.inlineCallbacks
    def listen(self, spec="msrp:127.0.0.1:0"):
        """Listen for peers connecting to us (the passive role)."""
        spec = parse_listener(spec) if isinstance(spec, str) else spec
        port = yield self.connections.listen(spec)
        self.scheme = spec.scheme
        self.host = spec.host
        self.port = port.getHost().port
        return port

    @property
    def listening(self):
        return self.port is not None

    def local_uri(self, session_id=None, scheme=None):
        """Our URI for a session; scheme defaults to the listener's."""
        host = "[%s]" % self.host if ":" in self.host else self.host
        port = self.port if self.port is not None else 2855
        return parse_uri("%s://%s:%d/%s;tcp" % (scheme or self.scheme, host, port,
                                                 session_id or new_session_id()))

    @defer.inlineCallbacks
    def create_session(self, session_id=None, relays=(), expires=None, **options):
        """A new session; relays is a list of (relay_uri, username, password)
        authenticated in order, each through the ones before it. Fails with
        AuthError when one refuses, EndpointError when one cannot be reached."""
        relays = [(parse_uri(r, require_transport=False) if isinstance(r, str) else r, u, p)
                  for r, u, p in relays]
        # Reached only through the first relay: a URI of its scheme keeps
        # msrps traffic from ever being addressed to a plain msrp URI.
        scheme = relays[0][0].scheme if relays and not self.listening else None
        local = self.local_uri(session_id, scheme)
        use_paths, granted = yield self._authenticate_relays(local, relays, expires)
        from .session import Session

        session = Session(self, local, use_paths, **options)
        session.relays = relays
        session.expires = expires
        session._watch_first_hop()
        session._schedule_auth_refresh(granted)
        self.sessions[local.session_id] = session
        return session

    def authenticate_relays(self, local, relays, expires=None):
        """AUTH to each relay in order, each through the ones before it;
        returns the Use-Paths, nearest relay first."""
        return self._authenticate_relays(local, relays, expires).addCallback(lambda r: r[0])

    @defer.inlineCallbacks
    def _authenticate_relays(self, local, relays, expires=None):
        """(Use-Paths, the shortest Expires granted or None)."""
        use_paths = []
        shortest = None
        for relay_uri, username, password in relays:
            try:
                use_path, granted = yield authenticate(self.transactions, relay_uri, local, username, password,
                                                       via=use_paths, expires=expires, tls=self.tls)
            except (SendError, TransactionError) as e:
                # Say which relay, not just which socket.
                raise EndpointError("cannot reach relay %s: %s" % (relay_uri, e),
                                    getattr(e, "code", None)) from None
            use_paths.extend(use_path[len(use_paths):] if use_path[:len(use_paths)] == use_paths else use_path)
            if granted is not None and (shortest is None or granted < shortest):
                shortest = granted
        return use_paths, shortest

    def _session_closed(self, session):
        self.sessions.pop(session.local_uri.session_id, None)

    def close(self):
        """Close every session and connection; fires once they are all gone."""
        for session in list(self.sessions.values()):
            session.close()
        waits = [self.connections.stop_listening()]
        for conn in list(self.connections.connections.values()):
            if not conn.closed:
                waits.append(self._closing.setdefault(conn.conn_id, defer.Deferred()))
        self.connections.close_all()
        return defer.gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)

    def connection_event(self, conn, event, success, message):
        if event == "CLOSED":
            d = self._closing.pop(conn.conn_id, None)
            if d is not None:
                d.callback(None)
            for session in list(self.sessions.values()):
                session.connection_closed(conn)


def as_path(value):
    """A peer path from text ('msrp://... msrp://...') or URIs."""
    if isinstance(value, str):
        return list(parse_path(value))
    if isinstance(value, MSRPURI):
        return [value]
    return list(value)


__all__ = ["Endpoint", "EndpointError", "AuthError", "authenticate", "as_path", "new_message_id"]
