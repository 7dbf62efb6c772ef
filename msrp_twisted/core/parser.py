"""Incremental MSRP parser (RFC 4975 sections 7 and 9), sans-IO.

Feed it bytes split anywhere; it returns events. The head (start line and
headers) is emitted as soon as it is complete, body bytes as they arrive,
and the end of the message with its continuation flag. Only the end-line of
*this* message ends a body: CRLF, seven dashes, the transaction id of the
start line, a flag and CRLF. A body line with seven dashes and another id is
body data.

Errors come in two kinds. A FramingError is raised when the stream cannot be
delimited any more (bad start line, limits exceeded); the parser is dead
after it. A frame that can be delimited but is invalid produces an
InvalidMessage event carrying a MessageError (with the transaction id), after
its end-line has been consumed, so the caller can answer 400 and go on.

Work is linear in the input: searches resume where the previous one
stopped, and a streamed body is never copied more than once.
"""

import re

from . import abnf
from .errors import FramingError, MessageError
from .headers import SINGLETON_HEADERS, Headers
from .message import Request, Response

__all__ = [
    "Parser", "MessageStart", "BodyData", "MessageEnd", "InvalidMessage",
    "MessageAssembler", "DEFAULT_MAX_BODY",
]

DEFAULT_MAX_START_LINE = 4096
DEFAULT_MAX_HEADER_BLOCK = 64 * 1024
# Large enough for the 1 MiB chunks common clients send; 0 disables it for
# pure streaming.
DEFAULT_MAX_BODY = 16 * 1024 * 1024

_PREFIX = b"MSRP "
_START_PREFIX_RE = re.compile(rb"MSRP (" + abnf.IDENT + rb") ")
_START_LINE_RE = abnf.START_LINE_RE
_HEADER_NAME_RE = abnf.HEADER_NAME_RE
_METHOD_RE = abnf.METHOD_RE
_FLAGS = abnf.FLAGS
_CRLF = b"\r\n"
_BLANK = b"\r\n\r\n"
# The usual spellings of the RFC 4975/4976 headers, already validated and
# lower-cased: most header lines skip the name regex (a fixed table, so
# peers cannot grow it).
_KNOWN_NAMES = {name: name.lower() for name in (
    "To-Path", "From-Path", "Message-ID", "Byte-Range", "Content-Type",
    "Success-Report", "Failure-Report", "Status", "Expires", "Min-Expires",
    "Max-Expires", "Use-Path", "WWW-Authenticate", "Authorization",
    "Authentication-Info", "Content-ID", "Content-Description",
    "Content-Disposition",
)}


def _leading_paths(block):
    """The To-Path and From-Path lines of a head that is not UTF-8 as a whole.

    They are ASCII URIs and, when well placed, enough to address the 400:
    without them a sender's bad byte further down would go unanswered and
    its transaction would only time out.
    """
    items = []
    for raw, name in zip(block.split(b"\r\n", 2), ("to-path", "from-path")):
        key, sep, value = raw.partition(b":")
        if not sep or key.lower() != name.encode("ascii"):
            return items
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return items
        items.append((key.decode("ascii"), value.strip(" \t")))
    return items


class MessageStart:
    """The head of a message; ``message.body`` is None, ``has_body`` says
    whether body data (possibly empty) follows."""

    __slots__ = ("message",)

    def __init__(self, message):
        self.message = message

    def __repr__(self):
        return "MessageStart(%r)" % (self.message,)


