"""Message chunking and reassembly (RFC 4975 sections 5.1 and 7.1).

A message too large for one SEND goes out as several, all with the same
Message-ID, each saying in its Byte-Range where its body belongs and in its
end-line whether more follows ('+'), whether it is the last chunk ('$') or
whether the sender gave the message up ('#'). Small chunks are what let a
large transfer share a connection with other traffic.

Sending: ``MessageSender`` (``send_message``) reads the content a chunk at a
time, keeps a bounded number of chunk transactions in flight and stops on
the first refusal.

Receiving: ``Reassembler`` rebuilds one message from chunks in any order,
by byte position, spooling to disk above a threshold; ``IncomingMessages``
holds the reassemblers of a service with an inactivity timer each;
``ChunkReceiver`` is the request handler that answers chunks, sends the
REPORTs asked for and hands complete messages to the upper layer.
"""

import bisect
import hashlib
import io
import os
import tempfile
from typing import NamedTuple

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .connections import SendError
from .core.errors import HeaderError, MSRPError, URIError
from .core.headers import ByteRange, check_header, parse_byte_range
from .core.ids import is_valid_ident, new_message_id
from .core.message import ABORTED, COMPLETE, CONTINUED
from .core.uri import format_path
from .protocol import IBodySink, IWritabilityObserver
from .transactions import DISCARD, IRequestHandler, TransactionError, TransactionTimeout, reason_phrase

log = Logger()

# 2048 octets: a chunk this small never holds other traffic on a shared
# connection back for long (the reason RFC 4975 section 5.1 gives for
# chunking), needs no interrupting, and passes every relay we know of
# (Kamailio drops frames above about 11 KB, OpenSIPS above 64 KB). Bulk
# transfers between our own endpoints can ask for more.
DEFAULT_CHUNK_SIZE = 2048
# Chunk transactions in flight per message: enough to keep a connection
# busy across a round trip, while memory stays at window * chunk_size.
DEFAULT_WINDOW = 8
# Messages up to 1 MiB stay in memory (chat, pictures); larger ones go to a
# temporary file as they arrive.
DEFAULT_SPOOL_THRESHOLD = 1024 * 1024
# A message that gets no chunk for 60 s is given up: twice RFC 4975's 30 s
# transaction timeout, so a sender whose chunk timed out has had time to
# notice and carry on (or abort) before we report the message as failed.
DEFAULT_INCOMPLETE_TIMEOUT = 60.0
# Largest message a receiver accepts unless told otherwise (413 above it).
DEFAULT_MAX_SIZE = 1024 * 1024 * 1024

_RESERVED_HEADERS = frozenset(
    ("to-path", "from-path", "message-id", "byte-range", "content-type",
     "success-report", "failure-report", "status"))
_HASH_PIECE = 1024 * 1024


# -- errors ------------------------------------------------------------------
class MessageSendError(MSRPError):
    """A chunked send failed.

    ``code`` is the MSRP status that stopped it (the response code, 408 for
    a transaction timeout or a lost or unusable connection, None for a
    local failure); ``acknowledged`` is how many bytes the peer confirmed.
    """

    def __init__(self, reason, code=None, comment=None, message_id=None, acknowledged=0):
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.comment = comment
        self.message_id = message_id
        self.acknowledged = acknowledged


class SendCancelled(MessageSendError):
    """The sender called cancel(); the receiver was told with a '#' chunk."""


class ReassemblyError(MSRPError):
    """A chunk that cannot be taken; ``code`` is the response to send."""

    code = 400

    def __init__(self, reason, code=None):
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code


class MessageTooLarge(ReassemblyError):
    """The message is over the receiver's limit: 413 and stop (RFC 4975 10.5)."""

    code = 413


class IncompleteMessage(ReassemblyError):
    """The message stopped making progress before it was complete."""

    code = 408


class MessageAborted(ReassemblyError):
    """The sender gave the message up with a '#' chunk (nothing to answer)."""

    code = None


def _fresh(error):
    """A new instance, so that re-raising never grows a traceback chain."""
    return type(error)(error.reason, error.code)


# -- sending -----------------------------------------------------------------
class SendResult(NamedTuple):
    message_id: str
    size: int
    chunks: int
    acknowledged: int


class _BytesSource:
    __slots__ = ("data", "pos", "total")

    def __init__(self, data):
        self.data = bytes(data)
        self.pos = 0
        self.total = len(self.data)

    def read(self, n):
        piece = self.data[self.pos:self.pos + n]
        self.pos += len(piece)
        return piece

    def close(self):
        self.data = b""


class _FileSource:
    """Reads a binary file a chunk at a time; closes it only if we opened it."""

    __slots__ = ("file", "owned", "total")

    def __init__(self, file, owned):
        if isinstance(file, io.TextIOBase):
            raise TypeError("file is open in text mode; open it with 'rb'")
        self.file = file
        self.owned = owned
        try:
            here = file.tell()
            end = file.seek(0, io.SEEK_END)
            file.seek(here)
            self.total = end - here
        except (OSError, AttributeError, ValueError):
            self.total = None  # a pipe or socket: total stays '*'

    def read(self, n):
        parts = []
        while n > 0:
            data = self.file.read(n)
            if not data:
                break
            if isinstance(data, str):
                raise TypeError("file is open in text mode; open it with 'rb'")
            parts.append(data)
            n -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self):
        if self.owned:
            self.file.close()


