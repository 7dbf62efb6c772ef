"""The MSRP connection: a thin Twisted Protocol over the sans-IO parser.

It owns what is per-connection and time-based in proto_msrp: the
max_msg_chunks drip guard, the per-message read timeout, the idle lifetime,
send_timeout on writes that cannot be flushed and the TLS handshake timeout.
Parsed messages go to an IMessageHandler (the transaction layer); frames
written to it are serialized in order, with streamed bodies holding the
write side until their end-line is written.

max_msg_chunks, exactly
-----------------------
proto_msrp counts every read() that leaves a message incomplete and drops
the connection when the count reaches max_msg_chunks; a large chunk that
arrives in many full-sized TCP reads is cut off like a slow-drip attack.
Here only *small* reads count:

    A read (one dataReceived call: one recv() on TCP, one TLS record's
    plaintext on TLS) is a fragment when, after the parser has consumed
    it, a message is still incomplete and the read carried fewer than
    ``fragment_min_bytes`` (1024) bytes. The connection is closed
    (MAX_MSG_CHUNKS) when a message has collected ``max_msg_chunks``
    fragments *in a row*: a read of at least 1 KiB is progress and starts
    the count again, and so does the end of every complete (or invalid but
    delimited) message. A small read that ends one message and starts the
    next counts for the next one, as in proto_msrp. A read that completes a
    message is never counted. max_msg_chunks = 0 disables the check.

So with the default 4, a message dribbled one byte per read is dropped at
its 4th read, while a 1 MiB chunk in 64 KiB reads collects no fragment, and
a 1 GiB chunk whose reads are sometimes short (TCP under load does that)
is not cut off either, since no 4 short reads come in a row.
The rule is sound as a guard: between two reads of at least 1 KiB a
message gets at most max_msg_chunks - 1 reads of under 1 KiB, so the reads
a peer can make us do are bounded by a constant per message plus a
constant per KiB received (and the message size by max_body, its pace by
msg_read_timeout). What it cannot tell apart
from an attack is a legitimate sender whose data arrives in pieces under
1 KiB, e.g. a body streamed in small TLS records or a path MTU below
~1 KiB; lower fragment_min_bytes or raise max_msg_chunks for those.

Timers
------
* msg_read_timeout: a message's head must be complete within it from its
  first byte, and while its body arrives every read restarts it (the body
  must progress). It is suspended while reading is paused for backpressure.
* idle_timeout: closes (gracefully) a connection without traffic in either
  direction, never before keep_alive_until().
* send_timeout: armed when the transport's write buffer is full (it calls
  our pauseProducing); if nothing at all was flushed to the socket by the
  time it fires the connection is aborted, otherwise it is armed again.
  resumeProducing (buffer drained) cancels it.
* tls_handshake_timeout: from TCP connect to handshakeCompleted.
A value of 0 disables any of them.

Connection events, in order: ACCEPTED or CONNECTED (TCP is up), for msrps
TLS_HANDSHAKE (success or failure), the reason of a close we initiate
(FRAMING, MAX_MSG_CHUNKS, READ_TIMEOUT, SEND_TIMEOUT, IDLE), CLOSED. Every
connection that had an ACCEPTED/CONNECTED gets exactly one CLOSED.
"""

import itertools
from dataclasses import dataclass

from twisted.internet import tcp as _tcp
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from .core import parser as _p
from .core.errors import FramingError
from .core.serializer import end_line, head as serialize_head, serialize

log = Logger()

_conn_ids = itertools.count(1)


@dataclass
class TransportSettings:
    """proto_msrp's connection parameters, with its names and defaults."""

    send_timeout: int = 100  # ms a blocked write may wait before we close
    max_msg_chunks: int = 4  # small reads a message may arrive in; 0 = off
    tls_handshake_timeout: int = 100  # ms
    cert_check_on_conn_reusage: int = 0
    msg_read_timeout: float = 4.0  # s: head must complete / body must progress
    idle_timeout: float = 120.0  # s without traffic in either direction
    connect_timeout: float = 5.0  # s for outbound TCP connects
    fragment_min_bytes: int = 1024  # a read this large is progress, not a drip
    max_start_line: int = _p.DEFAULT_MAX_START_LINE
    max_header_block: int = _p.DEFAULT_MAX_HEADER_BLOCK
    max_body: int = _p.DEFAULT_MAX_BODY  # per received chunk; 0 = no limit
    max_queued_frames: int = 10000  # frames waiting behind a streamed body
    max_connections_per_ip: int = 0  # accepted connections from one address; 0 = no cap
    # Bytes the socket transport buffers before it pauses its producers.
    # Twisted's 64 KiB default pauses (and resumes) relayed sources for
    # every 64 KiB chunk; this is per connection, and only while writing.
    write_buffer_size: int = 256 * 1024


