"""Ordered, case-insensitive MSRP headers and their typed values.

Header values stay strings until somebody asks for the typed form: a relay
forwarding a chunk never pays for parsing a Byte-Range it does not read.
"""

from typing import NamedTuple, Optional

from . import abnf
from .errors import HeaderError

# Headers whose duplicates make a message invalid (RFC 4975 section 9 allows
# each at most once; OpenSIPS rejects the same set).
SINGLETON_HEADERS = frozenset(
    ("to-path", "from-path", "message-id", "byte-range")
)


class Headers:
    """A list of (name, value) pairs with case-insensitive lookup.

    Order is kept because To-Path and From-Path must stay first and second,
    and because a relay forwards the other headers as they came.
    """

    __slots__ = ("_items", "_index", "validated")

    def __init__(self, items=()):
        self._items = []
        self._index = {}
        # True only while every pair is known to be well formed and no
        # singleton header is repeated (built by the parser, or derived from
        # such headers without new text): the serializer then need not
        # check each one again.
        self.validated = False
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _trusted(cls, items, index):
        """Build from pairs the parser has already validated (hot path)."""
        h = cls.__new__(cls)
        h._items = items
        h._index = index
        h.validated = True
        return h

    def add(self, name, value):
        self.validated = False
        key = name.lower()
        if key not in self._index:
            self._index[key] = len(self._items)
        self._items.append((name, value))

    def get(self, name, default=None):
        i = self._index.get(name.lower())
        if i is None:
            return default
        return self._items[i][1]

    def get_all(self, name):
        key = name.lower()
        return [v for n, v in self._items if n.lower() == key]

    def __getitem__(self, name):
        i = self._index.get(name.lower())
        if i is None:
            raise KeyError(name)
        return self._items[i][1]

    def __contains__(self, name):
        return name.lower() in self._index

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)

    def __eq__(self, other):
        if not isinstance(other, Headers):
            return NotImplemented
        return [(n.lower(), v) for n, v in self._items] == [
            (n.lower(), v) for n, v in other._items
        ]

    def __repr__(self):
        return "Headers(%r)" % (self._items,)

    def items(self):
        return list(self._items)

    def copy(self):
        h = Headers._trusted(list(self._items), dict(self._index))
        h.validated = self.validated
        return h

    def set(self, name, value):
        """Replace every occurrence of name with one value at the first place."""
        key = name.lower()
        if key not in self._index:
            self.add(name, value)
            return
        first = self._index[key]
        items = [
            (n, v) for i, (n, v) in enumerate(self._items)
            if i == first or n.lower() != key
        ]
        items = [((name, value) if n.lower() == key else (n, v)) for n, v in items]
        self._replace(items)

    def remove(self, name):
        key = name.lower()
        if key in self._index:
            self._replace([(n, v) for n, v in self._items if n.lower() != key])

    def _replace(self, items):
        self.validated = False
        self._items = []
        self._index = {}
        for n, v in items:
            self.add(n, v)


class ByteRange(NamedTuple):
    """RFC 4975 section 7.1.1; end and total are None for '*'."""

    start: int
    end: Optional[int]
    total: Optional[int]

    def __str__(self):
        end = "*" if self.end is None else str(self.end)
        total = "*" if self.total is None else str(self.total)
        return "%d-%s/%s" % (self.start, end, total)


class Status(NamedTuple):
    """RFC 4975 section 7.1.2 Status header: namespace, code, comment."""

    namespace: int
    code: int
    comment: Optional[str]

    def __str__(self):
        s = "%03d %03d" % (self.namespace, self.code)
        if self.comment:
            s += " " + self.comment
        return s


def parse_byte_range(value):
    """Byte-Range (RFC 4975 section 9): start-end/total, '*' for unknown."""
    m = abnf.BYTE_RANGE_RE.match(value)
    if m is None:
        raise HeaderError("malformed Byte-Range %r" % (value,))
    start = int(m.group(1))
    end = None if m.group(2) == "*" else int(m.group(2))
    total = None if m.group(3) == "*" else int(m.group(3))
    if start < 1:
        raise HeaderError("Byte-Range start must be >= 1, got %d" % start)
    if end is not None and end < start - 1:
        raise HeaderError("Byte-Range end %d before start %d" % (end, start))
    if total is not None and end is not None and end > total:
        raise HeaderError("Byte-Range end %d beyond total %d" % (end, total))
    return ByteRange(start, end, total)


def parse_status(value):
    """Status of a REPORT: namespace, code and an optional comment."""
    m = abnf.STATUS_RE.match(value)
    if m is None:
        raise HeaderError("malformed Status %r" % (value,))
    return Status(int(m.group(1)), int(m.group(2)), m.group(3))


def parse_report(value, allowed, name):
    """A Success-Report or Failure-Report value, one of allowed."""
    v = value.strip().lower()
    if v not in allowed:
        raise HeaderError(
            "%s must be one of %s, got %r" % (name, "/".join(allowed), value)
        )
    return v


def parse_delta_seconds(value, name):
    """Expires, Min-Expires, Max-Expires: whole seconds."""
    m = abnf.DELTA_SECONDS_RE.match(value)
    if m is None:
        raise HeaderError("%s must be a number of seconds, got %r" % (name, value))
    return int(m.group(1))


def check_header(name, value):
    """Refuse a header that would corrupt the framing or the grammar."""
    if not isinstance(name, str) or abnf.HEADER_NAME_RE.match(name) is None:
        raise HeaderError("invalid header name %r" % (name,))
    if not isinstance(value, str):
        raise HeaderError("header %s: value must be str, got %r" % (name, type(value).__name__))
    if "\r" in value or "\n" in value:
        raise HeaderError("header %s: CR or LF inside the value" % (name,))