def _open_source(content):
    if isinstance(content, (bytes, bytearray, memoryview)):
        return _BytesSource(content)
    if isinstance(content, (str, os.PathLike)):
        return _FileSource(open(content, "rb"), True)
    if hasattr(content, "read"):
        return _FileSource(content, False)
    raise TypeError("content must be bytes, a file path or a binary file object, not %s"
                    % type(content).__name__)


def _check_extra_headers(headers):
    """Split extra headers into extension headers and MIME (Content-*) ones.

    MIME headers go last, just before Content-Type, where the RFC 4975
    grammar puts them.
    """
    plain, mime = [], []
    for name, value in headers:
        try:
            check_header(name, value)
        except HeaderError as e:
            raise ValueError(str(e)) from None
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError("header %s is set by the sender, not by the caller" % name)
        (mime if name.lower().startswith("content-") else plain).append((name, value))
    return plain, mime


@implementer(IWritabilityObserver)
class MessageSender:
    """Sends one message as SEND chunks over a TransactionManager.

    ``content`` is bytes, a file path or a binary file object (read from its
    current position, a chunk at a time; a file that cannot seek is sent
    with a '*' total). ``window`` bounds the chunks awaiting their 200; with
    ``failure_report`` 'no' or 'partial' no 200 comes back, so a chunk
    counts as done once written and only the connection's write buffer
    paces the send. ``progress(acknowledged, total)`` is called as chunks
    are confirmed (total is None while unknown).

    ``result`` fires with a SendResult, or fails with MessageSendError
    (SendCancelled after cancel()). Cancelling ``result`` cancels the send.
    """

    writable = True

    def __init__(self, tm, to_path, from_path, content, content_type="application/octet-stream",
                 message_id=None, chunk_size=DEFAULT_CHUNK_SIZE, window=DEFAULT_WINDOW,
                 success_report=False, failure_report="yes", headers=(), progress=None,
                 conn=None, tls=None, timeout=None):
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1, got %r" % (chunk_size,))
        if window < 1:
            raise ValueError("window must be at least 1, got %r" % (window,))
        if failure_report not in ("yes", "no", "partial"):
            raise ValueError("failure_report must be 'yes', 'no' or 'partial', got %r" % (failure_report,))
        if message_id is None:
            message_id = new_message_id()
        elif not is_valid_ident(message_id):
            raise ValueError("invalid Message-ID %r (RFC 4975 ident: 4-32 characters)" % (message_id,))
        try:
            check_header("Content-Type", content_type)
        except HeaderError as e:
            raise ValueError(str(e)) from None
        self._plain_headers, self._mime_headers = _check_extra_headers(headers)
        try:
            format_path(to_path)
            format_path(from_path)
        except URIError as e:
            raise ValueError(str(e)) from None
        self.tm = tm
        self.to_path = tuple(to_path)
        self.from_path = tuple(from_path)
        self.message_id = message_id
        self.content_type = content_type
        self.chunk_size = chunk_size
        self.window = window
        self.success_report = bool(success_report)
        self.failure_report = failure_report
        self.progress = progress
        self.conn = conn
        self.tls = tls
        self.timeout = timeout
        self._source = _open_source(content)
        self.total = self._source.total
        self.offset = 0  # bytes handed to the connection
        self.acknowledged = 0
        self.chunks = 0
        self.all_written = False
        self.done = False
        self._started = False
        self._outstanding = 0
        self._pumping = False
        self._lookahead = None
        self.result = defer.Deferred(lambda d: self.cancel())

    # -- control -----------------------------------------------------------
    def start(self):
        """Connect (or use the given connection) and start sending."""
        if self._started or self.done:
            return self.result
        self._started = True
        if self.conn is not None:
            d = defer.succeed(self.conn)
        else:
            d = self.tm.connections.connection_for(self.to_path[0], self.tls)
        d.addCallbacks(self._connected, self._connect_failed)
        return self.result

    def cancel(self, reason="cancelled by the sender"):
        """Stop sending; abort the message at the receiver with a '#' chunk."""
        if self.done:
            return
        if self.conn is not None and not self.conn.closed and self.offset and not self.all_written:
            self._send_abort_chunk()
        self._fail(SendCancelled(reason, None, None, self.message_id, self.acknowledged))

    # -- IWritabilityObserver ---------------------------------------------
    def pause_producing(self):
        pass  # _pump checks conn.writable before every chunk

    def resume_producing(self):
        self._pump()

    # -- internals ---------------------------------------------------------
    def _connected(self, conn):
        if self.done:
            return
        self.conn = conn
        conn.add_writability_observer(self)
        self._pump()

    def _connect_failed(self, f):
        if not self.done:
            self._fail(MessageSendError(
                "cannot send message %s: %s" % (self.message_id, f.getErrorMessage()),
                408, None, self.message_id))

    def _pump(self):
        if self._pumping or self.done or self.conn is None:
            return
        if self.conn.closed:
            self._fail(MessageSendError(
                "connection to %s closed while sending message %s: %s"
                % (self.conn.peer, self.message_id, self.conn.close_reason),
                408, None, self.message_id, self.acknowledged))
            return
        self._pumping = True
        try:
            limit = self.window if self.failure_report == "yes" else float("inf")
            while (not self.done and not self.all_written and self._outstanding < limit
                   and self.conn.writable):
                self._send_next()
        finally:
            self._pumping = False
        if not self.done and self.all_written and self._outstanding == 0:
            self._finish()

    def _read_chunk(self):
        """The next chunk's data and whether it is the last one."""
        n = self.chunk_size
        if self.total is not None:
            n = min(n, self.total - self.offset)
            data = self._source.read(n)
            if len(data) != n:
                raise OSError("content ended after %d of %d bytes" % (self.offset + len(data), self.total))
            return data, self.offset + n == self.total
        # Unknown size: read one chunk ahead to know which one is last.
        data = self._lookahead if self._lookahead is not None else self._source.read(n)
        self._lookahead = self._source.read(n) if data else b""
        return data, not self._lookahead

    def _headers(self, byte_range):
        items = [("Message-ID", self.message_id)]
        if self.success_report:
            items.append(("Success-Report", "yes"))
        if self.failure_report != "yes":
            items.append(("Failure-Report", self.failure_report))
        items.append(("Byte-Range", byte_range))
        items.extend(self._plain_headers)
        items.extend(self._mime_headers)
        items.append(("Content-Type", self.content_type))
        return items

    def _send_next(self):
        start = self.offset
        try:
            data, last = self._read_chunk()
        except (OSError, ValueError, TypeError) as e:
            if start:
                self._send_abort_chunk()
            self._fail(MessageSendError("cannot read the content of %s: %s" % (self.message_id, e),
                                        None, None, self.message_id, self.acknowledged))
            return
        end = start + len(data)
        if last and self.total is None:
            self.total = end
        total = "*" if self.total is None else str(self.total)
        headers = self._headers("%d-%d/%s" % (start + 1, end, total))
        self.offset = end
        self.chunks += 1
        if last:
            self.all_written = True
        awaited = self.failure_report == "yes"
        if awaited:
            self._outstanding += 1
        d = self.tm.send_request(self.to_path, self.from_path, "SEND", headers, data,
                                 COMPLETE if last else CONTINUED, self.conn, self.tls, self.timeout)
        d.addCallbacks(self._answered, self._not_answered, (start, end, awaited), None,
                       (start, end, awaited), None)
        if not awaited and not self.done:
            self._acknowledge(end - start)

    def _answered(self, response, start, end, awaited):
        if awaited:
            self._outstanding -= 1
        if self.done:
            if response is not None and response.code != 200:
                log.info("message {mid}: chunk {start}-{end} answered {code} after the send ended",
                         mid=self.message_id, start=start + 1, end=end, code=response.code)
            return
        if response is not None and response.code != 200:
            self._fail(MessageSendError(
                "chunk %d-%d of message %s refused: %03d %s"
                % (start + 1, end, self.message_id, response.code, response.comment or ""),
                response.code, response.comment, self.message_id, self.acknowledged))
            return
        if awaited:
            self._acknowledge(end - start)
        self._pump()

    def _not_answered(self, f, start, end, awaited):
        if awaited:
            self._outstanding -= 1
        if self.done:
            return None
        if not awaited and f.check(TransactionTimeout):
            return None  # Failure-Report: partial: no news is good news
        code = 408 if f.check(TransactionError, SendError) else None
        self._fail(MessageSendError(
            "chunk %d-%d of message %s failed: %s" % (start + 1, end, self.message_id, f.getErrorMessage()),
            code, None, self.message_id, self.acknowledged))
        return None

    def _acknowledge(self, n):
        self.acknowledged += n
        if self.progress is not None:
            try:
                self.progress(self.acknowledged, self.total)
            except Exception:
                log.failure("progress callback of message {mid} failed", mid=self.message_id)

    def _send_abort_chunk(self):
        """An empty chunk ending in '#' after the last byte sent (RFC 4975 7.1)."""
        nxt = self.offset + 1
        total = "*" if self.total is None else str(self.total)
        headers = self._headers("%d-%d/%s" % (nxt, nxt - 1, total))
        d = self.tm.send_request(self.to_path, self.from_path, "SEND", headers, b"", ABORTED,
                                 self.conn, self.tls, self.timeout)
        d.addErrback(lambda f: log.info("abort chunk of {mid} not delivered: {err}",
                                        mid=self.message_id, err=f.getErrorMessage()))

    def _cleanup(self):
        self.done = True
        if self.conn is not None:
            self.conn.remove_writability_observer(self)
        try:
            self._source.close()
        except OSError:
            pass

    def _finish(self):
        self._cleanup()
        self.result.callback(SendResult(self.message_id, self.offset, self.chunks, self.acknowledged))

    def _fail(self, error):
        self._cleanup()
        self.result.errback(Failure(error))


