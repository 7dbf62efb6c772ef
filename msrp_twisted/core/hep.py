"""HEPv3 (HEP3/EEP3) packets: encoding, strict decoding, stream framing.

HEP is how SIP/MSRP servers ship traces to a capture server (Homer,
sipcapture). A packet is ``HEP3`` + a 16-bit total length + type-length-value
chunks; see the HEP3 specification, rev. 37. Over UDP it is one packet per
datagram, over TCP packets follow each other with no separator, hence
:class:`HEPStreamDecoder`.

OpenSIPS writes the chunks of its network-event traces in a fixed order that
differs from the spec's numeric order (ports before addresses, correlation id
after the payload). :data:`OPENSIPS_ORDER` reproduces it so that our traces are
byte-compatible; :data:`SPEC_ORDER` is the order of the spec's own example.

The payload helpers at the end build the two payload forms of OpenSIPS'
proto_hep for network events: cJSON's formatted print (``homer5_on=0``) and
the delimiter-joined values (``homer5_on=1``).
"""

from __future__ import annotations  # X | None annotations on Python < 3.10 (PyPy 3.9)

import ipaddress
import struct
from dataclasses import dataclass, field

from .errors import MSRPError, SerializationError

# Packet header.
HEP3_MAGIC = b"HEP3"
EEP3_MAGIC = b"EEP3"
HEADER_LEN = 6
CHUNK_HEADER_LEN = 6
MAX_PACKET_LEN = 0xFFFF
MAX_CHUNK_VALUE_LEN = 0xFFFF - CHUNK_HEADER_LEN

# Vendor ids (chunk header).
VENDOR_GENERIC = 0x0000
VENDOR_OPENSIPS = 0x0003

# Generic chunk types (vendor 0), spec rev. 37.
CHUNK_IP_FAMILY = 0x0001
CHUNK_IP_PROTOCOL = 0x0002
CHUNK_IPV4_SRC = 0x0003
CHUNK_IPV4_DST = 0x0004
CHUNK_IPV6_SRC = 0x0005
CHUNK_IPV6_DST = 0x0006
CHUNK_SRC_PORT = 0x0007
CHUNK_DST_PORT = 0x0008
CHUNK_TIMESTAMP = 0x0009
CHUNK_TIMESTAMP_USEC = 0x000A
CHUNK_PROTO_TYPE = 0x000B
CHUNK_CAPTURE_ID = 0x000C
CHUNK_KEEP_ALIVE = 0x000D
CHUNK_AUTH_KEY = 0x000E
CHUNK_PAYLOAD = 0x000F
CHUNK_COMPRESSED_PAYLOAD = 0x0010
CHUNK_CORRELATION_ID = 0x0011
CHUNK_VLAN_ID = 0x0012
CHUNK_CAPTURE_AGENT_NAME = 0x0013
# Not in the spec: OpenSIPS' "extra correlation" JSON chunk.
CHUNK_OPENSIPS_EXTRA_CORRELATION = 0x0065

# IP family values (chunk 0x0001). These are the Linux AF_* numbers whatever
# platform we run on, because that is what the spec and every decoder use.
FAMILY_IPV4 = 0x02
FAMILY_IPV6 = 0x0A

# IP protocol ids (chunk 0x0002).
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_SCTP = 132

# Protocol types (chunk 0x000b).
PROTO_SIP = 0x01
PROTO_XMPP = 0x02
PROTO_SDP = 0x03
PROTO_RTP = 0x04
PROTO_RTCP_JSON = 0x05
PROTO_SIP_JSON = 0x32
PROTO_DNS_JSON = 0x35
PROTO_MI = 0x57  # OpenSIPS, not standard
PROTO_REST = 0x58  # OpenSIPS, not standard
PROTO_NET = 0x59  # OpenSIPS "net": every proto_msrp/proto_ws trace
PROTO_CONTROL = 0x60  # OpenSIPS, not standard
PROTO_LOG = 0x64  # OpenSIPS "xlog"; hep.lua and Homer call it LOG


class HEPDecodeError(MSRPError, ValueError):
    """Bytes that are not a well-formed HEPv3 packet."""

    # Set by HEPStreamDecoder.feed: the packets completed before the error.
    packets = ()


class HEPEncodeError(SerializationError):
    """Field values that cannot be put into a HEPv3 packet."""


@dataclass(frozen=True)
class HEPChunk:
    """A chunk this module does not model; kept so nothing is lost."""

    vendor: int
    type: int
    value: bytes


