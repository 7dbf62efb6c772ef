"""The relay's session table (RFC 4976 section 6).

A session is what a successful AUTH hands out: an unguessable session-id in
the Use-Path, bound to the client's connection and to the first From-Path
URI of its AUTH, valid until Expires. Another AUTH from the same user,
connection and client URI refreshes it (same Use-Path, new Expires). It
dies with its connection: a client that reconnects authenticates again.
"""

from twisted.logger import Logger

from ..core.ids import new_owned_session_id, new_session_id

log = Logger()


class RelaySession:
    """One AUTH's grant: who, over which connection, for which client URI,
    until when; frames_in / frames_out count what went through it."""

    __slots__ = ("session_id", "user", "conn", "client_uri", "use_path", "created",
                 "expires_at", "timer", "frames_in", "frames_out")

    def __init__(self, session_id, user, conn, client_uri, use_path, created, expires_at):
        self.session_id = session_id
        self.user = user
        self.conn = conn
        self.client_uri = client_uri
        self.use_path = use_path
        self.created = created
        self.expires_at = expires_at
        self.timer = None
        self.frames_in = 0
        self.frames_out = 0

    def describe(self, now):
        return {
            "session_id": self.session_id,
            "user": self.user,
            "client": str(self.client_uri),
            "peer": self.conn.peer,
            "use_path": str(self.use_path),
            "expires_in": max(0, int(self.expires_at - now)),
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
        }


class SessionTable:
    """Sessions by id, with expiry timers from the injected reactor.

    owner: the index of the worker process holding this table when the
    relay runs as several (msrp_twisted.workers, relay/siblings.py); its session-ids then start
    with that index so a sibling knows where a frame for them belongs.
    """

    def __init__(self, reactor, owner=None):
        self.reactor = reactor
        self.owner = owner
        self._sessions = {}
        self._by_conn = {}
        # (connection, user, client URI, relay URI) -> session-id, for the
        # AUTH that refreshes instead of adding (a relay-to-relay link
        # carries the sessions of many clients).
        self._by_client = {}
        self._per_user = {}
        self.stats = {"sessions_created": 0, "sessions_expired": 0, "sessions_ended": 0}

    def __len__(self):
        return len(self._sessions)

    def __iter__(self):
        return iter(list(self._sessions.values()))

    def get(self, session_id):
        return self._sessions.get(session_id)

    def count_for(self, user):
        """How many sessions user holds."""
        return self._per_user.get(user, 0)

    def create(self, user, conn, client_uri, relay_uri, lifetime):
        while True:
            sid = new_session_id() if self.owner is None else new_owned_session_id(self.owner)
            if sid not in self._sessions:
                break
        now = self.reactor.seconds()
        s = RelaySession(sid, user, conn, client_uri, relay_uri.with_session(sid), now, now + lifetime)
        s.timer = self.reactor.callLater(lifetime, self._expired, sid)
        self._sessions[sid] = s
        self._by_client[_client_key(conn, user, client_uri, relay_uri)] = sid
        self._by_conn.setdefault(conn.conn_id, set()).add(sid)
        self._per_user[user] = self._per_user.get(user, 0) + 1
        self.stats["sessions_created"] += 1
        conn.keep_alive_until(s.expires_at)
        return s

    def find(self, conn, user, client_uri, relay_uri):
        """The session user holds on conn for client_uri at relay_uri, if any:
        an AUTH that matches one refreshes it instead of adding another."""
        sid = self._by_client.get(_client_key(conn, user, client_uri, relay_uri))
        return None if sid is None else self._sessions.get(sid)

    def refresh(self, session, lifetime):
        now = self.reactor.seconds()
        session.expires_at = now + lifetime
        if session.timer is not None and session.timer.active():
            session.timer.reset(lifetime)
        session.conn.keep_alive_until(session.expires_at)

    def _expired(self, sid):
        s = self._sessions.get(sid)
        if s is None:
            return
        s.timer = None
        self.stats["sessions_expired"] += 1
        log.info("relay session {sid} of {user} expired", sid=sid, user=s.user)
        self._remove(s)

    def end(self, sid, reason="ended"):
        s = self._sessions.get(sid)
        if s is None:
            return False
        self.stats["sessions_ended"] += 1
        log.info("relay session {sid} of {user} {reason}", sid=sid, user=s.user, reason=reason)
        self._remove(s)
        return True

    def _remove(self, s):
        key = _client_key(s.conn, s.user, s.client_uri, s.use_path)
        if self._by_client.get(key) == s.session_id:
            del self._by_client[key]
        if self._sessions.pop(s.session_id, None) is not None:
            left = self._per_user.get(s.user, 0) - 1
            if left > 0:
                self._per_user[s.user] = left
            else:
                self._per_user.pop(s.user, None)
        sids = self._by_conn.get(s.conn.conn_id)
        if sids is not None:
            sids.discard(s.session_id)
            if not sids:
                del self._by_conn[s.conn.conn_id]
        if s.timer is not None and s.timer.active():
            s.timer.cancel()
        s.timer = None

    def connection_lost(self, conn):
        for sid in list(self._by_conn.get(conn.conn_id, ())):
            self.end(sid, "ended: connection closed")

    def clear(self):
        for sid in list(self._sessions):
            self.end(sid, "ended: shutdown")


def _client_key(conn, user, client_uri, relay_uri):
    return conn.conn_id, user, client_uri, relay_uri.with_session(None)