def send_message(tm, to_path, from_path, content, content_type="application/octet-stream", **options):
    """Start sending content as one message; returns the MessageSender
    (``.result``, ``.cancel()``). Options are MessageSender's."""
    sender = MessageSender(tm, to_path, from_path, content, content_type, **options)
    sender.start()
    return sender


# -- receiving: byte ranges --------------------------------------------------
class RangeSet:
    """Disjoint half-open [start, end) intervals, merged as they are added."""

    __slots__ = ("_starts", "_ends", "size")

    def __init__(self):
        self._starts = []
        self._ends = []
        self.size = 0

    def add(self, start, end):
        """Add [start, end); return how many bytes were new."""
        if end <= start:
            return 0
        starts, ends = self._starts, self._ends
        i = bisect.bisect_left(ends, start)  # first interval reaching start
        j = bisect.bisect_right(starts, end)  # past the last one starting by end
        if i < j:
            removed = sum(ends[k] - starts[k] for k in range(i, j))
            start = min(start, starts[i])
            end = max(end, ends[j - 1])
        else:
            removed = 0
        starts[i:j] = [start]
        ends[i:j] = [end]
        added = end - start - removed
        self.size += added
        return added

    def missing(self, start, end):
        """The sub-intervals of [start, end) not in the set, in order."""
        gaps = []
        starts, ends = self._starts, self._ends
        i = bisect.bisect_right(ends, start)
        pos = start
        while pos < end and i < len(starts):
            s = starts[i]
            if s >= end:
                break
            if s > pos:
                gaps.append((pos, s))
            pos = max(pos, ends[i])
            i += 1
        if pos < end:
            gaps.append((pos, end))
        return gaps

    def covers(self, start, end):
        if end <= start:
            return True
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def prefix_end(self):
        """End of the run that starts at 0 (0 when byte 0 is missing)."""
        if self._starts and self._starts[0] == 0:
            return self._ends[0]
        return 0

    @property
    def high(self):
        return self._ends[-1] if self._ends else 0

    def __iter__(self):
        return iter(list(zip(self._starts, self._ends)))

    def __len__(self):
        return len(self._starts)

    def __repr__(self):
        return "RangeSet(%r)" % (list(self),)


