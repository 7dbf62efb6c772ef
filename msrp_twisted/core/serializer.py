"""Byte-exact MSRP serialization (RFC 4975 section 7 and 9).

The serializer refuses to build what the parser would reject: a bad
transaction id, a body without Content-Type, CR/LF inside a header, a body
that contains its own end-line. A streamed request is written as
``head(...)``, body pieces, ``end_line(...)``.
"""

from . import abnf
from .errors import HeaderError, SerializationError
from .headers import SINGLETON_HEADERS, check_header

_IDENT_RE = abnf.IDENT_STR_RE
_METHOD_RE = abnf.METHOD_RE


def _check_tid(tid):
    if not isinstance(tid, str) or _IDENT_RE.match(tid) is None:
        raise SerializationError("invalid transaction id %r" % (tid,))


def head(message, has_body=None):
    """Start line and headers, plus the blank line when a body follows."""
    tid = message.tid
    _check_tid(tid)
    if message.is_request:
        if _METHOD_RE.match(message.method or "") is None:
            raise SerializationError("invalid method %r" % (message.method,))
        start = "MSRP %s %s\r\n" % (tid, message.method)
    else:
        code = message.code
        if not isinstance(code, int) or not 0 <= code <= 999:
            raise SerializationError("invalid status code %r" % (code,))
        comment = message.comment
        if comment:
            if "\r" in comment or "\n" in comment:
                raise SerializationError("CR or LF in the response comment")
            start = "MSRP %s %03d %s\r\n" % (tid, code, comment)
        else:
            start = "MSRP %s %03d\r\n" % (tid, code)
    if has_body is None:
        has_body = message.body is not None
    headers = message.headers
    validated = getattr(headers, "validated", False)
    if validated:
        # Built by the parser (or rearranged from what it built), which
        # refused duplicates of the singleton headers: only the order and
        # the presence checks below can still differ, and the index answers
        # those without a pass over the names.
        names = headers._index
        if names.get("to-path") != 0 or names.get("from-path") != 1:
            raise SerializationError("To-Path and From-Path must be the first two headers")
    else:
        names = [n.lower() for n, _ in headers]
        if names[:2] != ["to-path", "from-path"]:
            raise SerializationError("To-Path and From-Path must be the first two headers")
        for key in SINGLETON_HEADERS:
            if names.count(key) > 1:
                raise SerializationError("duplicate %s header" % key)
    if message.is_request and message.method != "AUTH" and "message-id" not in names:
        raise SerializationError("a %s request needs a Message-ID" % message.method)
    if has_body:
        if not message.is_request:
            raise SerializationError("a response cannot carry a body")
        if "content-type" not in names:
            raise SerializationError("a body needs a Content-Type header")
    parts = [start]
    if validated:
        parts.append("\r\n".join(map(": ".join, headers)))
        parts.append("\r\n")
    else:
        try:
            for name, value in headers:
                check_header(name, value)
                parts.append("%s: %s\r\n" % (name, value))
        except HeaderError as e:
            raise SerializationError(str(e)) from None
    if has_body:
        parts.append("\r\n")
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as e:
        raise SerializationError(
            "start line or header is not encodable as UTF-8: %r" % (e.object[e.start:e.end],)
        ) from None


def path_response(tid, code, comment, to_path, from_path):
    """A response carrying only To-Path and From-Path, byte for byte what
    serialize(Response(...)) makes, without building the Response.

    For the hop-by-hop answers a relay or endpoint gives all the time:
    to_path and from_path must be text cut out of headers the parser
    validated (no CR or LF can be in them); the transaction id, code and
    comment are checked as head() checks them.
    """
    _check_tid(tid)
    if not isinstance(code, int) or not 0 <= code <= 999:
        raise SerializationError("invalid status code %r" % (code,))
    if comment:
        if "\r" in comment or "\n" in comment:
            raise SerializationError("CR or LF in the response comment")
        text = "MSRP %s %03d %s\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------%s$\r\n" % (
            tid, code, comment, to_path, from_path, tid)
    else:
        text = "MSRP %s %03d\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------%s$\r\n" % (
            tid, code, to_path, from_path, tid)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise SerializationError(
            "response is not encodable as UTF-8: %r" % (e.object[e.start:e.end],)) from None


def end_line(tid, flag="$", after_body=True):
    """The end-line; after a body it starts with the CRLF that ends the body."""
    if not isinstance(flag, str) or len(flag) != 1 or flag not in abnf.FLAG_CHARS:
        raise SerializationError("invalid continuation flag %r" % (flag,))
    if after_body:
        return b"\r\n-------" + tid.encode("ascii") + flag.encode("ascii") + b"\r\n"
    return b"-------" + tid.encode("ascii") + flag.encode("ascii") + b"\r\n"


def check_body(tid, body):
    """A body must not contain the end-line it will be closed with."""
    if isinstance(body, memoryview):
        body = body.tobytes()  # 'in' on a memoryview compares items, not bytes
    if (b"-------" + tid.encode("ascii")) in body:
        raise SerializationError(
            "body contains '-------%s'; choose another transaction id" % tid)


def serialize(message):
    """The message as wire bytes; SerializationError rather than a frame a
    peer would read differently (a bad header, a body holding its end-line)."""
    body = message.body
    if body is not None:
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise SerializationError("body must be bytes, got %s" % type(body).__name__)
        start = head(message, True)  # checks the tid before check_body uses it
        check_body(message.tid, body)
        return b"".join((start, body, end_line(message.tid, message.flag, True)))
    return head(message, False) + end_line(message.tid, message.flag, False)