# Packet attributes in the spec's numeric chunk order. ``src_ip``/``dst_ip``
# stand for the IPv4 or IPv6 chunk, whichever the address needs.
SPEC_ORDER = (
    "ip_family",
    "ip_protocol",
    "src_ip",
    "dst_ip",
    "src_port",
    "dst_port",
    "timestamp",
    "timestamp_usec",
    "proto_type",
    "capture_id",
    "auth_key",
    "payload",
    "correlation_id",
)

# What OpenSIPS' build_hep3_buf() writes for a network event (OpenSIPS never
# sends an auth key; it goes where the spec order would put it).
OPENSIPS_ORDER = (
    "ip_family",
    "ip_protocol",
    "src_port",
    "dst_port",
    "timestamp",
    "timestamp_usec",
    "proto_type",
    "capture_id",
    "auth_key",
    "src_ip",
    "dst_ip",
    "payload",
    "correlation_id",
)

_UINT8, _UINT16, _UINT32 = struct.Struct("!B"), struct.Struct("!H"), struct.Struct("!I")
_HEADER = struct.Struct("!4sH")
_CHUNK_HEADER = struct.Struct("!HHH")

# Integer chunks: chunk type -> (attribute, struct).
_INT_CHUNKS = {
    CHUNK_IP_FAMILY: ("ip_family", _UINT8),
    CHUNK_IP_PROTOCOL: ("ip_protocol", _UINT8),
    CHUNK_SRC_PORT: ("src_port", _UINT16),
    CHUNK_DST_PORT: ("dst_port", _UINT16),
    CHUNK_TIMESTAMP: ("timestamp", _UINT32),
    CHUNK_TIMESTAMP_USEC: ("timestamp_usec", _UINT32),
    CHUNK_PROTO_TYPE: ("proto_type", _UINT8),
    CHUNK_CAPTURE_ID: ("capture_id", _UINT32),
}
_INT_ATTRS = {attr: (ctype, fmt) for ctype, (attr, fmt) in _INT_CHUNKS.items()}

_OCTET_CHUNKS = {
    CHUNK_AUTH_KEY: "auth_key",
    CHUNK_PAYLOAD: "payload",
    CHUNK_CORRELATION_ID: "correlation_id",
}
_OCTET_ATTRS = {attr: ctype for ctype, attr in _OCTET_CHUNKS.items()}

# Address chunks: chunk type -> (attribute, IP version, value length).
_ADDR_CHUNKS = {
    CHUNK_IPV4_SRC: ("src_ip", 4, 4),
    CHUNK_IPV4_DST: ("dst_ip", 4, 4),
    CHUNK_IPV6_SRC: ("src_ip", 6, 16),
    CHUNK_IPV6_DST: ("dst_ip", 6, 16),
}
_ADDR_TYPES = {
    ("src_ip", 4): CHUNK_IPV4_SRC,
    ("dst_ip", 4): CHUNK_IPV4_DST,
    ("src_ip", 6): CHUNK_IPV6_SRC,
    ("dst_ip", 6): CHUNK_IPV6_DST,
}
_FAMILY_OF_VERSION = {4: FAMILY_IPV4, 6: FAMILY_IPV6}
_VERSION_OF_FAMILY = {FAMILY_IPV4: 4, FAMILY_IPV6: 6}


@dataclass
class HEPPacket:
    """One HEPv3 packet. Every field is optional, as in the spec.

    Addresses are text (``"10.0.0.1"``, ``"::1"``); the address chunks used
    (IPv4 or IPv6) follow from the address itself. Chunks this class does not
    model are kept, in order, in ``unknown_chunks`` and are written back after
    the modelled ones.
    """

    ip_family: int | None = None
    ip_protocol: int | None = None
    src_ip: str | None = None
    dst_ip: str | None = None
    src_port: int | None = None
    dst_port: int | None = None
    timestamp: int | None = None
    timestamp_usec: int | None = None
    proto_type: int | None = None
    capture_id: int | None = None
    auth_key: bytes | None = None
    payload: bytes | None = None
    correlation_id: bytes | None = None
    unknown_chunks: list = field(default_factory=list)

    def encode(self, order=OPENSIPS_ORDER):
        return encode_hep(self, order)