# -- receiving: one message --------------------------------------------------
RECEIVING = "receiving"
COMPLETED = "complete"
ABORTED_STATE = "aborted"
FAILED = "failed"


def _as_byte_range(value):
    if value is None:
        return ByteRange(1, None, None)  # RFC 4975 7.1.1: absent means 1-*/*
    if isinstance(value, ByteRange):
        return value
    try:
        return parse_byte_range(str(value))
    except HeaderError as e:
        raise ReassemblyError(str(e)) from None


class ChunkFeed:
    """The body of one chunk, written in order as it arrives."""

    __slots__ = ("reassembler", "start", "pos", "declared_end", "ended")

    def __init__(self, reassembler, start, declared_end):
        self.reassembler = reassembler
        self.start = start
        self.pos = start
        self.declared_end = declared_end  # exclusive, None for '*'
        self.ended = False

    def write(self, data):
        if self.declared_end is not None and self.pos + len(data) > self.declared_end:
            raise ReassemblyError("chunk body runs past its Byte-Range end %d" % self.declared_end)
        self.reassembler.write(self.pos, data)
        self.pos += len(data)

    def end(self, flag):
        """The end-line arrived: True when the message is now complete."""
        self.ended = True
        return self.reassembler.chunk_done(flag, self.pos)


class Reassembler:
    """One message being rebuilt from its chunks.

    Bytes are stored where their Byte-Range puts them, only where nothing
    arrived yet (so a repeated range cannot change what was hashed); the
    byte ranges received are kept as merged intervals. Up to
    ``spool_threshold`` bytes live in memory, beyond that in a temporary
    file written at offsets. The sha256 is updated as the run of bytes from
    the start grows, straight from the arriving data when chunks come in
    order. Offsets in this API count from 0; Byte-Range values from 1.
    """

    def __init__(self, message_id=None, spool_threshold=DEFAULT_SPOOL_THRESHOLD,
                 max_size=DEFAULT_MAX_SIZE, spool_dir=None):
        self.message_id = message_id
        self.spool_threshold = spool_threshold
        self.max_size = max_size
        self.spool_dir = spool_dir
        self.state = RECEIVING
        self.error = None
        self.total = None  # from the first Byte-Range with a number
        self.final_end = None  # from the '$' chunk when the total is '*'
        self.ranges = RangeSet()
        self.path = None
        self._memory = bytearray()
        self._fd = None
        self._hash = hashlib.sha256()
        self._hashed = 0

    # -- what arrived ------------------------------------------------------
    @property
    def received_bytes(self):
        return self.ranges.size

    @property
    def byte_ranges(self):
        """Received ranges as 1-based inclusive (start, end) pairs."""
        return [(s + 1, e) for s, e in self.ranges]

    @property
    def size(self):
        """The message size once known (total, or the end of the '$' chunk)."""
        return self.total if self.total is not None else self.final_end

    @property
    def spooled(self):
        return self.path is not None

    @property
    def should_abort(self):
        """True once the message is given up (413, storage failure): its
        chunks get ``abort_code``."""
        return self.state == FAILED

    @property
    def abort_code(self):
        return self.error.code if self.state == FAILED else None

    @property
    def complete(self):
        size = self.size
        return size is not None and self.ranges.covers(0, size)

    # -- feeding -----------------------------------------------------------
    def begin_chunk(self, byte_range):
        """Check a chunk's Byte-Range (ByteRange, text or None) and return
        the ChunkFeed its body is written through."""
        self._check_open()
        br = _as_byte_range(byte_range)
        start = br.start - 1
        if br.total is not None:
            if self.total is None:
                if self.max_size is not None and br.total > self.max_size:
                    self._too_large("message of %d bytes is over the %d byte limit"
                                    % (br.total, self.max_size))
                if self.ranges.high > br.total or (self.final_end is not None and self.final_end != br.total):
                    raise ReassemblyError("total %d contradicts the bytes already received" % br.total)
                self.total = br.total
                if br.total > self.spool_threshold and self._fd is None:
                    try:
                        self._spool()
                    except OSError as e:
                        raise self._storage_failed(e) from None
            elif br.total != self.total:
                raise ReassemblyError("total %d contradicts the earlier total %d" % (br.total, self.total))
        limit = self.size
        if limit is not None and start > limit:
            raise ReassemblyError("range start %d beyond the message size %d" % (br.start, limit))
        if self.max_size is not None and start > self.max_size:
            self._too_large("range start %d is over the %d byte limit" % (br.start, self.max_size))
        return ChunkFeed(self, start, br.end)

    def add_chunk(self, byte_range, body, flag=COMPLETE):
        """A whole chunk at once; True when the message is now complete."""
        feed = self.begin_chunk(byte_range)
        if body:
            feed.write(body)
        return feed.end(flag)

    def write(self, offset, data):
        """Store data at offset (0-based); return how many bytes were new."""
        self._check_open()
        n = len(data)
        if not n:
            return 0
        end = offset + n
        size = self.size
        if size is not None and end > size:
            raise ReassemblyError("data up to byte %d is beyond the message size %d" % (end, size))
        if self.max_size is not None and end > self.max_size:
            self._too_large("message grows past the %d byte limit" % self.max_size)
        gaps = self.ranges.missing(offset, end)
        if not gaps:
            return 0
        view = memoryview(data)
        try:
            if self._fd is None and end > self.spool_threshold:
                self._spool()
            for s, e in gaps:
                self._store(s, view[s - offset:e - offset])
        except OSError as e:
            raise self._storage_failed(e) from None
        finally:
            view.release()
        in_order = offset == self._hashed and len(gaps) == 1 and gaps[0] == (offset, end)
        added = 0
        for s, e in gaps:
            added += self.ranges.add(s, e)
        if in_order:
            self._hash.update(data)
            self._hashed = end
        try:
            self._catch_up_hash()
        except OSError as e:
            raise self._storage_failed(e) from None
        return added

    def chunk_done(self, flag, end):
        """A chunk whose data ended at offset end closed with flag.

        '#' aborts the message and throws away what arrived. '$' marks the
        end of the message when the total is '*'. True when complete.
        """
        self._check_open()
        if flag == ABORTED:
            self.abort()
            return False
        if flag == COMPLETE and self.total is None:
            if self.ranges.high > end:
                raise ReassemblyError("last chunk ends at %d but bytes up to %d arrived"
                                      % (end, self.ranges.high))
            self.final_end = end
        return self.complete

    # -- outcome -----------------------------------------------------------
    def finish(self):
        """Seal a complete message: (data or None, path or None, size, sha256).

        The spool file, if any, now belongs to the caller.
        """
        if not self.complete:
            raise ReassemblyError("message %s is not complete" % self.message_id)
        size = self.size
        try:
            self._catch_up_hash()
            if self._fd is not None:
                os.ftruncate(self._fd, size)
                fd, self._fd = self._fd, None
                os.close(fd)
        except OSError as e:
            raise self._storage_failed(e) from None
        self.state = COMPLETED
        digest = self._hash.hexdigest()
        if self.path is not None:
            return None, self.path, size, digest
        data = bytes(self._memory[:size])
        self._memory = bytearray()
        return data, None, size, digest

    def abort(self):
        """The sender gave up ('#'): forget the message."""
        if self.state == RECEIVING:
            self.state = ABORTED_STATE
        self._discard()

    def fail(self, error):
        """Give the message up with an error (its code is what gets reported)."""
        if self.state == RECEIVING:
            self.state = FAILED
            self.error = error
        self._discard()

    # -- storage -----------------------------------------------------------
    def _check_open(self):
        if self.state == FAILED:
            raise _fresh(self.error)
        if self.state != RECEIVING:
            raise ReassemblyError("message %s is already %s" % (self.message_id, self.state))

    def _storage_failed(self, error):
        failure = ReassemblyError("cannot store message %s: %s" % (self.message_id, error), 500)
        self.fail(failure)
        return failure

    def _too_large(self, reason):
        error = MessageTooLarge(reason)
        self.fail(error)
        raise error

    def _spool(self):
        fd, path = tempfile.mkstemp(prefix="msrp-", suffix=".part", dir=self.spool_dir)
        self._fd, self.path = fd, path
        if self._memory:
            _pwrite_all(fd, self._memory, 0)
            self._memory = bytearray()

    def _store(self, offset, view):
        if self._fd is not None:
            _pwrite_all(self._fd, view, offset)
            return
        buf = self._memory
        if offset > len(buf):
            buf.extend(bytes(offset - len(buf)))
        buf[offset:offset + len(view)] = view

    def _read(self, offset, n):
        if self._fd is not None:
            return os.pread(self._fd, n, offset)
        return bytes(self._memory[offset:offset + n])

    def _catch_up_hash(self):
        """Hash stored bytes once an out-of-order gap before them filled."""
        target = self.ranges.prefix_end()
        while self._hashed < target:
            n = min(_HASH_PIECE, target - self._hashed)
            piece = self._read(self._hashed, n)
            if len(piece) != n:
                raise OSError("spool file %s is shorter than expected" % self.path)
            self._hash.update(piece)
            self._hashed += n

    def _discard(self):
        self._memory = bytearray()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.path is not None and self.state != COMPLETED:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self.path = None


