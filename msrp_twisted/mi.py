"""Management interface (MI) of the MSRP service, spoken over Twisted AMP.

The command classes here are the wire contract: any Python program can import
them and call C{protocol.callRemote(MSRPTrace, trace_mode="on")}.  The server
side is L{ManagementFactory}, which answers those commands by calling an
L{IManagement} provider (the running service).

AMP caps every value at 65535 bytes, so list commands are paged: the caller
passes C{offset} and C{limit} and gets back one page plus C{total}.  A page
may hold fewer entries than C{limit} because the server also stops filling it
before the encoded list would overflow; L{call_paged} follows the pages.

With a secret (the service's C{mi_secret_file}), every command but
L{Challenge} and L{Authenticate} is refused with L{NotAuthenticated} until
the client has proved it knows the secret: it asks for a nonce and answers
with HMAC-SHA256(secret, nonce), so the secret itself never crosses the
connection (L{authenticate} does both steps).
"""

import hashlib
import hmac
import ipaddress
import os

from twisted.internet import defer
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.protocols import amp
from zope.interface import Interface

__all__ = [
    "Authenticate",
    "AuthenticationFailed",
    "BadArgument",
    "Challenge",
    "EndSession",
    "IManagement",
    "InternalError",
    "ListConnections",
    "ListSessions",
    "MAX_PAGE_SIZE",
    "MSRPTrace",
    "NotAuthenticated",
    "ManagementError",
    "ManagementFactory",
    "ManagementProtocol",
    "ReloadFailed",
    "ReloadTLS",
    "ReloadUsers",
    "Statistics",
    "UnknownSession",
    "authenticate",
    "call_paged",
    "describe_address",
    "exposure_warning",
    "prove",
    "read_secret",
]

# Entries per page a client may ask for; larger limits are clamped to it.
MAX_PAGE_SIZE = 1000

# The longest encoded value AMP accepts (amp.MAX_VALUE_LENGTH).
_MAX_VALUE_BYTES = 0xFFFF

# Text fields (peer names, certificate subjects) are cut to this many UTF-8
# bytes so that a single entry can never fill a whole AMP value on its own.
MAX_TEXT_BYTES = 1024

_TRACE_MODES = ("on", "off")


class ManagementError(Exception):
    """Base of the errors an MI command can fail with.

    On the client side AMP rebuilds these from the wire with a bytes
    description; C{message} and C{str()} give text on both sides.
    """

    @property
    def message(self):
        if not self.args:
            return ""
        text = self.args[0]
        if isinstance(text, bytes):
            return text.decode("utf-8", "replace")
        return str(text)

    def __str__(self):
        return self.message


class BadArgument(ManagementError):
    """An argument the command cannot accept; the message says which values it can."""


class UnknownSession(ManagementError):
    """EndSession named a relay session that does not exist."""


class ReloadFailed(ManagementError):
    """A reload was refused; the message carries the reason from the service."""


class InternalError(ManagementError):
    """The service failed unexpectedly while answering; details are in its log."""


class NotAuthenticated(ManagementError):
    """The MI has a secret and this connection has not proved it knows it."""


class AuthenticationFailed(ManagementError):
    """Authenticate got a wrong proof, or came without a Challenge before it."""


_COMMON_ERRORS = {
    BadArgument: b"BAD_ARGUMENT",
    InternalError: b"INTERNAL_ERROR",
    NotAuthenticated: b"NOT_AUTHENTICATED",
}

# Shorter secrets are refused: the proof must not be open to guessing.
MIN_SECRET_BYTES = 16


def read_secret(path):
    """The MI secret in path (surrounding whitespace dropped); ValueError
    naming the file and the reason when it cannot serve as one."""
    try:
        with open(path, "rb") as f:
            secret = f.read().strip()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"{path} holds {len(secret)} bytes; an MI secret needs at least {MIN_SECRET_BYTES}")
    return secret


def prove(secret, nonce):
    """The answer to a Challenge: HMAC-SHA256(secret, nonce) in hex."""
    return hmac.new(secret, nonce.encode("ascii"), hashlib.sha256).hexdigest()


