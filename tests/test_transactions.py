"""The transaction layer: transactions, request routing and the signalling
operations, driven with a fake clock and in-memory transports.

Two kinds of harness are used. A ``Wire`` is one MSRPProtocol of the stack
under test on a StringTransport, with the test playing the far end byte for
byte (so every header of what the stack writes can be checked). A ``Link``
joins two stacks' MSRPProtocols back to back, for round trips.
"""

import itertools
from io import BytesIO

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Cooperator
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import FileBodyProducer
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer
from zope.interface.verify import verifyObject

from msrp_twisted import transactions
from msrp_twisted.connections import ConnectionManager, SendError
from msrp_twisted.core import ids
from msrp_twisted.core.errors import SerializationError
from msrp_twisted.core.message import Request, Response
from msrp_twisted.core.parser import (
    BodyData,
    MessageAssembler,
    MessageEnd,
    MessageStart,
    Parser,
)
from msrp_twisted.core.serializer import head as serialize_head
from msrp_twisted.core.serializer import serialize
from msrp_twisted.core.uri import parse_uri
from msrp_twisted.protocol import IBodySink, MSRPProtocol, TransportSettings
from msrp_twisted.transactions import (
    DEFAULT_TIMEOUT,
    IRequestHandler,
    TransactionConnectionLost,
    TransactionError,
    TransactionManager,
    TransactionTimeout,
)

A = "msrp://alice.example:2855/sa;tcp"
B = "msrp://bob.example:2855/sb;tcp"
C = "msrp://carol.example:2855/sc;tcp"
R = "msrp://relay.example:2855/sr;tcp"
R2 = "msrp://relay2.example:2855/sr2;tcp"

TEXT = [("Content-Type", "text/plain")]


def quiet_settings():
    """No idle, read or send timers and no drip guard: the only delayed
    calls left on the clock are the transaction layer's."""
    return TransportSettings(idle_timeout=0, msg_read_timeout=0, send_timeout=0, max_msg_chunks=0)


_ports = itertools.count(40000)


class Wire:
    """A connection of the stack under test; the test is the far end."""

    def __init__(self, conn, transport):
        self.conn = conn
        self.transport = transport
        self._assembler = MessageAssembler(Parser(max_body=0))

    def feed(self, data):
        self.conn.dataReceived(data)

    def received(self):
        """What the stack wrote since the last call, as parsed messages."""
        data = self.transport.value()
        self.transport.clear()
        return self._assembler.feed(data)

    def respond(self, request, code, comment=None, to=None, frm=None):
        """Answer a request the stack sent on this wire."""
        to = to or request.headers["From-Path"].split()[0]
        frm = frm or request.headers["To-Path"].split()[0]
        self.feed(serialize(Response(request.tid, code, comment, [("To-Path", to), ("From-Path", frm)])))

    def lose(self):
        self.conn.connectionLost(Failure(ConnectionDone("gone")))


class Node:
    """One MSRP stack (connections + transactions) on a fake clock."""

    def __init__(self, clock=None, timeout=DEFAULT_TIMEOUT, uri=B):
        self.clock = clock if clock is not None else MemoryReactorClock()
        self.connections = ConnectionManager(settings=quiet_settings(), reactor=self.clock)
        self.tm = TransactionManager(self.connections, timeout=timeout)
        self.uri = parse_uri(uri)

    def wire(self, direction="in", peer=None, local=("127.0.0.1", 2855), remote=None):
        """A new connection; ``peer`` is a URI traffic for which may use it."""
        if remote is None:
            remote = ("127.0.0.1", next(_ports))
        conn = MSRPProtocol(self.connections, direction, "msrp",
                            target=remote if direction == "out" else None)
        transport = StringTransport(hostAddress=IPv4Address("TCP", *local),
                                    peerAddress=IPv4Address("TCP", *remote))
        conn.makeConnection(transport)
        if peer is not None:
            self.connections.register_peer(conn, parse_uri(peer))
        return Wire(conn, transport)


class Link:
    """Two stacks joined back to back by in-memory transports."""

    def __init__(self, client, server):
        client_port = next(_ports)
        self.client = client.wire("out", peer=str(server.uri), local=("127.0.0.1", client_port),
                                  remote=("127.0.0.2", 2855))
        self.server = server.wire("in", local=("127.0.0.2", 2855), remote=("127.0.0.1", client_port))

    def pump(self):
        for _ in range(1000):
            moved = False
            for src, dst in ((self.client, self.server), (self.server, self.client)):
                data = src.transport.value()
                if data:
                    src.transport.clear()
                    dst.feed(data)
                    moved = True
            if not moved:
                break
        for src, dst in ((self.client, self.server), (self.server, self.client)):
            if src.transport.disconnecting and not src.conn.closed:
                src.lose()
                dst.lose()


def request_bytes(tid, method, to, frm, headers=(), body=None, flag="$"):
    return serialize(Request(tid, method, [("To-Path", to), ("From-Path", frm)] + list(headers), body, flag))


def send(to=B, frm=A, method="SEND", msgid="m1", headers=(), body=b"hi", **kwargs):
    """Arguments of send_request for an ordinary text SEND."""
    items = [("Message-ID", msgid)] if msgid else []
    if body is not None:
        items += TEXT
    return dict(to_path=[parse_uri(u) for u in to.split()], from_path=[parse_uri(frm)],
                method=method, headers=items + list(headers), body=body, **kwargs)


def results(d):
    """Collect what a Deferred fires with (result or Failure)."""
    out = []
    d.addBoth(out.append)
    return out


@implementer(IRequestHandler)
class Recorder:
    """An upper layer that records requests and optionally answers them."""

    def __init__(self, tm, answer=None, stream=False):
        self.tm = tm
        self.answer = answer
        self.stream = stream
        self.heads = []
        self.requests = []
        self.lost = []
        self.sinks = []

    def head_received(self, conn, request):
        self.heads.append(request)
        if not self.stream:
            return None
        sink = RecordingSink(self, conn, request)
        self.sinks.append(sink)
        return sink

    def request_received(self, conn, request):
        self.requests.append((conn, request))
        if self.answer is not None:
            self.tm.send_reply(conn, request, self.answer)

    def connection_lost(self, conn, reason):
        self.lost.append((conn, reason))


@implementer(IBodySink)
class RecordingSink:
    def __init__(self, handler, conn, request):
        self.handler = handler
        self.conn = conn
        self.request = request
        self.data = []
        self.flag = None
        self.aborted = None

    def body_data(self, data):
        self.data.append(data)

    def body_end(self, flag):
        self.flag = flag
        if self.handler.answer is not None:
            self.handler.tm.send_reply(self.conn, self.request, self.handler.answer)

    def body_aborted(self, reason):
        self.aborted = reason

    @property
    def body(self):
        return b"".join(self.data)


@implementer(IBodyProducer)
class ManualProducer:
    """An IBodyProducer the test drives by hand."""

    length = UNKNOWN_LENGTH

    def __init__(self):
        self.consumer = None
        self.calls = []
        self.done = Deferred()

    def startProducing(self, consumer):
        self.calls.append("start")
        self.consumer = consumer
        return self.done

    def pauseProducing(self):
        self.calls.append("pause")

    def resumeProducing(self):
        self.calls.append("resume")

    def stopProducing(self):
        self.calls.append("stop")


def pending_timers(clock):
    return sorted(round(c.getTime() - clock.seconds(), 6) for c in clock.getDelayedCalls())


# -- which requests get a transaction --------------------------------------------