def _pwrite_all(fd, data, offset):
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


# -- receiving: the registry -------------------------------------------------
class ReceivedMessage:
    """A complete incoming message.

    Small messages carry ``data``; spooled ones a ``path`` to a file that
    the receiver of this object owns (``discard()`` removes it).
    """

    def __init__(self, message_id, session, content_type, headers, size, sha256,
                 data=None, path=None, request=None, last_request=None, conn=None):
        self.message_id = message_id
        self.session = session
        self.content_type = content_type
        self.headers = headers
        self.size = size
        self.sha256 = sha256
        self.data = data
        self.path = path
        self.request = request  # the first chunk that arrived
        self.last_request = last_request  # the one that completed it
        self.conn = conn

    @property
    def success_report(self):
        """Whether the sender asked for a success REPORT (its first chunk)."""
        try:
            return self.request is not None and self.request.success_report == "yes"
        except HeaderError:
            return False

    def open(self):
        return open(self.path, "rb") if self.path is not None else io.BytesIO(self.data)

    def discard(self):
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self.path = None
        self.data = None

    def __repr__(self):
        where = "at %s" % self.path if self.path is not None else "in memory"
        return "<ReceivedMessage %s %s %d bytes %s>" % (self.message_id, self.content_type, self.size, where)


class IncomingMessage:
    """A registry entry: a reassembler plus what REPORTs about it need."""

    __slots__ = ("key", "session", "message_id", "reassembler", "first_request", "last_request",
                 "conn", "timer", "last_progress", "streaming", "tombstoned")

    def __init__(self, key, reassembler, request, conn, now):
        self.key = key
        self.session, self.message_id = key
        self.reassembler = reassembler
        self.first_request = request
        self.last_request = request
        self.conn = conn
        self.timer = None
        self.last_progress = now
        self.streaming = 0
        self.tombstoned = False

    @property
    def failure_report(self):
        try:
            return self.first_request.failure_report if self.first_request is not None else "yes"
        except HeaderError:
            return "yes"

    @property
    def report_byte_range(self):
        """Byte-Range for a REPORT about the whole message."""
        size = self.reassembler.size
        if size is None:
            return "1-*/*"
        return "1-%d/%d" % (size, size)