class ConnectionClosed(Exception):
    """The connection went away; carries the reason text."""


class IMessageHandler(Interface):
    """What a connection delivers parsed traffic to (the transaction layer)."""

    def connection_made(conn):
        """A connection is up (after the TLS handshake for msrps)."""

    def head_received(conn, message):
        """A request head arrived and a body follows.

        Return an IBodySink to take the body as it arrives, or None to have
        it buffered (up to max_body) and delivered with message_received.
        """

    def message_received(conn, message):
        """A complete message (body assembled, flag set)."""

    def invalid_message(conn, error):
        """A delimited but invalid frame (core MessageError)."""

    def connection_lost(conn, reason):
        """The connection closed; reason is a short text. Only called for
        connections that were passed to connection_made."""


class IBodySink(Interface):
    def body_data(data):
        """Bytes of the body, in order."""

    def body_end(flag):
        """The end-line arrived with this continuation flag."""

    def body_aborted(reason):
        """The connection died before the end-line."""


class IConnectionObserver(Interface):
    """Gets connection events (tracing, statistics, logs)."""

    def connection_event(conn, event, success, message):
        """event: ACCEPTED, CONNECTED, CONNECT (failed connect attempt),
        TLS_HANDSHAKE, MAX_MSG_CHUNKS, SEND_TIMEOUT, READ_TIMEOUT, IDLE,
        FRAMING, CLOSED. conn has conn_id, scheme, direction, local_host,
        local_port, remote_host and remote_port."""


class IWritabilityObserver(Interface):
    writable = Attribute("unused")

    def pause_producing():
        """The connection's write buffer is full."""

    def resume_producing():
        """It drained."""


class _StreamWriter:
    """Writes one streamed frame: head already sent, then data, then end."""

    __slots__ = ("conn", "tid", "open")

    def __init__(self, conn, tid):
        self.conn = conn
        self.tid = tid
        self.open = True

    def write(self, data):
        if self.open and self.conn._can_write():
            self.conn._write(data)

    def end(self, flag="$"):
        if self.open:
            self.open = False
            if self.conn._can_write():
                self.conn._write(end_line(self.tid, flag, True))
            self.conn._stream_done(self)

    def abort(self):
        """Close the frame with '#' so the receiver discards it."""
        self.end("#")


def _cancel(timer):
    if timer is not None and timer.active():
        timer.cancel()


# What _send_now reads of a Twisted TCP transport to know that nothing is
# queued there; a Twisted without them gets transport.write for everything.
_DIRECT_SEND_NEEDS = ("socket", "connected", "disconnecting", "dataBuffer", "offset", "_tempDataLen")


class _WriteBatch:
    """Frames written while received data is dispatched, held until the
    outermost dataReceived returns.

    A relayed SEND writes the forwarded frame to one connection and the 200
    to another; many pipelined SENDs write many frames. Twisted would queue
    each write and turn on the socket's write interest (an epoll_ctl), wait
    a reactor turn for writability, send, and turn it off again (another
    epoll_ctl). Held here, each connection gets one joined send() per read,
    straight to the socket when nothing is queued in Twisted already.
    """

    def __init__(self):
        self.depth = 0
        self.dirty = []

    def flush(self):
        while self.dirty:
            dirty, self.dirty = self.dirty, []
            for conn in dirty:
                conn._flush_out()


_batch = _WriteBatch()


