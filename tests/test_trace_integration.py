"""HEP traces of real connections (issue 6): a ConnectionManager with a
Tracer among its observers, wired as msrp_twisted.service does it, real
MSRP and MSRPS connections on loopback, and a real UDP collector that
decodes every datagram with msrp_twisted.core.hep.

Nothing here waits for time to pass. To show that something was *not*
traced, a test waits (through an observer registered after the tracer)
until every event of the connection has happened, and then until the
collector has received as many datagrams as the sender handed to the
kernel: whatever was sent has then arrived, and any extra trace would have
been counted.
"""

import json
import time

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.logger import capturedLogs
from twisted.trial.unittest import TestCase

from msrp_twisted.connections import ConnectionManager, SendError
from msrp_twisted.core import hep
from msrp_twisted.core.uri import parse_uri
from msrp_twisted.protocol import TransportSettings
from msrp_twisted.tls import TLSSettings, clear_client_creator_cache
from msrp_twisted.tracing import HEPUDPSender, Tracer
from msrp_twisted.transactions import TransactionManager
from tests.certs import get_test_pki

CAPTURE_ID = 2001
AUTH_KEY = b"hep-secret"


class UDPCollector(DatagramProtocol):
    """A HEP collector: decodes every datagram, strictly."""

    def __init__(self):
        self.packets = []
        self._waiting = []

    def datagramReceived(self, data, addr):
        self.packets.append(hep.decode_hep(data))
        self._check()

    def wait_for(self, count):
        d = defer.Deferred()
        self._waiting.append((count, d))
        self._check()
        return d

    def _check(self):
        ready = [(n, d) for n, d in self._waiting if len(self.packets) >= n]
        self._waiting = [(n, d) for n, d in self._waiting if len(self.packets) < n]
        for n, d in ready:
            d.callback(list(self.packets))


class EventLog:
    """Connection events as the transport reports them."""

    def __init__(self):
        self.events = []
        self._waiting = []

    def connection_event(self, conn, event, success, message):
        self.events.append((conn, event, success, message))
        waiting, self._waiting = self._waiting, []
        for predicate, d in waiting:
            if predicate(conn, event):
                d.callback(conn)
            else:
                self._waiting.append((predicate, d))

    def wait(self, event, direction=None, conn_id=None, remote_port=None):
        """The connection of the first (past or future) matching event."""
        def predicate(conn, ev):
            return (ev == event and direction in (None, conn.direction)
                    and conn_id in (None, conn.conn_id)
                    and remote_port in (None, conn.remote_port))
        for conn, ev, _, _ in self.events:
            if predicate(conn, ev):
                return defer.succeed(conn)
        d = defer.Deferred()
        self._waiting.append((predicate, d))
        return d

    def closed(self, conn_id):
        return any(c.conn_id == conn_id and e == "CLOSED" for c, e, _, _ in self.events)

    def ids(self, direction):
        return sorted({c.conn_id for c, e, _, _ in self.events if c.direction == direction})


def cjson(protocol, event, status, message):
    """The payload as OpenSIPS prints it (cJSON_Print), spelled out here
    independently of the encoder."""
    return ('{\n\t"Protocol":\t"%s",\n\t"Event":\t"%s",\n\t"Status":\t"%s",\n\t"Message":\t"%s"\n}'
            % (protocol, event, status, message)).encode()


