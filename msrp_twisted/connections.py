"""Listeners, outbound connections and connection reuse.

The ConnectionManager is the Factory-side owner of everything shared
between connections: settings, the upper-layer handler, the registry used
to reuse connections (outbound ones by the URI they were opened for, inbound
ones by the From-Path authorities that arrived on them), connect attempts in
progress, statistics and the observers of connection events.

Reuse keys are (scheme, host as RFC 4975 section 6.1 compares it, effective
port): msrp and msrps never share a connection, and an inbound connection is
registered for a From-Path URI only when its own scheme matches (a plain
connection never carries msrps traffic). With cert_check_on_conn_reusage=1
an outbound msrps connection is reused only for sends that present the same
client certificate; inbound ones always match.
"""

import ipaddress
from types import SimpleNamespace

from twisted.internet import defer
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ClientEndpoint,
    TCP6ServerEndpoint,
    wrapClientTLS,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from .limits import ConnectionCap
from .protocol import ConnectionClosed, MSRPProtocol, TransportSettings, _conn_ids

log = Logger()

DEFAULT_PORT = 2855

_LISTENER_PARAMS = ("cert", "key", "ca", "verify_client")


class ListenerSpecError(ValueError):
    """A listener that cannot be had: bad text, bad TLS files, or no bind."""


class SendError(Exception):
    """A message could not be sent: no connection could be had."""


class ListenerSpec:
    """A parsed listener, msrp[s]:HOST[:PORT][;param=value...]."""

    __slots__ = ("scheme", "host", "port", "params")

    def __init__(self, scheme, host, port, params):
        self.scheme = scheme
        self.host = host
        self.port = port
        self.params = params

    @property
    def secure(self):
        return self.scheme == "msrps"

    def __str__(self):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s:%s:%d" % (self.scheme, host, self.port)


def parse_listener(text):
    """Parse 'msrp:IP[:PORT]' / 'msrps:[IPv6][:PORT]' (plus ';name=value' TLS params).

    Raises ListenerSpecError saying what is wrong with the text.
    """
    if not isinstance(text, str):
        raise ListenerSpecError("a listener is a string like msrp:IP[:PORT], not %r" % (text,))
    scheme, sep, rest = text.strip().partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("msrp", "msrps"):
        raise ListenerSpecError(
            "bad listener %r: it must start with msrp: or msrps: "
            "(msrp:IP[:PORT], IPv6 in brackets, e.g. msrp:[::1]:2855)" % (text,))
    if rest.startswith("//"):
        raise ListenerSpecError("bad listener %r: write %s:IP[:PORT], not a URI" % (text, scheme))
    address, _, params_text = rest.partition(";")
    if address.startswith("["):
        close = address.find("]")
        if close < 0:
            raise ListenerSpecError("bad listener %r: '[' without ']' around the IPv6 address" % (text,))
        host, after = address[1:close], address[close + 1:]
        if after and not after.startswith(":"):
            raise ListenerSpecError("bad listener %r: %r after the IPv6 address" % (text, after))
        port_text = after[1:] if after else None
        version = 6
    else:
        if address.count(":") > 1:
            raise ListenerSpecError(
                "bad listener %r: put the IPv6 address in brackets, e.g. %s:[::1]:2855" % (text, scheme))
        host, colon, port_text = address.partition(":")
        if not colon:
            port_text = None
        version = 4
    if not host:
        raise ListenerSpecError("bad listener %r: no IP address" % (text,))
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ListenerSpecError(
            "bad listener %r: %r is not an IP%s address (a listener binds to an "
            "address, not a host name)" % (text, host, "v6" if version == 6 else "")) from None
    if addr.version != version:
        raise ListenerSpecError("bad listener %r: %s is not an IPv6 address" % (text, host))
    if port_text is None:
        port = DEFAULT_PORT
    else:
        if not port_text.isascii() or not port_text.isdigit():
            raise ListenerSpecError("bad listener %r: port %r is not a number" % (text, port_text))
        port = int(port_text)
        if port > 65535:
            raise ListenerSpecError("bad listener %r: port %d out of range (0-65535)" % (text, port))
    params = {}
    for item in params_text.split(";"):
        if not item.strip():
            continue
        name, _, value = item.partition("=")
        name = name.strip().lower()
        if name not in _LISTENER_PARAMS:
            raise ListenerSpecError(
                "bad listener %r: unknown parameter %r (known: %s)"
                % (text, name, ", ".join(_LISTENER_PARAMS)))
        params[name] = value.strip()
    if params and scheme != "msrps":
        raise ListenerSpecError("bad listener %r: TLS parameters on a plain msrp listener" % (text,))
    return ListenerSpec(scheme, str(addr), port, params)