class Challenge(amp.Command):
    """A fresh nonce, for one Authenticate."""

    commandName = b"challenge"
    arguments = []
    response = [(b"nonce", amp.Unicode())]
    errors = dict(_COMMON_ERRORS)


class Authenticate(amp.Command):
    """Prove knowledge of the secret: proof = prove(secret, nonce)."""

    commandName = b"authenticate"
    arguments = [(b"proof", amp.Unicode())]
    response = [(b"status", amp.Unicode())]
    errors = {**_COMMON_ERRORS, AuthenticationFailed: b"AUTHENTICATION_FAILED"}


_OPEN_COMMANDS = (Challenge, Authenticate)


async def authenticate(protocol, secret):
    """Challenge and Authenticate on protocol (a client's AMP connection)."""
    nonce = (await protocol.callRemote(Challenge))["nonce"]
    return await protocol.callRemote(Authenticate, proof=prove(secret, nonce))


class MSRPTrace(amp.Command):
    """Switch tracing on or off, or only report it (OpenSIPS C{msrp_trace})."""

    commandName = b"msrp_trace"
    arguments = [(b"trace_mode", amp.Unicode(optional=True))]
    response = [(b"status", amp.Unicode())]
    errors = dict(_COMMON_ERRORS)


_PAGE_ARGUMENTS = [
    (b"offset", amp.Integer(optional=True)),
    (b"limit", amp.Integer(optional=True)),
]

_CONNECTION_FIELDS = [
    (b"peer", amp.Unicode()),
    (b"local", amp.Unicode()),
    (b"scheme", amp.Unicode()),
    (b"direction", amp.Unicode()),
    (b"age", amp.Float()),
    (b"bytes_in", amp.Integer()),
    (b"bytes_out", amp.Integer()),
    (b"tls_peer_subject", amp.Unicode()),
]

_SESSION_FIELDS = [
    (b"session_id", amp.Unicode()),
    (b"user", amp.Unicode()),
    (b"client_peer", amp.Unicode()),
    (b"expires_in", amp.Float()),
]


class ListConnections(amp.Command):
    """One page of the open MSRP connections."""

    commandName = b"list_connections"
    arguments = list(_PAGE_ARGUMENTS)
    response = [
        (b"total", amp.Integer()),
        (b"connections", amp.AmpList(_CONNECTION_FIELDS)),
    ]
    errors = dict(_COMMON_ERRORS)


class ListSessions(amp.Command):
    """One page of the relay (RFC 4976) sessions."""

    commandName = b"list_sessions"
    arguments = list(_PAGE_ARGUMENTS)
    response = [
        (b"total", amp.Integer()),
        (b"sessions", amp.AmpList(_SESSION_FIELDS)),
    ]
    errors = dict(_COMMON_ERRORS)


_COUNTER_FIELDS = [(b"name", amp.Unicode()), (b"value", amp.Integer())]


class Statistics(amp.Command):
    """The service counters as name/value pairs, sorted by name."""

    commandName = b"statistics"
    arguments = []
    response = [
        (b"counters", amp.AmpList(_COUNTER_FIELDS)),
    ]
    errors = dict(_COMMON_ERRORS)


class EndSession(amp.Command):
    """Tear down one relay session."""

    commandName = b"end_session"
    arguments = [(b"session_id", amp.Unicode())]
    response = [(b"session_id", amp.Unicode()), (b"status", amp.Unicode())]
    errors = {**_COMMON_ERRORS, UnknownSession: b"UNKNOWN_SESSION"}


class ReloadUsers(amp.Command):
    """Re-read the relay's user credentials."""

    commandName = b"reload_users"
    arguments = []
    response = [(b"status", amp.Unicode())]
    errors = {**_COMMON_ERRORS, ReloadFailed: b"RELOAD_FAILED"}


class ReloadTLS(amp.Command):
    """Re-read the TLS certificate, key and trust store."""

    commandName = b"reload_tls"
    arguments = []
    response = [(b"status", amp.Unicode())]
    errors = {**_COMMON_ERRORS, ReloadFailed: b"RELOAD_FAILED"}