class TraceIntegrationTests(TestCase):
    timeout = 15

    @defer.inlineCallbacks
    def setUp(self):
        self.collector = UDPCollector()
        self.collector_port = reactor.listenUDP(0, self.collector, interface="127.0.0.1")
        self.addCleanup(self.collector_port.stopListening)
        self.sender = HEPUDPSender("127.0.0.1", self.collector_port.getHost().port,
                                   interface="127.0.0.1").start()
        self.addCleanup(self.sender.close)
        self.tracer = Tracer(self.sender, enabled=True, capture_id=CAPTURE_ID, auth_key=AUTH_KEY)
        self.log = EventLog()
        # The tracer first, as service.py registers it after its own
        # observer: the log then hears of an event after it was traced.
        self.manager = ConnectionManager(
            settings=TransportSettings(tls_handshake_timeout=5000), observers=[self.tracer, self.log])
        TransactionManager(self.manager)
        self.addCleanup(self.close_everything)
        self.pki = get_test_pki()
        clear_client_creator_cache()
        self.addCleanup(clear_client_creator_cache)
        self.port = yield self.manager.listen("msrp:127.0.0.1:0")
        self.listen_port = self.port.getHost().port
        self.start = time.time()

    def server_tls(self):
        return TLSSettings(cert_file=self.pki.server.cert, key_file=self.pki.server.key)

    @defer.inlineCallbacks
    def close_everything(self):
        waits = []
        for conn in list(self.manager.connections.values()):
            waits.append(self.log.wait("CLOSED", conn_id=conn.conn_id))
            conn.close("test finished")
        yield defer.gatherResults(waits)
        yield self.manager.stop_listening()

    @defer.inlineCallbacks
    def connect_and_close(self, port=None):
        """A real MSRP connection to our own listener, closed by the client.
        Returns (outbound conn, inbound conn) once both are CLOSED."""
        out = yield self.manager.connection_for(
            parse_uri("msrp://127.0.0.1:%d/s1;tcp" % (port or self.listen_port)))
        inbound = yield self.log.wait("ACCEPTED", "in", remote_port=out.local_port)
        closed = [self.log.wait("CLOSED", conn_id=out.conn_id),
                  self.log.wait("CLOSED", conn_id=inbound.conn_id)]
        out.close("test done", abort=False)
        yield defer.gatherResults(closed)
        return out, inbound

    def all_sent(self):
        """Every datagram the sender handed to the kernel, once received."""
        self.assertEqual(self.sender.stats["dropped"], 0)
        return self.collector.wait_for(self.sender.stats["sent"])

    def by_conn(self, packets):
        grouped = {}
        for packet in packets:
            grouped.setdefault(packet.correlation_id, []).append(packet)
        return grouped

    def assertTrace(self, packet, protocol, event, status, src, dst):
        self.assertEqual(packet.ip_family, hep.FAMILY_IPV4)
        self.assertEqual(packet.ip_protocol, hep.IPPROTO_TCP)
        self.assertEqual(packet.proto_type, hep.PROTO_NET)
        self.assertEqual(packet.capture_id, CAPTURE_ID)
        self.assertEqual(packet.auth_key, AUTH_KEY)
        self.assertEqual((packet.src_ip, packet.src_port), src)
        self.assertEqual((packet.dst_ip, packet.dst_port), dst)
        self.assertTrue(self.start - 1 <= packet.timestamp <= time.time() + 1)
        self.assertTrue(0 <= packet.timestamp_usec < 1000000)
        self.assertEqual(packet.unknown_chunks, [])
        payload = json.loads(packet.payload)
        self.assertEqual(list(payload), ["Protocol", "Event", "Status", "Message"])
        self.assertEqual((payload["Protocol"], payload["Event"], payload["Status"]),
                         (protocol, event, status))
        return payload["Message"]

    @defer.inlineCallbacks
    def test_accept_connect_and_close(self):
        out, inbound = yield self.connect_and_close()
        packets = yield self.all_sent()
        self.assertEqual(len(packets), 4)
        grouped = self.by_conn(packets)
        self.assertEqual(set(grouped), {str(out.conn_id).encode(), str(inbound.conn_id).encode()})
        listener = ("127.0.0.1", self.listen_port)
        client = ("127.0.0.1", out.local_port)
        self.assertEqual(inbound.remote_port, out.local_port)

        # The accepted side: source = the client, destination = our listener.
        accepted, closed = grouped[str(inbound.conn_id).encode()]
        message = self.assertTrace(accepted, "MSRP", "ACCEPTED", "SUCCESS", client, listener)
        self.assertEqual(accepted.payload, cjson("MSRP", "ACCEPTED", "SUCCESS", message))
        self.assertEqual(message, "accepted from 127.0.0.1:%d" % out.local_port)
        message = self.assertTrace(closed, "MSRP", "CLOSED", "SUCCESS", client, listener)
        self.assertEqual(message, "closed by peer")

        # The outbound side: source = the listener we connected to,
        # destination = our ephemeral socket.
        connected, closed = grouped[str(out.conn_id).encode()]
        message = self.assertTrace(connected, "MSRP", "CONNECTED", "SUCCESS", listener, client)
        self.assertEqual(message, "connected to 127.0.0.1:%d" % self.listen_port)
        message = self.assertTrace(closed, "MSRP", "CLOSED", "SUCCESS", listener, client)
        self.assertEqual(message, "test done")
        self.assertEqual(self.tracer.stats, {"sent": 4, "dropped": 0, "filtered": 0})

    @defer.inlineCallbacks
    def test_failed_tls_handshake(self):
        port = yield self.manager.listen(
            "msrps:127.0.0.1:0", tls=self.server_tls())
        tls_port = port.getHost().port
        inbound = self.log.wait("ACCEPTED", "in")
        # The client trusts another CA: it refuses the server's certificate.
        attempt = self.manager.connection_for(
            parse_uri("msrps://127.0.0.1:%d/s1;tcp" % tls_port),
            tls=TLSSettings(ca_file=self.pki.unknown_ca_bundle))
        failure = yield self.assertFailure(attempt, SendError)
        self.assertIn("TLS handshake failed", str(failure))
        inbound = yield inbound
        [out_id] = self.log.ids("out")
        yield self.log.wait("CLOSED", conn_id=out_id)
        yield self.log.wait("CLOSED", conn_id=inbound.conn_id)
        packets = yield self.all_sent()
        grouped = self.by_conn(packets)
        self.assertEqual(set(grouped), {str(out_id).encode(), str(inbound.conn_id).encode()})
        listener = ("127.0.0.1", tls_port)
        client = ("127.0.0.1", inbound.remote_port)

        out_packets = grouped[str(out_id).encode()]
        self.assertEqual([json.loads(p.payload)["Event"] for p in out_packets],
                         ["CONNECTED", "TLS_HANDSHAKE", "CLOSED"])
        self.assertTrace(out_packets[0], "MSRPS", "CONNECTED", "SUCCESS", listener, client)
        message = self.assertTrace(out_packets[1], "MSRPS", "TLS_HANDSHAKE", "FAILURE", listener, client)
        self.assertIn("TLS handshake failed", message)
        self.assertIn("certificate verify failed", message)
        message = self.assertTrace(out_packets[2], "MSRPS", "CLOSED", "SUCCESS", listener, client)
        self.assertIn("TLS handshake failed", message)

        in_packets = grouped[str(inbound.conn_id).encode()]
        self.assertEqual([json.loads(p.payload)["Event"] for p in in_packets],
                         ["ACCEPTED", "TLS_HANDSHAKE", "CLOSED"])
        self.assertTrace(in_packets[0], "MSRPS", "ACCEPTED", "SUCCESS", client, listener)
        message = self.assertTrace(in_packets[1], "MSRPS", "TLS_HANDSHAKE", "FAILURE", client, listener)
        self.assertIn("TLS handshake failed", message)
        self.assertTrace(in_packets[2], "MSRPS", "CLOSED", "SUCCESS", client, listener)
        self.assertEqual(self.manager.stats["tls_failures"], 2)

    @defer.inlineCallbacks
    def test_tls_handshake_timeout(self):
        self.manager.settings.tls_handshake_timeout = 200
        port = yield self.manager.listen(
            "msrps:127.0.0.1:0", tls=self.server_tls())
        # A TCP client that never starts TLS.
        silent = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), Protocol())
        self.addCleanup(silent.transport.abortConnection)
        inbound = yield self.log.wait("ACCEPTED", "in")
        yield self.log.wait("CLOSED", conn_id=inbound.conn_id)
        packets = yield self.all_sent()
        self.assertEqual([json.loads(p.payload)["Event"] for p in packets],
                         ["ACCEPTED", "TLS_HANDSHAKE", "CLOSED"])
        self.assertEqual({p.correlation_id for p in packets}, {str(inbound.conn_id).encode()})
        client = ("127.0.0.1", silent.transport.getHost().port)
        listener = ("127.0.0.1", port.getHost().port)
        message = self.assertTrace(packets[1], "MSRPS", "TLS_HANDSHAKE", "FAILURE", client, listener)
        self.assertIn("200 ms", message)

    @defer.inlineCallbacks
    def test_trace_off_sends_nothing(self):
        self.tracer.enabled = False
        yield self.connect_and_close()
        self.assertEqual(self.sender.stats, {"sent": 0, "dropped": 0})
        self.assertEqual(self.tracer.stats["sent"], 0)
        # Switched on at run time (the msrp_trace MI command): the next
        # connection is traced, and its traces are the first to arrive.
        self.tracer.enabled = True
        out, inbound = yield self.connect_and_close()
        packets = yield self.all_sent()
        self.assertEqual(len(packets), 4)
        self.assertEqual({p.correlation_id for p in packets},
                         {str(out.conn_id).encode(), str(inbound.conn_id).encode()})

    @defer.inlineCallbacks
    def test_filter_false_drops_the_connection(self):
        calls = []

        def only_outbound(si, sp, socket_ip, socket_port, proto, direction):
            calls.append(dict(si=si, sp=sp, socket_ip=socket_ip, socket_port=socket_port,
                              proto=proto, direction=direction))
            return direction != "in"

        self.tracer.connection_filter = only_outbound
        out, inbound = yield self.connect_and_close()
        packets = yield self.all_sent()
        self.assertEqual(len(packets), 2)
        self.assertEqual({p.correlation_id for p in packets}, {str(out.conn_id).encode()})
        self.assertEqual(self.tracer.stats["filtered"], 2)
        # Called once per connection, with the connection's ends.
        self.assertEqual(sorted(calls, key=lambda c: c["direction"]), [
            dict(si="127.0.0.1", sp=out.local_port, socket_ip="127.0.0.1", socket_port=self.listen_port,
                 proto="msrp", direction="in"),
            dict(si="127.0.0.1", sp=self.listen_port, socket_ip="127.0.0.1", socket_port=out.local_port,
                 proto="msrp", direction="out"),
        ])

    @defer.inlineCallbacks
    def test_filter_that_raises_means_trace(self):
        def broken(**kwargs):
            raise RuntimeError("bug in the filter")

        self.tracer.connection_filter = broken
        with capturedLogs() as events:
            yield self.connect_and_close()
        packets = yield self.all_sent()
        self.assertEqual(len(packets), 4)
        failures = [e for e in events if e.get("log_failure") is not None]
        self.assertEqual(len(failures), 2)
        self.assertTrue(all(e["log_failure"].check(RuntimeError) for e in failures))
        self.flushLoggedErrors(RuntimeError)

    @defer.inlineCallbacks
    def test_messages_are_traced_both_ways(self):
        """trace_messages: start line, headers and a body prefix of every
        message, correlated with the connection events by the connection id."""
        self.tracer.trace_messages = True
        self.tracer.max_body = 10
        self.manager.tracer = self.tracer
        tm = self.manager.handler
        body = b"0123456789abcdefghij"
        response = yield tm.send_request(
            [parse_uri("msrp://127.0.0.1:%d/nobody;tcp" % self.listen_port)],
            [parse_uri("msrp://127.0.0.1:1/me;tcp")], "SEND",
            [("Message-ID", "m1234"), ("Content-Type", "text/plain")], body, tid="tracedtid1")
        self.assertEqual(response.code, 481)
        packets = yield self.all_sent()
        messages = [p for p in packets if p.proto_type == self.tracer.message_proto_type]
        self.assertEqual(len(messages), 4)  # SEND out/in, 481 out/in
        sends = [p for p in messages if p.payload.startswith(b"MSRP tracedtid1 SEND\r\n")]
        replies = [p for p in messages if p.payload.startswith(b"MSRP tracedtid1 481")]
        self.assertEqual((len(sends), len(replies)), (2, 2))
        for p in sends:
            # Headers, the blank line, then only max_body bytes of the body.
            self.assertIn(b"Message-ID: m1234\r\n", p.payload)
            self.assertTrue(p.payload.endswith(b"\r\n\r\n0123456789"), p.payload)
        # The sent and the received copy share their connection's id with
        # that connection's ACCEPTED / CONNECTED traces.
        events = {p.correlation_id for p in packets if p.proto_type == hep.PROTO_NET}
        self.assertEqual({p.correlation_id for p in messages}, events)
        out_send = [p for p in sends if p.src_port != self.listen_port][0]
        self.assertEqual(out_send.dst_port, self.listen_port)

    @defer.inlineCallbacks
    def test_messages_not_traced_when_off(self):
        self.manager.tracer = self.tracer  # trace_messages stays False
        tm = self.manager.handler
        yield tm.send_request(
            [parse_uri("msrp://127.0.0.1:%d/nobody;tcp" % self.listen_port)],
            [parse_uri("msrp://127.0.0.1:1/me;tcp")], "SEND", [("Message-ID", "m1234")])
        packets = yield self.all_sent()
        self.assertEqual([p for p in packets if p.proto_type != hep.PROTO_NET], [])
