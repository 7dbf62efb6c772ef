"""MSRP requests and responses (RFC 4975 section 7) with lazy typed headers.

A message is the start line plus ordered headers plus, when complete, the
body and continuation flag. The parser emits the same objects for streamed
messages with ``body`` left as None, so a relay can act on the head before
the body has arrived.
"""

from . import abnf
from .errors import HeaderError
from .headers import (
    Headers,
    parse_byte_range,
    parse_delta_seconds,
    parse_report,
    parse_status,
)
from .uri import parse_path as _parse_path

# Continuation flags (RFC 4975 section 7.1).
COMPLETE = "$"
CONTINUED = "+"
ABORTED = "#"

_MISSING = object()


class Message:
    """What requests and responses share: a transaction id, headers in wire
    order, and the typed views of them parsed once, on first use."""

    __slots__ = ("tid", "headers", "body", "flag", "has_body", "_typed")

    is_request = False

    def __init__(self, tid, headers=None, body=None, flag=COMPLETE):
        self.tid = tid
        if headers is None:
            headers = Headers()
        elif not isinstance(headers, Headers):
            headers = Headers(headers)
        self.headers = headers
        self.body = body
        self.flag = flag
        self.has_body = body is not None
        self._typed = None

    def _cached(self, key, parse, *args):
        """parse(*args), once per message. The accessors a relay reads for
        every frame pass a method and its arguments, not a closure: building
        one per access was a measurable part of a relayed SEND."""
        typed = self._typed
        if typed is None:
            typed = self._typed = {}
        else:
            v = typed.get(key, _MISSING)
            if v is not _MISSING:
                return v
        v = typed[key] = parse(*args)
        return v

    def replace_header(self, name, value, well_formed=False):
        """Set a header of a parsed message, forgetting what was parsed of it.

        well_formed: value is known to be as valid as the one it replaces
        (a piece cut out of it), so a validated head stays validated.
        """
        headers = self.headers
        validated = headers.validated
        headers.set(name, value)
        if well_formed:
            headers.validated = validated
        if self._typed:
            self._typed.pop(name.lower(), None)

    def _path(self, name):
        value = self.headers.get(name)
        if value is None:
            return ()
        return _parse_path(value)

    # -- paths ---------------------------------------------------------
    @property
    def to_path(self):
        """Tuple of MSRPURI; raises URIError for a malformed path."""
        return self._cached("to-path", self._path, "To-Path")

    @property
    def from_path(self):
        return self._cached("from-path", self._path, "From-Path")

    @property
    def use_path(self):
        return self._cached("use-path", self._path, "Use-Path")

    # -- simple headers ------------------------------------------------
    @property
    def message_id(self):
        v = self.headers.get("Message-ID")
        return None if v is None else v.strip()

    @property
    def content_type(self):
        """The media type as written; HeaderError unless it is type/subtype."""
        v = self.headers.get("Content-Type")
        if v is None:
            return None
        if abnf.MEDIA_TYPE_RE.match(v) is None:
            raise HeaderError("malformed Content-Type %r (expected type/subtype)" % (v,))
        return v.strip()

    @property
    def content_id(self):
        return self.headers.get("Content-ID")

    @property
    def content_description(self):
        return self.headers.get("Content-Description")

    @property
    def content_disposition(self):
        return self.headers.get("Content-Disposition")

    # -- typed headers -------------------------------------------------
    @property
    def byte_range(self):
        """ByteRange or None when absent (RFC 4975: absent means 1-*/*)."""
        def parse():
            v = self.headers.get("Byte-Range")
            return None if v is None else parse_byte_range(v)
        return self._cached("byte-range", parse)

    def _report(self, name, allowed, absent):
        v = self.headers.get(name)
        return absent if v is None else parse_report(v, allowed, name)

    @property
    def success_report(self):
        """'yes' or 'no'; absent means 'no' (RFC 4975 section 7.1)."""
        return self._cached("success-report", self._report, "Success-Report",
                            abnf.SUCCESS_REPORT_VALUES, "no")

    @property
    def failure_report(self):
        """'yes', 'no' or 'partial'; absent means 'yes' (RFC 4975 section 7.1)."""
        return self._cached("failure-report", self._report, "Failure-Report",
                            abnf.FAILURE_REPORT_VALUES, "yes")

    @property
    def status(self):
        def parse():
            v = self.headers.get("Status")
            return None if v is None else parse_status(v)
        return self._cached("status", parse)

    def _seconds(self, name):
        def parse():
            v = self.headers.get(name)
            return None if v is None else parse_delta_seconds(v, name)
        return self._cached(name.lower(), parse)

    @property
    def expires(self):
        return self._seconds("Expires")

    @property
    def min_expires(self):
        return self._seconds("Min-Expires")

    @property
    def max_expires(self):
        return self._seconds("Max-Expires")

    def _digest(self, name, kind):
        def parse():
            v = self.headers.get(name)
            if v is None:
                return None
            from . import digest

            return getattr(digest, kind)(v)
        return self._cached(name.lower(), parse)

    @property
    def www_authenticate(self):
        """Digest challenge parameters (dict) or None."""
        return self._digest("WWW-Authenticate", "parse_challenge")

    @property
    def authorization(self):
        """Digest credential parameters (dict) or None."""
        return self._digest("Authorization", "parse_credentials")

    @property
    def authentication_info(self):
        return self._digest("Authentication-Info", "parse_auth_info")

    def to_bytes(self):
        from .serializer import serialize

        return serialize(self)


class Request(Message):
    """An MSRP request; body is None when it has none (or streams).

    flag is the end-line's: '$' complete, '+' more chunks, '#' aborted."""

    __slots__ = ("method",)

    is_request = True

    def __init__(self, tid, method, headers=None, body=None, flag=COMPLETE):
        Message.__init__(self, tid, headers, body, flag)
        self.method = method

    def __repr__(self):
        return "<Request %s %s %d headers%s %s>" % (
            self.tid, self.method, len(self.headers),
            "" if self.body is None else " %d body bytes" % len(self.body),
            self.flag,
        )


class Response(Message):
    """An MSRP response: a code and an optional comment, never a body."""

    __slots__ = ("code", "comment")

    def __init__(self, tid, code, comment=None, headers=None):
        Message.__init__(self, tid, headers, None, COMPLETE)
        self.code = code
        self.comment = comment

    def __repr__(self):
        return "<Response %s %03d %s>" % (self.tid, self.code, self.comment or "")


# Standard reason phrases (RFC 4975 section 10, RFC 4976 section 8).
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    413: "Message Too Large",
    415: "Unsupported Media Type",
    420: "Bad Extension",
    423: "Interval Out-of-Bounds",
    481: "Session Does Not Exist",
    501: "Not Implemented",
    506: "Session Already Bound",
}

__all__ = [
    "Message", "Request", "Response", "REASONS", "HeaderError",
    "COMPLETE", "CONTINUED", "ABORTED",
]