class IManagement(Interface):
    """What the MSRP service offers to the management interface.

    Every method may return its result directly or as a Deferred.
    """

    def get_trace():
        """Whether MSRP tracing is on (bool)."""

    def set_trace(on):
        """Switch MSRP tracing on (True) or off (False)."""

    def list_connections():
        """The open connections, as a list of dicts with the keys:

        C{peer}, C{local} (str or IAddress), C{scheme} ('msrp'/'msrps'),
        C{direction} ('in' for accepted, 'out' for connected), C{age}
        (seconds), C{bytes_in}, C{bytes_out} (int), C{tls_peer_subject}
        (str, '' or None without a TLS peer certificate).
        """

    def statistics():
        """The counters as a dict of name to int.

        Expected names: connections_open, connections_accepted,
        connections_connected, messages_in, messages_out, bytes_in,
        bytes_out, transactions_pending, transactions_timed_out,
        traces_sent, traces_dropped, relay_sessions.
        """

    def list_sessions():
        """The relay sessions, as a list of dicts with the keys:

        C{session_id}, C{user}, C{client_peer} (str or IAddress),
        C{expires_in} (seconds).
        """

    def end_session(session_id):
        """End the relay session; False if no such session exists."""

    def reload_users():
        """Reload user credentials; raise an exception naming the reason on failure."""

    def reload_tls():
        """Reload TLS material; raise an exception naming the reason on failure."""


def exposure_warning(address, secret=False):
    """Why a listening MI address is open to more than this host, or None.

    Without a secret the commands are not authenticated: who can connect
    can end sessions. Loopback limits that to local users, a UNIX socket to
    those its file mode admits (``unix:PATH:mode=600``). With one, what is
    left to say is that the traffic is not encrypted.
    """
    host = getattr(address, "host", None)
    if getattr(address, "type", None) != "TCP" or host is None:
        return None
    try:
        if ipaddress.ip_address(host.split("%", 1)[0]).is_loopback:
            return None
    except ValueError:
        pass
    if secret:
        return ("MI on %s is reachable from other hosts; its commands need the MI secret, "
                "but its traffic (session and connection lists) is not encrypted"
                % describe_address(address))
    return ("MI on %s is reachable from other hosts and has no authentication: anyone who "
            "can connect can end sessions and reload files; set mi_secret_file, or listen on "
            "127.0.0.1 or on a UNIX socket (e.g. unix:/run/msrp/mi.sock:mode=600)"
            % describe_address(address))


def describe_address(address):
    """A short human form of an IAddress (or of anything else)."""
    if address is None:
        return ""
    if isinstance(address, str):
        return address
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        if ":" in host:
            return f"[{host}]:{port}"
        return f"{host}:{port}"
    if hasattr(address, "name"):
        name = address.name
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return f"unix:{name or '(unnamed)'}"
    return str(address)


def _clip(text):
    """Cut text to MAX_TEXT_BYTES of UTF-8, marking the cut."""
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= MAX_TEXT_BYTES:
        return text
    marker = "\N{HORIZONTAL ELLIPSIS}"
    cut = encoded[: MAX_TEXT_BYTES - len(marker.encode("utf-8"))]
    return cut.decode("utf-8", "ignore") + marker


def _text(entry, key, default=None):
    value = entry.get(key, default)
    if value is None:
        if default is None:
            raise ValueError(f"entry has no {key!r}")
        value = default
    return _clip(describe_address(value))


def _integer(entry, key):
    value = entry.get(key, 0)
    if isinstance(value, float) or not isinstance(value, int):
        value = int(value)
    return value


def _seconds(entry, key):
    return float(entry.get(key, 0.0))


def _connection_entry(entry):
    return {
        "peer": _text(entry, "peer"),
        "local": _text(entry, "local", ""),
        "scheme": _text(entry, "scheme", ""),
        "direction": _text(entry, "direction", ""),
        "age": _seconds(entry, "age"),
        "bytes_in": _integer(entry, "bytes_in"),
        "bytes_out": _integer(entry, "bytes_out"),
        "tls_peer_subject": _text(entry, "tls_peer_subject", ""),
    }


