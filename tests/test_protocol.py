"""Unit tests of MSRPProtocol: StringTransport for bytes, task.Clock for time."""

from twisted.internet.error import ConnectionAborted, ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from msrp_twisted.core.errors import MessageError
from msrp_twisted.core.parser import MessageAssembler
from msrp_twisted.protocol import ConnectionClosed, TransportSettings

from .helpers import (
    PEER,
    RecordingHandler,
    lose,
    request,
    request_bytes,
    response_bytes,
    unit_connection,
)


class Observer:
    """A writability observer that records what it was told."""

    writable = True

    def __init__(self):
        self.calls = []

    def pause_producing(self):
        self.calls.append("pause")

    def resume_producing(self):
        self.calls.append("resume")


def chunks(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)]


class ReadingTests(SynchronousTestCase):
    def test_pipelined_messages_in_one_read(self):
        conn, transport, _, handler, _ = unit_connection()
        data = (request_bytes("tidaaaa1", b"first")
                + request_bytes("tidaaaa2")
                + response_bytes("tidaaaa3")
                + request_bytes("tidaaaa4", b"fourth\r\n-------tidaaaa1$\r\n"))
        conn.dataReceived(data)
        got = [(m.tid, m.body) for _, m in handler.messages]
        self.assertEqual(got, [
            ("tidaaaa1", b"first"), ("tidaaaa2", None), ("tidaaaa3", None),
            ("tidaaaa4", b"fourth\r\n-------tidaaaa1$\r\n"),
        ])
        self.assertEqual(handler.messages[2][1].code, 200)
        self.assertEqual(conn.messages_in, 4)
        self.assertEqual(conn.bytes_in, len(data))
        self.assertFalse(transport.disconnecting)

    def test_message_split_at_every_position(self):
        data = request_bytes("tidsplit", b"hello world") + request_bytes("tidnext1")
        for cut in range(1, len(data)):
            conn, transport, _, handler, _ = unit_connection()
            conn.dataReceived(data[:cut])
            conn.dataReceived(data[cut:])
            self.assertEqual([m.tid for _, m in handler.messages], ["tidsplit", "tidnext1"], cut)
            self.assertEqual(handler.messages[0][1].body, b"hello world")
            self.assertFalse(transport.disconnecting)

    def test_message_split_into_many_reads(self):
        # One byte per read is fine once the drip guard is off.
        conn, transport, _, handler, _ = unit_connection(TransportSettings(max_msg_chunks=0))
        data = request_bytes("tiddrip1", b"x" * 300, flag="+")
        for i in range(len(data)):
            conn.dataReceived(data[i:i + 1])
        self.assertEqual(len(handler.messages), 1)
        message = handler.messages[0][1]
        self.assertEqual((message.body, message.flag), (b"x" * 300, "+"))
        self.assertFalse(transport.disconnecting)

    def test_large_body_streamed_to_sink_in_pieces(self):
        conn, transport, _, handler, _ = unit_connection(stream=True)
        body = bytes(range(256)) * 4096  # 1 MiB
        for piece in chunks(request_bytes("tidlarge", body), 64 * 1024):
            conn.dataReceived(piece)
        self.assertEqual(len(handler.heads), 1)
        self.assertIsNone(handler.heads[0].body)
        sink = handler.sinks[0]
        self.assertGreater(len(sink.pieces), 8)
        self.assertEqual(sink.body, body)
        self.assertEqual(sink.flag, "$")
        self.assertEqual(handler.messages, [])
        self.assertFalse(transport.disconnecting)

    def test_large_body_buffered_when_head_received_returns_none(self):
        conn, transport, _, handler, _ = unit_connection(stream=False)
        body = b"\x00\xff" * (512 * 1024)
        for piece in chunks(request_bytes("tidbuffr", body), 64 * 1024):
            conn.dataReceived(piece)
        self.assertEqual(len(handler.heads), 1)
        self.assertEqual(len(handler.messages), 1)
        self.assertEqual(handler.messages[0][1].body, body)
        self.assertFalse(transport.disconnecting)

    def test_sink_aborted_when_connection_dies_mid_body(self):
        conn, _, _, handler, _ = unit_connection(stream=True)
        conn.dataReceived(request_bytes("tidabort", b"y" * 5000)[:3000])
        sink = handler.sinks[0]
        lose(conn, ConnectionLost("gone"))
        self.assertIn("gone", sink.aborted)
        self.assertEqual(len(handler.lost), 1)

    def test_framing_error_closes_with_a_log_line(self):
        conn, transport, _, handler, events = unit_connection()
        with capturedLogs() as logged:
            # The message before the bad bytes is still delivered.
            conn.dataReceived(request_bytes("tidgood1") + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(transport.disconnected)  # aborted, not flushed
        lines = [formatEvent(e) for e in logged]
        framing = [line for line in lines if "framing error" in line]
        self.assertEqual(len(framing), 1, lines)
        self.assertIn("192.0.2.7:40000", framing[0])
        self.assertIn("does not start with 'MSRP '", framing[0])
        (_, _, success, message), = events.of("FRAMING")
        self.assertFalse(success)
        self.assertIn("does not start with 'MSRP '", message)
        lose(conn, ConnectionAborted())
        self.assertIn("framing error", conn.close_reason)
        self.assertEqual(events.names()[-1], "CLOSED")
        # Bytes after the close are ignored, not parsed.
        conn.dataReceived(request_bytes("tidlate1"))
        self.assertEqual([m.tid for _, m in handler.messages], ["tidgood1"])

    def test_invalid_message_goes_to_invalid_message(self):
        conn, transport, _, handler, _ = unit_connection()
        invalid = (b"MSRP tidbad01 SEND\r\nTo-Path: msrp://b.example:2855/s;tcp\r\n"
                   b"From-Path: msrp://a.example:2855/s;tcp\r\nContent-Type: text/plain\r\n\r\n"
                   b"body\r\n-------tidbad01$\r\n")
        conn.dataReceived(invalid + request_bytes("tidgood2"))
        (_, error), = handler.invalid
        self.assertIsInstance(error, MessageError)
        self.assertEqual(error.tid, "tidbad01")
        self.assertIn("Message-ID", error.reason)
        self.assertEqual([m.tid for _, m in handler.messages], ["tidgood2"])
        self.assertFalse(transport.disconnecting)

    def test_handler_exception_closes_the_connection(self):
        conn, transport, _, handler, _ = unit_connection()

        def broken(conn, message):
            raise RuntimeError("bug")

        handler.message_received = broken
        with capturedLogs() as logged:
            conn.dataReceived(request_bytes())
        self.assertTrue(transport.disconnected)
        self.assertEqual(conn.close_reason, "internal error while handling a message")
        self.assertTrue(any("bug" in str(e.get("log_failure")) for e in logged))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_pause_and_resume_reading_nest(self):
        conn, transport, _, _, _ = unit_connection()
        conn.pause_reading()
        conn.pause_reading()
        self.assertEqual(transport.producerState, "paused")
        conn.resume_reading()
        self.assertEqual(transport.producerState, "paused")
        conn.resume_reading()
        self.assertEqual(transport.producerState, "producing")
        conn.resume_reading()  # unbalanced: ignored
        self.assertEqual(transport.producerState, "producing")


class MaxMsgChunksTests(SynchronousTestCase):
    def test_one_byte_per_read_dropped_at_fourth_read(self):
        conn, transport, _, handler, events = unit_connection()
        data = request_bytes("tiddrip2", b"z" * 22)
        self.assertEqual(len(data), 200)
        for i in range(3):
            conn.dataReceived(data[i:i + 1])
            self.assertFalse(transport.disconnecting, "dropped at read %d" % (i + 1))
        conn.dataReceived(data[3:4])
        self.assertTrue(transport.disconnected)
        (_, _, success, message), = events.of("MAX_MSG_CHUNKS")
        self.assertFalse(success)
        self.assertIn("4 small reads (max_msg_chunks=4)", message)
        self.assertEqual(handler.messages, [])

    def test_limit_is_configurable(self):
        conn, transport, _, _, events = unit_connection(TransportSettings(max_msg_chunks=8))
        data = request_bytes("tiddrip3", b"z" * 120)
        for i in range(7):
            conn.dataReceived(data[i:i + 1])
        self.assertFalse(transport.disconnecting)
        conn.dataReceived(data[7:8])
        self.assertTrue(transport.disconnected)
        self.assertEqual(len(events.of("MAX_MSG_CHUNKS")), 1)

    def test_one_mib_chunk_in_64k_reads_passes_with_default(self):
        conn, transport, _, handler, _ = unit_connection(stream=True)
        body = b"\xab" * (1024 * 1024)
        pieces = chunks(request_bytes("tidbig01", body), 64 * 1024)
        self.assertGreater(len(pieces), 16)
        for piece in pieces:
            conn.dataReceived(piece)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(handler.sinks[0].body, body)

    def test_occasional_short_reads_in_a_large_chunk_pass(self):
        # Under flow control TCP sometimes delivers short reads; scattered
        # among full ones they never add up, however large the chunk.
        conn, transport, _, handler, _ = unit_connection(stream=True)
        body = b"\xcd" * (4 * 1024 * 1024)
        data = request_bytes("tidshort", body)
        pos, n = 0, 0
        while pos < len(data):
            size = 100 if n % 2 else 32 * 1024  # every other read is short
            conn.dataReceived(data[pos:pos + size])
            pos += size
            n += 1
        self.assertFalse(transport.disconnecting)
        self.assertEqual(handler.sinks[0].body, body)

    def test_short_reads_in_a_row_inside_a_body_are_dropped(self):
        conn, transport, _, _, events = unit_connection(stream=True)
        data = request_bytes("tidslow1", b"s" * 100000)
        conn.dataReceived(data[:40000])
        for i in range(3):
            conn.dataReceived(data[40000 + i:40001 + i])
            self.assertFalse(transport.disconnecting)
        conn.dataReceived(data[40003:40004])
        self.assertTrue(transport.disconnected)
        self.assertEqual(len(events.of("MAX_MSG_CHUNKS")), 1)

    def test_head_written_separately_from_a_large_body(self):
        # How a streaming sender writes: small head, big body pieces, small
        # end-line. Only the head read counts.
        conn, transport, _, handler, _ = unit_connection(stream=True)
        data = request_bytes("tidstrm1", b"q" * 200000)
        head_end = data.index(b"\r\n\r\n") + 4
        conn.dataReceived(data[:head_end])
        for piece in chunks(data[head_end:-20], 16 * 1024):
            conn.dataReceived(piece)
        conn.dataReceived(data[-20:])
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(handler.sinks[0].body), 200000)

    def test_zero_disables(self):
        conn, transport, _, handler, events = unit_connection(TransportSettings(max_msg_chunks=0))
        data = request_bytes("tiddrip4", b"z" * 120)
        for i in range(len(data)):
            conn.dataReceived(data[i:i + 1])
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(handler.messages), 1)
        self.assertEqual(events.of("MAX_MSG_CHUNKS"), [])

    def test_count_starts_again_after_each_message(self):
        conn, transport, _, handler, _ = unit_connection()
        for n in range(5):
            data = request_bytes("tidmsg%02d" % n, b"w" * 50)
            third = len(data) // 3
            for piece in (data[:third], data[third:2 * third], data[2 * third:]):
                conn.dataReceived(piece)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(handler.messages), 5)

    def test_head_and_body_count_together(self):
        # A completed head does not reset the count: 2 small reads of head
        # and 2 of body are 4 reads of one message.
        conn, transport, _, _, events = unit_connection(stream=True)
        data = request_bytes("tidhdbd1", b"b" * 100)
        head_end = data.index(b"\r\n\r\n") + 4
        conn.dataReceived(data[:20])
        conn.dataReceived(data[20:head_end + 10])  # head done, body started
        conn.dataReceived(data[head_end + 10:head_end + 20])
        self.assertFalse(transport.disconnecting)
        conn.dataReceived(data[head_end + 20:head_end + 30])
        self.assertTrue(transport.disconnected)
        self.assertEqual(len(events.of("MAX_MSG_CHUNKS")), 1)

    def test_large_reads_do_not_count(self):
        conn, transport, _, handler, _ = unit_connection()
        data = request_bytes("tidkib01", b"k" * 20000)
        for piece in chunks(data, 1024):
            conn.dataReceived(piece)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(handler.messages), 1)

    def test_pipelined_tail_counts_for_the_next_message(self):
        conn, transport, _, handler, _ = unit_connection()
        first, second = request_bytes("tidpipe1"), request_bytes("tidpipe2", b"p" * 100)
        conn.dataReceived(first + second[:1])  # small read: 1 for tidpipe2
        conn.dataReceived(second[1:2])
        conn.dataReceived(second[2:3])
        self.assertFalse(transport.disconnecting)
        conn.dataReceived(second[3:4])
        self.assertTrue(transport.disconnected)
        self.assertEqual([m.tid for _, m in handler.messages], ["tidpipe1"])


