"""The endpoint API: MSRP sessions for applications (chat, file transfer).

An Endpoint owns one transport and transaction layer (and optionally a
listener). A Session is one MSRP session: a local URI with an unguessable
session-id, optionally reached through relays it authenticated to, and the
peer's path. Messages are sent with chunking and reports; received messages
are reassembled (spooled to disk when large) and delivered whole.

Path shapes (RFC 4976 section 6): with relays R1 (authenticated first,
directly) and R2 (authenticated through R1), we send toward R1, R2, then the
peer's advertised path; our advertised path, the one peers send along, is
R2, R1, our own URI: the relay nearest the peer first.
"""

from twisted.internet import defer
from twisted.logger import Logger

from .connections import ConnectionManager, parse_listener
from .core import digest
from .core.errors import HeaderError
from .core.ids import new_message_id, new_session_id
from .core.uri import MSRPURI, parse_path, parse_uri
from .protocol import TransportSettings
from .transactions import TransactionManager

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
    (use_path, granted_expires). Follows 401 challenges and 423 bounds once."""
    to_path = list(via) + [relay_uri]
    headers = []
    if expires is not None:
        headers.append(("Expires", str(expires)))
    response = yield tm.send_request(to_path, [local_uri], "AUTH", headers, tls=tls)
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
            response = yield tm.send_request(to_path, [local_uri], "AUTH", auth_headers, tls=tls)
            if response.code == 401 and response.www_authenticate and \
                    response.www_authenticate.get("stale", "").lower() != "true":
                raise AuthError("relay %s refused the credentials of %s (401)" % (relay_uri, username), 401)
            continue
        if response.code == 423:
            bound = response.min_expires or response.max_expires
            if bound is None:
                raise AuthError("relay %s refused Expires %s (423) without a bound" % (relay_uri, expires), 423)
            headers = [("Expires", str(bound))]
            response = yield tm.send_request(to_path, [local_uri], "AUTH", headers, tls=tls)
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
        self.connections = ConnectionManager(settings=settings or TransportSettings(),
                                             reactor=reactor, tls=tls, observers=observers)
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

    def local_uri(self, session_id=None):
        host = "[%s]" % self.host if ":" in self.host else self.host
        port = self.port if self.port is not None else 2855
        return parse_uri("%s://%s:%d/%s;tcp" % (self.scheme, host, port, session_id or new_session_id()))

    @defer.inlineCallbacks
    def create_session(self, session_id=None, relays=(), expires=None, **options):
        """A new session; relays is a list of (relay_uri, username, password)
        authenticated in order, each through the ones before it."""
        local = self.local_uri(session_id)
        use_paths = []
        for relay_uri, username, password in relays:
            if isinstance(relay_uri, str):
                relay_uri = parse_uri(relay_uri, require_transport=False)
            use_path, _ = yield authenticate(self.transactions, relay_uri, local, username, password,
                                             via=use_paths, expires=expires, tls=self.tls)
            use_paths.extend(use_path[len(use_paths):] if use_path[:len(use_paths)] == use_paths else use_path)
        from .session import Session

        session = Session(self, local, use_paths, **options)
        self.sessions[local.session_id] = session
        return session

    def _session_closed(self, session):
        self.sessions.pop(session.local_uri.session_id, None)

    def close(self):
        for session in list(self.sessions.values()):
            session.close()
        d = self.connections.stop_listening()
        self.connections.close_all()
        return d


def as_path(value):
    """A peer path from text ('msrp://... msrp://...') or URIs."""
    if isinstance(value, str):
        return list(parse_path(value))
    if isinstance(value, MSRPURI):
        return [value]
    return list(value)


__all__ = ["Endpoint", "EndpointError", "AuthError", "authenticate", "as_path", "new_message_id"]
