"""HEP tracing: destinations, real UDP/TCP collectors, reconnects, the filter."""

import ipaddress
import json
from dataclasses import dataclass

from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from msrp_twisted import tracing
from msrp_twisted.core import hep
from msrp_twisted.core.hep import HEPStreamDecoder, decode_hep
from msrp_twisted.tracing import (
    HEPTCPSender,
    HEPUDPSender,
    TraceDestination,
    Tracer,
    load_filter,
    open_sender,
    parse_trace_destination,
)

T0 = 1700000000.123456


@dataclass
class Conn:
    conn_id: int
    scheme: str = "msrp"
    local_host: str = "127.0.0.1"
    local_port: int = 2855
    remote_host: str = "127.0.0.1"
    remote_port: int = 40000
    direction: str = "in"


class RecordingSender:
    """Stands in for the network in pure-logic tests; integration tests use real collectors."""

    def __init__(self, accept=True):
        self.packets = []
        self.accept = accept

    def send(self, data):
        self.packets.append(decode_hep(data))
        return self.accept


def only_port_9000(si, sp, socket_ip, socket_port, proto, direction):
    return sp == 9000


def capture_logs(testcase):
    events = []
    globalLogPublisher.addObserver(events.append)
    testcase.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


class Waiter:
    """Deferreds that fire once ``len(self.packets)`` reaches a count."""

    def __init__(self):
        self.packets = []
        self._waiting = []

    def wait_for(self, count):
        d = defer.Deferred()
        self._waiting.append((count, d))
        self._check()
        return d

    def _got(self, packet):
        self.packets.append(packet)
        self._check()

    def _check(self):
        ready = [(n, d) for n, d in self._waiting if len(self.packets) >= n]
        self._waiting = [(n, d) for n, d in self._waiting if len(self.packets) < n]
        for n, d in ready:
            d.callback(self.packets[:n])


class UDPCollector(DatagramProtocol, Waiter):
    def __init__(self):
        Waiter.__init__(self)
        self.sources = []

    def datagramReceived(self, data, addr):
        self.sources.append(addr)
        self._got(decode_hep(data))


class _CollectorConnection(Protocol):
    def connectionMade(self):
        self.decoder = HEPStreamDecoder()
        self.lost = defer.Deferred()
        self.factory.connections.append(self)

    def dataReceived(self, data):
        for packet in self.decoder.feed(data):
            self.factory._got(packet)

    def connectionLost(self, reason):
        self.factory.connections.remove(self)
        self.lost.callback(None)


class TCPCollector(Factory, Waiter):
    protocol = _CollectorConnection
    noisy = False

    def __init__(self):
        Waiter.__init__(self)
        self.connections = []
        self.port = None

    def listen(self, port=0, interface="127.0.0.1"):
        self.port = reactor.listenTCP(port, self, interface=interface)
        return self.port.getHost().port

    @defer.inlineCallbacks
    def go_away(self):
        """Stop listening and cut every connection."""
        if self.port is not None:
            yield self.port.stopListening()
            self.port = None
        lost = [c.lost for c in self.connections]
        for c in list(self.connections):
            c.transport.abortConnection()
        yield defer.gatherResults(lost)


def expected_payload(label, event, status, message):
    members = [("Protocol", label), ("Event", event), ("Status", status)]
    if message:
        members.append(("Message", message))
    return hep.cjson_print_object(members)


class NetEventAssertions:
    def assertNetEvent(
        self, packet, conn, event, status, message, capture_id=1, auth_key=None, when=T0
    ):
        self.assertEqual(packet.ip_protocol, hep.IPPROTO_TCP)
        self.assertEqual(packet.proto_type, hep.PROTO_NET)
        version = 6 if ":" in conn.local_host else 4
        self.assertEqual(packet.ip_family, hep.FAMILY_IPV6 if version == 6 else hep.FAMILY_IPV4)
        self.assertEqual((packet.src_ip, packet.src_port), (conn.remote_host, conn.remote_port))
        self.assertEqual((packet.dst_ip, packet.dst_port), (conn.local_host, conn.local_port))
        self.assertEqual(packet.timestamp + packet.timestamp_usec / 1e6, when)
        self.assertEqual(packet.capture_id, capture_id)
        self.assertEqual(packet.auth_key, auth_key)
        self.assertEqual(packet.correlation_id, str(conn.conn_id).encode())
        label = conn.scheme.upper()
        self.assertEqual(packet.payload, expected_payload(label, event, status, message))
        decoded = json.loads(packet.payload)
        keys = ["Protocol", "Event", "Status"] + (["Message"] if message else [])
        self.assertEqual(list(decoded), keys)
        self.assertEqual(decoded["Protocol"], label)
        self.assertEqual(decoded["Event"], event)
        self.assertEqual(decoded["Status"], status)
        self.assertEqual(packet.unknown_chunks, [])


# -- trace_destination ----------------------------------------------------------