def encode_hep(packet, order=OPENSIPS_ORDER):
    """Serialize ``packet``; ``order`` lists every field name exactly once."""
    if sorted(order) != sorted(SPEC_ORDER):
        raise HEPEncodeError(f"chunk order must name each of {SPEC_ORDER} exactly once")
    versions = _address_versions(packet)
    chunks = []
    for attr in order:
        value = getattr(packet, attr)
        if value is None:
            continue
        if attr in _INT_ATTRS:
            ctype, fmt = _INT_ATTRS[attr]
            if isinstance(value, bool) or not isinstance(value, int):
                raise HEPEncodeError(f"{attr} must be an int, got {value!r}")
            try:
                raw = fmt.pack(value)
            except struct.error:
                raise HEPEncodeError(
                    f"{attr}={value} does not fit in {fmt.size * 8} unsigned bits"
                ) from None
            chunks.append(_chunk(VENDOR_GENERIC, ctype, raw))
        elif attr in _OCTET_ATTRS:
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise HEPEncodeError(f"{attr} must be bytes, got {type(value).__name__}")
            chunks.append(_chunk(VENDOR_GENERIC, _OCTET_ATTRS[attr], bytes(value), attr))
        else:
            address, version = versions[attr]
            chunks.append(_chunk(VENDOR_GENERIC, _ADDR_TYPES[attr, version], address.packed))
    for extra in packet.unknown_chunks:
        if not isinstance(extra, HEPChunk):
            raise HEPEncodeError(f"unknown_chunks must hold HEPChunk, got {extra!r}")
        try:
            chunks.append(_chunk(extra.vendor, extra.type, bytes(extra.value), "chunk"))
        except struct.error:
            raise HEPEncodeError(f"bad vendor/type in {extra!r}") from None
    total = HEADER_LEN + sum(len(c) for c in chunks)
    if total > MAX_PACKET_LEN:
        raise HEPEncodeError(f"packet would be {total} bytes, HEP allows {MAX_PACKET_LEN}")
    return _HEADER.pack(HEP3_MAGIC, total) + b"".join(chunks)


def _address_versions(packet):
    """Parse the addresses and check them against each other and the family."""
    found = {}
    for attr in ("src_ip", "dst_ip"):
        text = getattr(packet, attr)
        if text is None:
            continue
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise HEPEncodeError(f"{attr}={text!r} is not an IPv4 or IPv6 address") from None
        found[attr] = (address, address.version)
    versions = {v for _, v in found.values()}
    if len(versions) > 1:
        raise HEPEncodeError(
            f"src_ip {packet.src_ip!r} and dst_ip {packet.dst_ip!r} are of different IP versions"
        )
    family = packet.ip_family
    if versions and family is not None and family in _VERSION_OF_FAMILY:
        (version,) = versions
        if _VERSION_OF_FAMILY[family] != version:
            raise HEPEncodeError(f"ip_family {family} does not match IPv{version} addresses")
    return found


def _chunk(vendor, ctype, value, what=None):
    if len(value) > MAX_CHUNK_VALUE_LEN:
        raise HEPEncodeError(
            f"{what or 'chunk'} is {len(value)} bytes, a chunk holds at most {MAX_CHUNK_VALUE_LEN}"
        )
    return _CHUNK_HEADER.pack(vendor, ctype, CHUNK_HEADER_LEN + len(value)) + value


def decode_hep(data):
    """Parse exactly one packet; anything malformed raises HEPDecodeError."""
    data = bytes(data)
    if len(data) < HEADER_LEN:
        raise HEPDecodeError(f"{len(data)} bytes is shorter than the 6-byte HEP header")
    magic, total = _HEADER.unpack_from(data)
    if magic not in (HEP3_MAGIC, EEP3_MAGIC):
        raise HEPDecodeError(f"bad magic {magic!r}, expected b'HEP3' or b'EEP3'")
    if total < HEADER_LEN:
        raise HEPDecodeError(f"total length {total} is less than the header itself")
    if total != len(data):
        raise HEPDecodeError(f"total length field says {total} bytes, got {len(data)}")
    packet = HEPPacket()
    seen = set()
    offset = HEADER_LEN
    while offset < total:
        if total - offset < CHUNK_HEADER_LEN:
            raise HEPDecodeError(
                f"{total - offset} trailing bytes at offset {offset} cannot hold a chunk header"
            )
        vendor, ctype, length = _CHUNK_HEADER.unpack_from(data, offset)
        if length < CHUNK_HEADER_LEN:
            raise HEPDecodeError(
                f"chunk 0x{vendor:04x}/0x{ctype:04x} at offset {offset} has length {length} (< 6)"
            )
        end = offset + length
        if end > total:
            raise HEPDecodeError(
                f"chunk 0x{vendor:04x}/0x{ctype:04x} at offset {offset} has length {length},"
                f" past the end of the packet ({total})"
            )
        value = data[offset + CHUNK_HEADER_LEN : end]
        if vendor == VENDOR_GENERIC and _is_modelled(ctype):
            if ctype in seen:
                raise HEPDecodeError(f"chunk type 0x{ctype:04x} repeated at offset {offset}")
            seen.add(ctype)
            _store(packet, ctype, value, offset)
        else:
            packet.unknown_chunks.append(HEPChunk(vendor, ctype, value))
        offset = end
    _check_addresses(packet, seen)
    return packet