class IncomingChunk:
    """One chunk being received into an IncomingMessage (see begin_chunk)."""

    __slots__ = ("registry", "entry", "feed", "finished")

    def __init__(self, registry, entry, feed):
        self.registry = registry
        self.entry = entry
        self.feed = feed
        self.finished = False

    def write(self, data):
        try:
            self.feed.write(data)
        except ReassemblyError as e:
            self._failed(e)
            raise
        except OSError as e:
            raise self._failed(ReassemblyError("cannot store the message: %s" % e, 500)) from None

    def end(self, flag):
        """The end-line: returns 'complete', 'incomplete' or 'aborted'.

        A complete message is then collected with registry.finish(entry).
        """
        self._close()
        try:
            complete = self.feed.end(flag)
        except ReassemblyError as e:
            self._failed(e)
            raise
        except OSError as e:
            raise self._failed(ReassemblyError("cannot store the message: %s" % e, 500)) from None
        entry = self.entry
        if flag == ABORTED:
            self.registry._drop(entry)
            return "aborted"
        if complete:
            return "complete"
        self.registry._wait(entry)
        return "incomplete"

    def interrupted(self):
        """The connection died before the end-line: keep what arrived."""
        self._close()
        if self.entry.reassembler.state == RECEIVING:
            self.registry._wait(self.entry)

    def _close(self):
        if not self.finished:
            self.finished = True
            self.entry.streaming -= 1
            self.entry.last_progress = self.registry.reactor.seconds()

    def _failed(self, error):
        """A refused chunk: a 413 or a storage failure ends the message,
        anything else only this chunk."""
        self._close()
        ends_message = isinstance(error, MessageTooLarge) or error.code >= 500
        if ends_message and self.entry.reassembler.state == RECEIVING:
            self.entry.reassembler.fail(error)
        self.registry._settle(self.entry)
        return error