@implementer(IHandshakeListener, IPushProducer)
class MSRPProtocol(Protocol):
    """One MSRP connection, inbound or outbound, plain or TLS."""

    reactor = None  # set from the manager

    def __init__(self, manager, direction, scheme, target=None, tls_identity=None,
                 route_key=None):
        self.manager = manager
        self.settings = manager.settings
        self.reactor = manager.reactor
        self.handler = manager.handler
        self.direction = direction  # 'in' (accepted) or 'out'
        self.scheme = scheme  # 'msrp' or 'msrps'
        self.secure = scheme == "msrps"
        self.target = target  # (host, port) we connected to, outbound only
        self.route_key = route_key  # the manager's reuse key, outbound only
        self.tls_identity = tls_identity
        self.conn_id = next(_conn_ids)
        s = self.settings
        self.parser = _p.Parser(s.max_start_line, s.max_header_block, s.max_body)
        self.local_host = self.local_port = None
        self.remote_host = self.remote_port = None
        self.created = None
        self.last_activity = None
        self.bytes_in = self.bytes_out = 0
        self.messages_in = self.messages_out = 0
        self.ready = False
        self.closed = False
        self.close_reason = None
        self.peer_uris = set()
        self.min_lifetime_until = 0.0
        self._closing = False
        self._up = False
        self._ready_waiters = []
        self._sink = None
        self._current = None
        self._parts = None
        self._trace = None  # [message, body prefix] while tracing messages
        self._fragments = 0
        self._message_ended = False
        self._read_timer = None
        self._idle_timer = None
        self._handshake_timer = None
        self._send_timer = None
        self._write_paused = False
        self._flushed_mark = None
        self._stream = None
        self._queue = []
        self._observers = []
        self._reading_paused = 0
        self._out = []  # held by _batch until the read that wrote them ends
        self._out_len = 0
        self._socket = None  # plain TCP: the socket, for direct sends

    # -- description ---------------------------------------------------
    def __repr__(self):
        return "<MSRP conn %d %s %s %s:%s>" % (
            self.conn_id, self.scheme, self.direction, self.remote_host, self.remote_port)

    @property
    def peer(self):
        host = self.remote_host or "?"
        if ":" in host:
            host = "[%s]" % host
        return "%s:%s" % (host, self.remote_port)

    def _event(self, event, success, message):
        self.manager.connection_event(self, event, success, message)

    # -- connection lifecycle -------------------------------------------
    def connectionMade(self):
        t = self.transport
        peer = t.getPeer()
        host = t.getHost()
        self.remote_host, self.remote_port = getattr(peer, "host", None), getattr(peer, "port", None)
        self.local_host, self.local_port = getattr(host, "host", None), getattr(host, "port", None)
        now = self.reactor.seconds()
        self.created = self.last_activity = now
        self._up = True
        self.manager.connection_opened(self)
        inner = t
        while inner is not None and not hasattr(inner, "bufferSize"):
            inner = getattr(inner, "transport", None)
        if inner is not None and self.settings.write_buffer_size:
            inner.bufferSize = self.settings.write_buffer_size
        t.registerProducer(self, True)
        if isinstance(t, _tcp.Connection) and all(hasattr(t, name) for name in _DIRECT_SEND_NEEDS):
            self._socket = t.socket
        self._event("ACCEPTED" if self.direction == "in" else "CONNECTED", True,
                    "%s %s" % ("accepted from" if self.direction == "in" else "connected to", self.peer))
        if self._closing:  # an observer refused it
            return
        if self.direction == "in":
            refusal = self.manager.admit(self)
            if refusal is not None:
                self.close(refusal, event="CONNECTION_LIMIT")
                return
        self._arm_idle()
        if self.secure:
            if self.settings.tls_handshake_timeout:
                self._handshake_timer = self.reactor.callLater(
                    self.settings.tls_handshake_timeout / 1000.0, self._handshake_timed_out)
        else:
            self._became_ready()

    def handshakeCompleted(self):
        _cancel(self._handshake_timer)
        self._handshake_timer = None
        if not self._closing and not self.closed:
            self._event("TLS_HANDSHAKE", True, "TLS handshake completed with %s" % self.peer)
            self._became_ready()

    def _became_ready(self):
        self.ready = True
        self.handler.connection_made(self)
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(self)

    def when_ready(self):
        """A Deferred firing with self once usable (TLS done), or failing
        with ConnectionClosed."""
        if self.ready and not self._closing and not self.closed:
            return succeed(self)
        if self.closed or self._closing:
            return fail(ConnectionClosed(self.close_reason or "connection closed"))
        d = Deferred()
        self._ready_waiters.append(d)
        return d

    def _handshake_timed_out(self):
        self._handshake_timer = None
        self.close("TLS handshake not completed within %d ms" % self.settings.tls_handshake_timeout,
                   event="TLS_HANDSHAKE")

    def close(self, reason, event=None, abort=True):
        """Close with a reason that ends up in the log, the trace and the MI.

        abort=False flushes what is buffered first, but gives up (and
        aborts) when nothing can be flushed for send_timeout.
        """
        if self.closed or self._closing:
            return
        self._closing = True
        if self.close_reason is None:
            self.close_reason = reason
        if event is not None:
            self._event(event, False, reason)
        # Closes for a fault (the peer's or the network's) are warnings.
        emit = log.info if event in (None, "IDLE") else log.warn
        emit("MSRP {scheme} connection {peer} closed: {reason}",
             scheme=self.scheme, peer=self.peer, reason=reason)
        _cancel(self._read_timer)
        _cancel(self._idle_timer)
        _cancel(self._send_timer)
        self._read_timer = self._idle_timer = self._send_timer = None
        t = self.transport
        out, self._out, self._out_len = self._out, [], 0
        if t is None:
            return
        if abort:
            t.abortConnection()
            return
        if out:
            t.write(b"".join(out))
        # A registered producer keeps a TCP transport (and a TLS one) from
        # ever finishing loseConnection: unregister first.
        try:
            t.unregisterProducer()
        except RuntimeError:
            pass
        self._write_paused = False
        t.loseConnection()
        if self.settings.send_timeout and not self.closed and _pending_write_bytes(t):
            self._flushed_mark = self._flushed()
            self._send_timer = self.reactor.callLater(
                self.settings.send_timeout / 1000.0, self._send_timed_out)

    def connectionLost(self, reason=None):
        if self.closed:
            return
        self.closed = True
        self._closing = True
        for timer in (self._read_timer, self._idle_timer, self._handshake_timer, self._send_timer):
            _cancel(timer)
        self._read_timer = self._idle_timer = self._handshake_timer = self._send_timer = None
        self._out, self._out_len = [], 0
        was_ready = self.ready
        self.ready = False
        if self.close_reason is None:
            text = _reason_text(reason)
            if self.secure and not was_ready and self._up:
                text = "TLS handshake failed: %s" % text
                self._event("TLS_HANDSHAKE", False, text)
            self.close_reason = text
        if self._up:
            # Out of the registry before observers hear of it.
            self.manager.connection_closed(self)
            self._event("CLOSED", True, self.close_reason)
        err = ConnectionClosed(self.close_reason)
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.errback(Failure(err))
        sink, self._sink = self._sink, None
        if sink is not None:
            try:
                sink.body_aborted(self.close_reason)
            except Exception:
                log.failure("body sink failed on abort")
        for w in self._observers:
            # Let relayed sources resume (and find out) rather than stay paused.
            try:
                w.resume_producing()
            except Exception:
                log.failure("writability observer failed")
        self._observers = []
        queue, self._queue = self._queue, []
        self._stream = None
        for item in queue:
            if type(item) is not bytes:
                item[0].errback(Failure(ConnectionClosed(self.close_reason)))
        if was_ready:
            self.handler.connection_lost(self, self.close_reason)

    # -- reading ---------------------------------------------------------
    def dataReceived(self, data):
        if self._closing:
            return
        batch = _batch
        batch.depth += 1
        try:
            self._data_received(data)
        finally:
            batch.depth -= 1
            if not batch.depth and batch.dirty:
                batch.flush()

    def _data_received(self, data):
        self.bytes_in += len(data)
        self.last_activity = self.reactor.seconds()
        framing_error = None
        try:
            events = self.parser.feed(data)
        except FramingError as e:
            # What was complete before the bad bytes still counts.
            framing_error, events = e, getattr(e, "events", ())
        self._message_ended = False
        for ev in events:
            if self._closing:
                return
            try:
                self._dispatch(ev)
            except Exception:
                log.failure("MSRP handler failed on a message from {peer}", peer=self.peer)
                self.close("internal error while handling a message")
                return
        if framing_error is not None:
            self.close("framing error: %s" % framing_error, event="FRAMING")
        if self._closing:
            return
        parser = self.parser
        if not parser.in_message:
            _cancel(self._read_timer)
            self._read_timer = None
            return
        if len(data) >= self.settings.fragment_min_bytes:
            self._fragments = 0
        else:
            self._fragments += 1
            limit = self.settings.max_msg_chunks
            if limit and self._fragments >= limit:
                self.close("message still incomplete after %d small reads (max_msg_chunks=%d)"
                           % (self._fragments, limit), event="MAX_MSG_CHUNKS")
                return
        if not self._reading_paused:
            # A new message, or body progress, starts the clock again; a
            # head that is still arriving keeps its deadline.
            self._arm_read_timer(reset=self._message_ended or parser.in_body)

    def _message_tracer(self):
        tracer = getattr(self.manager, "tracer", None)
        if tracer is not None and tracer.trace_messages and tracer.enabled:
            return tracer
        return None

    def _trace_message(self, direction, head_bytes, body_prefix):
        tracer = self._message_tracer()
        if tracer is not None:
            try:
                tracer.message(self, direction, head_bytes, body_prefix)
            except Exception:
                log.failure("message trace failed")

    def _trace_out(self, data):
        """Trace a serialized outgoing frame: its head and a body prefix."""
        if self._message_tracer() is None:
            return
        data = bytes(data)
        i = data.find(b"\r\n\r\n")
        if i >= 0:
            head, body = data[:i + 4], data[i + 4:]
        else:
            j = data.find(b"\r\n-------")
            head, body = (data[:j + 2], b"") if j >= 0 else (data, b"")
        self._trace_message("out", head, body)

    def _dispatch(self, ev):
        t = type(ev)
        if self._trace is not None:
            self._trace_event(t, ev)
        elif t is _p.MessageStart and self._message_tracer() is not None:
            self._trace = [ev.message, bytearray()]
            self._trace_event(t, ev)
        if t is _p.BodyData:
            if self._sink is not None:
                self._sink.body_data(ev.data)
            elif self._parts is not None:
                self._parts.append(ev.data)
        elif t is _p.MessageStart:
            msg = ev.message
            if msg.has_body:
                sink = self.handler.head_received(self, msg)
                if sink is not None:
                    self._sink = sink
                    self._current = None
                    self._parts = None
                else:
                    self._current = msg
                    self._parts = []
            else:
                self._current = msg
                self._parts = None
        elif t is _p.MessageEnd:
            self.messages_in += 1
            self._fragments = 0
            self._message_ended = True
            sink = self._sink
            if sink is not None:
                self._sink = None
                sink.body_end(ev.flag)
                return
            msg = self._current
            self._current = None
            parts = self._parts
            if parts is not None:
                msg.body = parts[0] if len(parts) == 1 else b"".join(parts)
                self._parts = None
            msg.flag = ev.flag
            self.handler.message_received(self, msg)
        else:  # InvalidMessage
            self.messages_in += 1
            self._fragments = 0
            self._message_ended = True
            err = ev.error
            log.info("invalid MSRP message from {peer} (tid {tid}): {reason}",
                     peer=self.peer, tid=err.tid, reason=err.reason)
            self.handler.invalid_message(self, err)

    def _trace_event(self, t, ev):
        msg, prefix = self._trace
        if t is _p.BodyData:
            room = self._message_tracer()
            room = room.max_body - len(prefix) if room is not None else 0
            if room > 0:
                prefix += ev.data[:room]
        elif t is _p.MessageEnd or t is _p.InvalidMessage or (t is _p.MessageStart and not ev.message.has_body):
            self._trace = None
            if t is not _p.InvalidMessage:
                try:
                    head = serialize_head(msg, msg.has_body)
                except Exception:
                    return
                self._trace_message("in", head, bytes(prefix))

    def _arm_read_timer(self, reset):
        delay = self.settings.msg_read_timeout
        if not delay:
            return
        timer = self._read_timer
        if timer is not None and timer.active():
            if reset:
                timer.reset(delay)
            return
        self._read_timer = self.reactor.callLater(delay, self._read_timed_out)

    def _read_timed_out(self):
        self._read_timer = None
        what = "body made no progress" if self.parser.in_body else "message head not complete"
        self.close("%s within %gs (msg_read_timeout)" % (what, self.settings.msg_read_timeout),
                   event="READ_TIMEOUT")

    def pause_reading(self):
        """Stop reading (nested: each pause needs a resume).

        The read timeout is suspended meanwhile: a source held back by a
        slow destination is not the source's fault.
        """
        self._reading_paused += 1
        if self._reading_paused == 1 and self.transport is not None and not self._closing:
            self.transport.pauseProducing()
            _cancel(self._read_timer)
            self._read_timer = None

    def resume_reading(self):
        if self._reading_paused == 0:
            return
        self._reading_paused -= 1
        if self._reading_paused == 0 and self.transport is not None and not self._closing:
            self.transport.resumeProducing()
            if self.parser.in_message:
                self._arm_read_timer(reset=True)

    # -- idle lifetime ---------------------------------------------------
    def _arm_idle(self):
        if self.settings.idle_timeout:
            self._idle_timer = self.reactor.callLater(self.settings.idle_timeout, self._idle_check)

    def keep_alive_until(self, when):
        """Do not close for idleness before this reactor time (AUTH lifetime)."""
        self.min_lifetime_until = max(self.min_lifetime_until, when)

    def _idle_check(self):
        self._idle_timer = None
        now = self.reactor.seconds()
        due = max(self.last_activity + self.settings.idle_timeout, self.min_lifetime_until)
        if now >= due:
            self.close("idle for %gs" % (now - self.last_activity), event="IDLE", abort=False)
        else:
            self._idle_timer = self.reactor.callLater(due - now, self._idle_check)

    # -- writing ---------------------------------------------------------
    def _can_write(self):
        return not self._closing and self.transport is not None

    def _write(self, data):
        n = len(data)
        self.bytes_out += n
        self.last_activity = self.reactor.seconds()
        if _batch.depth:
            out = self._out
            if not out:
                _batch.dirty.append(self)
            out.append(data)
            self._out_len += n
        else:
            # Outside a read (a producer, a timer): Twisted's own buffered
            # write. Sending straight to the socket here would let a
            # producer push megabytes into loopback socket buffers in one
            # loop without ever returning to the reactor, starving every
            # other connection of this process.
            self.transport.write(data)

    def _flush_out(self):
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        self._out = []
        self._out_len = 0
        if self._can_write():
            self._send_now(data)

    def _send_now(self, data):
        t = self.transport
        sock = self._socket
        if (sock is not None and t.connected and not t.disconnecting and not t._tempDataLen
                and t.offset == len(t.dataBuffer)):
            # Nothing queued in Twisted: try the socket first. What the
            # kernel does not take (or an error, which Twisted's own write
            # path then reports) goes through transport.write as usual.
            try:
                sent = sock.send(data)
            except OSError:
                sent = 0
            if sent == len(data):
                return
            if sent:
                data = data[sent:]
        t.write(data)

    def send_message(self, message):
        """Serialize and write a complete message (queued behind a stream)."""
        return self.send_bytes(serialize(message))

    def send_bytes(self, data):
        if not self._can_write():
            raise ConnectionClosed(self.close_reason or "connection closed")
        self.messages_out += 1
        self._trace_out(data)
        if self._stream is not None:
            if len(self._queue) >= self.settings.max_queued_frames:
                self.close("too many frames queued behind a streamed body")
                raise ConnectionClosed(self.close_reason)
            self._queue.append(data)
        else:
            self._write(data)

    def can_start_frame(self):
        """True when start_frame would write a frame's head at once."""
        return self.ready and self._stream is None and not self._closing and self.transport is not None

    def start_frame(self, message):
        """open_stream without the Deferred, for a connection where
        can_start_frame() is true: returns the writer."""
        data = serialize_head(message, True)
        self.messages_out += 1
        self._trace_out(data)
        self._write(data)
        self._stream = writer = _StreamWriter(self, message.tid)
        return writer

    def open_stream(self, message):
        """Start a frame whose body is written later; returns a Deferred
        firing with a writer (write(data), end(flag), abort())."""
        if not self._can_write():
            return fail(ConnectionClosed(self.close_reason or "connection closed"))
        if self._stream is None:
            return succeed(self.start_frame(message))
        data = serialize_head(message, True)
        self.messages_out += 1
        self._trace_out(data)
        if len(self._queue) >= self.settings.max_queued_frames:
            self.close("too many frames queued behind a streamed body")
            return fail(ConnectionClosed(self.close_reason))
        d = Deferred()
        self._queue.append((d, message.tid, data))
        return d

    def _stream_done(self, writer):
        if self._stream is not writer:
            return
        self._stream = None
        queue = self._queue
        while queue and self._stream is None and self._can_write():
            item = queue.pop(0)
            if type(item) is bytes:
                self._write(item)
            else:
                d, tid, data = item
                self._write(data)
                self._stream = _StreamWriter(self, tid)
                d.callback(self._stream)

    @property
    def writable(self):
        return not self._write_paused and not self._closing

    def add_writability_observer(self, observer):
        self._observers.append(observer)

    def remove_writability_observer(self, observer):
        try:
            self._observers.remove(observer)
        except ValueError:
            pass

    # IPushProducer, registered with our own transport so that it tells us
    # when its write buffer is full (pause) and drained (resume).
    def pauseProducing(self):
        if self._write_paused or self._closing:
            return
        self._write_paused = True
        if self.settings.send_timeout:
            self._flushed_mark = self._flushed()
            self._send_timer = self.reactor.callLater(
                self.settings.send_timeout / 1000.0, self._send_timed_out)
        for w in list(self._observers):
            w.pause_producing()

    def resumeProducing(self):
        if not self._write_paused:
            return
        self._write_paused = False
        _cancel(self._send_timer)
        self._send_timer = None
        for w in list(self._observers):
            w.resume_producing()

    def stopProducing(self):
        pass

    def _flushed(self):
        """Bytes that have left our buffers for the kernel, or None if the
        transport cannot tell. Exact on TCP; on TLS it ignores the record
        overhead of what was written since the last look, which can only
        make a peer that reads look stalled, never the other way round."""
        pending = _pending_write_bytes(self.transport)
        return None if pending is None else self.bytes_out - pending - self._out_len

    def _send_timed_out(self):
        self._send_timer = None
        if self.closed:
            return
        flushed = self._flushed()
        if flushed is not None and self._flushed_mark is not None and flushed > self._flushed_mark:
            # The peer is reading, just slower than we write: progress.
            self._flushed_mark = flushed
            self._send_timer = self.reactor.callLater(
                self.settings.send_timeout / 1000.0, self._send_timed_out)
            return
        reason = "write blocked for more than %d ms (send_timeout)" % self.settings.send_timeout
        if self._closing:
            # A graceful close that cannot flush: give up on it.
            log.info("MSRP {scheme} connection {peer}: {reason}, aborting",
                     scheme=self.scheme, peer=self.peer, reason=reason)
            self._event("SEND_TIMEOUT", False, reason)
            if self.transport is not None:
                self.transport.abortConnection()
            return
        self.close(reason, event="SEND_TIMEOUT")