class ParseTraceDestinationTests(SynchronousTestCase):
    def test_hep_id_forms(self):
        cases = {
            "[hep_dst] 127.0.0.1:8001; transport=tcp; version=3": TraceDestination(
                "127.0.0.1", 8001, "tcp", 3, "hep_dst"
            ),
            "[hep_dst] 1.2.3.4:5000": TraceDestination("1.2.3.4", 5000, "tcp", 3, "hep_dst"),
            "[h]10.0.0.1": TraceDestination("10.0.0.1", 9060, "tcp", 3, "h"),
            "  [h]collector.example.com:9061;Transport=UDP;  ": TraceDestination(
                "collector.example.com", 9061, "udp", 3, "h"
            ),
            "[h] [::1]:9062; version=3; transport=udp": TraceDestination("::1", 9062, "udp", 3, "h"),
            "[h][0:0::1]": TraceDestination("::1", 9060, "tcp", 3, "h"),
            "[::1]:9063;transport=udp": TraceDestination("::1", 9063, "udp", 3, None),
            "127.0.0.1:9064": TraceDestination("127.0.0.1", 9064, "tcp", 3, None),
        }
        for text, expected in cases.items():
            self.assertEqual(parse_trace_destination(text), expected, text)

    def test_short_forms(self):
        cases = {
            "udp:127.0.0.1:9060": TraceDestination("127.0.0.1", 9060, "udp"),
            "TCP:127.0.0.1:9061": TraceDestination("127.0.0.1", 9061, "tcp"),
            "udp:[::1]:9062": TraceDestination("::1", 9062, "udp"),
            "tcp:localhost:9063": TraceDestination("localhost", 9063, "tcp"),
        }
        for text, expected in cases.items():
            self.assertEqual(parse_trace_destination(text), expected, text)

    def test_bad_inputs(self):
        cases = {
            "": "empty",
            "   ": "empty",
            "[hep_dest];transport=tcp;version=3": "missing host",
            "[h]1.2.3.4:5000;version=2": "version 2 is not supported",
            "[h]1.2.3.4:5000;version=1": "version 1 is not supported",
            "[h]1.2.3.4;version=4": "no HEP version 4",
            "[h]1.2.3.4;version=three": "'three' is not a number",
            "[h]1.2.3.4;transport=tls": "'tls' is not supported",
            "[h]1.2.3.4;transport=sctp": "unknown transport 'sctp'",
            "[h]1.2.3.4;transport": "needs a value",
            "[h]1.2.3.4;transport=udp;transport=tcp": "given twice",
            "[h]1.2.3.4;uri=x": "unknown parameter 'uri'",
            "[h 1.2.3.4": "without a closing ']'",
            "[]1.2.3.4": "bad hep_id name",
            "[h]1.2.3.4:0": "bad port '0'",
            "[h]1.2.3.4:65536": "bad port '65536'",
            "[h]1.2.3.4:x": "bad port 'x'",
            "[h]999.1.1.1": "bad IPv4 address '999.1.1.1'",
            "[h]bad_host!:9060": "bad host name",
            "[h]::1:9060": "in brackets",
            "[h][::1:9060": "without a closing ']' in host",
            "[h][10.0.0.1]:9060": "not an IPv6 address",
            "[h][::1]x": "unexpected 'x'",
            "udp:127.0.0.1": "missing port",
            "udp:::1:9060": "in brackets",
            "udp:127.0.0.1:9060;transport=tcp": "not allowed in the short form",
            "tls:127.0.0.1:9060": "'tls' is not supported",
        }
        for text, words in cases.items():
            with self.assertRaises(ValueError, msg=text) as cm:
                parse_trace_destination(text)
            self.assertIn(words, str(cm.exception), text)
        with self.assertRaises(ValueError) as cm:
            parse_trace_destination(None)
        self.assertIn("must be a string", str(cm.exception))


# -- UDP --------------------------------------------------------------------------