class IncomingMessages:
    """The messages being received, keyed by (session, Message-ID).

    Each waits at most ``timeout`` seconds for its next chunk (a chunk that
    is streaming counts as progress: the connection's own read timeout
    guards it); then it is failed with IncompleteMessage, dropped, and
    ``on_timeout(entry, error)`` is called so that the upper layer can send
    a failure REPORT. A message given up for another reason (413, a spool
    file that cannot be written) is reported to ``on_failed(entry, error)``
    and remembered for the same time, so that its further chunks are
    refused with the same code.
    """

    def __init__(self, reactor=None, timeout=DEFAULT_INCOMPLETE_TIMEOUT, on_timeout=None,
                 spool_threshold=DEFAULT_SPOOL_THRESHOLD, max_size=DEFAULT_MAX_SIZE, spool_dir=None,
                 on_failed=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.timeout = timeout
        self.on_timeout = on_timeout
        self.on_failed = on_failed
        self.spool_threshold = spool_threshold
        self.max_size = max_size
        self.spool_dir = spool_dir
        self._entries = {}
        self.stats = dict.fromkeys(("messages_completed", "messages_aborted", "messages_timed_out",
                                    "messages_too_large", "messages_failed"), 0)

    def __len__(self):
        return len(self._entries)

    def __contains__(self, key):
        return key in self._entries

    def get(self, key):
        return self._entries.get(key)

    def begin_chunk(self, key, request, conn=None):
        """Start receiving a chunk (a SEND request) of the message at key.

        Raises ReassemblyError (with the code to answer) when the chunk is
        refused; returns an IncomingChunk to write the body through.
        """
        entry = self._entries.get(key)
        if entry is None:
            reassembler = Reassembler(key[1], self.spool_threshold, self.max_size, self.spool_dir)
            entry = IncomingMessage(key, reassembler, request, conn, self.reactor.seconds())
            self._entries[key] = entry
        elif entry.reassembler.state == FAILED:
            raise _fresh(entry.reassembler.error)
        entry.last_request = request
        if conn is not None:
            entry.conn = conn
        entry.last_progress = self.reactor.seconds()
        try:
            feed = entry.reassembler.begin_chunk(request.byte_range if request is not None else None)
        except HeaderError as e:
            self._settle(entry)
            raise ReassemblyError(str(e)) from None
        except ReassemblyError:
            self._settle(entry)
            raise
        entry.streaming += 1
        return IncomingChunk(self, entry, feed)

    def finish(self, entry):
        """Take a complete message out of the registry as a ReceivedMessage
        (ReassemblyError 500 when the spool file cannot be completed)."""
        try:
            data, path, size, digest = entry.reassembler.finish()
        except ReassemblyError:
            self._settle(entry)
            raise
        self._remove(entry)
        self.stats["messages_completed"] += 1
        first = entry.first_request
        return ReceivedMessage(
            entry.message_id, entry.session,
            first.content_type if first is not None else None,
            first.headers if first is not None else None,
            size, digest, data, path, first, entry.last_request, entry.conn)

    def close(self):
        """Drop everything (shutdown): timers cancelled, spool files removed."""
        for entry in list(self._entries.values()):
            entry.reassembler.abort()
            self._remove(entry)

    # -- internals ---------------------------------------------------------
    def _remove(self, entry):
        if self._entries.get(entry.key) is entry:
            del self._entries[entry.key]
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        entry.timer = None

    def _drop(self, entry):
        self.stats["messages_aborted"] += 1
        entry.reassembler.abort()
        self._remove(entry)

    def _settle(self, entry):
        """After a refused chunk: remember a failed message (413, storage
        trouble) for a while, forget one with nothing in it yet, otherwise
        let it wait for its next chunk."""
        if entry.reassembler.state == FAILED:
            if not entry.tombstoned:
                self._tombstone(entry, entry.reassembler.error)
            return
        if entry.reassembler.state != RECEIVING or entry.streaming:
            return
        if entry.reassembler.received_bytes == 0:
            entry.reassembler.abort()
            self._remove(entry)
        else:
            self._wait(entry)

    def _wait(self, entry):
        if entry.timer is None or not entry.timer.active():
            entry.timer = self.reactor.callLater(self.timeout, self._expired, entry)

    def _tombstone(self, entry, error):
        entry.tombstoned = True
        self.stats["messages_too_large" if isinstance(error, MessageTooLarge) else "messages_failed"] += 1
        entry.reassembler.fail(error)
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        entry.timer = self.reactor.callLater(self.timeout, self._remove, entry)
        log.info("message {mid} refused: {error}", mid=entry.message_id, error=entry.reassembler.error)
        self._notify(self.on_failed, entry, entry.reassembler.error)

    def _notify(self, callback, entry, error):
        if callback is not None:
            try:
                callback(entry, error)
            except Exception:
                log.failure("callback {cb!r} failed for message {mid}", cb=callback, mid=entry.message_id)

    def _expired(self, entry):
        entry.timer = None
        if self._entries.get(entry.key) is not entry or entry.reassembler.state != RECEIVING:
            return
        idle = self.reactor.seconds() - entry.last_progress
        if entry.streaming:
            entry.timer = self.reactor.callLater(self.timeout, self._expired, entry)
            return
        if idle < self.timeout:
            entry.timer = self.reactor.callLater(self.timeout - idle, self._expired, entry)
            return
        r = entry.reassembler
        error = IncompleteMessage("message %s incomplete after %gs without a chunk: %d of %s bytes"
                                  % (entry.message_id, self.timeout, r.received_bytes,
                                     "?" if r.size is None else r.size))
        r.fail(error)
        self._remove(entry)
        self.stats["messages_timed_out"] += 1
        log.info("{error}", error=error)
        self._notify(self.on_timeout, entry, error)


# -- receiving: the request handler ------------------------------------------


@implementer(IBodySink)
class _ChunkSink:
    """Streams one SEND body into the registry, then answers it."""

    __slots__ = ("receiver", "conn", "request", "chunk", "refused")

    def __init__(self, receiver, conn, request, chunk):
        self.receiver = receiver
        self.conn = conn
        self.request = request
        self.chunk = chunk
        self.refused = False

    def body_data(self, data):
        if self.refused:
            return
        try:
            self.chunk.write(data)
        except ReassemblyError as e:
            self._refuse(e)

    def body_end(self, flag):
        if self.refused:
            return
        try:
            state = self.chunk.end(flag)
        except ReassemblyError as e:
            self._refuse(e)
            return
        self.receiver._chunk_received(self.conn, self.request, self.chunk.entry, state)

    def body_aborted(self, reason):
        if not self.refused:
            self.chunk.interrupted()

    def _refuse(self, error):
        # Answered at once, while the rest of the body may still be
        # arriving: a sender that streams its chunk can stop early.
        self.refused = True
        self.receiver._refuse(self.conn, self.request, error)


@implementer(IRequestHandler)
class ChunkReceiver:
    """Receives chunked messages for the sessions it is registered for.

    Answers each chunk (200, or the ReassemblyError's code: 413 over
    ``max_size``, 400 for contradictory ranges, 500 when the spool file
    cannot be written), sends a success REPORT when a complete message
    asked for one, a failure REPORT (408) when an incomplete one times out
    and Failure-Report allows it, and hands every complete message to
    ``deliver(ReceivedMessage)``. A message that ends otherwise (timeout,
    413, '#') goes to ``message_failed(entry, error)``. REPORT requests go
    to ``report_received(conn, request)``. Messages are keyed by
    ``session_key(conn, request)``, by default the top To-Path URI.
    """

    def __init__(self, tm, deliver, report_received=None, message_failed=None, session_key=None,
                 reactor=None, timeout=DEFAULT_INCOMPLETE_TIMEOUT, spool_threshold=DEFAULT_SPOOL_THRESHOLD,
                 max_size=DEFAULT_MAX_SIZE, spool_dir=None):
        self.tm = tm
        self.deliver = deliver
        self.report_received = report_received
        self.message_failed = message_failed
        self.session_key = session_key or (lambda conn, request: request.to_path[0])
        self.incoming = IncomingMessages(reactor if reactor is not None else tm.reactor, timeout,
                                         self._timed_out, spool_threshold, max_size, spool_dir,
                                         on_failed=self._failed)
        self.stats = dict.fromkeys(("chunks_received", "chunks_refused", "messages_delivered",
                                    "success_reports_sent", "failure_reports_sent"), 0)

    # -- IRequestHandler ---------------------------------------------------
    def head_received(self, conn, request):
        if request.method != "SEND":
            return None
        try:
            key = (self.session_key(conn, request), request.message_id)
            chunk = self.incoming.begin_chunk(key, request, conn)
        except ReassemblyError as e:
            self._refuse(conn, request, e)
            return DISCARD
        return _ChunkSink(self, conn, request, chunk)

    def request_received(self, conn, request):
        if request.method == "REPORT":
            if self.report_received is not None:
                self.report_received(conn, request)
            return
        if request.method != "SEND":
            self.tm.send_reply(conn, request, 501, "%s not handled here" % request.method)
            return
        key = (self.session_key(conn, request), request.message_id)
        if request.body is not None:
            # A handler in front of us had the body buffered: same rules.
            sink = self.head_received(conn, request)
            if sink is not DISCARD:
                if request.body:
                    sink.body_data(request.body)
                sink.body_end(request.flag)
            return
        # A SEND without a body: an abort for a known message, else the
        # connection-opening SEND of RFC 4975 section 5.4.
        entry = self.incoming.get(key)
        self.tm.send_reply(conn, request, 200)
        if request.flag == ABORTED and entry is not None and entry.reassembler.state == RECEIVING:
            self.incoming._drop(entry)
            self._failed(entry, MessageAborted("message %s aborted by the sender" % entry.message_id))

    def connection_lost(self, conn, reason):
        pass  # partial messages wait for chunks on another connection

    def close(self):
        """Forget every partial message (service shutdown)."""
        self.incoming.close()

    # -- internals ---------------------------------------------------------
    def _refuse(self, conn, request, error):
        self.stats["chunks_refused"] += 1
        log.info("refused chunk {tid} of {mid}: {code} {reason}", tid=request.tid,
                 mid=request.message_id, code=error.code, reason=error.reason)
        self.tm.send_reply(conn, request, error.code, reason_phrase(error.reason))

    def _chunk_received(self, conn, request, entry, state):
        self.stats["chunks_received"] += 1
        message = None
        if state == "complete":
            try:
                message = self.incoming.finish(entry)
            except ReassemblyError as e:
                self._refuse(conn, request, e)
                return
        self.tm.send_reply(conn, request, 200)
        if state == "aborted":
            self._failed(entry, MessageAborted("message %s aborted by the sender" % entry.message_id))
        if message is None:
            return
        if message.success_report:
            self._report(message.last_request, conn, 200, message.size)
        self.stats["messages_delivered"] += 1
        try:
            self.deliver(message)
        except Exception:
            log.failure("delivering message {mid} failed", mid=message.message_id)

    def _report(self, request, conn, code, size=None, byte_range=None, comment=None):
        if byte_range is None:
            byte_range = "1-%d/%d" % (size, size)
        usable = conn if conn is not None and not conn.closed else None
        key = "success_reports_sent" if code == 200 else "failure_reports_sent"
        self.stats[key] += 1
        d = self.tm.send_report(request, code, comment, byte_range, conn=usable)
        d.addErrback(lambda f: log.info("REPORT {code} for {mid} not sent: {err}", code=code,
                                        mid=request.message_id, err=f.getErrorMessage()))

    def _timed_out(self, entry, error):
        if entry.failure_report in ("yes", "partial") and entry.last_request is not None:
            self._report(entry.last_request, entry.conn, error.code,
                         byte_range=entry.report_byte_range, comment=reason_phrase(error.reason))
        self._failed(entry, error)

    def _failed(self, entry, error):
        if self.message_failed is not None:
            try:
                self.message_failed(entry, error)
            except Exception:
                log.failure("message_failed callback failed for {mid}", mid=entry.message_id)


__all__ = [
    "MessageSender", "send_message", "SendResult", "MessageSendError", "SendCancelled",
    "RangeSet", "Reassembler", "ChunkFeed", "ReassemblyError", "MessageTooLarge", "IncompleteMessage",
    "MessageAborted",
    "IncomingMessages", "IncomingMessage", "IncomingChunk", "ReceivedMessage", "ChunkReceiver",
    "DEFAULT_CHUNK_SIZE", "DEFAULT_WINDOW", "DEFAULT_SPOOL_THRESHOLD", "DEFAULT_INCOMPLETE_TIMEOUT",
    "DEFAULT_MAX_SIZE",
]
