"""An RFC 4976 MSRP relay on top of the transaction layer.

Rules that make it not an open relay (Kamailio's module is one):
- only AUTH is accepted without a session; a session is created only after
  Digest authentication and its id is unguessable;
- a frame whose top To-Path URI names a session is forwarded *outward*
  (to the next To-Path hop) only when it arrives on the session's own
  connection with the session's client URI first in From-Path;
- any other frame for the session goes *to the client*, and only when the
  next To-Path hop is exactly that client's URI (more hops may follow when
  the client is itself a relay session of a chain).

Hop-by-hop transactions (RFC 4976 section 6.2): the relay answers 200
upstream itself as Failure-Report asks (yes: 200, partial: errors only, no:
nothing) and consumes downstream 200s; downstream errors and timeouts become
REPORTs toward the originator when the upstream response was already sent.
REPORTs travel without transactions and are never answered. Under
Failure-Report: partial silence is success, so a downstream timeout is not
reported.
"""

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from ..connections import SendError
from ..core.errors import HeaderError
from ..protocol import IBodySink
from ..transactions import DISCARD, IRequestHandler, TransactionError, TransactionTimeout
from .auth import ExpiresOutOfBounds, Outcome
from .sessions import SessionTable

log = Logger()


class _Refusal(Exception):
    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code
        self.reason = reason