class TransactionCreationTests(SynchronousTestCase):
    def setUp(self):
        self.node = Node()
        self.clock = self.node.clock
        self.tm = self.node.tm
        self.wire = self.node.wire()

    def test_send_creates_a_transaction(self):
        d = self.tm.send_request(conn=self.wire.conn, **send())
        self.assertNoResult(d)
        self.assertEqual(self.tm.pending_count, 1)
        self.assertEqual(pending_timers(self.clock), [30.0])
        [request] = self.wire.received()
        self.assertEqual(request.method, "SEND")
        self.assertEqual(self.tm.stats["requests_sent"], 1)

    def test_auth_and_extension_methods_create_transactions(self):
        d1 = self.tm.send_request(conn=self.wire.conn, **send(method="AUTH", msgid=None, body=None))
        d2 = self.tm.send_request(conn=self.wire.conn, **send(method="NICKNAME", body=None,
                                                              headers=[("Use-Nickname", '"al"')]))
        self.assertNoResult(d1)
        self.assertNoResult(d2)
        self.assertEqual(self.tm.pending_count, 2)
        self.assertEqual([m.method for m in self.wire.received()], ["AUTH", "NICKNAME"])

    def test_report_has_no_transaction(self):
        d = self.tm.send_request(conn=self.wire.conn, **send(
            method="REPORT", body=None, headers=[("Byte-Range", "1-2/2"), ("Status", "000 200 OK")]))
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.tm.pending_count, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        [report] = self.wire.received()
        self.assertEqual(report.method, "REPORT")
        self.assertEqual(self.tm.stats["reports_sent"], 1)

    def test_send_with_failure_report_no_has_no_transaction(self):
        for value in ("no", "No"):
            d = self.tm.send_request(conn=self.wire.conn, **send(headers=[("Failure-Report", value)]))
            self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.tm.pending_count, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.wire.received()), 2)

    def test_failure_report_yes_and_partial_create_transactions(self):
        for value in ("yes", "partial"):
            self.assertNoResult(self.tm.send_request(
                conn=self.wire.conn, **send(headers=[("Failure-Report", value)])))
        self.assertEqual(self.tm.pending_count, 2)

    def test_request_on_the_wire(self):
        self.tm.send_request(conn=self.wire.conn, flag="+", **send(
            to=R + " " + B, headers=[("Byte-Range", "1-2/10")]))
        data = self.wire.transport.value()
        [request] = self.wire.received()
        self.assertEqual(request.headers.items(), [
            ("To-Path", R + " " + B), ("From-Path", A), ("Message-ID", "m1"),
            ("Content-Type", "text/plain"), ("Byte-Range", "1-2/10")])
        self.assertEqual((request.body, request.flag), (b"hi", "+"))
        self.assertTrue(data.endswith(b"\r\nhi\r\n-------" + request.tid.encode() + b"+\r\n"))

    def test_unserializable_request_fails_without_transaction(self):
        d = self.tm.send_request(conn=self.wire.conn, **send(headers=[("X-Bad", "a\r\nb")]))
        self.failureResultOf(d, SerializationError)
        self.assertEqual(self.tm.pending_count, 0)
        self.assertEqual(self.wire.transport.value(), b"")

    def test_send_on_closed_connection(self):
        self.wire.lose()
        d = self.tm.send_request(conn=self.wire.conn, **send())
        self.failureResultOf(d, SendError)
        self.assertEqual(self.tm.pending_count, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reuses_a_connection_to_the_next_hop(self):
        """Without conn, the connection registered for To-Path's first URI
        (here the From-Path of an earlier inbound request) carries it."""
        self.tm.add_handler(Recorder(self.tm), reuse_inbound=True)
        other = self.node.wire()
        other.feed(request_bytes("tin1", "SEND", B, R + " " + A, [("Message-ID", "x1")]))
        self.tm.send_request(**send(to=R + " " + A, frm=B))
        self.assertEqual([m.method for m in other.received()], ["SEND"])
        self.assertEqual(self.wire.received(), [])

    def test_refused_requests_register_no_route(self):
        """A stranger naming someone else's address in its From-Path, on a
        request nobody claims (481), gains no route: traffic for that
        address is not sent to it."""
        self.tm.add_handler(Recorder(self.tm), match=lambda uri: uri.session_id == "mine",
                            reuse_inbound=True)
        intruder = self.node.wire()
        intruder.feed(request_bytes("tin2", "SEND", B, R + " " + A, [("Message-ID", "x2")]))
        self.assertEqual([m.code for m in intruder.received()], [481])
        self.tm.send_request(**send(to=R + " " + A, frm=B))
        self.assertEqual(intruder.received(), [])

    def test_handlers_without_reuse_register_no_route(self):
        """A relay's handler (reuse_inbound off) claims requests without
        turning their From-Path into a route."""
        self.tm.add_handler(Recorder(self.tm))
        other = self.node.wire()
        other.feed(request_bytes("tin3", "SEND", B, R + " " + A, [("Message-ID", "x3")]))
        self.tm.send_request(**send(to=R + " " + A, frm=B))
        self.assertEqual(other.received(), [])


# -- matching responses --------------------------------------------------------


class ResponseMatchingTests(SynchronousTestCase):
    def setUp(self):
        self.node = Node()
        self.clock = self.node.clock
        self.tm = self.node.tm
        self.wire = self.node.wire()
        self.other = self.node.wire()

    def test_response_completes_the_transaction(self):
        d = self.tm.send_request(conn=self.wire.conn, **send())
        [request] = self.wire.received()
        self.wire.respond(request, 200)
        response = self.successResultOf(d)
        self.assertIsInstance(response, Response)
        self.assertEqual((response.tid, response.code, response.comment), (request.tid, 200, None))
        self.assertEqual(self.tm.pending_count, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.tm.stats["responses_received"], 1)

    def test_error_response_is_a_result_not_a_failure(self):
        d = self.tm.send_request(conn=self.wire.conn, **send())
        [request] = self.wire.received()
        self.wire.respond(request, 481, "Session Does Not Exist")
        self.assertEqual(self.successResultOf(d).code, 481)

    def test_same_tid_on_another_connection_does_not_complete(self):
        d = self.tm.send_request(conn=self.wire.conn, **send())
        [request] = self.wire.received()
        with capturedLogs() as events:
            self.other.respond(request, 200)
        self.assertNoResult(d)
        self.assertEqual(self.tm.stats["responses_unmatched"], 1)
        self.assertEqual(self.tm.pending_count, 1)
        [event] = [e for e in events if e.get("tid") == request.tid]
        self.assertIn("dropped", event["log_format"])
        self.assertEqual(event["peer"], self.other.conn.peer)
        # The right connection still completes it.
        self.wire.respond(request, 200)
        self.assertEqual(self.successResultOf(d).code, 200)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_same_tid_live_on_two_connections(self):
        d1 = self.tm.send_request(conn=self.wire.conn, tid="sharedtid1", **send())
        d2 = self.tm.send_request(conn=self.other.conn, tid="sharedtid1", **send())
        [r1], [r2] = self.wire.received(), self.other.received()
        self.other.respond(r2, 403)
        self.assertNoResult(d1)
        self.assertEqual(self.successResultOf(d2).code, 403)
        self.wire.respond(r1, 200)
        self.assertEqual(self.successResultOf(d1).code, 200)

    def test_unknown_tid_is_dropped_and_counted(self):
        self.wire.feed(serialize(Response("nosuchtid", 200, None, [("To-Path", A), ("From-Path", B)])))
        self.assertEqual(self.tm.stats["responses_unmatched"], 1)
        self.assertFalse(self.wire.conn.closed)

    def test_second_response_is_unmatched(self):
        d = self.tm.send_request(conn=self.wire.conn, **send())
        [request] = self.wire.received()
        self.wire.respond(request, 200)
        self.wire.respond(request, 200)
        self.assertEqual(self.successResultOf(d).code, 200)
        self.assertEqual(self.tm.stats["responses_received"], 1)
        self.assertEqual(self.tm.stats["responses_unmatched"], 1)


# -- timeouts -------------------------------------------------------------------


class TimeoutTests(SynchronousTestCase):
    def test_default_is_30_seconds(self):
        self.assertEqual(DEFAULT_TIMEOUT, 30.0)
        node = Node()
        wire = node.wire()
        d = node.tm.send_request(conn=wire.conn, **send())
        [request] = wire.received()
        node.clock.advance(29.999)
        self.assertNoResult(d)
        node.clock.advance(0.001)
        f = self.failureResultOf(d, TransactionTimeout)
        self.assertIsInstance(f.value, TransactionError)
        self.assertEqual(f.value.code, 408)
        self.assertEqual(f.value.tid, request.tid)
        self.assertEqual(node.tm.pending_count, 0)
        self.assertEqual(node.tm.stats["transactions_timed_out"], 1)
        self.assertEqual(node.clock.getDelayedCalls(), [])

    def test_default_timeouts_share_one_timer_and_keep_their_deadlines(self):
        node = Node()
        wire = node.wire()
        ds = []
        for _ in range(3):
            ds.append(node.tm.send_request(conn=wire.conn, **send()))
            node.clock.advance(1)
        first, second, third = wire.received()
        self.assertEqual(len(node.clock.getDelayedCalls()), 1)
        wire.respond(first, 200)
        self.assertEqual(self.successResultOf(ds[0]).code, 200)
        node.clock.advance(27.999)  # t = 30.999: the second is due at 31
        self.assertNoResult(ds[1])
        node.clock.advance(0.001)
        self.failureResultOf(ds[1], TransactionTimeout)
        self.assertNoResult(ds[2])
        self.assertEqual(pending_timers(node.clock), [1.0])
        node.clock.advance(1)
        self.failureResultOf(ds[2], TransactionTimeout)
        self.assertEqual(node.clock.getDelayedCalls(), [])

    def test_last_answer_leaves_no_timer(self):
        node = Node()
        wire = node.wire()
        d1 = node.tm.send_request(conn=wire.conn, **send())
        d2 = node.tm.send_request(conn=wire.conn, timeout=5, **send())
        r1, r2 = wire.received()
        wire.respond(r2, 200)
        wire.respond(r1, 200)
        self.successResultOf(d1)
        self.successResultOf(d2)
        self.assertEqual(node.clock.getDelayedCalls(), [])

    def test_configured_timeout(self):
        node = Node(timeout=5)
        wire = node.wire()
        d = node.tm.send_request(conn=wire.conn, **send())
        node.clock.advance(4.9)
        self.assertNoResult(d)
        node.clock.advance(0.1)
        self.failureResultOf(d, TransactionTimeout)

    def test_per_request_timeout(self):
        node = Node()
        wire = node.wire()
        d = node.tm.send_request(conn=wire.conn, timeout=2, **send())
        self.assertEqual(pending_timers(node.clock), [2.0])
        node.clock.advance(2)
        self.failureResultOf(d, TransactionTimeout)

    def test_response_cancels_the_timer(self):
        node = Node()
        wire = node.wire()
        d = node.tm.send_request(conn=wire.conn, **send())
        [timer] = node.clock.getDelayedCalls()
        node.clock.advance(10)
        [request] = wire.received()
        wire.respond(request, 200)
        self.successResultOf(d)
        self.assertFalse(timer.active())
        self.assertEqual(node.clock.getDelayedCalls(), [])

    def test_failure_report_partial_silence_means_accepted(self):
        """A partial receiver never sends 200: the timeout completes the
        transaction with None instead of failing it."""
        node = Node()
        wire = node.wire()
        d = node.tm.send_request(conn=wire.conn, **send(headers=[("Failure-Report", "partial")]))
        node.clock.advance(29.9)
        self.assertNoResult(d)
        node.clock.advance(0.1)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(node.tm.stats["partial_completed"], 1)
        self.assertEqual(node.tm.stats["transactions_timed_out"], 0)
        self.assertEqual(node.tm.pending_count, 0)

    def test_failure_report_partial_error_response(self):
        node = Node()
        wire = node.wire()
        d = node.tm.send_request(conn=wire.conn, **send(headers=[("Failure-Report", "partial")]))
        [request] = wire.received()
        wire.respond(request, 413)
        self.assertEqual(self.successResultOf(d).code, 413)
        self.assertEqual(node.clock.getDelayedCalls(), [])

    def test_late_response_is_dropped(self):
        node = Node()
        wire = node.wire()
        d = node.tm.send_request(conn=wire.conn, **send())
        [request] = wire.received()
        node.clock.advance(30)
        self.failureResultOf(d, TransactionTimeout)
        wire.respond(request, 200)
        self.assertEqual(node.tm.stats["responses_unmatched"], 1)


# -- connection loss and cancellation ---------------------------------------------


class ConnectionLossTests(SynchronousTestCase):
    def setUp(self):
        self.node = Node()
        self.tm = self.node.tm
        self.handler = Recorder(self.tm)
        self.tm.add_handler(self.handler)
        self.wire = self.node.wire()
        self.other = self.node.wire()

    def test_loss_fails_every_pending_transaction_on_it_at_once(self):
        d1 = self.tm.send_request(conn=self.wire.conn, **send())
        d2 = self.tm.send_request(conn=self.wire.conn, **send(method="AUTH", msgid=None, body=None))
        d3 = self.tm.send_request(conn=self.other.conn, **send())
        self.wire.lose()
        for d in (d1, d2):
            f = self.failureResultOf(d, TransactionConnectionLost)
            self.assertIn(self.wire.conn.peer, f.value.reason)
        self.assertNoResult(d3)
        self.assertEqual(self.tm.pending_count, 1)
        self.assertEqual(len(self.node.clock.getDelayedCalls()), 1)
        self.assertEqual(self.tm.stats["transactions_failed"], 2)
        [request] = self.other.received()
        self.other.respond(request, 200)
        self.assertEqual(self.successResultOf(d3).code, 200)
        self.assertEqual(self.node.clock.getDelayedCalls(), [])

    def test_handlers_hear_of_the_loss(self):
        self.wire.lose()
        self.assertEqual([c for c, _ in self.handler.lost], [self.wire.conn])
        self.assertEqual(self.handler.lost[0][1], "closed by peer")

    def test_loss_over_a_link(self):
        a, b = Node(uri=A), Node()
        b.tm.add_handler(Recorder(b.tm))
        link = Link(a, b)
        d = a.tm.send_request(**send())
        link.pump()
        link.server.conn.close("going away")
        link.pump()
        self.failureResultOf(d, TransactionConnectionLost)
        self.assertEqual(a.clock.getDelayedCalls(), [])


class CancellationTests(SynchronousTestCase):
    def test_cancel_removes_the_transaction(self):
        node = Node()
        wire = node.wire()
        d = node.tm.send_request(conn=wire.conn, **send())
        [request] = wire.received()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(node.tm.pending_count, 0)
        self.assertEqual(node.clock.getDelayedCalls(), [])
        wire.respond(request, 200)
        self.assertEqual(node.tm.stats["responses_unmatched"], 1)
        wire.lose()  # nothing left to fail

    def test_connect_failure_fails_the_request(self):
        node = Node()
        d = node.tm.send_request(**send())
        [(_, _, factory, _, _)] = node.clock.tcpClients
        factory.clientConnectionFailed(node.clock.connectors[0], Failure(ConnectionRefusedError()))
        node.clock.advance(1)
        f = self.failureResultOf(d, SendError)
        self.assertIn("bob.example:2855", f.getErrorMessage())
        self.assertEqual(node.tm.pending_count, 0)
        self.assertEqual(node.clock.getDelayedCalls(), [])

    def test_cancel_while_connecting(self):
        node = Node()
        d = node.tm.send_request(**send())
        self.assertEqual(len(node.clock.tcpClients), 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(node.tm.pending_count, 0)


# -- transaction ids ---------------------------------------------------------------


class TransactionIdTests(SynchronousTestCase):
    def setUp(self):
        self.node = Node()
        self.tm = self.node.tm
        self.wire = self.node.wire()

    def test_96_random_bits_from_core_ids(self):
        self.assertEqual(ids.TRANSACTION_ID_BITS, 96)
        drawn = []

        def recording():
            drawn.append(ids.new_transaction_id())
            return drawn[-1]

        self.patch(transactions, "new_transaction_id", recording)
        for _ in range(200):
            self.tm.send_request(conn=self.wire.conn, **send())
        tids = [m.tid for m in self.wire.received()]
        self.assertEqual(tids, drawn)
        self.assertEqual(len(set(tids)), 200)
        for tid in tids:
            self.assertRegex(tid, r"\A[0-9a-f]{24}\Z")

    def test_live_tid_is_not_reused_on_the_connection(self):
        sequence = iter(["a" * 24, "a" * 24, "b" * 24])
        self.patch(transactions, "new_transaction_id", lambda: next(sequence))
        d1 = self.tm.send_request(conn=self.wire.conn, **send())
        d2 = self.tm.send_request(conn=self.wire.conn, **send())
        self.assertEqual([m.tid for m in self.wire.received()], ["a" * 24, "b" * 24])
        self.assertNoResult(d1)
        self.assertNoResult(d2)
        self.assertEqual(self.tm.pending_count, 2)

    def test_tid_never_appears_in_the_body(self):
        sequence = iter(["c" * 24, "d" * 24])
        self.patch(transactions, "new_transaction_id", lambda: next(sequence))
        self.tm.send_request(conn=self.wire.conn, **send(body=b"x-------" + b"c" * 24 + b"$ y"))
        [request] = self.wire.received()
        self.assertEqual(request.tid, "d" * 24)

    def test_explicit_tid_already_live_is_refused(self):
        d1 = self.tm.send_request(conn=self.wire.conn, tid="mytid0001", **send())
        self.wire.received()
        d2 = self.tm.send_request(conn=self.wire.conn, tid="mytid0001", **send())
        self.failureResultOf(d2, SerializationError)
        self.assertEqual(self.wire.transport.value(), b"")
        self.assertEqual(self.tm.pending_count, 1)
        self.assertNoResult(d1)


# -- responses we send -------------------------------------------------------------


class SendReplyTests(SynchronousTestCase):
    def setUp(self):
        self.node = Node()
        self.tm = self.node.tm
        self.handler = Recorder(self.tm)
        self.tm.add_handler(self.handler)
        self.wire = self.node.wire()

    def receive(self, method="SEND", frm=R + " " + A, to=B, headers=(("Message-ID", "m1"),), body=None):
        self.wire.feed(request_bytes("t12345", method, to, frm, list(headers) + (TEXT if body else []), body))
        return self.handler.requests[-1][1]

    def test_send_response_goes_to_the_previous_hop_only(self):
        request = self.receive(body=b"hello")
        self.assertTrue(self.tm.send_reply(self.wire.conn, request, 200))
        [response] = self.wire.received()
        self.assertEqual((response.tid, response.code, response.comment), ("t12345", 200, "OK"))
        self.assertEqual(response.headers.items(), [("To-Path", R), ("From-Path", B)])
        self.assertEqual(self.tm.stats["responses_sent"], 1)

    def test_from_path_is_us_the_top_to_path_uri(self):
        request = self.receive(to=B + " " + C)
        self.tm.send_reply(self.wire.conn, request, 200)
        [response] = self.wire.received()
        self.assertEqual(response.headers["From-Path"], B)

    def test_auth_response_gets_the_full_from_path(self):
        request = self.receive("AUTH", frm=R2 + " " + A, to=R, headers=())
        self.tm.send_reply(self.wire.conn, request, 401, None, [("WWW-Authenticate", 'Digest realm="x"')])
        [response] = self.wire.received()
        self.assertEqual(response.headers.items(), [
            ("To-Path", R2 + " " + A), ("From-Path", R), ("WWW-Authenticate", 'Digest realm="x"')])
        self.assertEqual(response.comment, "Unauthorized")

    def test_comment_and_headers(self):
        request = self.receive()
        self.tm.send_reply(self.wire.conn, request, 413, "too big", [("X-Why", "limit")])
        [response] = self.wire.received()
        self.assertEqual((response.code, response.comment), (413, "too big"))
        self.assertEqual(response.headers["X-Why"], "limit")

    def test_never_a_response_to_a_report(self):
        request = self.receive("REPORT", headers=[("Message-ID", "m1"), ("Status", "000 200 OK")])
        for code in (200, 400, 481):
            self.assertFalse(self.tm.send_reply(self.wire.conn, request, code))
        self.assertEqual(self.wire.transport.value(), b"")

    def test_failure_report_no_gets_no_response_at_all(self):
        request = self.receive(headers=[("Message-ID", "m1"), ("Failure-Report", "no")])
        for code in (200, 400, 413, 481):
            self.assertFalse(self.tm.send_reply(self.wire.conn, request, code))
        self.assertEqual(self.wire.transport.value(), b"")

    def test_failure_report_partial_gets_only_negative_responses(self):
        request = self.receive(headers=[("Message-ID", "m1"), ("Failure-Report", "partial")])
        self.assertFalse(self.tm.send_reply(self.wire.conn, request, 200))
        self.assertEqual(self.wire.transport.value(), b"")
        self.assertTrue(self.tm.send_reply(self.wire.conn, request, 413))
        self.assertEqual([r.code for r in self.wire.received()], [413])

    def test_failure_report_yes_gets_200(self):
        request = self.receive(headers=[("Message-ID", "m1"), ("Failure-Report", "yes")])
        self.assertTrue(self.tm.send_reply(self.wire.conn, request, 200))
        self.assertEqual([r.code for r in self.wire.received()], [200])

    def test_reply_on_a_closed_connection(self):
        request = self.receive()
        self.wire.lose()
        self.assertFalse(self.tm.send_reply(self.wire.conn, request, 200))

    def test_unbuildable_reply_is_refused(self):
        request = self.receive()
        self.assertFalse(self.tm.send_reply(self.wire.conn, request, 200, "a\r\nb"))
        self.assertEqual(self.wire.transport.value(), b"")


# -- routing incoming requests -----------------------------------------------------


class RoutingTests(SynchronousTestCase):
    def setUp(self):
        self.node = Node()
        self.tm = self.node.tm
        self.wire = self.node.wire()

    def handler(self, session_id=None, **kwargs):
        h = Recorder(self.tm)
        match = None if session_id is None else (lambda uri, s=session_id: uri.session_id == s)
        self.tm.add_handler(h, match, **kwargs)
        return h

    def test_first_match_wins(self):
        first, second, catch_all = self.handler("sb"), self.handler("sb"), self.handler()
        self.wire.feed(request_bytes("t00001", "SEND", B, A, [("Message-ID", "m1")]))
        self.wire.feed(request_bytes("t00002", "SEND", C, A, [("Message-ID", "m2")]))
        self.assertEqual([r.tid for _, r in first.requests], ["t00001"])
        self.assertEqual(second.requests, [])
        self.assertEqual([r.tid for _, r in catch_all.requests], ["t00002"])

    def test_match_gets_the_top_to_path_uri(self):
        seen = []
        self.tm.add_handler(Recorder(self.tm), lambda uri: seen.append(uri) or True)
        self.wire.feed(request_bytes("t00001", "SEND", R + " " + B, A, [("Message-ID", "m1")]))
        self.assertEqual(seen, [parse_uri(R)])

    def test_removed_handler_gets_nothing(self):
        h = self.handler()
        self.tm.remove_handler(h)
        self.wire.feed(request_bytes("t00001", "SEND", B, A, [("Message-ID", "m1")]))
        self.assertEqual(h.requests, [])
        self.assertEqual([r.code for r in self.wire.received()], [481])

    def test_streamed_body_goes_to_the_handler_sink(self):
        h = Recorder(self.tm, stream=True)
        self.tm.add_handler(h)
        self.wire.feed(request_bytes("t00001", "SEND", B, A, [("Message-ID", "m1")] + TEXT, b"body", "+"))
        [sink] = h.sinks
        self.assertEqual((sink.body, sink.flag), (b"body", "+"))
        self.assertEqual(h.requests, [])

    def test_buffered_body_counts_one_request(self):
        h = self.handler()
        self.wire.feed(request_bytes("t00001", "SEND", B, A, [("Message-ID", "m1")] + TEXT, b"body"))
        self.assertEqual(len(h.heads), 1)
        self.assertEqual(h.requests[0][1].body, b"body")
        self.assertEqual(self.tm.stats["requests_received"], 1)

    def test_no_handler_481(self):
        self.handler("sc")
        self.wire.feed(request_bytes("t00481", "SEND", B, R + " " + A, [("Message-ID", "m1")]))
        [response] = self.wire.received()
        self.assertEqual((response.tid, response.code, response.comment),
                         ("t00481", 481, "Session Does Not Exist"))
        self.assertEqual(response.headers.items(), [("To-Path", R), ("From-Path", B)])
        self.assertEqual(self.tm.stats["refused_481"], 1)

    def test_481_before_the_body_and_the_body_discarded(self):
        h = self.handler("sc")
        head = request_bytes("t00481", "SEND", B, A, [("Message-ID", "m1")] + TEXT, b"x" * 2000)
        self.wire.feed(head[:1000])
        self.assertEqual([r.code for r in self.wire.received()], [481])
        self.wire.feed(head[1000:])
        self.wire.feed(request_bytes("t00002", "SEND", C, A, [("Message-ID", "m2")]))
        self.assertEqual(self.wire.received(), [])
        self.assertEqual([r.tid for _, r in h.requests], ["t00002"])

    def test_no_response_to_an_unclaimed_report(self):
        self.wire.feed(request_bytes("t00001", "REPORT", B, A,
                                     [("Message-ID", "m1"), ("Status", "000 200 OK")]))
        self.assertEqual(self.wire.transport.value(), b"")

    def test_no_481_with_failure_report_no(self):
        self.wire.feed(request_bytes("t00001", "SEND", B, A,
                                     [("Message-ID", "m1"), ("Failure-Report", "no")]))
        self.assertEqual(self.wire.transport.value(), b"")

    def test_invalid_request_400_uses_the_paths_parsed_before_the_error(self):
        h = self.handler()
        self.wire.feed(b"MSRP t00400 SEND\r\nTo-Path: " + B.encode() + b"\r\nFrom-Path: "
                       + (R + " " + A).encode() + b"\r\nnot a header\r\nMessage-ID: m1\r\n"
                       b"-------t00400$\r\n")
        [response] = self.wire.received()
        self.assertEqual((response.tid, response.code), ("t00400", 400))
        self.assertIn("malformed header line", response.comment)
        self.assertEqual(response.headers.items(), [("To-Path", R), ("From-Path", B)])
        self.assertEqual(h.requests, [])
        self.assertEqual(self.tm.stats["refused_400"], 1)
        # The connection goes on.
        self.wire.feed(request_bytes("t00002", "SEND", B, A, [("Message-ID", "m2")]))
        self.assertEqual(len(h.requests), 1)

    def test_invalid_utf8_request_400_on_its_readable_paths(self):
        self.wire.feed(b"MSRP t00401 SEND\r\nTo-Path: " + B.encode() + b"\r\nFrom-Path: "
                       + (R + " " + A).encode() + b"\r\nMessage-ID: m\xe9\r\n-------t00401$\r\n")
        [response] = self.wire.received()
        self.assertEqual((response.tid, response.code), ("t00401", 400))
        self.assertIn("not valid UTF-8", response.comment)
        self.assertEqual(response.headers.items(), [("To-Path", R), ("From-Path", B)])
        self.assertEqual(self.tm.stats["refused_400"], 1)

    def test_invalid_request_with_body_400(self):
        self.wire.feed(b"MSRP t00400 SEND\r\nTo-Path: " + B.encode() + b"\r\nFrom-Path: " + A.encode()
                       + b"\r\nContent-Type: text/plain\r\n\r\nbody\r\n-------t00400$\r\n")
        [response] = self.wire.received()
        self.assertEqual((response.tid, response.code, response.comment),
                         ("t00400", 400, "missing Message-ID"))
        self.assertEqual(response.headers["To-Path"], A)

    def test_invalid_auth_400_to_the_full_from_path(self):
        self.wire.feed(b"MSRP t00400 AUTH\r\nTo-Path: " + R.encode() + b"\r\nFrom-Path: "
                       + (R2 + " " + A).encode() + b"\r\nExpires: 10\r\nExpires 20\r\n-------t00400$\r\n")
        [response] = self.wire.received()
        self.assertEqual(response.code, 400)
        self.assertEqual(response.headers.items(), [("To-Path", R2 + " " + A), ("From-Path", R)])

    def test_invalid_report_is_not_answered(self):
        self.wire.feed(b"MSRP t00400 REPORT\r\nTo-Path: " + B.encode() + b"\r\nFrom-Path: " + A.encode()
                       + b"\r\nStatus: 000 200 OK\r\n-------t00400$\r\n")
        self.assertEqual(self.wire.transport.value(), b"")
        self.assertFalse(self.wire.conn.closed)

    def test_invalid_request_with_failure_report_no_is_not_answered(self):
        self.wire.feed(b"MSRP t00400 SEND\r\nTo-Path: " + B.encode() + b"\r\nFrom-Path: " + A.encode()
                       + b"\r\nFailure-Report: no\r\n-------t00400$\r\n")
        self.assertEqual(self.wire.transport.value(), b"")

    def test_invalid_request_without_from_path_is_logged_not_answered(self):
        with capturedLogs() as events:
            self.wire.feed(b"MSRP t00400 SEND\r\nTo-Path: " + B.encode()
                           + b"\r\nMessage-ID: m1\r\n-------t00400$\r\n")
        self.assertEqual(self.wire.transport.value(), b"")
        self.assertTrue([e for e in events
                         if e.get("tid") == "t00400" and "cannot answer" in e["log_format"]])

    def test_invalid_response_is_not_answered(self):
        self.wire.feed(b"MSRP t00400 200 OK\r\nTo-Path: " + A.encode() + b"\r\n-------t00400$\r\n")
        self.assertEqual(self.wire.transport.value(), b"")

    def test_unknown_method_501(self):
        h = self.handler()
        self.wire.feed(request_bytes("t00501", "FROB", B, R + " " + A, [("Message-ID", "m1")]))
        [response] = self.wire.received()
        self.assertEqual((response.tid, response.code, response.comment), ("t00501", 501, "Not Implemented"))
        self.assertEqual(response.headers.items(), [("To-Path", R + " " + A), ("From-Path", B)])
        self.assertEqual(h.requests, [])
        self.assertEqual(self.tm.stats["refused_501"], 1)

    def test_unknown_method_501_comes_before_481(self):
        self.wire.feed(request_bytes("t00501", "FROB", B, A, [("Message-ID", "m1")]))
        self.assertEqual([r.code for r in self.wire.received()], [501])

    def test_extension_method_registered_by_a_handler(self):
        h = self.handler(methods=("NICKNAME",))
        self.wire.feed(request_bytes("t00001", "NICKNAME", B, A, [("Message-ID", "m1")]))
        self.assertEqual([r.method for _, r in h.requests], ["NICKNAME"])
        self.assertEqual(self.wire.transport.value(), b"")

    def test_bad_to_path_uri_400(self):
        h = self.handler()
        self.wire.feed(request_bytes("t00400", "SEND", "http://bob.example/sb", R + " " + A,
                                     [("Message-ID", "m1")]))
        [response] = self.wire.received()
        self.assertEqual((response.tid, response.code), ("t00400", 400))
        self.assertIn("bad path", response.comment)
        self.assertEqual(response.headers["To-Path"], R)
        self.assertEqual(h.requests, [])

    def test_bad_from_path_uri_400(self):
        self.handler()
        self.wire.feed(request_bytes("t00400", "SEND", B, "msrp://no_port:x/s;tcp", [("Message-ID", "m1")]))
        self.assertEqual([r.code for r in self.wire.received()], [400])

    def test_bad_to_path_in_a_report_is_not_answered(self):
        self.wire.feed(request_bytes("t00400", "REPORT", "http://bob.example/sb", A,
                                     [("Message-ID", "m1"), ("Status", "000 200 OK")]))
        self.assertEqual(self.wire.transport.value(), b"")


# -- REPORTs -------------------------------------------------------------------------


class SendReportTests(SynchronousTestCase):
    def setUp(self):
        self.node = Node()
        self.tm = self.node.tm
        self.handler = Recorder(self.tm)
        self.tm.add_handler(self.handler, reuse_inbound=True)
        self.wire = self.node.wire()

    def receive(self, wire=None, headers=(("Byte-Range", "1-5/5"),), body=b"hello"):
        wire = wire or self.wire
        wire.feed(request_bytes("t12345", "SEND", B, R + " " + A,
                                [("Message-ID", "msg42")] + list(headers) + TEXT, body))
        return self.handler.requests[-1][1]

    def test_success_report(self):
        request = self.receive()
        d = self.tm.send_report(request, 200, conn=self.wire.conn)
        self.assertIsNone(self.successResultOf(d))
        [report] = self.wire.received()
        self.assertEqual(report.method, "REPORT")
        self.assertEqual(report.headers.items(), [
            ("To-Path", R + " " + A), ("From-Path", B), ("Message-ID", "msg42"),
            ("Byte-Range", "1-5/5"), ("Status", "000 200 OK")])
        self.assertIsNone(report.body)
        self.assertNotEqual(report.tid, request.tid)
        self.assertEqual(self.tm.pending_count, 0)
        self.assertEqual(self.node.clock.getDelayedCalls(), [])

    def test_failure_report_with_comment_and_range(self):
        request = self.receive()
        self.tm.send_report(request, 413, "too big for me", byte_range="1-3/5", conn=self.wire.conn)
        [report] = self.wire.received()
        self.assertEqual(report.headers["Status"], "000 413 too big for me")
        self.assertEqual(report.headers["Byte-Range"], "1-3/5")
        self.assertEqual(report.status.code, 413)

    def test_default_comment_is_the_reason_phrase(self):
        request = self.receive()
        self.tm.send_report(request, 481, conn=self.wire.conn)
        [report] = self.wire.received()
        self.assertEqual(report.headers["Status"], "000 481 Session Does Not Exist")

    def test_byte_range_from_the_body(self):
        request = self.receive(headers=())
        self.tm.send_report(request, 200, conn=self.wire.conn)
        [report] = self.wire.received()
        self.assertEqual(report.headers["Byte-Range"], "1-5/5")

    def test_goes_on_the_given_connection(self):
        # Two connections from the relay; the first would be reused by
        # default, the REPORT must take the one it is given.
        second = self.node.wire()
        self.receive(wire=self.wire)
        request = self.receive(wire=second)
        self.tm.send_report(request, 200, conn=second.conn)
        self.assertEqual([m.method for m in second.received()], ["REPORT"])
        self.assertEqual(self.wire.received(), [])

    def test_without_a_connection_goes_toward_the_first_from_path_hop(self):
        unrelated = self.node.wire(peer=C)
        request = self.receive()
        self.tm.send_report(request, 200)
        self.assertEqual([m.method for m in self.wire.received()], ["REPORT"])
        self.assertEqual(unrelated.received(), [])
        self.assertEqual(self.node.clock.tcpClients, [])


# -- forwarding (relays) ---------------------------------------------------------


@implementer(IRequestHandler)
class Forwarder:
    """A relay's upper layer in miniature: forwards everything to dest."""

    def __init__(self, tm, dest=None, hops=1):
        self.tm = tm
        self.dest = dest
        self.hops = hops
        self.results = []
        self.sinks = []

    def head_received(self, conn, request):
        sink, result = self.tm.forward_stream(conn, request, conn=self.dest, hops=self.hops)
        self.sinks.append(sink)
        self.results.append(results(result))
        return sink

    def request_received(self, conn, request):
        self.results.append(results(self.tm.forward_request(request, conn=self.dest, hops=self.hops)))


class CallbackForwarder(Forwarder):
    """The same, with the outcome as plain callbacks (the relay's hot path)."""

    def head_received(self, conn, request):
        out = []
        sink, result = self.tm.forward_stream(conn, request, conn=self.dest, hops=self.hops,
                                              callbacks=(out.append, out.append))
        assert result is None, result
        self.sinks.append(sink)
        self.results.append(out)
        return sink


class ForwardRequestTests(SynchronousTestCase):
    def setUp(self):
        self.node = Node(uri=R)
        self.tm = self.node.tm
        self.source = self.node.wire()
        self.dest = self.node.wire("out")

    def test_pops_the_top_to_path_onto_from_path(self):
        request = Request("t12345", "SEND", [
            ("To-Path", R + " " + B), ("From-Path", A), ("Message-ID", "m1"), ("Byte-Range", "1-2/4"),
            ("Success-Report", "yes"), ("X-Extra", "kept"), ("Content-Type", "text/plain")], b"ab", "+")
        d = self.tm.forward_request(request, conn=self.dest.conn)
        [fwd] = self.dest.received()
        self.assertEqual(fwd.headers.items(), [
            ("To-Path", B), ("From-Path", R + " " + A), ("Message-ID", "m1"), ("Byte-Range", "1-2/4"),
            ("Success-Report", "yes"), ("X-Extra", "kept"), ("Content-Type", "text/plain")])
        self.assertNotEqual(fwd.tid, "t12345")
        self.assertRegex(fwd.tid, r"\A[0-9a-f]{24}\Z")
        self.assertEqual((fwd.method, fwd.body, fwd.flag), ("SEND", b"ab", "+"))
        self.assertNoResult(d)
        self.dest.respond(fwd, 200)
        self.assertEqual(self.successResultOf(d).code, 200)
        self.assertEqual(self.node.clock.getDelayedCalls(), [])

    def test_two_hops_in_the_right_order(self):
        request = Request("t12345", "SEND", [
            ("To-Path", R + " " + R2 + " " + B), ("From-Path", A), ("Message-ID", "m1")])
        self.tm.forward_request(request, conn=self.dest.conn, hops=2)
        [fwd] = self.dest.received()
        self.assertEqual(fwd.headers["To-Path"], B)
        self.assertEqual(fwd.headers["From-Path"], R2 + " " + R + " " + A)

    def test_abort_flag_kept(self):
        request = Request("t12345", "SEND", [("To-Path", R + " " + B), ("From-Path", A),
                                             ("Message-ID", "m1"), ("Content-Type", "text/plain")], b"", "#")
        self.tm.forward_request(request, conn=self.dest.conn)
        [fwd] = self.dest.received()
        self.assertEqual(fwd.flag, "#")

    def test_no_next_hop(self):
        request = Request("t12345", "SEND", [("To-Path", R), ("From-Path", A), ("Message-ID", "m1")])
        self.failureResultOf(self.tm.forward_request(request, conn=self.dest.conn), SendError)
        self.failureResultOf(self.tm.forward_request(request, conn=self.dest.conn, hops=2), SendError)
        self.assertEqual(self.dest.transport.value(), b"")
        self.assertEqual(self.tm.pending_count, 0)

    def test_forwarded_report_has_no_transaction(self):
        request = Request("t12345", "REPORT", [("To-Path", R + " " + A), ("From-Path", B),
                                               ("Message-ID", "m1"), ("Status", "000 200 OK")])
        self.assertIsNone(self.successResultOf(self.tm.forward_request(request, conn=self.dest.conn)))
        self.assertEqual(self.tm.pending_count, 0)

    def test_relayed_end_to_end(self):
        """A complete request received from the source is forwarded."""
        fwd_handler = Forwarder(self.tm, self.dest.conn)
        self.tm.add_handler(fwd_handler)
        self.source.feed(request_bytes("t12345", "AUTH", R + " " + R2, A))
        [fwd] = self.dest.received()
        self.assertEqual((fwd.method, fwd.headers["To-Path"], fwd.headers["From-Path"]),
                         ("AUTH", R2, R + " " + A))
        self.dest.respond(fwd, 401, to=R + " " + A, frm=R2)
        [[response]] = fwd_handler.results
        self.assertEqual(response.code, 401)


class ForwardStreamTests(SynchronousTestCase):
    def setUp(self):
        self.node = Node(uri=R)
        self.clock = self.node.clock
        self.tm = self.node.tm
        self.source = self.node.wire()
        self.body = bytes(range(256)) * 40  # 10 KiB
        self.frame = request_bytes("t12345", "SEND", R + " " + B, A,
                                   [("Message-ID", "m1"), ("Byte-Range", "1-10240/10240")] + TEXT,
                                   self.body, "+")
        self.head_len = self.frame.index(b"\r\n\r\n") + 4

    forwarder = Forwarder

    def forward_to(self, dest_conn, hops=1):
        handler = self.forwarder(self.tm, dest_conn, hops)
        self.tm.add_handler(handler)
        return handler

    def dest_events(self, dest):
        return Parser(max_body=0).feed(dest.transport.value())

    def test_body_passes_through_as_it_arrives(self):
        dest = self.node.wire("out")
        handler = self.forward_to(dest.conn)
        self.source.feed(self.frame[:self.head_len + 5000])
        events = self.dest_events(dest)
        self.assertIsInstance(events[0], MessageStart)
        fwd = events[0].message
        self.assertEqual(fwd.headers.items(), [
            ("To-Path", B), ("From-Path", R + " " + A), ("Message-ID", "m1"),
            ("Byte-Range", "1-10240/10240"), ("Content-Type", "text/plain")])
        self.assertNotEqual(fwd.tid, "t12345")
        passed = b"".join(e.data for e in events if isinstance(e, BodyData))
        self.assertGreater(len(passed), 4900)  # all but a possible end-line prefix
        self.assertTrue(self.body.startswith(passed))
        self.assertFalse([e for e in events if isinstance(e, MessageEnd)])
        self.source.feed(self.frame[self.head_len + 5000:])
        [relayed] = MessageAssembler(Parser(max_body=0)).feed(dest.transport.value())
        self.assertEqual((relayed.body, relayed.flag), (self.body, "+"))
        self.assertEqual(self.source.transport.producerState, "producing")
        [outcome] = handler.results
        self.assertEqual(outcome, [])
        dest.respond(relayed, 200)
        self.assertEqual(outcome[0].code, 200)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_two_hops(self):
        dest = self.node.wire("out")
        self.forward_to(dest.conn, hops=2)
        self.source.feed(request_bytes("t12345", "SEND", R + " " + R2 + " " + B, A,
                                       [("Message-ID", "m1")] + TEXT, b"data"))
        [fwd] = MessageAssembler().feed(dest.transport.value())
        self.assertEqual((fwd.headers["To-Path"], fwd.headers["From-Path"]), (B, R2 + " " + R + " " + A))
        self.assertEqual(fwd.body, b"data")

    def test_source_paused_while_destination_is_not_writable(self):
        dest = self.node.wire("out")
        self.forward_to(dest.conn)
        self.source.feed(self.frame[:self.head_len + 1000])
        self.assertEqual(self.source.transport.producerState, "producing")
        dest.conn.pauseProducing()  # the destination's socket buffer is full
        self.assertEqual(self.source.transport.producerState, "paused")
        dest.conn.resumeProducing()
        self.assertEqual(self.source.transport.producerState, "producing")
        self.source.feed(self.frame[self.head_len + 1000:])
        [relayed] = MessageAssembler(Parser(max_body=0)).feed(dest.transport.value())
        self.assertEqual(relayed.body, self.body)
        # Once the frame is through, the source no longer follows the destination.
        dest.conn.pauseProducing()
        self.assertEqual(self.source.transport.producerState, "producing")

    def test_source_paused_until_the_destination_stream_is_open(self):
        dest = self.node.wire("out")
        # Another frame is being streamed on the destination.
        other = Request("busy0001", "SEND", [("To-Path", B), ("From-Path", R), ("Message-ID", "b1")] + TEXT)
        busy = self.successResultOf(dest.conn.open_stream(other))
        self.forward_to(dest.conn)
        self.source.feed(self.frame[:self.head_len + 2000])
        self.assertEqual(self.source.transport.producerState, "paused")
        self.assertEqual(dest.transport.value(), serialize_head(other, True))
        busy.write(b"other")
        busy.end("$")
        self.assertEqual(self.source.transport.producerState, "producing")
        self.source.feed(self.frame[self.head_len + 2000:])
        relayed = MessageAssembler(Parser(max_body=0)).feed(dest.transport.value())
        self.assertEqual([(m.headers["Message-ID"], m.body) for m in relayed],
                         [("b1", b"other"), ("m1", self.body)])

    def test_source_paused_until_the_destination_is_connected(self):
        self.forward_to(None)
        self.source.feed(self.frame[:self.head_len + 2000])
        self.assertEqual(self.source.transport.producerState, "paused")
        [(host, port, factory, _, _)] = self.clock.tcpClients
        self.assertEqual(port, 2855)
        conn = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port),
                                    hostAddress=IPv4Address("TCP", "127.0.0.1", next(_ports)))
        conn.makeConnection(transport)
        self.assertEqual(self.source.transport.producerState, "producing")
        self.source.feed(self.frame[self.head_len + 2000:])
        [relayed] = MessageAssembler(Parser(max_body=0)).feed(transport.value())
        self.assertEqual((relayed.headers["To-Path"], relayed.body), (B, self.body))

    def test_connect_failure_resumes_the_source_and_fails_the_result(self):
        handler = self.forward_to(None)
        self.source.feed(self.frame[:self.head_len + 2000])
        self.assertEqual(self.source.transport.producerState, "paused")
        [(_, _, factory, _, _)] = self.clock.tcpClients
        factory.clientConnectionFailed(self.clock.connectors[0], Failure(ConnectionRefusedError()))
        self.clock.advance(1)
        [[failure]] = handler.results
        self.assertTrue(failure.check(SendError))
        self.assertEqual(self.source.transport.producerState, "producing")
        # The rest of the body is swallowed; the source connection goes on.
        self.source.feed(self.frame[self.head_len + 2000:])
        self.assertFalse(self.source.conn.closed)
        self.assertEqual(self.tm.pending_count, 0)

    def test_no_next_hop(self):
        sink, result = self.tm.forward_stream(self.source.conn, Request(
            "t12345", "SEND", [("To-Path", R), ("From-Path", A), ("Message-ID", "m1")] + TEXT))
        self.failureResultOf(result, SendError)
        verifyObject(IBodySink, sink)
        sink.body_data(b"x")
        sink.body_end("$")
        self.assertEqual(self.source.transport.producerState, "producing")
        self.assertEqual(self.tm.pending_count, 0)

    def test_source_lost_mid_body_aborts_the_forwarded_frame(self):
        dest = self.node.wire("out")
        self.forward_to(dest.conn)
        self.source.feed(self.frame[:self.head_len + 2000])
        self.source.lose()
        events = self.dest_events(dest)
        self.assertEqual(events[-1].flag, "#")
        self.assertFalse(dest.conn.closed)

    def test_destination_lost_mid_body_resumes_the_source(self):
        dest = self.node.wire("out")
        handler = self.forward_to(dest.conn)
        self.source.feed(self.frame[:self.head_len + 2000])
        dest.conn.pauseProducing()
        self.assertEqual(self.source.transport.producerState, "paused")
        dest.lose()
        self.assertEqual(self.source.transport.producerState, "producing")
        [[failure]] = handler.results
        self.assertTrue(failure.check(TransactionConnectionLost))

    def test_timeout_counts_from_the_end_of_the_body(self):
        """A body that takes 25 s to come through still leaves the next hop
        the whole 30 s to answer once its end-line is written."""
        dest = self.node.wire("out")
        handler = self.forward_to(dest.conn)
        self.source.feed(self.frame[:self.head_len + 5000])
        self.clock.advance(25)
        self.source.feed(self.frame[self.head_len + 5000:])
        self.clock.advance(DEFAULT_TIMEOUT - 0.5)
        self.assertEqual(handler.results, [[]])
        self.clock.advance(0.5)
        [[failure]] = handler.results
        self.assertTrue(failure.check(TransactionTimeout))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ForwardStreamCallbackTests(ForwardStreamTests):
    """Every forward_stream test again, outcomes through callbacks."""

    forwarder = CallbackForwarder

    def test_no_next_hop(self):
        out = []
        sink, result = self.tm.forward_stream(self.source.conn, Request(
            "t12345", "SEND", [("To-Path", R), ("From-Path", A), ("Message-ID", "m1")] + TEXT),
            callbacks=(out.append, out.append))
        self.assertIsNone(result)
        [failure] = out
        self.assertTrue(failure.check(SendError))
        verifyObject(IBodySink, sink)
        sink.body_data(b"x")
        sink.body_end("$")
        self.assertEqual(self.tm.pending_count, 0)

    def test_ready_destination_needs_no_deferred(self):
        """The hot path: the forwarded head is written before forward_stream
        returns and the outcome arrives without any Deferred."""
        dest = self.node.wire("out")
        created = []
        real = Deferred.__init__

        def counting(d, *a, **kw):
            created.append(d)
            real(d, *a, **kw)

        self.patch(Deferred, "__init__", counting)
        handler = self.forward_to(dest.conn)
        self.source.feed(self.frame)
        [relayed] = MessageAssembler(Parser(max_body=0)).feed(dest.transport.value())
        dest.respond(relayed, 200)
        self.assertEqual(created, [])
        [[response]] = handler.results
        self.assertEqual(response.code, 200)

    def test_timeout_reaches_the_failure_callback(self):
        dest = self.node.wire("out")
        handler = self.forward_to(dest.conn)
        self.source.feed(self.frame)
        self.clock.advance(DEFAULT_TIMEOUT)
        [[failure]] = handler.results
        self.assertTrue(failure.check(TransactionTimeout))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ForwardReplyTests(SynchronousTestCase):
    def setUp(self):
        self.node = Node(uri=R)
        self.tm = self.node.tm
        self.source = self.node.wire()

    def test_relays_the_response_with_the_original_tid(self):
        request = Request("t12345", "AUTH", [("To-Path", R + " " + R2), ("From-Path", A)])
        response = Response("fwdtid0001", 200, "OK", [
            ("To-Path", R + " " + A), ("From-Path", R2), ("Use-Path", R2), ("Expires", "600")])
        self.assertTrue(self.tm.forward_reply(self.source.conn, request, response))
        [relayed] = self.source.received()
        self.assertEqual((relayed.tid, relayed.code, relayed.comment), ("t12345", 200, "OK"))
        self.assertEqual(relayed.headers.items(), [
            ("To-Path", A), ("From-Path", R + " " + R2), ("Use-Path", R2), ("Expires", "600")])

    def test_hop_by_hop_response_goes_to_the_request_from_path(self):
        request = Request("t12345", "SEND", [("To-Path", R + " " + B), ("From-Path", A), ("Message-ID", "m")])
        response = Response("fwdtid0001", 403, None, [("To-Path", R), ("From-Path", B)])
        self.tm.forward_reply(self.source.conn, request, response)
        [relayed] = self.source.received()
        self.assertEqual((relayed.tid, relayed.code), ("t12345", 403))
        self.assertEqual(relayed.headers.items(), [("To-Path", A), ("From-Path", R + " " + B)])