class UDPTracingTests(TestCase, NetEventAssertions):
    timeout = 10

    def collector(self, interface):
        collector = UDPCollector()
        port = reactor.listenUDP(0, collector, interface=interface)
        self.addCleanup(port.stopListening)
        return collector, port.getHost().port

    def sender(self, interface, port):
        sender = HEPUDPSender(interface, port, interface=interface).start()
        self.addCleanup(sender.close)
        return sender

    @defer.inlineCallbacks
    def test_connection_events_ipv4(self):
        collector, port = self.collector("127.0.0.1")
        sender = self.sender("127.0.0.1", port)
        clock = Clock()
        clock.advance(T0)
        tracer = Tracer(sender, reactor=clock, enabled=True, capture_id=2001, auth_key="s3cret")
        accepted = Conn(7, remote_port=50001)
        opened = Conn(8, scheme="msrps", local_port=50002, remote_port=2856, direction="out")
        self.assertTrue(tracer.connection_event(accepted, "ACCEPTED", True))
        self.assertTrue(tracer.connection_event(opened, "CONNECT", True))
        self.assertTrue(tracer.connection_event(opened, "CONNECTED", False))
        self.assertTrue(tracer.connection_event(accepted, "CLOSED", True, "EOF received"))
        packets = yield collector.wait_for(4)
        opts = dict(capture_id=2001, auth_key=b"s3cret")
        self.assertNetEvent(packets[0], accepted, "ACCEPTED", "SUCCESS", "Connection accepted...", **opts)
        self.assertNetEvent(packets[1], opened, "CONNECT_START", "SUCCESS", "Async connect in progress...", **opts)
        self.assertNetEvent(packets[2], opened, "CONNECTED", "FAILURE", "Failed to connect...", **opts)
        self.assertNetEvent(packets[3], accepted, "CLOSED", "SUCCESS", "EOF received", **opts)
        self.assertEqual(collector.sources[0][0], "127.0.0.1")
        self.assertEqual(sender.stats, {"sent": 4, "dropped": 0})
        self.assertEqual(tracer.stats, {"sent": 4, "dropped": 0, "filtered": 0})

    @defer.inlineCallbacks
    def test_ipv6(self):
        collector, port = self.collector("::1")
        sender = self.sender("::1", port)
        clock = Clock()
        clock.advance(T0)
        tracer = Tracer(sender, reactor=clock, enabled=True)
        conn = Conn(9, local_host="::1", remote_host="::1", local_port=2855, remote_port=41000)
        tracer.connection_event(conn, "ACCEPTED")
        tracer.connection_event(conn, "TLS_HANDSHAKE", False, "certificate verify failed")
        packets = yield collector.wait_for(2)
        self.assertNetEvent(packets[0], conn, "ACCEPTED", "SUCCESS", "Connection accepted...")
        self.assertNetEvent(packets[1], conn, "TLS_HANDSHAKE", "FAILURE", "certificate verify failed")
        self.assertEqual(collector.sources[0][0], "::1")

    @defer.inlineCallbacks
    def test_oversized_datagram_is_dropped_not_raised(self):
        collector, port = self.collector("127.0.0.1")
        sender = self.sender("127.0.0.1", port)
        self.assertFalse(sender.send(b"x" * 65535))
        self.assertTrue(sender.send(hep.HEPPacket(payload=b"after").encode()))
        packets = yield collector.wait_for(1)
        self.assertEqual(packets[0].payload, b"after")
        self.assertEqual(sender.stats, {"sent": 1, "dropped": 1})

    def test_not_started_or_closed_drops(self):
        sender = HEPUDPSender("127.0.0.1", 9, interface="127.0.0.1")
        self.assertFalse(sender.send(b"x"))
        sender.start()
        d = sender.close()
        self.assertFalse(sender.send(b"x"))
        self.assertEqual(sender.stats["dropped"], 2)
        return d

    def test_needs_ip_literal(self):
        with self.assertRaises(ValueError) as cm:
            HEPUDPSender("collector.example.com", 9060)
        self.assertIn("needs an IP address", str(cm.exception))
        with self.assertRaises(ValueError):
            HEPUDPSender("127.0.0.1", 0)

    @defer.inlineCallbacks
    def test_open_sender_udp(self):
        collector, port = self.collector("127.0.0.1")
        sender = open_sender(f"udp:127.0.0.1:{port}", interface="127.0.0.1")
        self.addCleanup(sender.close)
        self.assertIsInstance(sender, HEPUDPSender)
        sender.send(hep.HEPPacket(correlation_id=b"1").encode())
        packets = yield collector.wait_for(1)
        self.assertEqual(packets[0].correlation_id, b"1")


# -- TCP --------------------------------------------------------------------------


def free_tcp_port():
    """A loopback port with nothing listening on it (we held it a moment ago)."""
    probe = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    port = probe.getHost().port
    return port, probe.stopListening()


def ends(packet):
    return (packet.src_ip, packet.src_port, packet.dst_ip, packet.dst_port)


def delays(clock):
    return sorted(round(call.getTime() - clock.seconds(), 6) for call in clock.getDelayedCalls())