@implementer(IRequestHandler)
class Relay:
    """The RFC 4976 relay: AUTH, then frames between sessions' clients and
    next hops, in the direction the session allows and nowhere else."""

    def __init__(self, tm, relay_uris, authenticator, expires_policy, reactor=None, tls=None,
                 throttle=None, max_sessions_per_user=0, siblings=None):
        self.tm = tm
        # relay.siblings.Siblings when this is one of several worker processes
        # behind the same address: sessions the others own are reached
        # through it (docs/scaling.md). None: this process is the relay.
        self.siblings = siblings
        # Each AUTH makes a session that lives until Expires: without a cap
        # one set of credentials could fill the table (and the memory).
        self.max_sessions_per_user = max_sessions_per_user
        self.reactor = reactor if reactor is not None else tm.reactor
        self.auth = authenticator
        self.throttle = throttle  # limits.AuthThrottle, or None
        self.expires = expires_policy
        self.tls = tls
        self.sessions = SessionTable(self.reactor, None if siblings is None else siblings.index)
        self.uris = []
        self._own = set()
        for uri in relay_uris:
            self.add_uri(uri)
        self.stats = dict.fromkeys(
            ("auth_ok", "auth_refreshed", "auth_challenged", "auth_refused", "frames_relayed",
             "frames_refused", "reports_generated", "downstream_errors"), 0)
        tm.add_handler(self, match=self.is_own)

    def add_uri(self, uri):
        from ..core.uri import parse_uri

        if isinstance(uri, str):
            uri = parse_uri(uri, require_transport=False)
        self.uris.append(uri)
        self._own.add((uri.host_key, uri.effective_port))

    def is_own(self, uri):
        return (uri.host_key, uri.effective_port) in self._own

    # -- IRequestHandler -------------------------------------------------
    def head_received(self, conn, request):
        if request.method == "AUTH":
            # Never buffer a body for an unauthenticated peer.
            self._refuse(conn, request, _Refusal(400, "AUTH must not carry a body"))
            return DISCARD
        try:
            dest, hops = self._route(conn, request)
        except _Refusal as r:
            self._refuse(conn, request, r)
            return DISCARD
        chunk = _RelayedChunk(self, conn, request, DISCARD)
        chunk.sink, _ = self.tm.forward_stream(
            conn, request, conn=dest, tls=self.tls, hops=hops,
            callbacks=(chunk.downstream_response, chunk.downstream_failure))
        return chunk

    def request_received(self, conn, request):
        if request.method == "AUTH":
            self._auth(conn, request)
            return
        try:
            dest, hops = self._route(conn, request)
        except _Refusal as r:
            self._refuse(conn, request, r)
            return
        result = self.tm.forward_request(request, conn=dest, tls=self.tls, hops=hops)
        chunk = _RelayedChunk(self, conn, request, None)
        result.addCallbacks(chunk.downstream_response, chunk.downstream_failure)
        chunk.body_end(request.flag)

    def connection_lost(self, conn, reason):
        self.sessions.connection_lost(conn)

    # -- routing ---------------------------------------------------------
    def _route(self, conn, request):
        """Return (destination connection or None to connect, hops)."""
        to_path = request.to_path
        top = to_path[0]
        session = self.sessions.get(top.session_id) if top.session_id else None
        if self.siblings is not None:
            if session is None:
                return self._to_owner(conn, request, top.session_id, 0)
            self.siblings.arrived(conn, request)
        if session is None:
            raise _Refusal(481, "no relay session %r" % (top.session_id,))
        if len(to_path) < 2:
            raise _Refusal(400, "To-Path has no hop after the relay")
        if conn is session.conn and request.from_path[0] == session.client_uri:
            session.frames_out += 1
            nxt = to_path[1]
            if self.is_own(nxt):
                # Both ends use this relay: hand the frame over in-process
                # instead of connecting to ourselves.
                other = self.sessions.get(nxt.session_id) if nxt.session_id else None
                if other is None:
                    if self.siblings is not None:
                        # Another worker's session: an ordinary relay hop
                        # to it, which applies the session rules there.
                        return self._to_owner(conn, request, nxt.session_id, 1)
                    raise _Refusal(481, "no relay session %r" % (nxt.session_id,))
                if len(to_path) < 3 or to_path[2] != other.client_uri:
                    raise _Refusal(403, "session %s is not for %s" % (
                        nxt.session_id, to_path[2] if len(to_path) > 2 else "a path ending there"))
                other.frames_in += 1
                return other.conn, 2
            return None, 1
        # Toward the client. This may arrive on the client's own connection
        # too: a client that is itself a relay (a chain) sends both ways on
        # one connection.
        if to_path[1] != session.client_uri:
            if conn is session.conn:
                raise _Refusal(403, "From-Path does not match the session's client")
            raise _Refusal(403, "session %s may only be used toward its client" % top.session_id)
        session.frames_in += 1
        return session.conn, 1

    def _refuse(self, conn, request, refusal):
        self.stats["frames_refused"] += 1
        log.info("relay refused {method} {tid} from {peer}: {code} {reason}",
                 method=request.method, tid=request.tid, peer=conn.peer,
                 code=refusal.code, reason=refusal.reason)
        self.tm.send_reply(conn, request, refusal.code)

    # -- AUTH (RFC 4976 section 5) -----------------------------------------
    def _auth(self, conn, request):
        to_path = request.to_path
        if len(to_path) > 1:
            self._forward_auth(conn, request)
            return
        top = to_path[0]
        if top.session_id:
            self._refuse(conn, request, _Refusal(400, "AUTH must be addressed to the relay URI without a session"))
            return
        throttle = self.throttle
        if throttle is not None:
            wait = throttle.blocked(conn.remote_host)
            if wait:
                self.stats["auth_refused"] += 1
                log.info("AUTH from {peer} refused: address blocked for {wait:.0f}s after repeated failures",
                         peer=conn.peer, wait=wait)
                self.tm.send_reply(conn, request, 403, "Too many failed AUTH attempts")
                return
        result = self.auth.verify(request.headers.get("Authorization"), "AUTH",
                                  request.headers["To-Path"].split()[0])
        if not result.ok:
            if result.code == 401 and result.outcome is not Outcome.REPLAY:
                self.stats["auth_challenged"] += 1
            else:
                self.stats["auth_refused"] += 1
                if throttle is not None and throttle.failed(conn.remote_host):
                    log.warn("AUTH: blocking {address} for {block:.0f}s after {n} failures",
                             address=conn.remote_host, block=throttle.block, n=throttle.max_failures)
            log.info("AUTH from {peer} ({user}): {code} {reason}", peer=conn.peer,
                     user=getattr(result, "username", None) or "-", code=result.code, reason=result.reason)
            headers = []
            if result.www_authenticate:
                headers.append(("WWW-Authenticate", result.www_authenticate))
            self.tm.send_reply(conn, request, result.code, None, headers)
            return
        try:
            lifetime = self.expires.grant(request.expires)
        except HeaderError as e:
            self._refuse(conn, request, _Refusal(400, str(e)))
            return
        except ExpiresOutOfBounds as e:
            self.stats["auth_refused"] += 1
            log.info("AUTH from {peer}: 423 {reason}", peer=conn.peer, reason=str(e))
            self.tm.send_reply(conn, request, 423, None, e.headers)
            return
        if throttle is not None:
            throttle.succeeded(conn.remote_host)
        session = self.sessions.find(conn, result.username, request.from_path[0], top)
        if session is not None:
            self.sessions.refresh(session, lifetime)
            self.stats["auth_refreshed"] += 1
            log.info("AUTH ok: {user} from {peer} refreshed session {sid} for {expires}s",
                     user=result.username, peer=conn.peer, sid=session.session_id, expires=lifetime)
            self._auth_ok(conn, request, session, lifetime, result)
            return
        cap = self.max_sessions_per_user
        if cap and self.sessions.count_for(result.username) >= cap:
            self.stats["auth_refused"] += 1
            log.warn("AUTH from {peer}: {user} already holds {n} sessions (max_sessions_per_user); refused",
                     peer=conn.peer, user=result.username, n=cap)
            self.tm.send_reply(conn, request, 403, "Too many sessions for this user")
            return
        session = self.sessions.create(result.username, conn, request.from_path[0], top, lifetime)
        log.info("AUTH ok: {user} from {peer}, session {sid} for {expires}s",
                 user=result.username, peer=conn.peer, sid=session.session_id, expires=lifetime)
        self._auth_ok(conn, request, session, lifetime, result)

    def _auth_ok(self, conn, request, session, lifetime, result):
        self.stats["auth_ok"] += 1
        headers = [("Use-Path", str(session.use_path)), ("Expires", str(lifetime))]
        if result.authentication_info:
            headers.append(("Authentication-Info", result.authentication_info))
        self.tm.send_reply(conn, request, 200, None, headers)

    def _forward_auth(self, conn, request):
        """AUTH for a further relay travels through the client's session."""
        try:
            dest, hops = self._route(conn, request)
        except _Refusal as r:
            self._refuse(conn, request, r)
            return
        d = self.tm.forward_request(request, conn=dest, tls=self.tls, hops=hops)

        def answered(response):
            self.tm.forward_reply(conn, request, response)

        def failed(f):
            code = f.value.code if f.check(TransactionError) else 408
            log.info("forwarded AUTH {tid} failed: {err}", tid=request.tid, err=f.getErrorMessage())
            self.tm.send_reply(conn, request, code)

        d.addCallbacks(answered, failed)

    # -- management --------------------------------------------------------
    def list_sessions(self):
        now = self.reactor.seconds()
        return [s.describe(now) for s in self.sessions]

    def end_session(self, session_id):
        session = self.sessions.get(session_id)
        if session is None:
            return False
        return self.sessions.end(session_id, "ended by operator")

    # -- worker processes (siblings.py) -------------------------------------
    def _to_owner(self, conn, request, session_id, hops):
        """(link to the sibling worker owning session_id, hops), or a refusal.

        hops=1 when the frame's next hop is the owner's session (it moves
        this relay's URI onto From-Path, as a hop between two relays does);
        hops=0 when the top URI already names it: the frame is passed on
        unchanged except for the mark Siblings.arrived takes off again.
        """
        siblings = self.siblings
        owner = siblings.owner_of(session_id)
        if owner is None or owner == siblings.index:
            raise _Refusal(481, "no relay session %r" % (session_id,))
        link = siblings.link(owner)
        if link is None:
            siblings.stats["sibling_unreachable"] += 1
            raise _Refusal(408, "worker %d (owner of session %s) is not reachable" % (owner, session_id))
        siblings.stats["sibling_frames_out"] += 1
        if not hops:
            siblings.passed(conn, request)
        return link, hops