# -- streamed bodies -------------------------------------------------------------


class StreamedBodyTests(SynchronousTestCase):
    def setUp(self):
        self.a = Node(uri=A)
        self.b = Node(clock=self.a.clock)
        self.clock = self.a.clock
        self.handler = Recorder(self.b.tm, answer=200, stream=True)
        self.b.tm.add_handler(self.handler)
        self.link = Link(self.a, self.b)

    def test_body_from_a_producer(self):
        producer = ManualProducer()
        verifyObject(IBodyProducer, producer)
        d = self.a.tm.send_request(**send(body=producer))
        self.assertEqual(producer.calls, ["start"])
        first, second = b"1" * 1000, b"2" * 1000
        producer.consumer.write(first)
        self.link.pump()
        [sink] = self.handler.sinks
        # Delivered as it is written, but for what could be an end-line prefix.
        self.assertGreater(len(sink.body), 950)
        self.assertTrue(first.startswith(sink.body))
        self.assertIsNone(sink.flag)
        producer.consumer.write(second)
        producer.done.callback(None)
        self.link.pump()
        self.assertEqual((sink.body, sink.flag), (first + second, "$"))
        self.assertEqual(self.successResultOf(d).code, 200)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_producer_follows_the_connection_writability(self):
        producer = ManualProducer()
        self.a.tm.send_request(**send(body=producer))
        self.link.client.conn.pauseProducing()
        self.link.client.conn.resumeProducing()
        self.assertEqual(producer.calls, ["start", "pause", "resume"])
        producer.done.callback(None)
        self.link.client.conn.pauseProducing()
        self.assertEqual(producer.calls, ["start", "pause", "resume"])

    def test_producer_failure_aborts_the_frame(self):
        producer = ManualProducer()
        self.a.tm.send_request(**send(body=producer))
        producer.consumer.write(b"partial")
        producer.done.errback(OSError("disk went away"))
        self.link.pump()
        [sink] = self.handler.sinks
        self.assertEqual((sink.body, sink.flag), (b"partial", "#"))

    def test_producer_stopped_when_the_connection_dies_mid_body(self):
        producer = ManualProducer()
        d = self.a.tm.send_request(**send(body=producer))
        producer.consumer.write(b"partial")
        self.link.client.conn.pauseProducing()  # the producer is paused too
        self.link.client.transport.loseConnection()
        self.link.client.conn.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(producer.calls, ["start", "pause", "stop"])
        self.failureResultOf(d, TransactionConnectionLost)

    def test_file_body_producer_stops_reading_when_the_connection_dies(self):
        data = bytes(range(256)) * 3000
        source = BytesIO(data)
        turns = []  # one read per turn, each turn run by hand
        coop = Cooperator(scheduler=turns.append, terminationPredicateFactory=lambda: lambda: True)
        producer = FileBodyProducer(source, cooperator=coop, readSize=4096)
        d = self.a.tm.send_request(**send(body=producer))
        for _ in range(5):
            turns.pop(0)()
        self.assertEqual(source.tell(), 5 * 4096)
        self.link.client.conn.connectionLost(Failure(ConnectionDone()))
        # Stopped: FileBodyProducer closes its file and reads no more.
        self.assertTrue(source.closed)
        while turns:
            turns.pop(0)()
        self.failureResultOf(d, TransactionConnectionLost)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeout_counts_from_the_end_of_a_produced_body(self):
        producer = ManualProducer()
        d = self.a.tm.send_request(**send(body=producer), timeout=20)
        producer.consumer.write(b"x" * 1000)
        self.clock.advance(15)
        producer.done.callback(None)
        self.clock.advance(19.5)
        self.assertNoResult(d)
        self.clock.advance(0.5)
        self.failureResultOf(d, TransactionTimeout)

    def test_slow_body_keeps_the_deadline_queue_in_order(self):
        """A request whose body ends late goes behind one sent whole in the
        meantime (on another connection): each times out at its own
        deadline, not the later one's."""
        slow_wire, quick_wire = self.a.wire("out"), self.a.wire("out")
        producer = ManualProducer()
        slow = self.a.tm.send_request(**send(body=producer), conn=slow_wire.conn)  # t=0
        self.clock.advance(5)
        quick = self.a.tm.send_request(**send(body=b"quick"), conn=quick_wire.conn)  # t=5
        self.clock.advance(5)
        producer.done.callback(None)  # t=10: the slow body ends
        self.clock.advance(DEFAULT_TIMEOUT - 5)  # t=35
        self.failureResultOf(quick, TransactionTimeout)
        self.assertNoResult(slow)
        self.clock.advance(5)  # t=40
        self.failureResultOf(slow, TransactionTimeout)

    def test_file_body_producer_starting_while_not_writable(self):
        data = bytes(range(256)) * 300
        coop = Cooperator(scheduler=lambda f: self.clock.callLater(0, f))
        producer = FileBodyProducer(BytesIO(data), cooperator=coop, readSize=4096)
        self.link.client.conn.pauseProducing()
        d = self.a.tm.send_request(**send(body=producer))
        for _ in range(5):
            self.clock.advance(0)
        # The head went out; no body while the connection is not writable.
        self.assertTrue(self.link.client.transport.value().endswith(b"text/plain\r\n\r\n"))
        self.link.client.conn.resumeProducing()
        for _ in range(100):
            self.clock.advance(0)
            self.link.pump()
        [sink] = self.handler.sinks
        self.assertEqual((sink.body, sink.flag), (data, "$"))
        self.assertEqual(self.successResultOf(d).code, 200)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_streamed_request_without_content_type_fails_cleanly(self):
        producer = ManualProducer()
        kwargs = send(body=None)
        d = self.a.tm.send_request(body=producer, **{k: v for k, v in kwargs.items() if k != "body"})
        self.failureResultOf(d, SerializationError)
        self.assertEqual(producer.calls, [])
        self.assertEqual(self.a.tm.pending_count, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.link.client.transport.value(), b"")