class ReadTimeoutTests(SynchronousTestCase):
    def test_head_must_complete_within_the_timeout(self):
        conn, transport, clock, _, events = unit_connection(TransportSettings(max_msg_chunks=0))
        data = request_bytes("tidslow1", b"s" * 10)
        conn.dataReceived(data[:5])
        clock.advance(3.9)
        conn.dataReceived(data[5:10])  # more head bytes do not extend it
        self.assertFalse(transport.disconnecting)
        clock.advance(0.1)
        self.assertTrue(transport.disconnected)
        (_, _, success, message), = events.of("READ_TIMEOUT")
        self.assertFalse(success)
        self.assertIn("head not complete within 4s", message)

    def test_body_must_progress(self):
        conn, transport, clock, _, events = unit_connection(stream=True)
        data = request_bytes("tidslow2", b"s" * 20000)
        conn.dataReceived(data[:2000])
        for piece in chunks(data[2000:12000], 2000):
            clock.advance(3.5)
            conn.dataReceived(piece)
        self.assertFalse(transport.disconnecting)  # 17.5 s, always progressing
        clock.advance(3.99)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.01)
        self.assertTrue(transport.disconnected)
        self.assertIn("body made no progress", events.of("READ_TIMEOUT")[0][3])

    def test_complete_message_stops_the_timer(self):
        conn, transport, clock, handler, _ = unit_connection()
        data = request_bytes("tidfast1", b"f" * 10)
        conn.dataReceived(data[:30])
        conn.dataReceived(data[30:])
        self.assertEqual(clock.getDelayedCalls()[0].getTime(), 120.0)  # idle only
        clock.advance(100)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(handler.messages), 1)

    def test_next_message_gets_a_fresh_timer(self):
        conn, transport, clock, handler, _ = unit_connection(stream=True)
        first = request_bytes("tidfirst", b"1" * 3000)
        second = request_bytes("tidsecnd")
        conn.dataReceived(first[:2000])
        clock.advance(3.5)
        conn.dataReceived(first[2000:] + second[:10])
        clock.advance(3.5)  # 7 s since the first byte of tidfirst
        self.assertFalse(transport.disconnecting)
        clock.advance(0.5)
        self.assertTrue(transport.disconnected)

    def test_suspended_while_reading_is_paused(self):
        conn, transport, clock, _, events = unit_connection(stream=True)
        conn.dataReceived(request_bytes("tidpause", b"p" * 5000)[:3000])
        conn.pause_reading()
        clock.advance(60)
        self.assertFalse(transport.disconnecting)
        conn.resume_reading()
        clock.advance(3.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(len(events.of("READ_TIMEOUT")), 1)


class IdleTimeoutTests(SynchronousTestCase):
    def test_closes_after_idle_timeout(self):
        conn, transport, clock, _, events = unit_connection()
        clock.advance(119.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)  # graceful close
        self.assertIsNone(transport.producer)  # or it would never finish
        (_, _, success, message), = events.of("IDLE")
        self.assertFalse(success)
        self.assertIn("idle for 120s", message)

    def test_refreshed_by_traffic_in_either_direction(self):
        conn, transport, clock, _, _ = unit_connection()
        clock.advance(100)
        conn.dataReceived(request_bytes())  # in
        clock.advance(100)
        conn.send_message(request("tidout01"))  # out
        clock.advance(100)
        self.assertFalse(transport.disconnecting)
        clock.advance(20)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(clock.seconds(), 320)

    def test_keep_alive_until_extends_it(self):
        conn, transport, clock, _, _ = unit_connection()
        conn.keep_alive_until(500)
        clock.advance(499)
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_configurable(self):
        conn, transport, clock, _, _ = unit_connection(TransportSettings(idle_timeout=5))
        clock.advance(5)
        self.assertTrue(transport.disconnecting)


class PendingTransport(StringTransport):
    """A StringTransport that reports a socket transport's write buffer."""

    dataBuffer = b""
    offset = 0
    _tempDataLen = 0

    def set_pending(self, n):
        self.dataBuffer = b"x" * n


class SendTimeoutTests(SynchronousTestCase):
    def test_registered_as_streaming_producer(self):
        conn, transport, _, _, _ = unit_connection()
        self.assertIs(transport.producer, conn)
        self.assertTrue(transport.streaming)

    def test_resume_cancels_it(self):
        conn, transport, clock, _, events = unit_connection()
        observer = Observer()
        conn.add_writability_observer(observer)
        conn.pauseProducing()
        self.assertFalse(conn.writable)
        clock.advance(0.099)
        conn.resumeProducing()
        self.assertTrue(conn.writable)
        clock.advance(10)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(observer.calls, ["pause", "resume"])
        self.assertEqual(events.of("SEND_TIMEOUT"), [])

    def test_fires_and_closes(self):
        conn, transport, clock, handler, events = unit_connection()
        conn.pauseProducing()
        clock.advance(0.099)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.001)
        self.assertTrue(transport.disconnected)
        (_, _, success, message), = events.of("SEND_TIMEOUT")
        self.assertFalse(success)
        self.assertIn("more than 100 ms", message)
        self.assertRaises(ConnectionClosed, conn.send_bytes, b"late")
        lose(conn, ConnectionAborted())
        self.assertEqual(events.names(), ["ACCEPTED", "SEND_TIMEOUT", "CLOSED"])
        self.assertIn("send_timeout", handler.lost[0][1])

    def test_progress_rearms_it(self):
        conn, _, clock, _, events = unit_connection()
        transport = PendingTransport(hostAddress=conn.transport.getHost(), peerAddress=PEER)
        conn.transport = transport
        conn.send_bytes(b"a" * 300000)
        transport.set_pending(200000)
        conn.pauseProducing()
        transport.set_pending(150000)  # the peer reads 50000 bytes
        clock.advance(0.1)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.1)  # read nothing in the last 100 ms
        self.assertTrue(transport.disconnected)
        self.assertEqual(len(events.of("SEND_TIMEOUT")), 1)

    def test_zero_disables(self):
        conn, transport, clock, _, _ = unit_connection(TransportSettings(send_timeout=0))
        conn.pauseProducing()
        clock.advance(100)
        self.assertFalse(transport.disconnecting)

    def test_graceful_close_gives_up_on_a_stuck_buffer(self):
        conn, _, clock, _, events = unit_connection()
        transport = PendingTransport(hostAddress=conn.transport.getHost(), peerAddress=PEER)
        conn.transport = transport
        transport.set_pending(1000)
        conn.close("shutting down", abort=False)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        clock.advance(0.1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(len(events.of("SEND_TIMEOUT")), 1)


class TLSHandshakeTimeoutTests(SynchronousTestCase):
    def test_fires(self):
        conn, transport, clock, handler, events = unit_connection(scheme="msrps")
        self.assertFalse(conn.ready)
        clock.advance(0.099)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.001)
        self.assertTrue(transport.disconnected)
        (_, _, success, message), = events.of("TLS_HANDSHAKE")
        self.assertFalse(success)
        self.assertEqual(message, "TLS handshake not completed within 100 ms")
        lose(conn, ConnectionAborted())
        self.assertEqual(events.names(), ["ACCEPTED", "TLS_HANDSHAKE", "CLOSED"])
        self.assertEqual(handler.made, [])
        self.assertEqual(handler.lost, [])

    def test_outbound_waiters_fail(self):
        conn, transport, clock, _, _ = unit_connection(
            TransportSettings(tls_handshake_timeout=250), direction="out", scheme="msrps")
        ready = conn.when_ready()
        clock.advance(0.25)
        lose(conn, ConnectionAborted())
        failure = self.failureResultOf(ready, ConnectionClosed)
        self.assertIn("250 ms", str(failure.value))

    def test_completed_handshake_cancels_it(self):
        conn, transport, clock, handler, events = unit_connection(scheme="msrps")
        ready = conn.when_ready()
        conn.handshakeCompleted()
        self.assertIs(self.successResultOf(ready), conn)
        clock.advance(1)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(events.names(), ["ACCEPTED", "TLS_HANDSHAKE"])
        self.assertTrue(events.of("TLS_HANDSHAKE")[0][2])
        self.assertEqual(handler.made, [conn])

    def test_lost_before_handshake_is_a_handshake_failure(self):
        conn, _, _, _, events = unit_connection(direction="out", scheme="msrps")
        lose(conn, ConnectionLost("peer went away"))
        self.assertEqual(events.names(), ["CONNECTED", "TLS_HANDSHAKE", "CLOSED"])
        (_, _, success, message), = events.of("TLS_HANDSHAKE")
        self.assertFalse(success)
        self.assertIn("TLS handshake failed", message)
        self.assertIn("peer went away", message)
        self.assertEqual(conn.manager.stats["tls_failures"], 1)