@implementer(IBodySink)
class _RelayedChunk:
    """The upstream side of one relayed request.

    Answers the sender when the request has been received (or at once on an
    early downstream failure) and turns later downstream failures into
    REPORTs.
    """

    __slots__ = ("relay", "source", "request", "sink", "responded", "failure", "done",
                 "length", "flag")

    def __init__(self, relay, source, request, sink):
        self.relay = relay
        self.source = source
        self.request = request
        self.sink = sink
        self.responded = False
        self.failure = None
        self.done = False
        self.length = 0
        self.flag = request.flag

    # IBodySink: pass through, then answer upstream.
    def body_data(self, data):
        self.length += len(data)
        self.sink.body_data(data)

    def body_end(self, flag):
        if self.sink is not None:
            self.sink.body_end(flag)
        self.done = True
        self.flag = flag
        if self.responded:
            return
        self.responded = True
        self.relay.stats["frames_relayed"] += 1
        if self.failure is not None:
            self.relay.tm.send_reply(self.source, self.request, self.failure[0], self.failure[1])
        else:
            self.relay.tm.send_reply(self.source, self.request, 200)

    def body_aborted(self, reason):
        if self.sink is not None:
            self.sink.body_aborted(reason)
        self.done = True
        self.responded = True

    # downstream outcome
    def downstream_response(self, response):
        if response is None or response.code // 100 == 2:
            return
        self._failed(response.code, response.comment)

    def downstream_failure(self, f):
        if f.check(TransactionTimeout) and self._failure_report() == "partial":
            # A partial receiver never sends 200: silence means delivered.
            return None
        if f.check(TransactionError):
            code, comment = f.value.code, f.value.reason
        elif f.check(SendError):
            code, comment = 408, f.getErrorMessage()
        elif f.check(defer.CancelledError):
            return None
        else:
            code, comment = 408, f.getErrorMessage()
            log.failure("unexpected downstream failure", f)
        self._failed(code, comment)
        return None

    def _failed(self, code, comment):
        relay = self.relay
        relay.stats["downstream_errors"] += 1
        request = self.request
        log.info("downstream {code} for {method} {tid} from {peer}: {comment}",
                 code=code, method=request.method, tid=request.tid, peer=self.source.peer, comment=comment)
        if request.method == "REPORT":
            return
        if not self.responded:
            if self.done or self.sink is None:
                self.responded = True
                relay.tm.send_reply(self.source, request, code)
            else:
                # Body still arriving: answer now (RFC 4975 allows an early
                # error response); the rest of the body is dropped.
                self.failure = (code, None)
                self.responded = True
                relay.tm.send_reply(self.source, request, code)
            return
        if self._failure_report() == "no":
            return
        relay.stats["reports_generated"] += 1
        relay.tm.send_report(request, code, None, byte_range=self._byte_range(),
                             conn=self.source).addErrback(
            lambda f: log.info("failure REPORT to {peer} not sent: {err}",
                               peer=self.source.peer, err=f.getErrorMessage()))

    def _failure_report(self):
        try:
            return self.request.failure_report
        except HeaderError:
            return "yes"

    def _byte_range(self):
        """The range of the chunk as relayed (RFC 4975 section 7.1.2): the
        Byte-Range it carried, with what was unknown ("*", or no header at
        all, which means 1-*/*) filled in from the bytes passed on."""
        try:
            br = self.request.byte_range
        except HeaderError:
            br = None
        start = 1 if br is None else br.start
        end = start + self.length - 1 if br is None or br.end is None else br.end
        total = None if br is None else br.total
        if total is None and self.flag == "$":
            total = end
        return "%d-%d/%s" % (start, end, "*" if total is None else total)