# -- round trips between two stacks ------------------------------------------------


class RoundTripTests(SynchronousTestCase):
    def setUp(self):
        self.a = Node(uri=A)
        self.b = Node(clock=self.a.clock)
        self.link = Link(self.a, self.b)

    def test_send_and_200(self):
        handler = Recorder(self.b.tm, answer=200)
        self.b.tm.add_handler(handler)
        d = self.a.tm.send_request(**send(body=b"hello"))
        self.link.pump()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.items(), [("To-Path", A), ("From-Path", B)])
        [(conn, request)] = handler.requests
        self.assertIs(conn, self.link.server.conn)
        self.assertEqual(request.body, b"hello")
        self.assertEqual(self.a.clock.getDelayedCalls(), [])

    def test_481_round_trip(self):
        d = self.a.tm.send_request(**send())
        self.link.pump()
        self.assertEqual(self.successResultOf(d).code, 481)

    def test_report_back_to_the_sender(self):
        handler = Recorder(self.b.tm)
        self.b.tm.add_handler(handler)
        got = Recorder(self.a.tm)
        self.a.tm.add_handler(got)
        self.a.tm.send_request(**send(headers=[("Success-Report", "yes"), ("Byte-Range", "1-2/2")]))
        self.link.pump()
        [(conn, request)] = handler.requests
        self.assertIsNone(self.successResultOf(self.b.tm.send_report(request, 200, conn=conn)))
        self.link.pump()
        [(_, report)] = got.requests
        self.assertEqual((report.method, report.status.code, report.message_id), ("REPORT", 200, "m1"))
        self.assertEqual(self.link.server.transport.value(), b"")  # and no response to it