class WriteTests(SynchronousTestCase):
    def test_send_message(self):
        conn, transport, _, _, _ = unit_connection()
        conn.send_message(request("tidsend1", b"hi"))
        self.assertEqual(transport.value(), request_bytes("tidsend1", b"hi"))
        self.assertEqual((conn.messages_out, conn.bytes_out), (1, len(transport.value())))

    def test_frames_queue_behind_a_stream_in_order(self):
        conn, transport, _, _, _ = unit_connection()
        first = self.successResultOf(conn.open_stream(request("tidstr01", b"")))
        conn.send_bytes(response_bytes("tidresp1"))
        second_d = conn.open_stream(request("tidstr02", b""))
        conn.send_message(request("tidafter"))
        self.assertNoResult(second_d)
        first.write(b"part one, ")
        first.write(b"part two")
        first.end("+")
        second = self.successResultOf(second_d)
        second.write(b"other")
        second.abort()
        out = MessageAssembler().feed(transport.value())
        self.assertEqual([m.tid for m in out], ["tidstr01", "tidresp1", "tidstr02", "tidafter"])
        self.assertEqual((out[0].body, out[0].flag), (b"part one, part two", "+"))
        self.assertEqual((out[2].body, out[2].flag), (b"other", "#"))

    def test_queued_stream_fails_when_the_connection_is_lost(self):
        conn, _, _, _, _ = unit_connection()
        self.successResultOf(conn.open_stream(request("tidstr03", b"")))
        waiting = conn.open_stream(request("tidstr04", b""))
        lose(conn, ConnectionLost("bye"))
        self.failureResultOf(waiting, ConnectionClosed)
        self.failureResultOf(conn.open_stream(request("tidstr05", b"")), ConnectionClosed)
        self.assertRaises(ConnectionClosed, conn.send_bytes, b"x")

    def test_queue_is_bounded(self):
        conn, transport, _, _, _ = unit_connection(TransportSettings(max_queued_frames=2))
        self.successResultOf(conn.open_stream(request("tidstr06", b"")))
        conn.send_bytes(b"1")
        conn.send_bytes(b"2")
        self.assertRaises(ConnectionClosed, conn.send_bytes, b"3")
        self.assertTrue(transport.disconnected)

    def test_writability_observers_see_pause_and_resume(self):
        conn, _, _, _, _ = unit_connection()
        observer = Observer()
        conn.add_writability_observer(observer)
        conn.pauseProducing()
        conn.pauseProducing()  # repeated: one notification
        conn.resumeProducing()
        conn.remove_writability_observer(observer)
        conn.pauseProducing()
        self.assertEqual(observer.calls, ["pause", "resume"])