class TCPTracingTests(TestCase, NetEventAssertions):
    timeout = 10

    def collector(self, interface="127.0.0.1"):
        collector = TCPCollector()
        port = collector.listen(interface=interface)
        self.addCleanup(collector.go_away)
        return collector, port

    def sender(self, host, port, **kwargs):
        sender = HEPTCPSender(host, port, **kwargs).start()
        self.addCleanup(sender.close)
        return sender

    @defer.inlineCallbacks
    def test_tracer_over_tcp(self):
        collector, port = self.collector()
        sender = self.sender("127.0.0.1", port)
        clock = Clock()
        clock.advance(T0)
        tracer = Tracer(sender, reactor=clock, enabled=True, trace_messages=True, max_body=4)
        conn = Conn(42, remote_port=40000)
        # Sent before the connection is up: queued, then flushed in order.
        tracer.connection_event(conn, "ACCEPTED")
        yield sender.whenConnected()
        for i in range(200):
            tracer.message(conn, "in", b"MSRP t%d SEND\r\n\r\n" % i, b"body")
        tracer.connection_event(conn, "CLOSED", True, "Closed by Proto layer")
        packets = yield collector.wait_for(202)
        self.assertNetEvent(packets[0], conn, "ACCEPTED", "SUCCESS", "Connection accepted...")
        for i, packet in enumerate(packets[1:201]):
            self.assertEqual(packet.payload, b"MSRP t%d SEND\r\n\r\nbody" % i)
            self.assertEqual(packet.proto_type, tracing.MESSAGE_PROTO_TYPE)
            self.assertEqual(packet.correlation_id, b"42")
        self.assertNetEvent(packets[201], conn, "CLOSED", "SUCCESS", "Closed by Proto layer")
        self.assertEqual(sender.stats, {"sent": 202, "dropped": 0, "queued": 0})

    @defer.inlineCallbacks
    def test_ipv6_collector(self):
        collector, port = self.collector("::1")
        sender = open_sender(f"[hep] [::1]:{port}")
        self.addCleanup(sender.close)
        self.assertIsInstance(sender, HEPTCPSender)
        clock = Clock()
        clock.advance(T0)
        tracer = Tracer(sender, reactor=clock, enabled=True)
        conn = Conn(3, "msrps", local_host="::1", remote_host="::1", direction="out")
        tracer.connection_event(conn, "CONNECTED")
        packets = yield collector.wait_for(1)
        self.assertNetEvent(packets[0], conn, "CONNECTED", "SUCCESS", "Successfully connected...")

    @defer.inlineCallbacks
    def test_reconnect_with_backoff(self):
        clock = Clock()
        collector = TCPCollector()
        port = collector.listen()
        self.addCleanup(collector.go_away)
        sender = self.sender(
            "127.0.0.1",
            port,
            clock=clock,
            initial_delay=1.0,
            factor=2.0,
            max_delay=5.0,
            jitter=0,
            max_queue=10,
        )
        yield sender.whenConnected()
        sender.send(hep.HEPPacket(correlation_id=b"1").encode())
        yield collector.wait_for(1)

        lost = sender.whenDisconnected()
        yield collector.go_away()
        yield lost
        self.assertFalse(sender.connected)
        self.assertEqual(delays(clock), [1.0])
        self.assertTrue(sender.send(hep.HEPPacket(correlation_id=b"2").encode()))
        self.assertTrue(sender.send(hep.HEPPacket(correlation_id=b"3").encode()))
        self.assertEqual(sender.stats["queued"], 2)

        for expected_next in (2.0, 4.0, 5.0, 5.0):
            failed = sender.whenConnected(failAfterFailures=1)
            clock.advance(delays(clock)[0])
            yield self.assertFailure(failed, ConnectionRefusedError)
            self.assertEqual(delays(clock), [expected_next])

        collector.listen(port)
        connected = sender.whenConnected()
        clock.advance(5.0)
        yield connected
        packets = yield collector.wait_for(3)
        self.assertEqual([p.correlation_id for p in packets], [b"1", b"2", b"3"])
        self.assertEqual(sender.stats, {"sent": 3, "dropped": 0, "queued": 0})

        # A successful connection resets the backoff.
        lost = sender.whenDisconnected()
        yield collector.go_away()
        yield lost
        self.assertEqual(delays(clock), [1.0])

    @defer.inlineCallbacks
    def test_bounded_queue_while_collector_down(self):
        port, released = free_tcp_port()
        yield released
        clock = Clock()
        sender = HEPTCPSender("127.0.0.1", port, clock=clock, max_queue=3, jitter=0)
        failed = sender.start().whenConnected(failAfterFailures=1)
        results = [sender.send(b"HEP3\x00\x06") for _ in range(5)]
        self.assertEqual(results, [True, True, True, False, False])
        self.assertEqual(sender.stats, {"sent": 0, "dropped": 2, "queued": 3})
        yield self.assertFailure(failed, ConnectionRefusedError)
        yield sender.close()
        self.assertEqual(sender.stats, {"sent": 0, "dropped": 5, "queued": 0})
        self.assertFalse(sender.send(b"HEP3\x00\x06"))
        self.assertEqual(sender.stats["dropped"], 6)
        self.assertEqual(clock.getDelayedCalls(), [])

    @defer.inlineCallbacks
    def test_tracer_counts_sender_drops(self):
        port, released = free_tcp_port()
        yield released
        sender = HEPTCPSender("127.0.0.1", port, clock=Clock(), max_queue=1)
        failed = sender.start().whenConnected(failAfterFailures=1)
        self.addCleanup(sender.close)
        tracer = Tracer(sender, reactor=Clock(), enabled=True)
        conn = Conn(1)
        self.assertTrue(tracer.connection_event(conn, "ACCEPTED"))
        self.assertFalse(tracer.connection_event(conn, "CLOSED", True, "EOF received"))
        self.assertEqual(tracer.stats, {"sent": 1, "dropped": 1, "filtered": 0})
        yield self.assertFailure(failed, ConnectionRefusedError)

    @defer.inlineCallbacks
    def test_close_while_connected_delivers_written_packets(self):
        collector, port = self.collector()
        sender = self.sender("127.0.0.1", port)
        yield sender.whenConnected()
        for i in range(50):
            sender.send(hep.HEPPacket(payload=b"x" * 1000, correlation_id=b"%d" % i).encode())
        server = collector.connections[0]
        yield sender.close()
        yield server.lost
        self.assertEqual(len(collector.packets), 50)
        self.assertFalse(sender.send(b"HEP3\x00\x06"))