def _session_entry(entry):
    return {
        "session_id": _text(entry, "session_id"),
        "user": _text(entry, "user", ""),
        "client_peer": _text(entry, "client_peer", ""),
        "expires_in": _seconds(entry, "expires_in"),
    }


def _responder(command):
    """Register an async method as the responder for command.

    The method's coroutine runs through L{ManagementProtocol._answer}, which
    logs the outcome and turns unexpected exceptions into L{InternalError}.
    """

    def decorate(method):
        def respond(self, **arguments):
            if not self.authenticated and command not in _OPEN_COMMANDS:
                return self._answer(command, self._not_authenticated())
            return self._answer(command, method(self, **arguments))

        respond.__name__ = method.__name__
        respond.__doc__ = method.__doc__
        return command.responder(respond)

    return decorate


class ManagementProtocol(amp.AMP):
    """One MI client connection; answers the commands by calling the backend.

    With a secret, only Challenge and Authenticate are answered until an
    Authenticate succeeds; each nonce serves one attempt.
    """

    _log = Logger()

    def __init__(self, backend, secret=None):
        super().__init__()
        self.backend = backend
        self.secret = secret
        self.authenticated = secret is None
        self._nonce = None
        self.peer = "(not connected)"
        self.connected = False

    def connectionMade(self):
        super().connectionMade()
        self.peer = describe_address(self.transport.getPeer())
        self.connected = True

    def connectionLost(self, reason):
        self.connected = False
        super().connectionLost(reason)

    def _answer(self, command, coroutine):
        name = command.commandName.decode("ascii")
        answer = defer.Deferred.fromCoroutine(coroutine)

        def succeeded(response):
            self._logOutcome(name, "ok", response)
            return response

        def failed(failure):
            if failure.check(ManagementError):
                self._logOutcome(name, f"refused: {failure.value}", level="warn")
                return failure
            self._log.failure(
                "MI {peer} {command}: the service raised an unexpected error",
                failure,
                peer=self.peer,
                command=name,
            )
            reason = f"{failure.type.__name__}: {failure.getErrorMessage()}"
            error = InternalError(_clip(f"{name} failed inside the service ({reason})"))
            self._logOutcome(name, f"refused: {error}", level="warn")
            return defer.fail(error)

        return answer.addCallbacks(succeeded, failed)

    def _logOutcome(self, command, outcome, response=None, level="info"):
        if not self.connected:
            outcome += " (client went away, answer dropped)"
        detail = ""
        if response:
            shown = {
                key: (len(value) if isinstance(value, list) else value)
                for key, value in response.items()
            }
            detail = " " + " ".join(f"{key}={value}" for key, value in sorted(shown.items()))
        getattr(self._log, level)(
            "MI {peer} {command}: {outcome}{detail}",
            peer=self.peer,
            command=command,
            outcome=outcome,
            detail=detail,
        )

    async def _not_authenticated(self):
        raise NotAuthenticated("this MI needs its secret first (msrp-mi --secret-file)")

    @_responder(Challenge)
    async def challenge(self):
        self._nonce = os.urandom(16).hex()
        return {"nonce": self._nonce}

    @_responder(Authenticate)
    async def authenticate(self, proof):
        nonce, self._nonce = self._nonce, None
        if self.secret is None:
            return {"status": "ok"}  # nothing to prove
        if nonce is None:
            raise AuthenticationFailed("ask for a challenge first (one per attempt)")
        if not hmac.compare_digest(proof.encode("ascii", "replace"), prove(self.secret, nonce).encode("ascii")):
            raise AuthenticationFailed("wrong secret")
        self.authenticated = True
        return {"status": "ok"}

    async def _call(self, methodName, *arguments):
        return await defer.maybeDeferred(getattr(self.backend, methodName), *arguments)

    @_responder(MSRPTrace)
    async def msrp_trace(self, trace_mode=None):
        if trace_mode is not None:
            mode = trace_mode.lower()
            if mode not in _TRACE_MODES:
                raise BadArgument(
                    f"trace_mode must be 'on' or 'off', not {_clip(trace_mode)!r}"
                )
            await self._call("set_trace", mode == "on")
        on = await self._call("get_trace")
        return {"status": "on" if on else "off"}

    async def _page(self, methodName, offset, limit, key, fields, convert):
        if offset is None:
            offset = 0
        if limit is None:
            limit = MAX_PAGE_SIZE
        if offset < 0:
            raise BadArgument(f"offset must be 0 or more, not {offset}")
        if limit < 1:
            raise BadArgument(f"limit must be between 1 and {MAX_PAGE_SIZE}, not {limit}")
        limit = min(limit, MAX_PAGE_SIZE)
        entries = list(await self._call(methodName))
        encoder = amp.AmpList(fields)
        page = []
        room = _MAX_VALUE_BYTES
        for entry in entries[offset : offset + limit]:
            item = convert(entry)
            # An AmpList value is the concatenation of its encoded items.
            size = len(encoder.toStringProto([item], self))
            if size > room:
                break
            page.append(item)
            room -= size
        return {"total": len(entries), key: page}

    @_responder(ListConnections)
    async def list_connections(self, offset=None, limit=None):
        return await self._page(
            "list_connections", offset, limit, "connections",
            _CONNECTION_FIELDS, _connection_entry,
        )

    @_responder(ListSessions)
    async def list_sessions(self, offset=None, limit=None):
        return await self._page(
            "list_sessions", offset, limit, "sessions", _SESSION_FIELDS, _session_entry
        )

    @_responder(Statistics)
    async def statistics(self):
        counters = await self._call("statistics")
        pairs = [
            {"name": _clip(str(name)), "value": _integer(counters, name)}
            for name in sorted(counters, key=str)
        ]
        if len(amp.AmpList(_COUNTER_FIELDS).toStringProto(pairs, self)) > _MAX_VALUE_BYTES:
            raise ValueError(f"{len(pairs)} counters do not fit in one AMP value")
        return {"counters": pairs}

    @_responder(EndSession)
    async def end_session(self, session_id):
        if not await self._call("end_session", session_id):
            raise UnknownSession(f"no relay session with id {_clip(session_id)!r}")
        return {"session_id": session_id, "status": "ended"}

    async def _reload(self, methodName, what):
        try:
            await self._call(methodName)
        except Exception as e:
            reason = str(e) or type(e).__name__
            raise ReloadFailed(_clip(f"{what} reload failed: {reason}")) from e
        return {"status": "ok"}

    @_responder(ReloadUsers)
    async def reload_users(self):
        return await self._reload("reload_users", "user")

    @_responder(ReloadTLS)
    async def reload_tls(self):
        return await self._reload("reload_tls", "TLS")


class ManagementFactory(ServerFactory):
    """Builds a L{ManagementProtocol} per MI client, all sharing one backend
    (and the secret, when the MI has one)."""

    protocol = ManagementProtocol

    def __init__(self, backend, secret=None):
        if not IManagement.providedBy(backend):
            raise TypeError(f"{backend!r} does not provide IManagement")
        self.backend = backend
        self.secret = secret

    def buildProtocol(self, addr):
        protocol = self.protocol(self.backend, self.secret)
        protocol.factory = self
        return protocol


async def _collect_pages(protocol, command, key, arguments):
    items = []
    total = 0
    while True:
        response = await protocol.callRemote(
            command, offset=len(items), limit=MAX_PAGE_SIZE, **arguments
        )
        page = response[key]
        total = response["total"]
        items.extend(page)
        if not page or len(items) >= total:
            return items, total


def call_paged(protocol, command, key, **arguments):
    """Fetch every page of a list command.

    Fires with C{(items, total)}, C{total} being the count the last page
    reported (the set may change while it is read).
    """
    return defer.Deferred.fromCoroutine(_collect_pages(protocol, command, key, arguments))