class EventTests(SynchronousTestCase):
    def test_accepted_and_closed_with_addresses_and_id(self):
        conn, _, _, _, events = unit_connection()
        other, _, _, _, _ = unit_connection()
        self.assertNotEqual(conn.conn_id, other.conn_id)
        (c, event, success, message), = events.events
        self.assertIs(c, conn)
        self.assertEqual((event, success), ("ACCEPTED", True))
        self.assertIn("192.0.2.7:40000", message)
        self.assertEqual((c.remote_host, c.remote_port), ("192.0.2.7", 40000))
        self.assertEqual((c.local_host, c.local_port), ("198.51.100.1", 2855))
        self.assertEqual((c.scheme, c.direction), ("msrp", "in"))
        lose(conn)
        c, event, success, message = events.events[-1]
        self.assertEqual((event, message), ("CLOSED", "closed by peer"))

    def test_outbound_is_connected(self):
        conn, _, _, handler, events = unit_connection(direction="out")
        self.assertEqual(events.names(), ["CONNECTED"])
        self.assertEqual(handler.made, [conn])
        self.assertEqual(conn.manager.connections, {conn.conn_id: conn})

    def test_close_is_idempotent(self):
        conn, transport, _, _, events = unit_connection()
        conn.close("first", event="FRAMING")
        conn.close("second", event="FRAMING")
        lose(conn, ConnectionAborted())
        lose(conn, ConnectionAborted())
        self.assertEqual(events.names(), ["ACCEPTED", "FRAMING", "CLOSED"])
        self.assertEqual(events.events[-1][3], "first")
        self.assertEqual(conn.manager.connections, {})
        self.assertEqual(conn.manager.stats["connections_closed"], 1)

    def test_handler_told_of_loss_once(self):
        handler = RecordingHandler()
        conn, _, _, _, _ = unit_connection(handler=handler)
        lose(conn, ConnectionLost("reset"))
        self.assertEqual(len(handler.lost), 1)
        self.assertIn("reset", handler.lost[0][1])