class BodyData:
    """A piece of the current message's body, as it arrived (never held back
    for the whole body, so a relay can pass it on at once)."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data

    def __repr__(self):
        return "BodyData(%d bytes)" % len(self.data)


class MessageEnd:
    """The end-line of the current message, with its flag ('$', '+', '#')."""

    __slots__ = ("flag",)

    def __init__(self, flag):
        self.flag = flag

    def __repr__(self):
        return "MessageEnd(%r)" % (self.flag,)


class InvalidMessage:
    """A delimited frame that failed validation; ``error`` is a MessageError."""

    __slots__ = ("error",)

    def __init__(self, error):
        self.error = error

    def __repr__(self):
        return "InvalidMessage(%r, tid=%r)" % (self.error.reason, self.error.tid)


_HEAD = 0
_BODY = 1


class Parser:
    """Turns a byte stream into message events.

    ``in_message`` tells the transport whether a message is partly received,
    which is what max_msg_chunks and the read timeout are measured against.
    """

    def __init__(
        self,
        max_start_line=DEFAULT_MAX_START_LINE,
        max_header_block=DEFAULT_MAX_HEADER_BLOCK,
        max_body=DEFAULT_MAX_BODY,
    ):
        self.max_start_line = max_start_line
        self.max_header_block = max_header_block
        self.max_body = max_body
        self._buf = bytearray()
        self._state = _HEAD
        self._dead = None
        # head scanning
        self._eol = -1
        self._scan = 0
        # body scanning
        self._tid = None
        self._start = None  # (method, code, comment) of a well-formed start line
        self._needle = None
        self._body_len = 0
        self._invalid = None

    @property
    def in_message(self):
        return self._state == _BODY or bool(self._buf)

    @property
    def in_body(self):
        return self._state == _BODY

    def feed(self, data):
        """Consume bytes; return the list of events they complete."""
        if self._dead is not None:
            raise FramingError("parser is closed after an earlier error: %s" % self._dead)
        events = []
        if not data:
            return events
        buf = self._buf
        if buf:
            buf += data
        else:
            buf = data
        pos = 0
        try:
            while pos < len(buf):
                if self._state == _HEAD:
                    npos = self._parse_head(buf, pos, events)
                else:
                    npos = self._parse_body(buf, pos, events)
                if npos < 0:
                    break
                pos = npos
        except FramingError as e:
            # Messages completed before the bad bytes are still delivered:
            # the caller dispatches e.events, then closes.
            self._dead = str(e)
            self._buf = bytearray()
            e.events = events
            raise
        # Keep what is left for next time, re-basing the scan offsets.
        if pos:
            if self._eol >= 0:
                self._eol -= pos
            self._scan = max(0, self._scan - pos)
        if buf is self._buf:
            if pos:
                del buf[:pos]
        else:
            self._buf = bytearray(buf[pos:]) if pos < len(buf) else bytearray()
        return events

    # -- head ----------------------------------------------------------
    def _parse_head(self, buf, pos, events):
        """Return the new position, or -1 to wait for more data."""
        n = len(buf)
        eol = self._eol
        if eol < 0:
            if self._scan < pos:
                self._scan = pos
            # Reject non-MSRP input as soon as the prefix can be seen.
            k = min(5, n - pos)
            if buf[pos:pos + k] != _PREFIX[:k]:
                raise FramingError("stream does not start with 'MSRP ': %r" % (bytes(buf[pos:pos + 16]),))
            i = buf.find(_CRLF, self._scan)
            if i < 0:
                # A trailing CR may be the first half of the line's CRLF:
                # judged like a complete line, whatever the cuts.
                if n - pos - (buf[n - 1] == 13) > self.max_start_line:
                    raise FramingError("start line exceeds %d bytes" % self.max_start_line)
                self._scan = max(pos, n - 1)
                return -1
            if i - pos > self.max_start_line:
                raise FramingError("start line exceeds %d bytes" % self.max_start_line)
            # The whole start line is matched once, here; a line that only
            # frames (a transaction id) becomes a message error in _build.
            m = _START_LINE_RE.match(buf, pos, i)
            if m is not None:
                self._start = m.group("method", "code", "comment")
            else:
                self._start = None
                m = _START_PREFIX_RE.match(buf, pos, i)
                if m is None:
                    raise FramingError("invalid start line %r" % (bytes(buf[pos:min(i, pos + 80)]),))
            tid = m.group(1)
            self._tid = tid
            self._needle = b"\r\n-------" + tid
            self._eol = eol = i
            self._scan = i
        tid = self._tid
        needle = self._needle
        ln = len(needle)
        scan = self._scan
        # The header block ends at the first blank line (a body follows) or
        # at this message's end-line (no body).
        while True:
            j = buf.find(needle, scan)
            b = buf.find(_BLANK, scan, j + 2 if j >= 0 else n)
            if b >= 0:
                break
            if j < 0:
                self._check_head_size(n, eol, ln)
                self._scan = max(eol, n - ln)
                return -1
            f = j + ln
            if f + 3 > n:
                self._check_head_size(n, eol, ln)
                self._scan = j
                return -1
            if buf[f] in _FLAGS and buf[f + 1:f + 3] == _CRLF:
                break
            scan = j + 1
        head_end = b if b >= 0 else j
        if head_end - eol > self.max_header_block:
            raise FramingError("header block exceeds %d bytes" % self.max_header_block)
        lenient_flag = None
        if b >= 0 and (n - b - 4 < ln + 1 or buf.startswith(b"-------", b + 4)):
            # A body follows. Some senders end an empty body without the
            # CRLF that belongs to the end-line; accept that form too. (Only
            # a body that starts with dashes, or is too short to tell yet,
            # can be that.)
            lenient = needle[2:]
            want = len(lenient) + 3
            avail = bytes(buf[b + 4:b + 4 + want])
            if len(avail) < want and _is_prefix(avail, lenient):
                self._scan = b
                return -1
            if (len(avail) == want and avail[:len(lenient)] == lenient
                    and avail[-3] in _FLAGS and avail[-2:] == _CRLF):
                lenient_flag = chr(avail[-3])
        start = bytes(buf[pos:eol])
        block = bytes(buf[eol + 2:head_end]) if head_end > eol else b""
        self._eol = -1
        self._scan = 0
        message, error = self._build(start, self._start, tid, block, b >= 0, lenient_flag is not None)
        if b < 0 or lenient_flag is not None:
            flag = chr(buf[f]) if b < 0 else lenient_flag
            if error is None:
                events.append(MessageStart(message))
                events.append(MessageEnd(flag))
            else:
                events.append(InvalidMessage(error))
            return f + 3 if b < 0 else b + 4 + len(needle) + 1
        self._state = _BODY
        self._body_len = 0
        self._invalid = error
        if error is None:
            events.append(MessageStart(message))
        # The search above already went over the body: j is the first
        # end-line candidate after the head, or there is none before the
        # last ln - 1 bytes. Resume from there instead of scanning the
        # body twice.
        if j >= b + 4:
            self._scan = j
        elif j < 0:
            self._scan = max(b + 4, n - ln + 1)
        else:
            self._scan = b + 4
        return b + 4

    def _check_head_size(self, n, eol, ln):
        """Refuse a head that is still arriving once it is sure to be too long.

        The earliest the header block can still end is where an end-line
        whose flag and CRLF are missing would start (n - ln - 2); measuring
        from there makes the verdict the one a complete head gets, however
        the bytes were cut.
        """
        if n - ln - 2 - eol > self.max_header_block:
            raise FramingError("header block exceeds %d bytes" % self.max_header_block)

    def _build(self, start, parts, tid, block, has_body, empty_body=False):
        """Validate the head; return (message, None) or (None, MessageError).

        parts: (method, code, comment) from the start line regex, or None
        when the line did not match it."""
        tid_s = tid.decode("ascii")
        if parts is None:
            return None, MessageError("malformed start line %r" % (start[:80],), tid_s)
        method, code, comment = parts
        is_request = method is not None
        if is_request:
            method = method.decode("ascii")
            if _METHOD_RE.match(method) is None:
                return None, MessageError(
                    "method %r is not upper-case letters" % (method,), tid_s, method)
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError as e:
            return None, MessageError(
                "header block is not valid UTF-8 (byte %d)" % e.start, tid_s, method, is_request,
                headers=_leading_paths(block))
        lines = text.split("\r\n") if text else []
        nl = len(lines) - 1
        if text and (text.count("\n") != nl or text.count("\r") != nl):
            return None, MessageError("bare CR or LF in the header block", tid_s, method, is_request)
        items = []
        index = {}
        known = _KNOWN_NAMES
        for line in lines:
            name, sep, value = line.partition(":")
            key = known.get(name) if sep else None
            if key is None:
                # Not one of the usual names (which start with a letter and
                # have their colon): the full checks, in their order.
                if line[:1] in (" ", "\t"):
                    return None, MessageError(
                        "header folding is not allowed (%r)" % (line[:80],),
                        tid_s, method, is_request, headers=items)
                if not sep:
                    return None, MessageError("malformed header line %r" % (line[:80],), tid_s, method, is_request, headers=items)
                if _HEADER_NAME_RE.match(name) is None:
                    reason = "invalid header name %r" % (name[:80],)
                    return None, MessageError(reason, tid_s, method, is_request, headers=items)
                key = name.lower()
            if key in index:
                if key in SINGLETON_HEADERS:
                    return None, MessageError("duplicate %s header" % name, tid_s, method, is_request, headers=items)
            else:
                index[key] = len(items)
            items.append((name, value.strip(" \t")))
        # RFC 4975 section 7.1: To-Path first, From-Path second, always.
        if empty_body and "content-type" not in index:
            # A blank line straight before the end-line and no Content-Type:
            # no body at all (some stacks write REPORT and AUTH this way).
            has_body = False
        error = self._check_head(items, index, tid_s, method, is_request, has_body)
        if error is not None:
            error.headers = items
            return None, error
        headers = Headers._trusted(items, index)
        if is_request:
            msg = Request(tid_s, method, headers)
        else:
            if comment is not None:
                try:
                    comment = comment.decode("utf-8")
                except UnicodeDecodeError:
                    return None, MessageError("response comment is not valid UTF-8", tid_s, None, False, headers=items)
            msg = Response(tid_s, int(code), comment, headers)
        msg.has_body = has_body
        return msg, None

    @staticmethod
    def _check_head(items, index, tid_s, method, is_request, has_body):
        if index.get("to-path") != 0:
            return MessageError(
                "To-Path must be the first header" if "to-path" in index else "missing To-Path",
                tid_s, method, is_request)
        if index.get("from-path") != 1:
            return MessageError(
                "From-Path must be the second header" if "from-path" in index else "missing From-Path",
                tid_s, method, is_request)
        if is_request:
            if "message-id" not in index and method != "AUTH":
                return MessageError("missing Message-ID", tid_s, method)
            if has_body and "content-type" not in index:
                return MessageError("body without Content-Type", tid_s, method)
        elif has_body:
            return MessageError("a response must not carry a body", tid_s, None, False)
        return None

    # -- body ----------------------------------------------------------
    def _emit_body(self, buf, start, end, events):
        if end <= start:
            return
        self._body_len += end - start
        if self.max_body and self._body_len > self.max_body:
            raise FramingError("body exceeds %d bytes" % self.max_body)
        if self._invalid is None:
            if start == 0 and end == len(buf) and type(buf) is bytes:
                events.append(BodyData(buf))
            else:
                with memoryview(buf) as mv:
                    events.append(BodyData(mv[start:end].tobytes()))

    def _parse_body(self, buf, pos, events):
        """Return the new position, or -1 when nothing more can be consumed."""
        needle = self._needle
        ln = len(needle)
        n = len(buf)
        j = buf.find(needle, max(pos, self._scan))
        while j >= 0:
            f = j + ln
            if f + 3 > n:
                # Maybe our end-line, not all here yet: keep it buffered.
                self._emit_body(buf, pos, j, events)
                self._scan = j
                return j if j > pos else -1
            if buf[f] in _FLAGS and buf[f + 1:f + 3] == _CRLF:
                self._emit_body(buf, pos, j, events)
                self._end_body(chr(buf[f]), events)
                return f + 3
            j = buf.find(needle, j + 1)
        # Everything except a possible partial end-line at the end is body.
        # Such a remainder starts with the end-line's CR; most reads end
        # without one, leave nothing buffered, and the next read is parsed
        # in place instead of being appended to the leftover.
        k = buf.find(b"\r", max(pos, n - (ln - 1)))
        while k >= 0 and not needle.startswith(buf[k:n]):
            k = buf.find(b"\r", k + 1)
        safe = n if k < 0 else k
        if safe > pos:
            self._emit_body(buf, pos, safe, events)
            self._scan = safe
            return safe
        return -1

    def _end_body(self, flag, events):
        self._state = _HEAD
        self._scan = 0
        if self._invalid is not None:
            events.append(InvalidMessage(self._invalid))
            self._invalid = None
        else:
            events.append(MessageEnd(flag))


def _is_prefix(avail, dashes_tid):
    """Could avail still grow into dashes_tid + flag + CRLF?"""
    k = len(dashes_tid)
    if avail[:k] != dashes_tid[:len(avail)]:
        return False
    if len(avail) <= k:
        return True
    if avail[k] not in _FLAGS:
        return False
    return avail[k + 1:] == _CRLF[:len(avail) - k - 1]


class MessageAssembler:
    """Whole messages for callers that do not stream (small chunks).

    Returns Request/Response objects with ``body`` (bytes or None) and
    ``flag`` set, and InvalidMessage events unchanged.
    """

    def __init__(self, parser=None, max_body=DEFAULT_MAX_BODY):
        self.parser = parser if parser is not None else Parser(max_body=max_body)
        self._current = None
        self._parts = []

    @property
    def in_message(self):
        return self.parser.in_message

    def feed(self, data):
        out = []
        for ev in self.parser.feed(data):
            t = type(ev)
            if t is BodyData:
                self._parts.append(ev.data)
            elif t is MessageStart:
                self._current = ev.message
                self._parts = []
            elif t is MessageEnd:
                msg = self._current
                self._current = None
                if msg.has_body:
                    parts = self._parts
                    msg.body = parts[0] if len(parts) == 1 else b"".join(parts)
                self._parts = []
                msg.flag = ev.flag
                out.append(msg)
            else:
                out.append(ev)
        return out