class PausingTransport(StringTransport):
    """Pauses its producer after ``limit`` writes, like a full socket buffer."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.writes = 0

    def write(self, data):
        super().write(data)
        self.writes += 1
        if self.writes == self.limit:
            self.producer.pauseProducing()


class TCPBackpressureTests(SynchronousTestCase):
    def connect(self, transport, max_queue=2):
        sender = HEPTCPSender("127.0.0.1", 9060, reactor=Clock(), max_queue=max_queue)
        protocol = sender.buildProtocol(None)
        protocol.makeConnection(transport)
        return sender, protocol

    def test_queue_while_paused(self):
        transport = StringTransport()
        sender, protocol = self.connect(transport)
        self.assertIs(transport.producer, protocol)
        self.assertTrue(transport.streaming)
        self.assertTrue(sender.send(b"a"))
        protocol.pauseProducing()
        self.assertEqual([sender.send(x) for x in (b"b", b"c", b"d")], [True, True, False])
        self.assertEqual(transport.value(), b"a")
        self.assertEqual(sender.stats, {"sent": 1, "dropped": 1, "queued": 2})
        protocol.resumeProducing()
        self.assertEqual(transport.value(), b"abc")
        self.assertTrue(sender.send(b"e"))
        self.assertEqual(transport.value(), b"abce")
        self.assertEqual(sender.stats, {"sent": 4, "dropped": 1, "queued": 0})

    def test_flush_stops_when_paused_midway(self):
        transport = PausingTransport(limit=2)
        sender, protocol = self.connect(transport, max_queue=10)
        sender.send(b"1")
        sender.send(b"2")  # second write pauses us
        for x in (b"3", b"4", b"5"):
            sender.send(x)
        self.assertEqual(transport.value(), b"12")
        transport.limit = 4
        protocol.resumeProducing()  # writes 3 and 4, paused again
        self.assertEqual(transport.value(), b"1234")
        self.assertEqual(sender.stats, {"sent": 4, "dropped": 0, "queued": 1})
        # Sending while packets wait keeps the order.
        sender.send(b"6")
        transport.limit = 100
        protocol.resumeProducing()
        self.assertEqual(transport.value(), b"123456")

    def test_lost_connection_queues_again(self):
        transport = StringTransport()
        sender, protocol = self.connect(transport)
        d = sender.whenDisconnected()
        protocol.connectionLost(None)
        self.assertNoResult(d)
        sender._reactor.advance(0)
        self.assertIsNone(self.successResultOf(d))
        self.assertFalse(sender.connected)
        self.assertTrue(sender.send(b"z"))
        self.assertEqual(transport.value(), b"")
        self.assertEqual(sender.stats["queued"], 1)
        self.assertIsNone(self.successResultOf(sender.whenDisconnected()))

    def test_retry_delay(self):
        sender = HEPTCPSender(
            "127.0.0.1", 9060, reactor=Clock(), initial_delay=0.5, factor=2, max_delay=30, jitter=0
        )
        attempts = (1, 2, 3, 7, 8, 5000)
        self.assertEqual([sender.retry_delay(n) for n in attempts], [0.5, 1, 2, 30, 30, 30])
        sender.jitter = 0.1
        for n in (1, 4, 100):
            base = min(0.5 * 2 ** (n - 1), 30)
            for _ in range(20):
                self.assertTrue(base <= sender.retry_delay(n) <= base * 1.1)

    def test_bad_arguments(self):
        for kwargs in (
            dict(port=0),
            dict(max_queue=-1),
            dict(initial_delay=0),
            dict(initial_delay=5, max_delay=1),
            dict(factor=0.5),
        ):
            args = dict(host="127.0.0.1", port=9060, reactor=Clock())
            args.update(kwargs)
            with self.assertRaises(ValueError, msg=kwargs):
                HEPTCPSender(**args)


# -- the tracer's own logic -----------------------------------------------------


class TracerTests(SynchronousTestCase, NetEventAssertions):
    def tracer(self, **kwargs):
        clock = Clock()
        clock.advance(T0)
        sender = RecordingSender()
        kwargs.setdefault("enabled", True)
        return Tracer(sender, reactor=clock, **kwargs), sender, clock

    def test_disabled_sends_nothing_and_skips_filter(self):
        calls = []
        tracer, sender, _ = self.tracer(enabled=False, connection_filter=lambda **kw: calls.append(kw))
        conn = Conn(1)
        self.assertFalse(tracer.enabled)
        self.assertFalse(tracer.connection_event(conn, "ACCEPTED"))
        tracer.trace_messages = True
        self.assertFalse(tracer.message(conn, "in", b"MSRP a SEND\r\n"))
        self.assertEqual((sender.packets, calls), ([], []))
        tracer.enabled = True
        self.assertTrue(tracer.connection_event(conn, "CONNECTED"))
        self.assertEqual(len(calls), 1)
        tracer.enabled = 0
        self.assertIs(tracer.enabled, False)
        tracer.connection_event(conn, "CLOSED", True, "EOF received")
        self.assertEqual(len(sender.packets), 1)

    def test_filter_arguments_and_called_once_per_connection(self):
        calls = []

        def record(**kw):
            calls.append(kw)
            return True

        tracer, sender, _ = self.tracer(connection_filter=record, trace_messages=True)
        a = Conn(1, "msrps", local_host="10.0.0.2", local_port=2855, remote_host="10.0.0.1", remote_port=40000)
        b = Conn(2, direction="out")
        tracer.connection_event(a, "ACCEPTED")
        tracer.message(a, "in", b"MSRP x SEND\r\n")
        tracer.connection_event(b, "CONNECTED")
        tracer.connection_event(a, "SEND_TIMEOUT", False)
        tracer.connection_event(b, "CLOSED", True, "EOF received")
        self.assertEqual(
            calls,
            [
                dict(
                    si="10.0.0.1",
                    sp=40000,
                    socket_ip="10.0.0.2",
                    socket_port=2855,
                    proto="msrps",
                    direction="in",
                ),
                dict(
                    si="127.0.0.1",
                    sp=40000,
                    socket_ip="127.0.0.1",
                    socket_port=2855,
                    proto="msrp",
                    direction="out",
                ),
            ],
        )
        self.assertEqual(len(sender.packets), 5)

    def test_filter_false_drops_the_connection(self):
        tracer, sender, _ = self.tracer(connection_filter=only_port_9000)
        dropped, kept = Conn(1, remote_port=8000), Conn(2, remote_port=9000)
        for conn in (dropped, kept):
            tracer.connection_event(conn, "ACCEPTED")
            tracer.connection_event(conn, "MAX_MSG_CHUNKS", False)
        self.assertEqual([p.correlation_id for p in sender.packets], [b"2", b"2"])
        self.assertEqual(tracer.stats, {"sent": 2, "dropped": 0, "filtered": 2})
        self.assertNetEvent(sender.packets[1], kept, "MAX_MSG_CHUNKS", "FAILURE", "Message arrived in too many chunks")

    def test_decision_cached_until_closed_or_forgotten(self):
        verdicts = [False, True, False]
        calls = []

        def flip(**kw):
            calls.append(kw)
            return verdicts[len(calls) - 1]

        tracer, sender, _ = self.tracer(connection_filter=flip)
        conn = Conn(5)
        tracer.connection_event(conn, "ACCEPTED")
        tracer.connection_event(conn, "CLOSED", True, "EOF received")  # still dropped, then forgotten
        self.assertEqual((len(calls), sender.packets), (1, []))
        reused = Conn(5)  # the same id again, after CLOSED
        tracer.connection_event(reused, "ACCEPTED")
        tracer.connection_event(reused, "SEND_TIMEOUT", False)
        self.assertEqual((len(calls), len(sender.packets)), (2, 2))
        tracer.forget(reused)
        tracer.forget(reused)  # idempotent
        tracer.connection_event(reused, "CONNECTED")
        self.assertEqual((len(calls), len(sender.packets)), (3, 2))

    def test_filter_returning_none_means_trace(self):
        tracer, sender, _ = self.tracer(connection_filter=lambda **kw: None)
        self.assertTrue(tracer.connection_event(Conn(1), "ACCEPTED"))
        self.assertEqual(len(sender.packets), 1)

    def test_filter_exception_is_logged_and_traces(self):
        calls = []

        def broken_filter(**kw):
            calls.append(kw)
            raise ZeroDivisionError("oops")

        logs = capture_logs(self)
        tracer, sender, _ = self.tracer(connection_filter=broken_filter)
        conn = Conn(77, remote_host="10.1.1.1", remote_port=1234)
        self.assertTrue(tracer.connection_event(conn, "ACCEPTED"))
        self.assertTrue(tracer.connection_event(conn, "CLOSED", True, "EOF received"))
        self.assertEqual(len(calls), 1)
        self.assertEqual(len(sender.packets), 2)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        texts = [formatEvent(e) for e in logs if e.get("log_failure") is not None]
        self.assertEqual(len(texts), 1)
        self.assertIn("broken_filter", texts[0])
        self.assertIn("77", texts[0])
        self.assertIn("10.1.1.1:1234", texts[0])

    def test_default_and_custom_messages(self):
        tracer, sender, _ = self.tracer()
        conn = Conn(1)
        expected = [
            ("ACCEPTED", False, None, "ACCEPTED", "Failed to accept connection..."),
            ("CONNECT", False, None, "CONNECT_START", "Failed to connect..."),
            ("CONNECTED", True, None, "CONNECTED", "Successfully connected..."),
            ("TLS_HANDSHAKE", True, None, "TLS_HANDSHAKE", "TLS handshake completed"),
            ("SEND_TIMEOUT", False, None, "SEND_TIMEOUT", "Timeout waiting for the socket to become writable"),
            ("READ_TIMEOUT", False, None, "READ_TIMEOUT", "Timeout waiting for a complete message"),
            ("IDLE", False, None, "IDLE", "Timeout on no traffic"),
            ("FRAMING", False, "framing error: bad end-line", "FRAMING", "framing error: bad end-line"),
            ("MAX_MSG_CHUNKS", True, "custom", "MAX_MSG_CHUNKS", "custom"),
            ("CLOSED", True, None, "CLOSED", None),
        ]
        for event, ok, message, wire, text in expected:
            tracer.connection_event(conn, event, ok, message)
        for packet, (event, ok, message, wire, text) in zip(sender.packets, expected):
            self.assertNetEvent(packet, conn, wire, "SUCCESS" if ok else "FAILURE", text)
        self.assertEqual(len(sender.packets), len(expected))

    def test_unknown_event_is_logged_once_and_not_traced(self):
        logs = capture_logs(self)
        calls = []
        tracer, sender, _ = self.tracer(connection_filter=lambda **kw: calls.append(kw))
        self.assertFalse(tracer.connection_event(Conn(1), "OPENED"))
        self.assertFalse(tracer.connection_event(Conn(2), "OPENED", False, "x"))
        self.assertFalse(tracer.connection_event(Conn(3), ["not", "hashable"]))
        self.assertEqual((sender.packets, calls), ([], []))
        texts = [formatEvent(e) for e in logs if "unknown connection event" in formatEvent(e)]
        self.assertEqual(len(texts), 2)  # OPENED once, the list once
        self.assertIn("'OPENED'", texts[0])
        self.assertIn("CLOSED", texts[0])

    def test_bad_message_direction(self):
        tracer, sender, _ = self.tracer(enabled=False)
        with self.assertRaises(ValueError) as cm:
            tracer.message(Conn(1), "sideways", b"")
        self.assertIn("'sideways'", str(cm.exception))

    def test_unknown_end_is_unspecified_address_port_0(self):
        tracer, sender, _ = self.tracer()
        # What the connection manager reports for a connect that failed.
        failed = Conn(9, local_host=None, local_port=None, remote_host="10.0.0.9", remote_port=2855)
        tracer.connection_event(failed, "CONNECT", False, "connect to 10.0.0.9:2855 failed: refused")
        v6 = Conn(10, local_host=None, local_port=None, remote_host="2001:db8::9", remote_port=2855)
        tracer.connection_event(v6, "CONNECT", False)
        both = Conn(11, local_host=None, local_port=None, remote_host=None, remote_port=None)
        tracer.connection_event(both, "CONNECT", False)
        a, b, c = sender.packets
        self.assertEqual((a.ip_family,) + ends(a), (2, "10.0.0.9", 2855, "0.0.0.0", 0))
        self.assertEqual((b.ip_family,) + ends(b), (10, "2001:db8::9", 2855, "::", 0))
        self.assertEqual((c.ip_family,) + ends(c), (2, "0.0.0.0", 0, "0.0.0.0", 0))
        self.assertEqual(
            json.loads(a.payload)["Message"], "connect to 10.0.0.9:2855 failed: refused"
        )
        self.assertEqual(json.loads(a.payload)["Event"], "CONNECT_START")

    def test_decision_forgotten_after_failed_connect(self):
        calls = []
        tracer, sender, _ = self.tracer(connection_filter=lambda **kw: calls.append(kw))
        tracer.connection_event(Conn(1, direction="out"), "CONNECT", True)
        tracer.connection_event(Conn(1, direction="out"), "CONNECTED", False)
        tracer.connection_event(Conn(2, direction="out"), "CONNECT", False)
        self.assertEqual(tracer._decisions, {})
        self.assertEqual(len(calls), 2)
        tracer.connection_event(Conn(3), "ACCEPTED")
        tracer.connection_event(Conn(3), "IDLE", False, "idle for 60s")
        self.assertEqual(list(tracer._decisions), [3])
        self.assertEqual(json.loads(sender.packets[-1].payload)["Event"], "IDLE")

    def test_decision_cache_is_bounded(self):
        calls = []
        tracer, sender, _ = self.tracer(
            connection_filter=lambda **kw: calls.append(kw), max_decisions=2
        )
        for conn_id in (1, 2, 3):
            tracer.connection_event(Conn(conn_id), "ACCEPTED")
        self.assertEqual(list(tracer._decisions), [2, 3])
        tracer.connection_event(Conn(3), "IDLE", False)
        self.assertEqual(len(calls), 3)
        tracer.connection_event(Conn(1), "IDLE", False)  # evicted: asked again
        self.assertEqual(len(calls), 4)

    def test_message_traces(self):
        calls = []
        tracer, sender, clock = self.tracer(connection_filter=lambda **kw: calls.append(kw), max_body=5)
        conn = Conn(12, local_host="10.0.0.2", local_port=2855, remote_host="10.0.0.1", remote_port=40000)
        head = b"MSRP abc SEND\r\nTo-Path: msrp://a\r\n\r\n"
        self.assertFalse(tracer.message(conn, "in", head, b"hello world"))  # trace_messages is off
        self.assertEqual(calls, [])
        tracer.trace_messages = True
        clock.advance(0.5)
        self.assertTrue(tracer.message(conn, "in", head, b"hello world"))
        self.assertTrue(tracer.message(conn, "out", head, None))
        received, sent = sender.packets
        self.assertEqual(received.payload, head + b"hello")
        self.assertEqual(sent.payload, head)
        for packet in (received, sent):
            self.assertEqual(packet.proto_type, 0x64)
            self.assertEqual(packet.ip_protocol, 6)
            self.assertEqual(packet.correlation_id, b"12")
            self.assertEqual((packet.timestamp, packet.timestamp_usec), (1700000000, 623456))
        self.assertEqual(ends(received), ("10.0.0.1", 40000, "10.0.0.2", 2855))
        self.assertEqual(ends(sent), ("10.0.0.2", 2855, "10.0.0.1", 40000))
        self.assertEqual(len(calls), 1)

    def test_huge_message_is_truncated_to_fit(self):
        tracer, sender, _ = self.tracer(trace_messages=True, max_body=10**6)
        self.assertTrue(tracer.message(Conn(1), "in", b"H" * 100, b"B" * 100000))
        self.assertLess(len(sender.packets[0].payload), 65507 - 200)
        self.assertTrue(sender.packets[0].payload.startswith(b"H" * 100 + b"B"))

    def test_homer5_payload(self):
        tracer, sender, _ = self.tracer(homer5_delim="##")
        tracer.connection_event(Conn(1, "msrps"), "CONNECTED")
        self.assertEqual(sender.packets[0].payload, b"MSRPS##CONNECTED##SUCCESS##Successfully connected...")

    def test_address_families_are_made_consistent(self):
        tracer, sender, _ = self.tracer()
        mapped_local = Conn(1, local_host="::ffff:127.0.0.1", remote_host="127.0.0.1")
        tracer.connection_event(mapped_local, "ACCEPTED")
        tracer.connection_event(Conn(2, local_host="::1", remote_host="127.0.0.1"), "ACCEPTED")
        tracer.connection_event(Conn(3, local_host="::1", remote_host="[2001:db8::1]"), "ACCEPTED")
        a, b, c = sender.packets
        self.assertEqual((a.ip_family, a.src_ip, a.dst_ip), (2, "127.0.0.1", "127.0.0.1"))
        mapped = str(ipaddress.IPv6Address("::ffff:127.0.0.1"))
        self.assertEqual((b.ip_family, b.src_ip, b.dst_ip), (10, mapped, "::1"))
        self.assertEqual((c.ip_family, c.src_ip, c.dst_ip), (10, "2001:db8::1", "::1"))

    def test_unbuildable_trace_is_dropped_and_logged(self):
        logs = capture_logs(self)
        tracer, sender, _ = self.tracer()
        self.assertFalse(tracer.connection_event(Conn(4, remote_host="peer.example.com"), "ACCEPTED"))
        self.assertFalse(tracer.connection_event(Conn(5, remote_port=70000), "ACCEPTED"))
        self.assertEqual(sender.packets, [])
        self.assertEqual(tracer.stats, {"sent": 0, "dropped": 2, "filtered": 0})
        texts = [formatEvent(e) for e in logs if "HEP trace" in formatEvent(e)]
        self.assertEqual(len(texts), 2)
        self.assertIn("peer.example.com", texts[0])

    def test_sender_refusal_and_failure(self):
        tracer, sender, _ = self.tracer()
        sender.accept = False
        self.assertFalse(tracer.connection_event(Conn(1), "ACCEPTED"))

        class Exploding:
            def send(self, data):
                raise RuntimeError("boom")

        tracer.sender = Exploding()
        self.assertFalse(tracer.connection_event(Conn(1), "ACCEPTED"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(tracer.stats, {"sent": 0, "dropped": 2, "filtered": 0})

    def test_constructor_validation(self):
        for kwargs, words in (
            (dict(capture_id=-1), "capture_id"),
            (dict(capture_id=2**32), "capture_id"),
            (dict(auth_key=5), "auth_key"),
            (dict(connection_filter="pkg:func"), "callable"),
            (dict(max_body=-1), "max_body"),
            (dict(max_decisions=0), "max_decisions"),
        ):
            with self.assertRaises(ValueError) as cm:
                Tracer(RecordingSender(), reactor=Clock(), **kwargs)
            self.assertIn(words, str(cm.exception))


class LoadFilterTests(SynchronousTestCase):
    def test_good_names(self):
        import os.path

        self.assertIs(load_filter("tests.test_tracing:only_port_9000"), only_port_9000)
        self.assertIs(load_filter("tests.test_tracing.only_port_9000"), only_port_9000)
        self.assertIs(load_filter("os.path:join"), os.path.join)
        self.assertIs(load_filter(" os.path.join "), os.path.join)
        self.assertIs(load_filter("msrp_twisted.tracing:Tracer.forget"), Tracer.forget)

    def test_bad_names(self):
        cases = {
            "": "non-empty",
            "single": "'package.module:function'",
            "a:b:c": "'b:c' is not a Python identifier",
            "1abc:f": "'1abc' is not a Python identifier",
            "os.path:": "'' is not a Python identifier",
            ":join": "'' is not a Python identifier",
            "no_such_module_xyz:f": "no module 'no_such_module_xyz'",
            "no_such_module_xyz.f": "no module 'no_such_module_xyz'",
            "os.path:no_such_function": "'os.path' has no attribute 'no_such_function'",
            "os.nope.func": "'os' has no attribute 'nope'",
            "os:sep": "is not callable (str)",
        }
        for name, words in cases.items():
            with self.assertRaises(ValueError, msg=name) as cm:
                load_filter(name)
            self.assertIn(words, str(cm.exception), name)
        with self.assertRaises(ValueError):
            load_filter(None)


class CredentialRedactionTests(SynchronousTestCase):
    def test_digest_credentials_never_reach_a_message_trace(self):
        from msrp_twisted.tracing import _redact

        head = (b"MSRP t1234 AUTH\r\nTo-Path: msrp://r:2855;tcp\r\nFrom-Path: msrp://a:2855/s;tcp\r\n"
                b'authorization: Digest username="alice", response="0123abcd"\r\n'
                b'Authentication-Info: rspauth="99ff"\r\nExpires: 900\r\n')
        out = _redact(head)
        self.assertNotIn(b"0123abcd", out)
        self.assertNotIn(b"99ff", out)
        self.assertIn(b"authorization: <redacted>\r\n", out)
        self.assertIn(b"Expires: 900\r\n", out)
        self.assertIn(b"To-Path: msrp://r:2855;tcp\r\n", out)
