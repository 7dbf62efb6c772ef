"""Shared test utilities for the transport: recording handlers and sinks,
a connection-event recorder that can be waited on, message builders, and
helpers for real loopback listeners and raw sockets."""

import socket

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from msrp_twisted.connections import ConnectionManager
from msrp_twisted.core.headers import Headers
from msrp_twisted.core.message import Request, Response
from msrp_twisted.core.serializer import serialize
from msrp_twisted.protocol import (
    IBodySink,
    IConnectionObserver,
    IMessageHandler,
    MSRPProtocol,
    TransportSettings,
)

TO = "msrp://bob.example:2855/s-bob;tcp"
FROM = "msrp://alice.example:2855/s-alice;tcp"

# Addresses of the StringTransport connections in unit tests.
PEER = IPv4Address("TCP", "192.0.2.7", 40000)
LOCAL = IPv4Address("TCP", "198.51.100.1", 2855)


def request(tid="t1abcd", body=None, method="SEND", to=TO, from_=FROM, flag="$",
            message_id="m1", content_type="text/plain", extra=()):
    """A Request with the usual headers (Content-Type only with a body)."""
    items = [("To-Path", to), ("From-Path", from_)]
    if message_id is not None:
        items.append(("Message-ID", message_id))
    items.extend(extra)
    if body is not None:
        items.append(("Content-Type", content_type))
    return Request(tid, method, Headers(items), body, flag)


def request_bytes(tid="t1abcd", body=None, **kw):
    return serialize(request(tid, body, **kw))


def response_bytes(tid="t1abcd", code=200, comment="OK", to=FROM, from_=TO):
    return serialize(Response(tid, code, comment, [("To-Path", to), ("From-Path", from_)]))


@implementer(IBodySink)
class RecordingSink:
    def __init__(self):
        self.pieces = []
        self.flag = None
        self.aborted = None
        self.done = defer.Deferred()

    @property
    def body(self):
        return b"".join(self.pieces)

    def body_data(self, data):
        self.pieces.append(data)

    def body_end(self, flag):
        self.flag = flag
        self.done.callback(self)

    def body_aborted(self, reason):
        self.aborted = reason
        self.done.callback(self)


@implementer(IMessageHandler)
class RecordingHandler:
    """Records what a connection delivers.

    ``stream`` makes head_received hand out RecordingSinks; ``manager``
    makes every request register its From-Path for reuse, as the
    transaction layer does.
    """

    def __init__(self, stream=False, manager=None):
        self.stream = stream
        self.manager = manager
        self.made = []
        self.heads = []
        self.sinks = []
        self.messages = []
        self.invalid = []
        self.lost = []
        self._waiting = []

    def connection_made(self, conn):
        self.made.append(conn)

    def head_received(self, conn, message):
        self.heads.append(message)
        self._register(conn, message)
        if not self.stream:
            return None
        sink = RecordingSink()
        self.sinks.append(sink)
        return sink

    def message_received(self, conn, message):
        if not message.has_body:
            self._register(conn, message)
        self.messages.append((conn, message))
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback((conn, message))

    def invalid_message(self, conn, error):
        self.invalid.append((conn, error))

    def connection_lost(self, conn, reason):
        self.lost.append((conn, reason))

    def _register(self, conn, message):
        if self.manager is not None and message.is_request:
            self.manager.register_peer(conn, message.from_path[0])

    def next_message(self):
        """A Deferred firing with (conn, message) for the next message."""
        d = defer.Deferred()
        self._waiting.append(d)
        return d


@implementer(IConnectionObserver)
class EventRecorder:
    """Records connection events; wait() gives Deferreds for future ones."""

    def __init__(self):
        self.events = []
        self._waiting = []
        self._any = []

    def connection_event(self, conn, event, success, message):
        self.events.append((conn, event, success, message))
        waiting_any, self._any = self._any, []
        for d in waiting_any:
            d.callback((conn, event, success, message))
        still = []
        for conn_filter, name, d in self._waiting:
            if name == event and (conn_filter is None or conn_filter is conn):
                d.callback((conn, event, success, message))
            else:
                still.append((conn_filter, name, d))
        self._waiting = still

    def names(self, conn=None):
        return [e for c, e, _, _ in self.events if conn is None or c is conn]

    def of(self, event, conn=None):
        return [(c, e, s, m) for c, e, s, m in self.events
                if e == event and (conn is None or c is conn)]

    def next_event(self):
        """Fires with the next event, whatever it is."""
        d = defer.Deferred()
        self._any.append(d)
        return d

    def wait(self, event, conn=None):
        """Fires with (conn, event, success, message) for the first such
        event, now if it already happened."""
        for c, e, s, m in self.events:
            if e == event and (conn is None or c is conn):
                return defer.succeed((c, e, s, m))
        d = defer.Deferred()
        self._waiting.append((conn, event, d))
        return d