class CountingTransport(StringTransport):
    """A StringTransport that counts write() calls."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.writes = 0

    def write(self, data):
        self.writes += 1
        super().write(data)


class Replier(RecordingHandler):
    """Answers every complete request with frames on given connections."""

    def __init__(self, targets):
        super().__init__()
        self.targets = targets

    def message_received(self, conn, message):
        super().message_received(conn, message)
        if message.is_request:
            for target in self.targets or [conn]:
                target.send_bytes(response_bytes(message.tid))


class WriteBatchTests(SynchronousTestCase):
    """Frames written while a read is dispatched leave in one write per
    connection, after the read, in order."""

    def connection(self, handler):
        conn, _, _, _, _ = unit_connection(handler=handler)
        transport = CountingTransport(hostAddress=conn.transport.getHost(), peerAddress=conn.transport.getPeer())
        conn.transport = transport
        return conn, transport

    def test_pipelined_requests_answered_in_one_write(self):
        handler = Replier([])
        conn, transport = self.connection(handler)
        tids = ["tidbat%02d" % i for i in range(20)]
        conn.dataReceived(b"".join(request_bytes(t, b"x") for t in tids))
        self.assertEqual(transport.writes, 1)
        out = MessageAssembler().feed(transport.value())
        self.assertEqual([m.tid for m in out], tids)
        self.assertEqual(conn.bytes_out, len(transport.value()))

    def test_writes_to_other_connections_leave_when_the_read_ends(self):
        other, other_transport = self.connection(RecordingHandler())
        seen_during_read = []

        class Forwarder(RecordingHandler):
            def message_received(self, conn, message):
                other.send_bytes(response_bytes(message.tid))
                seen_during_read.append(other_transport.value())

        conn, _ = self.connection(Forwarder())
        conn.dataReceived(request_bytes("tidfwd01", b"a") + request_bytes("tidfwd02", b"b"))
        self.assertEqual(seen_during_read, [b"", b""])
        self.assertEqual(other_transport.writes, 1)
        self.assertEqual([m.tid for m in MessageAssembler().feed(other_transport.value())],
                         ["tidfwd01", "tidfwd02"])

    def test_writes_outside_a_read_go_out_at_once(self):
        conn, transport = self.connection(RecordingHandler())
        conn.send_bytes(response_bytes("tidnow01"))
        self.assertEqual(transport.value(), response_bytes("tidnow01"))
        conn.send_bytes(response_bytes("tidnow02"))
        self.assertEqual(transport.writes, 2)

    def test_graceful_close_during_a_read_flushes_what_was_written(self):
        class CloseAfterReply(RecordingHandler):
            def message_received(self, conn, message):
                conn.send_bytes(response_bytes(message.tid))
                conn.close("done", abort=False)

        conn, transport = self.connection(CloseAfterReply())
        conn.dataReceived(request_bytes("tidclo01", b"x"))
        self.assertEqual(transport.value(), response_bytes("tidclo01"))
        self.assertTrue(transport.disconnecting)

    def test_abort_during_a_read_drops_what_was_written(self):
        class AbortAfterReply(RecordingHandler):
            def message_received(self, conn, message):
                conn.send_bytes(response_bytes(message.tid))
                conn.close("bad peer")

        conn, transport = self.connection(AbortAfterReply())
        conn.dataReceived(request_bytes("tidabo01", b"x"))
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnected)

    def test_handler_failure_still_flushes_other_connections(self):
        other, other_transport = self.connection(RecordingHandler())

        class WritesThenFails(RecordingHandler):
            def message_received(self, conn, message):
                other.send_bytes(response_bytes(message.tid))
                raise RuntimeError("handler bug")

        conn, _ = self.connection(WritesThenFails())
        conn.dataReceived(request_bytes("tidfai01", b"x"))
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(other_transport.value(), response_bytes("tidfai01"))