def _is_modelled(ctype):
    return ctype in _INT_CHUNKS or ctype in _OCTET_CHUNKS or ctype in _ADDR_CHUNKS


def _store(packet, ctype, value, offset):
    if ctype in _INT_CHUNKS:
        attr, fmt = _INT_CHUNKS[ctype]
        if len(value) != fmt.size:
            raise HEPDecodeError(
                f"{attr} chunk at offset {offset} holds {len(value)} bytes, expected {fmt.size}"
            )
        setattr(packet, attr, fmt.unpack(value)[0])
    elif ctype in _OCTET_CHUNKS:
        setattr(packet, _OCTET_CHUNKS[ctype], value)
    else:
        attr, version, size = _ADDR_CHUNKS[ctype]
        if len(value) != size:
            raise HEPDecodeError(
                f"IPv{version} {attr} chunk at offset {offset} holds {len(value)} bytes,"
                f" expected {size}"
            )
        if getattr(packet, attr) is not None:
            raise HEPDecodeError(f"both an IPv4 and an IPv6 {attr} chunk (offset {offset})")
        address = ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)
        setattr(packet, attr, str(address))


def _check_addresses(packet, seen):
    versions = {_ADDR_CHUNKS[c][1] for c in seen if c in _ADDR_CHUNKS}
    if len(versions) > 1:
        raise HEPDecodeError("source and destination addresses are of different IP versions")
    family = packet.ip_family
    if versions and family in _VERSION_OF_FAMILY:
        (version,) = versions
        if _VERSION_OF_FAMILY[family] != version:
            raise HEPDecodeError(
                f"ip_family {family} does not match the IPv{version} address chunks"
            )


class HEPStreamDecoder:
    """Frame HEPv3 packets out of a TCP byte stream.

    Feed it whatever arrived; it returns the packets completed so far. After
    an error the stream cannot be resynchronised (there is no delimiter), so
    every later call raises the same error: close the connection. Packets
    completed in the same call before the bad bytes travel on the error as
    ``packets``, so what is delivered does not depend on how TCP cut the
    stream.
    """

    def __init__(self):
        self._buffer = bytearray()
        self._error = None

    @property
    def pending(self):
        """Bytes received but not yet part of a complete packet."""
        return len(self._buffer)

    def feed(self, data):
        if self._error is not None:
            raise HEPDecodeError(f"stream already failed: {self._error}")
        self._buffer += data
        packets = []
        try:
            while True:
                packet = self._next_packet()
                if packet is None:
                    return packets
                packets.append(packet)
        except HEPDecodeError as e:
            self._error = e
            self._buffer.clear()
            e.packets = packets
            raise

    def _next_packet(self):
        buf = self._buffer
        head = bytes(buf[:4])
        if not (HEP3_MAGIC.startswith(head) or EEP3_MAGIC.startswith(head)):
            raise HEPDecodeError(f"bad magic {head!r} in stream, expected b'HEP3' or b'EEP3'")
        if len(buf) < HEADER_LEN:
            return None
        (total,) = _UINT16.unpack_from(buf, 4)
        if total < HEADER_LEN:
            raise HEPDecodeError(f"total length {total} is less than the header itself")
        if len(buf) < total:
            return None
        packet = decode_hep(buf[:total])
        del buf[:total]
        return packet


# -- OpenSIPS network-event payloads -------------------------------------------

_CJSON_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _cjson_string(text):
    out = ['"']
    for ch in text:
        if ch in _CJSON_ESCAPES:
            out.append(_CJSON_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)  # cJSON leaves non-ASCII as raw UTF-8
    out.append('"')
    return "".join(out)


def cjson_print_object(members):
    """A flat object of strings exactly as cJSON_Print() formats it.

    OpenSIPS (``homer5_on=0``) sends this form, so a collector comparing
    bytes or a human reading tcpdump sees the same thing as with OpenSIPS.
    """
    members = list(members)
    if not members:
        return b"{\n}"
    lines = [f"\t{_cjson_string(k)}:\t{_cjson_string(v)}" for k, v in members]
    return ("{\n" + ",\n".join(lines) + "\n}").encode("utf-8")


def homer5_join(values, delim=":"):
    """The ``homer5_on=1`` form: values only, joined by ``homer5_delim``."""
    return delim.join(values).encode("utf-8")


def net_event_payload(protocol, event, status, message=None, homer5_delim=None):
    """Payload of an OpenSIPS-style network event, keys in OpenSIPS' order."""
    members = [("Protocol", protocol), ("Event", event), ("Status", status)]
    if message:
        members.append(("Message", message))
    if homer5_delim is not None:
        return homer5_join((v for _, v in members), homer5_delim)
    return cjson_print_object(members)