def _pending_write_bytes(transport):
    """Bytes a socket transport still holds, or None when it cannot tell."""
    t = transport
    for _ in range(3):
        if t is None:
            return None
        buf = getattr(t, "dataBuffer", None)
        if buf is not None:
            return len(buf) - getattr(t, "offset", 0) + getattr(t, "_tempDataLen", 0)
        t = getattr(t, "transport", None)
    return None


def _reason_text(reason):
    if reason is None:
        return "connection closed"
    value = getattr(reason, "value", reason)
    tls_text = _tls_reason_text(value)
    if tls_text is not None:
        return tls_text
    text = str(value) or type(value).__name__
    if "Connection was closed cleanly" in text:
        return "closed by peer"
    return text


def _tls_reason_text(value):
    """OpenSSL's error stack and service_identity's mismatch, readable."""
    from OpenSSL import SSL
    from service_identity import VerificationError

    if isinstance(value, VerificationError):
        names = []
        for error in getattr(value, "errors", ()):
            wanted = getattr(error, "mismatched_id", None)
            name = getattr(wanted, "hostname", None) or getattr(wanted, "ip", None)
            names.append(str(name if name is not None else error))
        return "server certificate does not match %s" % (", ".join(names) or "the host")
    if isinstance(value, SSL.Error):
        stack = value.args[0] if value.args and isinstance(value.args[0], list) else []
        reasons = [entry[-1] for entry in stack if isinstance(entry, tuple) and entry and entry[-1]]
        return "; ".join(reasons) if reasons else (str(value) or "TLS error")
    return None