class _ServerFactory(Factory):
    def __init__(self, manager, scheme):
        self.manager = manager
        self.scheme = scheme

    def buildProtocol(self, addr):
        return MSRPProtocol(self.manager, "in", self.scheme)


class _ClientFactory(Factory):
    def __init__(self, manager, scheme, target, tls_identity, route_key):
        self.manager = manager
        self.scheme = scheme
        self.target = target
        self.tls_identity = tls_identity
        self.route_key = route_key

    def buildProtocol(self, addr):
        return MSRPProtocol(self.manager, "out", self.scheme, self.target, self.tls_identity,
                            self.route_key)


def _uri_key(uri):
    """What two URIs must share for a connection to serve both."""
    return (uri.scheme, uri.host_key, uri.effective_port)


def _route_key(conn):
    """The reuse key of an outbound connection (built from its target when
    it was made without one)."""
    if conn.route_key is None and conn.target is not None:
        from .core.uri import MSRPURI

        host, port = conn.target
        conn.route_key = _uri_key(MSRPURI(host, port, scheme=conn.scheme))
    return conn.route_key


class ConnectionManager:
    """Owns the connections of one MSRP service."""

    def __init__(self, handler=None, settings=None, reactor=None, tls=None, observers=()):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.settings = settings if settings is not None else TransportSettings()
        self.handler = handler
        self.tls = tls  # global msrp_twisted.tls.TLSSettings, or None
        self.observers = list(observers)
        self.connections = {}
        self.listening = []
        self._routes = {}
        self._connecting = {}
        self.stats = dict.fromkeys(
            ("connections_accepted", "connections_opened", "connect_failures",
             "tls_failures", "connections_closed"), 0)
        self.connection_cap = ConnectionCap(self.settings.max_connections_per_ip)
        self._admitted = set()

    def admit(self, conn):
        """None when an accepted connection may stay, else why it may not."""
        cap = self.connection_cap
        if not cap.admit(conn.remote_host):
            self.stats["connections_refused"] = cap.stats["connections_refused"]
            return "too many connections from %s (max_connections_per_ip=%d)" % (conn.remote_host, cap.limit)
        self._admitted.add(conn.conn_id)
        return None

    # -- listeners -------------------------------------------------------
    def listen(self, spec, tls=None):
        """Start a listener; a Deferred firing with the IListeningPort, or
        failing with ListenerSpecError naming the address and the reason."""
        try:
            if isinstance(spec, str):
                spec = parse_listener(spec)
            factory = self.server_factory(spec, tls)
        except ListenerSpecError as e:
            return defer.fail(e)
        if ":" in spec.host:
            endpoint = TCP6ServerEndpoint(self.reactor, spec.port, interface=spec.host)
        else:
            endpoint = TCP4ServerEndpoint(self.reactor, spec.port, interface=spec.host)
        d = endpoint.listen(factory)

        def listening(port):
            self.add_listening_port(port, spec, factory)
            log.info("MSRP listening on {spec}",
                     spec="%s:%s" % (spec.scheme, _hostport(spec.host, port.getHost().port)))
            return port

        def failed(f):
            raise ListenerSpecError("cannot listen on %s: %s" % (spec, _bind_error(f)))

        return d.addCallbacks(listening, failed)

    def server_factory(self, spec, tls=None):
        """The factory a listener for spec serves (TLS-wrapped for msrps);
        for a socket bound elsewhere (workers adopt the parent's). Raises
        ListenerSpecError for an msrps listener without a usable certificate."""
        factory = _ServerFactory(self, spec.scheme)
        if spec.secure:
            context = self.server_context(spec, tls or self.tls)
            factory = TLSMemoryBIOFactory(context, False, factory)
            factory.msrp_tls_context = context
        return factory

    def add_listening_port(self, port, spec, factory):
        """Count port, serving factory, as one of ours (stop_listening,
        reload_tls, the MI)."""
        port.msrp_spec = spec
        port.msrp_factory = factory
        self.listening.append(port)

    @staticmethod
    def server_context(spec, settings):
        """The server TLS context of an msrps listener (its own cert, key,
        ca and verify_client parameters over settings)."""
        from .tls import ServerTLSContext, TLSSettings

        try:
            if spec.params:
                base = settings or TLSSettings()
                verify = spec.params.get("verify_client")
                settings = TLSSettings(
                    cert_file=spec.params.get("cert", base.cert_file),
                    key_file=spec.params.get("key", base.key_file),
                    ca_file=spec.params.get("ca", base.ca_file),
                    verify_client=base.verify_client if verify is None
                    else verify.lower() in ("1", "yes", "true", "on"),
                    verify_server=base.verify_server,
                    min_version=base.min_version,
                    ciphers=base.ciphers,
                )
            if settings is None or not settings.cert_file:
                raise ListenerSpecError(
                    "listener %s needs a TLS certificate and key (--tls-cert/--tls-key)" % spec)
            return ServerTLSContext(settings)
        except ValueError as e:  # TLSConfigError included
            if isinstance(e, ListenerSpecError):
                raise
            raise ListenerSpecError("listener %s: %s" % (spec, e)) from None

    def tls_contexts(self):
        """The server TLS contexts of our listeners (for reload_tls)."""
        return [p.msrp_factory.msrp_tls_context for p in self.listening
                if hasattr(p.msrp_factory, "msrp_tls_context")]

    def stop_listening(self):
        ports, self.listening = self.listening, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])

    # -- registry --------------------------------------------------------
    def connection_opened(self, conn):
        self.connections[conn.conn_id] = conn
        if conn.direction == "out":
            self.stats["connections_opened"] += 1
            key = _route_key(conn)
            if key is not None:
                self._add_route(key, conn)
        else:
            self.stats["connections_accepted"] += 1

    def connection_closed(self, conn):
        self.stats["connections_closed"] += 1
        self.connections.pop(conn.conn_id, None)
        if conn.conn_id in self._admitted:
            self._admitted.discard(conn.conn_id)
            self.connection_cap.release(conn.remote_host)
        if conn.direction == "out" and conn.route_key is not None:
            self._drop_route(conn.route_key, conn)
        for key in conn.peer_uris:
            self._drop_route(key, conn)
        conn.peer_uris = set()

    def _add_route(self, key, conn):
        conns = self._routes.setdefault(key, [])
        if conn not in conns:
            conns.append(conn)

    def _drop_route(self, key, conn):
        conns = self._routes.get(key)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._routes[key]

    def register_peer(self, conn, uri):
        """Traffic for uri's authority may use conn (RFC 4975 section 6).

        Only when the schemes agree: From-Path msrps on a plain connection
        must not make msrps traffic go out in the clear.
        """
        if conn.closed or uri.scheme != conn.scheme:
            return
        key = _uri_key(uri)
        if key not in conn.peer_uris:
            conn.peer_uris.add(key)
            self._add_route(key, conn)

    def find_connection(self, uri, tls_identity=None):
        check = uri.secure and self.settings.cert_check_on_conn_reusage
        for conn in self._routes.get(_uri_key(uri), ()):
            if not conn.ready or conn.closed or conn._closing:
                continue
            if check and conn.direction == "out" and conn.tls_identity != tls_identity:
                continue
            return conn
        return None

    # -- outbound --------------------------------------------------------
    def connection_for(self, uri, tls=None):
        """A Deferred firing with a ready connection to uri's authority:
        reused, joined (one connect attempt per peer) or opened. Fails with
        SendError."""
        identity = None
        if uri.secure:
            from .tls import TLSSettings, tls_identity

            tls = tls or self.tls or TLSSettings()
            try:
                identity = tls_identity(tls)
            except ValueError as e:
                return defer.fail(SendError("cannot set up TLS to %s: %s" % (uri.authority, e)))
        conn = self.find_connection(uri, identity)
        if conn is not None:
            return defer.succeed(conn)
        key = _uri_key(uri)
        pending_key = key
        if uri.secure and self.settings.cert_check_on_conn_reusage:
            pending_key = key + (identity,)
        waiters = self._connecting.get(pending_key)
        d = defer.Deferred()
        if waiters is not None:
            waiters.append(d)
            return d
        self._connecting[pending_key] = [d]
        self._connect(uri, tls, identity, key).addBoth(self._connected, pending_key)
        return d

    def _connect(self, uri, tls, identity, key):
        host, port = uri.hostport
        timeout = self.settings.connect_timeout
        try:
            version = ipaddress.ip_address(host).version
        except ValueError:
            endpoint = HostnameEndpoint(self.reactor, host, port, timeout=timeout)
        else:
            # No name to resolve; and HostnameEndpoint would report a refused
            # connect only after its 0.3 s attempt delay.
            client_endpoint = TCP4ClientEndpoint if version == 4 else TCP6ClientEndpoint
            endpoint = client_endpoint(self.reactor, host, port, timeout=timeout)
        if uri.secure:
            from .tls import client_creator

            try:
                creator = client_creator(tls, host)
            except ValueError as e:
                return defer.fail(SendError("cannot set up TLS to %s: %s" % (uri.authority, e)))
            endpoint = wrapClientTLS(creator, endpoint)
        factory = _ClientFactory(self, uri.scheme, (host, port), identity, key)
        d = endpoint.connect(factory)

        def failed(f):
            info = SimpleNamespace(
                conn_id=next(_conn_ids), scheme=uri.scheme, direction="out",
                local_host=None, local_port=None, remote_host=host, remote_port=port)
            reason = f.getErrorMessage()
            self.stats["connect_failures"] += 1
            self.connection_event(info, "CONNECT", False, "connect to %s failed: %s" % (uri.authority, reason))
            raise SendError("cannot connect to %s: %s" % (uri.authority, reason))

        def ready(conn):
            return conn.when_ready().addErrback(not_ready)

        def not_ready(f):
            f.trap(ConnectionClosed)
            raise SendError("connection to %s failed: %s" % (uri.authority, f.getErrorMessage()))

        return d.addCallbacks(ready, failed)

    def _connected(self, result, key):
        waiters = self._connecting.pop(key, [])
        failed = isinstance(result, Failure)
        for d in waiters:
            if failed:
                d.errback(result)
            else:
                d.callback(result)
        return None

    # -- events ----------------------------------------------------------
    def connection_event(self, conn, event, success, message):
        if event == "TLS_HANDSHAKE" and not success:
            self.stats["tls_failures"] += 1
        # The connection logs the closes it makes itself; "message" is a
        # reserved key of twisted.logger, hence "detail".
        if event in ("ACCEPTED", "CONNECTED") or (not success and event in ("CONNECT", "TLS_HANDSHAKE")):
            emit = log.info if success else log.warn
            emit("MSRP {event} {scheme} {peer} ({direction}): {detail}",
                 event=event, scheme=conn.scheme, direction=conn.direction,
                 peer=_hostport(conn.remote_host, conn.remote_port), detail=message)
        for obs in self.observers:
            try:
                obs.connection_event(conn, event, success, message)
            except Exception:
                log.failure("connection observer {obs!r} failed", obs=obs)

    def close_all(self, reason="shutting down"):
        for conn in list(self.connections.values()):
            conn.close(reason, abort=False)


def _bind_error(failure):
    """The OS reason of a failed bind, without Twisted's wrapping."""
    value = failure.value
    socket_error = getattr(value, "socketError", None)
    if socket_error is not None:
        return getattr(socket_error, "strerror", None) or str(socket_error)
    return failure.getErrorMessage()


def _hostport(host, port):
    host = host or "?"
    if ":" in host:
        host = "[%s]" % host
    return "%s:%s" % (host, port)


__all__ = [
    "ConnectionManager", "ListenerSpec", "ListenerSpecError", "SendError",
    "parse_listener", "DEFAULT_PORT",
]
