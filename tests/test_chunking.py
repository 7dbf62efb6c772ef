"""Tests for msrp_twisted.chunking: chunked sending, reassembly, the
receiving request handler, and a 50 MiB transfer over real loopback sockets."""

import gc
import hashlib
import io
import os
import shutil
import tempfile
import tracemalloc

from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.logger import capturedLogs
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from msrp_twisted.chunking import (
    ChunkReceiver,
    IncompleteMessage,
    IncomingMessages,
    MessageAborted,
    MessageSender,
    MessageSendError,
    MessageTooLarge,
    RangeSet,
    Reassembler,
    ReassemblyError,
    SendCancelled,
    send_message,
)
from msrp_twisted.connections import ConnectionManager
from msrp_twisted.core.headers import Headers
from msrp_twisted.core.ids import new_session_id
from msrp_twisted.core.message import Request
from msrp_twisted.core.uri import MSRPURI
from msrp_twisted.protocol import MSRPProtocol
from msrp_twisted.transactions import IRequestHandler, TransactionManager


def make_tempdir(case):
    """A private directory outside the source tree, removed after the test."""
    path = tempfile.mkdtemp(prefix="msrp-test-chunking-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


def sha(data):
    return hashlib.sha256(data).hexdigest()


def pattern(n):
    """n bytes in which every 4-byte window differs: misplaced bytes show."""
    return b"".join(i.to_bytes(4, "big") for i in range((n + 3) // 4))[:n]


# -- in-memory stacks ---------------------------------------------------------
class Stack:
    """One service: ConnectionManager + TransactionManager on a Clock."""

    def __init__(self, clock, port, session=None):
        self.cm = ConnectionManager(reactor=clock)
        self.tm = TransactionManager(self.cm, reactor=clock)
        self.uri = MSRPURI("127.0.0.1", port, session or new_session_id())


def connect(client, server, clock):
    """Connect client to server in memory; returns (client conn, server conn, pump)."""
    host, port = server.uri.host, server.uri.port
    out = MSRPProtocol(client.cm, "out", "msrp", target=(host, port))
    inc = MSRPProtocol(server.cm, "in", "msrp")
    here, there = IPv4Address("TCP", "127.0.0.1", 40000 + port), IPv4Address("TCP", host, port)
    pump = iosim.connect(inc, iosim.FakeTransport(inc, True, there, here),
                         out, iosim.FakeTransport(out, False, here, there), clock=clock)
    client.cm.register_peer(out, server.uri)  # requests to server.uri use this connection
    return out, inc, pump


@implementer(IRequestHandler)
class Recorder:
    """Takes requests whole and answers nothing unless told to."""

    def __init__(self):
        self.requests = []

    def head_received(self, conn, request):
        return None

    def request_received(self, conn, request):
        self.requests.append((conn, request))

    def connection_lost(self, conn, reason):
        pass

    @property
    def sends(self):
        return [r for _, r in self.requests if r.method == "SEND"]


class PairMixin:
    def make_pair(self):
        self.clock = task.Clock()
        self.a = Stack(self.clock, 7001, "sender")
        self.b = Stack(self.clock, 7002, "receiver")
        self.out, self.inc, self.pump = connect(self.a, self.b, self.clock)

    def send(self, content, **options):
        options.setdefault("chunk_size", 1000)
        sender = send_message(self.a.tm, [self.b.uri], [self.a.uri], content, "application/octet-stream",
                              **options)
        self.pump.flush()
        return sender

    def answer(self, request, code=200, comment=None):
        self.b.tm.send_reply(self.inc, request, code, comment)
        self.pump.flush()


# -- sending ------------------------------------------------------------------
class SenderTests(PairMixin, SynchronousTestCase):
    def setUp(self):
        self.make_pair()
        self.rec = Recorder()
        self.b.tm.add_handler(self.rec)

    def answer_all(self):
        answered = set()
        while True:
            todo = [r for r in self.rec.sends if r.tid not in answered]
            if not todo:
                return
            for r in todo:
                answered.add(r.tid)
                self.answer(r)

    def ranges(self):
        return [(r.headers["Byte-Range"], r.flag) for r in self.rec.sends]

    def test_exact_multiple(self):
        data = pattern(3000)
        sender = self.send(data)
        self.answer_all()
        self.assertEqual(self.ranges(), [("1-1000/3000", "+"), ("1001-2000/3000", "+"),
                                         ("2001-3000/3000", "$")])
        self.assertEqual(b"".join(r.body for r in self.rec.sends), data)
        self.assertEqual(len({r.message_id for r in self.rec.sends}), 1)
        result = self.successResultOf(sender.result)
        self.assertEqual((result.message_id, result.size, result.chunks, result.acknowledged),
                         (sender.message_id, 3000, 3, 3000))

    def test_remainder(self):
        data = pattern(2500)
        sender = self.send(data)
        self.answer_all()
        self.assertEqual(self.ranges(), [("1-1000/2500", "+"), ("1001-2000/2500", "+"),
                                         ("2001-2500/2500", "$")])
        self.assertEqual(b"".join(r.body for r in self.rec.sends), data)
        self.assertEqual(self.successResultOf(sender.result).chunks, 3)

    def test_small_message_is_one_chunk(self):
        sender = self.send(b"hello")
        self.answer_all()
        self.assertEqual(self.ranges(), [("1-5/5", "$")])
        self.successResultOf(sender.result)

    def test_empty_message(self):
        sender = self.send(b"")
        self.answer_all()
        self.assertEqual(self.ranges(), [("1-0/0", "$")])
        self.assertEqual(self.rec.sends[0].body, b"")
        self.assertEqual(self.successResultOf(sender.result).size, 0)

    def test_default_chunk_size(self):
        sender = send_message(self.a.tm, [self.b.uri], [self.a.uri], pattern(5000), "text/plain")
        self.pump.flush()
        self.answer_all()
        self.assertEqual(self.ranges(), [("1-2048/5000", "+"), ("2049-4096/5000", "+"),
                                         ("4097-5000/5000", "$")])
        self.successResultOf(sender.result)

    def test_headers_on_every_chunk(self):
        sender = self.send(pattern(1500), success_report=True, failure_report="yes", message_id="msg-0001",
                           headers=[("Content-ID", "<f1@example.com>"),
                                    ("Content-Disposition", 'attachment; filename="a.bin"'),
                                    ("X-Extension", "1")])
        self.answer_all()
        self.assertEqual(len(self.rec.sends), 2)
        for r in self.rec.sends:
            names = [n for n, _ in r.headers]
            self.assertEqual(names, ["To-Path", "From-Path", "Message-ID", "Success-Report", "Byte-Range",
                                     "X-Extension", "Content-ID", "Content-Disposition", "Content-Type"])
            self.assertEqual(r.message_id, "msg-0001")
            self.assertEqual(r.success_report, "yes")
            self.assertEqual(r.failure_report, "yes")
            self.assertEqual(r.headers["Content-ID"], "<f1@example.com>")
        self.successResultOf(sender.result)

    def test_bad_arguments(self):
        def make(**kw):
            return MessageSender(self.a.tm, [self.b.uri], [self.a.uri], b"x", **kw)

        self.assertRaises(ValueError, make, headers=[("Byte-Range", "1-1/1")])
        self.assertRaises(ValueError, make, headers=[("Message-ID", "abcd")])
        self.assertRaises(ValueError, make, headers=[("Content-ID", "a\r\nb")])
        self.assertRaises(ValueError, make, message_id="x")
        self.assertRaises(ValueError, make, chunk_size=0)
        self.assertRaises(ValueError, make, window=0)
        self.assertRaises(ValueError, make, failure_report="maybe")
        self.assertRaises(TypeError, MessageSender, self.a.tm, [self.b.uri], [self.a.uri], 12)
        self.assertRaises(TypeError, MessageSender, self.a.tm, [self.b.uri], [self.a.uri], io.StringIO("x"))
        self.assertRaises(FileNotFoundError, MessageSender, self.a.tm, [self.b.uri], [self.a.uri],
                          os.path.join(make_tempdir(self), "missing"))

    def test_window_bounds_outstanding_chunks(self):
        sender = self.send(pattern(10000), window=3)
        self.assertEqual(len(self.rec.sends), 3)
        self.assertEqual(self.a.tm.pending_count, 3)
        self.answer(self.rec.sends[0])
        self.assertEqual(len(self.rec.sends), 4)
        self.assertEqual(self.a.tm.pending_count, 3)
        self.assertNoResult(sender.result)
        self.answer_all()
        self.assertEqual(len(self.rec.sends), 10)
        self.assertEqual(self.successResultOf(sender.result).acknowledged, 10000)

    def test_progress(self):
        seen = []
        sender = self.send(pattern(2500), progress=lambda done, total: seen.append((done, total)))
        self.assertEqual(seen, [])
        self.answer_all()
        self.assertEqual(seen, [(1000, 2500), (2000, 2500), (2500, 2500)])
        self.successResultOf(sender.result)

    def test_waits_while_connection_not_writable(self):
        self.out.pauseProducing()
        sender = self.send(pattern(5000), failure_report="no")
        self.assertEqual(self.rec.sends, [])
        self.out.resumeProducing()
        self.pump.flush()
        self.assertEqual(len(self.rec.sends), 5)
        self.successResultOf(sender.result)

    def test_failure_report_no_needs_no_responses(self):
        seen = []
        sender = self.send(pattern(3000), failure_report="no", progress=lambda d, t: seen.append(d))
        self.assertEqual(len(self.rec.sends), 3)
        self.assertEqual(self.a.tm.pending_count, 0)
        self.assertEqual([r.failure_report for r in self.rec.sends], ["no"] * 3)
        self.assertEqual(seen, [1000, 2000, 3000])
        self.assertEqual(self.successResultOf(sender.result).acknowledged, 3000)

    def test_failure_report_partial(self):
        sender = self.send(pattern(3000), failure_report="partial")
        self.assertEqual(len(self.rec.sends), 3)
        self.successResultOf(sender.result)
        # No news is good news: the transactions time out quietly.
        self.clock.advance(31)
        self.assertEqual(self.a.tm.pending_count, 0)

    def test_partial_negative_response_fails(self):
        def progress(done, total):
            if done == 1000:
                self.out.pauseProducing()  # the write buffer filled up

        sender = self.send(pattern(3000), failure_report="partial", progress=progress)
        self.assertEqual(len(self.rec.sends), 1)
        self.answer(self.rec.sends[0], 415, "not that type")
        err = self.failureResultOf(sender.result, MessageSendError).value
        self.assertEqual((err.code, err.comment), (415, "not that type"))
        self.out.resumeProducing()
        self.pump.flush()
        self.assertEqual(len(self.rec.sends), 1)

    def test_partial_refusal_after_the_end_is_only_logged(self):
        sender = self.send(pattern(3000), failure_report="partial")
        result = self.successResultOf(sender.result)
        with capturedLogs() as events:
            self.answer(self.rec.sends[1], 415)
        self.assertEqual(result.acknowledged, 3000)
        late = [e for e in events if "after the send ended" in e.get("log_format", "")]
        self.assertEqual([(e["start"], e["code"]) for e in late], [(1001, 415)])

    def test_refusal_stops_the_send(self):
        sender = self.send(pattern(10000), window=2)
        self.answer(self.rec.sends[0])
        self.answer(self.rec.sends[1], 413, "too big for me")
        count = len(self.rec.sends)
        self.answer_all()
        self.assertEqual(len(self.rec.sends), count)
        self.assertEqual(count, 3)  # the chunk sent after the first 200
        err = self.failureResultOf(sender.result, MessageSendError).value
        self.assertEqual(err.code, 413)
        self.assertEqual(err.comment, "too big for me")
        self.assertEqual(err.acknowledged, 1000)
        self.assertEqual(err.message_id, sender.message_id)
        self.assertNotIsInstance(err, SendCancelled)
        # No '#' after a 413: the receiver said stop (RFC 4975 section 10.5).
        self.assertNotIn("#", [r.flag for r in self.rec.sends])

    def test_timeout_is_408(self):
        sender = self.send(pattern(3000))
        self.clock.advance(29)
        self.assertNoResult(sender.result)
        self.clock.advance(1)
        err = self.failureResultOf(sender.result, MessageSendError).value
        self.assertEqual(err.code, 408)
        self.assertIn("no response", err.reason)

    def test_connection_lost_fails(self):
        sender = self.send(pattern(3000))
        self.inc.transport.loseConnection()
        self.pump.flush()
        err = self.failureResultOf(sender.result, MessageSendError).value
        self.assertEqual(err.code, 408)
        self.assertIn("closed by peer", err.reason)

    def test_connection_lost_while_paused(self):
        self.out.pauseProducing()
        sender = self.send(pattern(5000), failure_report="no")
        self.inc.transport.loseConnection()
        self.pump.flush()
        err = self.failureResultOf(sender.result, MessageSendError).value
        self.assertEqual(err.code, 408)
        self.assertIn("closed while sending", err.reason)

    def test_already_closed_connection(self):
        self.inc.transport.loseConnection()
        self.pump.flush()
        sender = send_message(self.a.tm, [self.b.uri], [self.a.uri], b"data", conn=self.out)
        self.assertEqual(self.failureResultOf(sender.result, MessageSendError).value.code, 408)
        sender.cancel()  # too late: nothing to abort, no error

    def test_request_on_closed_connection_fails_cleanly(self):
        # transactions.py fix: the transaction made for a request that could
        # not be written is cancelled without an unhandled CancelledError.
        from msrp_twisted.connections import SendError
        from msrp_twisted.protocol import ConnectionClosed

        def refuse(data):
            raise ConnectionClosed("gone")

        self.out.send_bytes = refuse  # the socket closed under the write
        d = self.a.tm.send_request([self.b.uri], [self.a.uri], "SEND",
                                   [("Message-ID", "abcd"), ("Content-Type", "a/b")], b"x", conn=self.out)
        self.failureResultOf(d, SendError)
        self.assertEqual(self.a.tm.pending_count, 0)
        del d
        gc.collect()

    def test_cancel_sends_abort_chunk(self):
        sender = self.send(pattern(5000), window=2)
        self.answer(self.rec.sends[0])
        self.assertEqual(len(self.rec.sends), 3)
        sender.cancel()
        self.pump.flush()
        err = self.failureResultOf(sender.result, SendCancelled).value
        self.assertEqual(err.acknowledged, 1000)
        last = self.rec.sends[-1]
        self.assertEqual(len(self.rec.sends), 4)
        self.assertEqual(last.flag, "#")
        self.assertEqual(last.headers["Byte-Range"], "3001-3000/5000")
        self.assertEqual(last.body, b"")
        self.assertEqual(last.message_id, sender.message_id)
        self.answer_all()
        self.assertEqual(len(self.rec.sends), 4)

    def test_cancelling_the_result_cancels_the_send(self):
        sender = self.send(pattern(5000), window=1)
        sender.result.cancel()
        self.pump.flush()
        self.failureResultOf(sender.result, SendCancelled)
        self.assertEqual([r.flag for r in self.rec.sends], ["+", "#"])

    def test_cancel_before_anything_sent_sends_nothing(self):
        sender = MessageSender(self.a.tm, [self.b.uri], [self.a.uri], pattern(5000))
        sender.cancel()
        sender.start()
        self.pump.flush()
        self.failureResultOf(sender.result, SendCancelled)
        self.assertEqual(self.rec.sends, [])

    def test_cancel_after_last_chunk_written_sends_no_abort(self):
        sender = self.send(pattern(2000))
        self.assertEqual(len(self.rec.sends), 2)
        sender.cancel()
        self.pump.flush()
        self.failureResultOf(sender.result, SendCancelled)
        self.assertEqual([r.flag for r in self.rec.sends], ["+", "$"])

    def test_file_path_read_a_chunk_at_a_time(self):
        path = os.path.join(make_tempdir(self), "content.bin")
        data = pattern(4500)
        with open(path, "wb") as f:
            f.write(data)
        sender = self.send(path, window=2)
        self.answer_all()
        self.assertEqual(b"".join(r.body for r in self.rec.sends), data)
        self.assertEqual(self.ranges()[-1], ("4001-4500/4500", "$"))
        self.assertTrue(sender._source.file.closed)
        self.successResultOf(sender.result)

    def test_file_object_from_its_position_and_left_open(self):
        reads = []

        class Counting(io.BytesIO):
            def read(self, n=-1):
                reads.append(n)
                return super().read(n)

        f = Counting(b"skip" + pattern(2500))
        f.seek(4)
        sender = self.send(f, window=1)
        self.answer_all()
        self.assertEqual(b"".join(r.body for r in self.rec.sends), pattern(2500))
        self.assertEqual(self.ranges()[0], ("1-1000/2500", "+"))
        self.assertTrue(all(0 < n <= 1000 for n in reads), reads)
        self.assertFalse(f.closed)
        self.successResultOf(sender.result)

    def test_unseekable_source_has_star_total(self):
        class Pipe:
            def __init__(self, data):
                self.data = io.BytesIO(data)

            def read(self, n):
                return self.data.read(min(n, 300))  # short reads, like a pipe

        sender = self.send(Pipe(pattern(2500)))
        self.answer_all()
        self.assertEqual(self.ranges(), [("1-1000/*", "+"), ("1001-2000/*", "+"), ("2001-2500/2500", "$")])
        self.assertEqual(b"".join(r.body for r in self.rec.sends), pattern(2500))
        self.assertEqual(self.successResultOf(sender.result).size, 2500)

    def test_unseekable_source_ending_on_a_chunk_boundary(self):
        class Pipe:
            def __init__(self, data):
                self.data = io.BytesIO(data)

            def read(self, n):
                return self.data.read(n)

        sender = self.send(Pipe(pattern(2000)))
        self.answer_all()
        self.assertEqual(self.ranges(), [("1-1000/*", "+"), ("1001-2000/2000", "$")])
        self.successResultOf(sender.result)

    def test_shrinking_file_fails_and_aborts(self):
        path = os.path.join(make_tempdir(self), "content.bin")
        with open(path, "wb") as f:
            f.write(pattern(50000))
        sender = self.send(path, window=1, chunk_size=10000)
        os.truncate(path, 15000)  # somebody cuts the file short mid-send
        self.answer(self.rec.sends[0])
        err = self.failureResultOf(sender.result, MessageSendError).value
        self.assertIn("ended after 15000 of 50000", err.reason)
        self.assertEqual([r.flag for r in self.rec.sends], ["+", "#"])

    def test_connect_failure(self):
        nowhere = MSRPURI("127.0.0.1", 9, "x")
        stack = Stack(self.clock, 7003)

        class Refusing:
            def connection_for(self, uri, tls=None):
                from msrp_twisted.connections import SendError
                return defer.fail(SendError("cannot connect to %s: refused" % uri.authority))

        stack.tm.connections = Refusing()
        sender = send_message(stack.tm, [nowhere], [stack.uri], b"data")
        err = self.failureResultOf(sender.result, MessageSendError).value
        self.assertEqual(err.code, 408)
        self.assertIn("refused", err.reason)


# -- byte ranges ----------------------------------------------------------------
class RangeSetTests(SynchronousTestCase):
    def test_merge_and_size(self):
        r = RangeSet()
        self.assertEqual(r.add(10, 20), 10)
        self.assertEqual(r.add(30, 40), 10)
        self.assertEqual(list(r), [(10, 20), (30, 40)])
        self.assertEqual(r.add(20, 30), 10)  # touching both: one run
        self.assertEqual(list(r), [(10, 40)])
        self.assertEqual(r.add(5, 15), 5)  # overlapping
        self.assertEqual(r.add(12, 18), 0)  # inside
        self.assertEqual(r.add(0, 100), 65)  # swallows everything
        self.assertEqual(list(r), [(0, 100)])
        self.assertEqual(r.size, 100)
        self.assertEqual(r.add(7, 7), 0)

    def test_many_pieces_collapse(self):
        r = RangeSet()
        for start in range(0, 1000, 20):
            r.add(start, start + 10)
        self.assertEqual(len(r), 50)
        r.add(5, 985)
        self.assertEqual(list(r), [(0, 990)])
        self.assertEqual(r.size, 990)

    def test_missing_and_covers(self):
        r = RangeSet()
        r.add(10, 20)
        r.add(30, 40)
        self.assertEqual(r.missing(0, 50), [(0, 10), (20, 30), (40, 50)])
        self.assertEqual(r.missing(12, 35), [(20, 30)])
        self.assertEqual(r.missing(12, 18), [])
        self.assertEqual(r.missing(40, 45), [(40, 45)])
        self.assertTrue(r.covers(10, 20))
        self.assertFalse(r.covers(10, 21))
        self.assertFalse(r.covers(0, 1))
        self.assertEqual(r.prefix_end(), 0)
        r.add(0, 10)
        self.assertEqual(r.prefix_end(), 20)
        self.assertEqual(r.high, 40)


# -- reassembly -----------------------------------------------------------------
class ReassemblerTests(SynchronousTestCase):
    def make(self, **kw):
        kw.setdefault("spool_dir", self.spool_dir())
        return Reassembler("m1234", **kw)

    def spool_dir(self):
        path = make_tempdir(self)
        self.dirs = getattr(self, "dirs", []) + [path]
        return path

    def spooled_files(self):
        return [f for d in self.dirs for f in os.listdir(d)]

    def test_in_order(self):
        data = pattern(3000)
        r = self.make()
        self.assertFalse(r.add_chunk("1-1000/3000", data[:1000], "+"))
        self.assertFalse(r.add_chunk("1001-2000/3000", data[1000:2000], "+"))
        self.assertTrue(r.add_chunk("2001-3000/3000", data[2000:], "$"))
        body, path, size, digest = r.finish()
        self.assertEqual((body, path, size, digest), (data, None, 3000, sha(data)))

    def test_out_of_order(self):
        data = pattern(3000)
        r = self.make()
        self.assertFalse(r.add_chunk("2001-3000/3000", data[2000:], "$"))
        self.assertFalse(r.add_chunk("1-1000/3000", data[:1000], "+"))
        self.assertEqual(r.byte_ranges, [(1, 1000), (2001, 3000)])
        self.assertEqual(r.received_bytes, 2000)
        self.assertTrue(r.add_chunk("1001-2000/3000", data[1000:2000], "+"))
        body, _, _, digest = r.finish()
        self.assertEqual(body, data)
        self.assertEqual(digest, sha(data))

    def test_overlapping(self):
        data = pattern(3000)
        r = self.make()
        r.add_chunk("1-1500/3000", data[:1500], "+")
        r.add_chunk("1001-2500/3000", data[1000:2500], "+")
        r.add_chunk("500-1200/3000", data[499:1200], "+")
        self.assertEqual(r.received_bytes, 2500)
        self.assertEqual(r.byte_ranges, [(1, 2500)])
        self.assertTrue(r.add_chunk("2001-3000/3000", data[2000:], "$"))
        body, _, size, digest = r.finish()
        self.assertEqual((body, size, digest), (data, 3000, sha(data)))

    def test_repeated_range_does_not_change_stored_bytes(self):
        r = self.make()
        r.add_chunk("1-4/8", b"abcd", "+")
        r.add_chunk("1-4/8", b"XXXX", "+")
        r.add_chunk("5-8/8", b"efgh", "$")
        body, _, _, digest = r.finish()
        self.assertEqual(body, b"abcdefgh")
        self.assertEqual(digest, sha(b"abcdefgh"))

    def test_star_end_is_computed_from_the_body(self):
        data = pattern(2000)
        r = self.make()
        self.assertFalse(r.add_chunk("1-*/2000", data[:700], "+"))  # interrupted chunk
        self.assertEqual(r.byte_ranges, [(1, 700)])
        self.assertTrue(r.add_chunk("701-*/2000", data[700:], "$"))
        self.assertEqual(r.finish()[0], data)

    def test_star_total_needs_the_last_chunk(self):
        data = pattern(2500)
        r = self.make()
        self.assertFalse(r.add_chunk("1-1000/*", data[:1000], "+"))
        self.assertFalse(r.add_chunk("1001-2000/*", data[1000:2000], "+"))
        self.assertIsNone(r.size)
        self.assertTrue(r.add_chunk("2001-2500/*", data[2000:], "$"))
        self.assertEqual(r.finish()[:3], (data, None, 2500))

    def test_star_total_last_chunk_first(self):
        data = pattern(2500)
        r = self.make()
        self.assertFalse(r.add_chunk("2001-*/*", data[2000:], "$"))
        self.assertEqual(r.size, 2500)
        self.assertFalse(r.add_chunk("1-1000/*", data[:1000], "+"))
        self.assertTrue(r.add_chunk("1001-2000/*", data[1000:2000], "+"))
        body, _, _, digest = r.finish()
        self.assertEqual((body, digest), (data, sha(data)))

    def test_no_byte_range_is_the_whole_message(self):
        r = self.make()
        self.assertTrue(r.add_chunk(None, b"hello", "$"))
        self.assertEqual(r.finish()[:3], (b"hello", None, 5))

    def test_empty_message(self):
        r = self.make()
        self.assertTrue(r.add_chunk("1-0/0", b"", "$"))
        self.assertEqual(r.finish(), (b"", None, 0, sha(b"")))

    def test_abort_discards(self):
        r = self.make(spool_threshold=100)
        r.add_chunk("1-1000/5000", pattern(1000), "+")
        self.assertTrue(r.spooled)
        self.assertEqual(len(self.spooled_files()), 1)
        self.assertFalse(r.add_chunk("1001-1000/5000", b"", "#"))
        self.assertEqual(r.state, "aborted")
        self.assertEqual(self.spooled_files(), [])
        self.assertRaises(ReassemblyError, r.add_chunk, "1001-2000/5000", pattern(1000), "+")

    def test_spools_when_the_total_is_over_the_threshold(self):
        data = pattern(5000)
        r = self.make(spool_threshold=1000)
        r.add_chunk("4001-5000/5000", data[4000:], "$")
        self.assertTrue(r.spooled)
        self.assertEqual(len(r._memory), 0)
        for start in range(0, 4000, 1000):
            r.add_chunk("%d-%d/5000" % (start + 1, start + 1000), data[start:start + 1000], "+")
        body, path, size, digest = r.finish()
        self.assertIsNone(body)
        self.assertEqual(os.path.dirname(path), self.dirs[0])
        with open(path, "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual((size, digest), (5000, sha(data)))

    def test_moves_to_disk_when_an_unknown_total_grows_past_the_threshold(self):
        data = pattern(5000)
        r = self.make(spool_threshold=2500)
        r.add_chunk("1-2000/*", data[:2000], "+")
        self.assertFalse(r.spooled)
        r.add_chunk("2001-4000/*", data[2000:4000], "+")
        self.assertTrue(r.spooled)
        self.assertEqual(len(r._memory), 0)
        self.assertTrue(r.add_chunk("4001-5000/*", data[4000:], "$"))
        body, path, size, digest = r.finish()
        with open(path, "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(digest, sha(data))

    def test_total_over_max_size(self):
        r = self.make(max_size=1000)
        e = self.assertRaises(MessageTooLarge, r.begin_chunk, "1-100/1001")
        self.assertEqual(e.code, 413)
        self.assertEqual(r.state, "failed")
        self.assertEqual((r.should_abort, r.abort_code), (True, 413))
        self.assertRaises(MessageTooLarge, r.add_chunk, "1-100/100", b"x" * 100)

    def test_unknown_total_growing_over_max_size(self):
        r = self.make(max_size=1000, spool_threshold=100)
        r.add_chunk("1-600/*", pattern(600), "+")
        self.assertEqual(len(self.spooled_files()), 1)
        self.assertEqual((r.should_abort, r.abort_code), (False, None))
        feed = r.begin_chunk("601-1200/*")
        self.assertRaises(MessageTooLarge, feed.write, pattern(600))
        self.assertEqual(self.spooled_files(), [])

    def test_body_longer_than_its_range(self):
        r = self.make()
        e = self.assertRaises(ReassemblyError, r.add_chunk, "1-10/20", b"x" * 11, "+")
        self.assertEqual(e.code, 400)
        self.assertEqual(r.state, "receiving")

    def test_body_beyond_the_total(self):
        r = self.make()
        self.assertRaises(ReassemblyError, r.add_chunk, "15-*/20", b"x" * 10, "+")

    def test_contradicting_totals(self):
        r = self.make()
        r.add_chunk("1-10/20", b"x" * 10, "+")
        e = self.assertRaises(ReassemblyError, r.begin_chunk, "11-20/30")
        self.assertEqual(e.code, 400)

    def test_last_chunk_before_bytes_already_received(self):
        r = self.make()
        r.add_chunk("11-20/*", b"x" * 10, "+")
        self.assertRaises(ReassemblyError, r.add_chunk, "1-5/*", b"y" * 5, "$")

    def test_spool_failure(self):
        r = self.make(spool_threshold=10)
        r.spool_dir = os.path.join(self.dirs[0], "missing")
        e = self.assertRaises(ReassemblyError, r.begin_chunk, "1-10/100")
        self.assertEqual(e.code, 500)
        self.assertEqual(r.state, "failed")

    def test_malformed_byte_range(self):
        r = self.make()
        self.assertRaises(ReassemblyError, r.begin_chunk, "0-5/5")
        self.assertRaises(ReassemblyError, r.begin_chunk, "bogus")

    def test_hash_computed_incrementally_in_order(self):
        data = pattern(3000)
        r = self.make()
        r.add_chunk("1-1000/3000", data[:1000], "+")
        self.assertEqual(r._hashed, 1000)
        r.add_chunk("2001-3000/3000", data[2000:], "+")
        self.assertEqual(r._hashed, 1000)  # gap: waits
        r.add_chunk("1001-2000/3000", data[1000:2000], "+")
        self.assertEqual(r._hashed, 3000)  # caught up from storage
        self.assertEqual(r.finish()[3], sha(data))

    def test_streamed_writes(self):
        data = pattern(3000)
        r = self.make(spool_threshold=1000)
        feed = r.begin_chunk("1-3000/3000")
        for i in range(0, 3000, 7):
            feed.write(data[i:i + 7])
        self.assertTrue(feed.end("$"))
        _, path, _, digest = r.finish()
        with open(path, "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(digest, sha(data))


# -- the registry -----------------------------------------------------------------
def chunk_request(byte_range, message_id="msg-1", body=b"", flag="+", success="no", failure="yes"):
    headers = [("To-Path", "msrp://127.0.0.1:7002/receiver;tcp"),
               ("From-Path", "msrp://127.0.0.1:7001/sender;tcp"),
               ("Message-ID", message_id), ("Success-Report", success), ("Failure-Report", failure)]
    if byte_range is not None:
        headers.append(("Byte-Range", byte_range))
    headers.append(("Content-Type", "text/plain"))
    return Request("tid00001", "SEND", Headers(headers), body, flag)


class IncomingMessagesTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.timeouts = []
        self.spool = make_tempdir(self)
        self.refused = []
        self.reg = IncomingMessages(self.clock, 60, lambda e, err: self.timeouts.append((e, err)),
                                    spool_threshold=100, max_size=10000, spool_dir=self.spool,
                                    on_failed=lambda e, err: self.refused.append(err))

    def feed(self, request, key=("s", "msg-1")):
        chunk = self.reg.begin_chunk(key, request)
        if request.body:
            chunk.write(request.body)
        return chunk.end(request.flag)

    def test_incomplete_message_times_out(self):
        self.assertEqual(self.feed(chunk_request("1-500/1000", body=b"x" * 500)), "incomplete")
        self.assertEqual(len(os.listdir(self.spool)), 1)
        self.clock.advance(50)
        self.assertEqual(self.feed(chunk_request("501-700/1000", body=b"x" * 200)), "incomplete")
        self.clock.advance(59)
        self.assertEqual(self.timeouts, [])
        self.clock.advance(1)
        [(entry, error)] = self.timeouts
        self.assertIsInstance(error, IncompleteMessage)
        self.assertEqual(error.code, 408)
        self.assertIn("700 of 1000", error.reason)
        self.assertEqual(entry.report_byte_range, "1-1000/1000")
        self.assertEqual(len(self.reg), 0)
        self.assertEqual(os.listdir(self.spool), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.reg.stats["messages_timed_out"], 1)

    def test_streaming_chunk_is_progress(self):
        self.feed(chunk_request("1-10/1000", body=b"x" * 10))
        chunk = self.reg.begin_chunk(("s", "msg-1"), chunk_request("11-1000/1000"))
        self.clock.advance(120)
        self.assertEqual(self.timeouts, [])
        chunk.interrupted()  # the connection died mid-chunk
        self.clock.advance(60)
        self.assertEqual(len(self.timeouts), 1)

    def test_completion_cancels_the_timer(self):
        self.feed(chunk_request("1-5/10", body=b"abcde"))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(self.feed(chunk_request("6-10/10", body=b"fghij", flag="$")), "complete")
        msg = self.reg.finish(self.reg.get(("s", "msg-1")))
        self.assertEqual((msg.data, msg.size, msg.sha256), (b"abcdefghij", 10, sha(b"abcdefghij")))
        self.assertEqual(msg.content_type, "text/plain")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.reg), 0)

    def test_keys_keep_messages_apart(self):
        self.feed(chunk_request("1-5/10", body=b"aaaaa"), ("s1", "m"))
        self.feed(chunk_request("1-5/10", body=b"bbbbb"), ("s2", "m"))
        self.feed(chunk_request("6-10/10", body=b"AAAAA", flag="$"), ("s1", "m"))
        self.assertEqual(self.reg.finish(self.reg.get(("s1", "m"))).data, b"aaaaaAAAAA")
        self.assertIn(("s2", "m"), self.reg)

    def test_abort_drops(self):
        self.feed(chunk_request("1-500/1000", body=b"x" * 500))
        self.assertEqual(self.feed(chunk_request("501-500/1000", flag="#")), "aborted")
        self.assertEqual(len(self.reg), 0)
        self.assertEqual(os.listdir(self.spool), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_too_large_is_remembered(self):
        e = self.assertRaises(MessageTooLarge, self.reg.begin_chunk, ("s", "msg-1"),
                              chunk_request("1-10/20000"))
        self.assertEqual(e.code, 413)
        e = self.assertRaises(MessageTooLarge, self.reg.begin_chunk, ("s", "msg-1"),
                              chunk_request("11-20/20000"))
        self.assertEqual(e.code, 413)
        self.assertEqual(len(self.refused), 1)
        self.assertIsInstance(self.refused[0], MessageTooLarge)
        self.clock.advance(60)
        self.assertEqual(len(self.reg), 0)
        self.assertEqual(self.timeouts, [])  # no failure REPORT: the 413 said it

    def test_spool_failure_is_500(self):
        self.reg.spool_dir = os.path.join(self.spool, "missing")
        chunk = self.reg.begin_chunk(("s", "msg-1"), chunk_request("1-50/*"))
        chunk.write(b"x" * 50)
        self.assertEqual(chunk.end("+"), "incomplete")
        chunk = self.reg.begin_chunk(("s", "msg-1"), chunk_request("51-150/*"))
        e = self.assertRaises(ReassemblyError, chunk.write, b"y" * 100)
        self.assertEqual(e.code, 500)
        self.assertIn("No such file", e.reason)
        self.assertEqual(self.refused, [e])
        e = self.assertRaises(ReassemblyError, self.reg.begin_chunk, ("s", "msg-1"), chunk_request("151-160/*"))
        self.assertEqual(e.code, 500)
        self.clock.advance(60)
        self.assertEqual(len(self.reg), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_refused_first_chunk_leaves_nothing(self):
        self.assertRaises(ReassemblyError, self.reg.begin_chunk, ("s", "msg-1"), chunk_request("1-x/5"))
        self.assertEqual(len(self.reg), 0)

    def test_close_removes_everything(self):
        self.feed(chunk_request("1-500/1000", body=b"x" * 500))
        self.reg.close()
        self.assertEqual(len(self.reg), 0)
        self.assertEqual(os.listdir(self.spool), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


# -- the request handler, in memory ---------------------------------------------
class ReceiverTests(PairMixin, SynchronousTestCase):
    def setUp(self):
        self.make_pair()
        self.spool = make_tempdir(self)
        self.delivered, self.failed, self.reports = [], [], []
        self.receiver = ChunkReceiver(self.b.tm, self.delivered.append,
                                      message_failed=lambda e, err: self.failed.append((e, err)),
                                      spool_threshold=4000, max_size=20000, spool_dir=self.spool)
        self.b.tm.add_handler(self.receiver, lambda uri: uri == self.b.uri)
        # The sender's side takes the REPORTs.
        self.reporter = ChunkReceiver(self.a.tm, self.fail, report_received=lambda c, r: self.reports.append(r))
        self.a.tm.add_handler(self.reporter, lambda uri: uri == self.a.uri)

    def raw(self, byte_range, body, flag, message_id="m-0001", **headers):
        """Send one hand-made chunk; returns the response Deferred."""
        items = [("Message-ID", message_id)] + list(headers.items())
        if byte_range is not None:
            items.append(("Byte-Range", byte_range))
        items.append(("Content-Type", "text/plain"))
        d = self.a.tm.send_request([self.b.uri], [self.a.uri], "SEND", items, body, flag)
        self.pump.flush()
        return d

    def test_chunked_message_delivered_without_report(self):
        data = pattern(3500)
        sender = self.send(data, headers=[("Content-ID", "<c1@x>")])
        result = self.successResultOf(sender.result)
        [msg] = self.delivered
        self.assertEqual((msg.message_id, msg.size, msg.data, msg.sha256, msg.path),
                         (result.message_id, 3500, data, sha(data), None))
        self.assertEqual(msg.content_type, "application/octet-stream")
        self.assertEqual(msg.headers["Content-ID"], "<c1@x>")
        self.assertEqual(msg.session, self.b.uri)
        self.assertEqual(self.reports, [])  # not asked for
        self.assertEqual(self.receiver.stats["chunks_received"], 4)

    def test_success_report_when_asked(self):
        data = pattern(3500)
        sender = self.send(data, success_report=True)
        self.successResultOf(sender.result)
        self.assertEqual(len(self.delivered), 1)
        [report] = self.reports
        self.assertEqual(report.method, "REPORT")
        self.assertEqual(report.message_id, sender.message_id)
        self.assertEqual(report.headers["Byte-Range"], "1-3500/3500")
        self.assertEqual((report.status.namespace, report.status.code), (0, 200))
        self.assertEqual(report.to_path, (self.a.uri,))
        self.assertEqual(report.from_path, (self.b.uri,))

    def test_out_of_order_and_overlapping_chunks(self):
        data = pattern(3000)
        answers = [self.raw("2001-3000/3000", data[2000:], "$"),
                   self.raw("1-1200/3000", data[:1200], "+"),
                   self.raw("1001-2500/3000", data[1000:2500], "+")]
        self.assertEqual([self.successResultOf(d).code for d in answers], [200, 200, 200])
        [msg] = self.delivered
        self.assertEqual((msg.data, msg.sha256), (data, sha(data)))

    def test_star_range_and_total(self):
        data = pattern(2600)
        self.raw("1-*/*", data[:1000], "+")
        self.raw("1001-*/*", data[1000:2000], "+")
        self.assertEqual(self.delivered, [])
        self.raw("2001-*/*", data[2000:], "$")
        [msg] = self.delivered
        self.assertEqual((msg.size, msg.data), (2600, data))

    def test_single_chunk_without_byte_range(self):
        self.successResultOf(self.raw(None, b"hi there", "$"))
        self.assertEqual(self.delivered[0].data, b"hi there")

    def test_spooled_above_the_threshold(self):
        data = pattern(9000)
        sender = self.send(data, success_report=True)
        self.successResultOf(sender.result)
        [msg] = self.delivered
        self.assertIsNone(msg.data)
        self.assertEqual(os.path.dirname(msg.path), self.spool)
        with msg.open() as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(msg.sha256, sha(data))
        self.assertEqual(self.reports[0].headers["Byte-Range"], "1-9000/9000")
        msg.discard()
        self.assertEqual(os.listdir(self.spool), [])

    def test_413_when_too_large(self):
        sender = self.send(pattern(30000))
        err = self.failureResultOf(sender.result, MessageSendError).value
        self.assertEqual(err.code, 413)
        self.assertEqual(self.delivered, [])
        [(entry, error)] = self.failed
        self.assertIsInstance(error, MessageTooLarge)
        self.assertEqual(entry.message_id, sender.message_id)
        # Later chunks of the refused message are refused too.
        d = self.raw("8001-9000/30000", pattern(1000), "+", message_id=sender.message_id)
        self.assertEqual(self.successResultOf(d).code, 413)
        self.assertEqual(os.listdir(self.spool), [])

    def test_413_when_an_unknown_total_grows_too_large(self):
        class Pipe:
            def __init__(self, data):
                self.data = io.BytesIO(data)

            def read(self, n):
                return self.data.read(n)

        sender = self.send(Pipe(pattern(30000)), chunk_size=3000, window=1)
        err = self.failureResultOf(sender.result, MessageSendError).value
        self.assertEqual(err.code, 413)
        self.assertEqual(err.acknowledged, 18000)
        self.assertEqual(self.delivered, [])
        self.assertEqual(os.listdir(self.spool), [])

    def test_500_when_the_spool_file_cannot_be_written(self):
        self.receiver.incoming.spool_dir = os.path.join(self.spool, "missing")
        sender = self.send(pattern(9000))
        err = self.failureResultOf(sender.result, MessageSendError).value
        self.assertEqual(err.code, 500)
        self.assertIn("cannot store", err.comment)
        self.assertEqual(self.delivered, [])

    def test_bad_chunk_gets_400_and_the_message_goes_on(self):
        d = self.raw("1-1000/2000", b"x" * 1000, "+")
        self.assertEqual(self.successResultOf(d).code, 200)
        d = self.raw("1001-2000/3000", b"y" * 1000, "+")
        response = self.successResultOf(d)
        self.assertEqual(response.code, 400)
        self.assertIn("contradicts", response.comment)
        self.raw("1001-2000/2000", b"z" * 1000, "$")
        self.assertEqual(self.delivered[0].data, b"x" * 1000 + b"z" * 1000)

    def test_timeout_sends_failure_report(self):
        self.raw("1-1000/3000", pattern(1000), "+")
        self.clock.advance(60)
        self.pump.flush()
        [report] = self.reports
        self.assertEqual(report.message_id, "m-0001")
        self.assertEqual((report.status.code, report.headers["Byte-Range"]), (408, "1-3000/3000"))
        [(entry, error)] = self.failed
        self.assertIsInstance(error, IncompleteMessage)
        self.assertEqual(self.delivered, [])

    def test_timeout_without_failure_reports(self):
        self.raw("1-1000/3000", pattern(1000), "+", **{"Failure-Report": "no"})
        self.clock.advance(60)
        self.pump.flush()
        self.assertEqual(self.reports, [])
        self.assertEqual(len(self.failed), 1)

    def test_cancel_aborts_at_the_receiver(self):
        spooling = []

        def progress(done, total):
            if done == 3000:
                spooling.append((len(os.listdir(self.spool)), len(self.receiver.incoming)))
                sender.cancel()

        sender = MessageSender(self.a.tm, [self.b.uri], [self.a.uri], pattern(9000), chunk_size=1000,
                               window=1, progress=progress)
        sender.start()
        self.pump.flush()
        self.assertEqual(spooling, [(1, 1)])  # 9000 > threshold: spooled while it lasted
        self.failureResultOf(sender.result, SendCancelled)
        self.assertEqual(len(self.receiver.incoming), 0)
        self.assertEqual(os.listdir(self.spool), [])
        [(entry, error)] = self.failed
        self.assertIsInstance(error, MessageAborted)
        self.assertEqual(self.delivered, [])
        self.clock.advance(120)
        self.pump.flush()
        self.assertEqual(self.reports, [])

    def test_bodiless_abort(self):
        self.raw("1-1000/3000", pattern(1000), "+")
        self.raw("1001-1000/3000", None, "#")
        self.assertEqual(len(self.receiver.incoming), 0)
        self.assertIsInstance(self.failed[0][1], MessageAborted)

    def test_bodiless_send_is_answered(self):
        d = self.raw(None, None, "$")
        self.assertEqual(self.successResultOf(d).code, 200)
        self.assertEqual(self.delivered, [])

    def test_connection_loss_keeps_partial_message(self):
        self.raw("1-1000/3000", pattern(1000), "+", **{"Failure-Report": "no"})
        self.inc.transport.loseConnection()
        self.pump.flush()
        self.assertEqual(self.receiver.incoming.get((self.b.uri, "m-0001")).reassembler.received_bytes, 1000)
        self.clock.advance(60)
        self.assertEqual(len(self.failed), 1)

    def test_close(self):
        self.raw("1-1000/9000", pattern(1000), "+")
        self.assertEqual(len(os.listdir(self.spool)), 1)
        self.receiver.close()
        self.assertEqual(os.listdir(self.spool), [])
        self.assertEqual(len(self.receiver.incoming), 0)


# -- end to end over real sockets --------------------------------------------------
class _ClosedWatcher:
    """Fires when a ConnectionManager has no connections left."""

    def __init__(self, cm):
        self.cm = cm
        self.waiting = []
        cm.observers.append(self)

    def connection_event(self, conn, event, success, message):
        if event == "CLOSED":
            reactor.callLater(0, self._check)

    def _check(self):
        if not self.cm.connections:
            waiting, self.waiting = self.waiting, []
            for d in waiting:
                d.callback(None)

    def wait(self):
        if not self.cm.connections:
            return defer.succeed(None)
        d = defer.Deferred()
        self.waiting.append(d)
        return d


class EndToEndTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def shut_down(self, cm, watcher):
        yield cm.stop_listening()
        cm.close_all()
        yield watcher.wait()

    @defer.inlineCallbacks
    def test_50_mib_file_over_loopback(self):
        tmp = make_tempdir(self)
        spool = os.path.join(tmp, "spool")
        os.makedirs(spool)
        source = os.path.join(tmp, "source.bin")
        digest = hashlib.sha256()
        size = 50 * 1024 * 1024
        with open(source, "wb") as f:
            for _ in range(size // (1024 * 1024)):
                piece = os.urandom(1024 * 1024)
                digest.update(piece)
                f.write(piece)
        del piece

        stacks = []
        for _ in range(2):
            cm = ConnectionManager()
            tm = TransactionManager(cm)
            port = yield cm.listen("msrp:127.0.0.1:0")
            uri = MSRPURI("127.0.0.1", port.getHost().port, new_session_id())
            watcher = _ClosedWatcher(cm)
            stacks.append((cm, tm, uri, watcher))
            self.addCleanup(self.shut_down, cm, watcher)

        (send_cm, send_tm, send_uri, _), (recv_cm, recv_tm, recv_uri, _) = stacks
        delivered, reported = defer.Deferred(), defer.Deferred()
        receiver = ChunkReceiver(recv_tm, delivered.callback, spool_dir=spool)
        recv_tm.add_handler(receiver, lambda uri: uri == recv_uri)
        self.addCleanup(receiver.close)
        reports = ChunkReceiver(send_tm, lambda m: None, report_received=lambda c, r: reported.callback(r))
        send_tm.add_handler(reports, lambda uri: uri == send_uri)

        progress = []
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        sender = send_message(send_tm, [recv_uri], [send_uri], source, "application/octet-stream",
                              chunk_size=256 * 1024, success_report=True,
                              progress=lambda done, total: progress.append(done))
        result = yield sender.result
        message = yield delivered
        report = yield reported
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()

        self.assertEqual((result.size, result.chunks, result.acknowledged), (size, 200, size))
        self.assertEqual(progress[-1], size)
        self.assertEqual(message.message_id, sender.message_id)
        self.assertEqual(message.size, size)
        # Spooled to disk, never held whole in memory.
        self.assertIsNone(message.data)
        self.assertEqual(os.path.dirname(message.path), spool)
        self.assertEqual(os.path.getsize(message.path), size)
        self.assertLess(peak, 16 * 1024 * 1024)
        # Byte for byte: the incremental hash and a fresh one over the file.
        self.assertEqual(message.sha256, digest.hexdigest())
        check = hashlib.sha256()
        with message.open() as f:
            for piece in iter(lambda: f.read(1024 * 1024), b""):
                check.update(piece)
        self.assertEqual(check.hexdigest(), digest.hexdigest())
        message.discard()
        # The success REPORT came back to the sender.
        self.assertEqual(report.message_id, sender.message_id)
        self.assertEqual(report.headers["Byte-Range"], "1-%d/%d" % (size, size))
        self.assertEqual(report.status.code, 200)
        self.assertEqual(report.to_path, (send_uri,))
        self.assertEqual(send_tm.pending_count, 0)
        self.assertEqual(len(receiver.incoming), 0)