def unit_connection(settings=None, direction="in", scheme="msrp", handler=None, stream=False):
    """An MSRPProtocol on a StringTransport driven by a Clock.

    Returns (conn, transport, clock, handler, events).
    """
    clock = Clock()
    handler = handler if handler is not None else RecordingHandler(stream=stream)
    events = EventRecorder()
    manager = ConnectionManager(handler, settings or TransportSettings(), reactor=clock,
                                observers=[events])
    target = (PEER.host, PEER.port) if direction == "out" else None
    conn = MSRPProtocol(manager, direction, scheme, target,
                        route_key=(scheme, PEER.host, PEER.port) if direction == "out" else None)
    transport = StringTransport(hostAddress=LOCAL, peerAddress=PEER)
    conn.makeConnection(transport)
    return conn, transport, clock, handler, events


def lose(conn, reason=None):
    """Deliver connectionLost as the transport would after a close."""
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    conn.connectionLost(Failure(reason if reason is not None else ConnectionDone()))


class Network:
    """Real loopback managers for one test, all torn down afterwards.

    Add with ``net.manager(...)``; ``yield net.close()`` (registered as a
    cleanup by the constructor) aborts every connection, waits for each to
    be lost and stops every listener.
    """

    def __init__(self, testcase):
        self.managers = []
        self.sockets = []
        testcase.addCleanup(self.close)

    def manager(self, settings=None, tls=None, stream=False, register=False):
        events = EventRecorder()
        handler = RecordingHandler(stream=stream)
        manager = ConnectionManager(handler, settings or TransportSettings(tls_handshake_timeout=5000),
                                    tls=tls, observers=[events])
        if register:
            handler.manager = manager
        manager.events = events
        self.managers.append(manager)
        return manager

    def raw_socket(self, family=socket.AF_INET):
        s = socket.socket(family, socket.SOCK_STREAM)
        self.sockets.append(s)
        return s

    @defer.inlineCallbacks
    def close(self):
        waits = []
        for manager in self.managers:
            yield manager.stop_listening()
            for conn in list(manager.connections.values()):
                if not conn.closed:
                    waits.append(manager.events.wait("CLOSED", conn))
                    if conn.transport is not None:
                        conn.transport.abortConnection()
        for s in self.sockets:
            s.close()
        yield defer.gatherResults(waits)


@defer.inlineCallbacks
def listen_and_connect(client, server, spec="msrp:127.0.0.1:0", tls=None, client_tls=None):
    """Listen on ``spec`` with ``server``, connect ``client`` to it and wait
    until the server side is ready too.

    Returns (uri, client_conn, server_conn).
    """
    from msrp_twisted.core.uri import parse_uri

    port = yield server.listen(spec, tls=tls)
    lspec = port.msrp_spec
    host = "[%s]" % lspec.host if ":" in lspec.host else lspec.host
    uri = parse_uri("%s://%s:%d/s1;tcp" % (lspec.scheme, host, port.getHost().port))
    conn = yield client.connection_for(uri, client_tls)
    server_conn = yield accepted_for(server, conn)
    return uri, conn, server_conn


@defer.inlineCallbacks
def accepted_for(server, client_conn):
    """The server manager's ready connection whose peer is client_conn."""
    for _ in range(100000):
        for c in server.connections.values():
            if c.remote_port == client_conn.local_port and c.ready:
                return c
        if client_conn.closed:
            raise AssertionError("client connection closed: %s" % client_conn.close_reason)
        yield reactor_turn()
    raise AssertionError("the server never got the connection")


def reactor_turn():
    """A Deferred that fires on the next reactor iteration."""
    from twisted.internet import reactor

    d = defer.Deferred()
    reactor.callLater(0, d.callback, None)
    return d
