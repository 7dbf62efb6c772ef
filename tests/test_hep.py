"""HEPv3 encoding, strict decoding and stream framing."""

import ipaddress
import json
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from msrp_twisted.core import hep
from msrp_twisted.core.errors import MSRPError, SerializationError
from msrp_twisted.core.hep import (
    HEPChunk,
    HEPDecodeError,
    HEPEncodeError,
    HEPPacket,
    HEPStreamDecoder,
    decode_hep,
    encode_hep,
)


def unhex(text):
    return bytes.fromhex("".join(text.split()))


# HEP3 specification rev. 37, example packet (hep3-format-notes.md section 1.5).
SPEC_EXAMPLE = (
    unhex(
        """
        48 45 50 33 00 71 00 00 00 01 00 07 02 00 00 00 02 00 07 11
        00 00 00 03 00 0a d4 ca 00 01 00 00 00 04 00 0a 52 74 00 d3
        00 00 00 07 00 08 2e ea 00 00 00 08 00 08 13 c4
        00 00 00 09 00 0a 4e 49 82 cb 00 00 00 0a 00 0a 00 01 d4 c0
        00 00 00 0b 00 07 01 00 00 00 0c 00 0a 00 00 00 e4
        00 00 00 0f 00 14
        """
    )
    + b"INVITE sip:bob"
)

# OpenSIPS CONNECTED net event, peer 10.0.0.1:40000 -> local 10.0.0.2:2855,
# t=1700000000.123456, cid 42, capture id 1 (notes section 2.5).
OPENSIPS_HOMER5 = unhex(
    """
    48 45 50 33 00 9a 00 00 00 01 00 07 02 00 00 00 02 00 07 06 00 00 00 07
    00 08 9c 40 00 00 00 08 00 08 0b 27 00 00 00 09 00 0a 65 53 f1 00 00 00
    00 0a 00 0a 00 01 e2 40 00 00 00 0b 00 07 59 00 00 00 0c 00 0a 00 00 00
    01 00 00 00 03 00 0a 0a 00 00 01 00 00 00 04 00 0a 0a 00 00 02 00 00 00
    0f 00 35 54 43 50 3a 43 4f 4e 4e 45 43 54 45 44 3a 53 55 43 43 45 53 53
    3a 53 75 63 63 65 73 73 66 75 6c 6c 79 20 63 6f 6e 6e 65 63 74 65 64 2e
    2e 2e 00 00 00 11 00 08 34 32
    """
)
OPENSIPS_JSON = unhex(
    """
    48 45 50 33 00 d7 00 00 00 01 00 07 02 00 00 00 02 00 07 06 00 00 00 07
    00 08 9c 40 00 00 00 08 00 08 0b 27 00 00 00 09 00 0a 65 53 f1 00 00 00
    00 0a 00 0a 00 01 e2 40 00 00 00 0b 00 07 59 00 00 00 0c 00 0a 00 00 00
    01 00 00 00 03 00 0a 0a 00 00 01 00 00 00 04 00 0a 0a 00 00 02 00 00 00
    0f 00 72 7b 0a 09 22 50 72 6f 74 6f 63 6f 6c 22 3a 09 22 54 43 50 22 2c
    0a 09 22 45 76 65 6e 74 22 3a 09 22 43 4f 4e 4e 45 43 54 45 44 22 2c 0a
    09 22 53 74 61 74 75 73 22 3a 09 22 53 55 43 43 45 53 53 22 2c 0a 09 22
    4d 65 73 73 61 67 65 22 3a 09 22 53 75 63 63 65 73 73 66 75 6c 6c 79 20
    63 6f 6e 6e 65 63 74 65 64 2e 2e 2e 22 0a 7d 00 00 00 11 00 08 34 32
    """
)


def opensips_connected(payload):
    return HEPPacket(
        ip_family=hep.FAMILY_IPV4,
        ip_protocol=hep.IPPROTO_TCP,
        src_ip="10.0.0.1",
        dst_ip="10.0.0.2",
        src_port=40000,
        dst_port=2855,
        timestamp=1700000000,
        timestamp_usec=123456,
        proto_type=hep.PROTO_NET,
        capture_id=1,
        payload=payload,
        correlation_id=b"42",
    )


def chunk(ctype, value, vendor=0):
    return struct.pack("!HHH", vendor, ctype, 6 + len(value)) + value


def packet_of(*chunks, magic=b"HEP3"):
    body = b"".join(chunks)
    return magic + struct.pack("!H", 6 + len(body)) + body


class SpecExampleTests(SynchronousTestCase):
    def test_decode(self):
        p = decode_hep(SPEC_EXAMPLE)
        self.assertEqual(len(SPEC_EXAMPLE), 0x71)
        self.assertEqual(p.ip_family, hep.FAMILY_IPV4)
        self.assertEqual(p.ip_protocol, hep.IPPROTO_UDP)
        self.assertEqual((p.src_ip, p.src_port), ("212.202.0.1", 12010))
        self.assertEqual((p.dst_ip, p.dst_port), ("82.116.0.211", 5060))
        self.assertEqual((p.timestamp, p.timestamp_usec), (0x4E4982CB, 120000))
        self.assertEqual(p.proto_type, hep.PROTO_SIP)
        self.assertEqual(p.capture_id, 228)
        self.assertEqual(p.payload, b"INVITE sip:bob")
        self.assertIsNone(p.auth_key)
        self.assertIsNone(p.correlation_id)
        self.assertEqual(p.unknown_chunks, [])

    def test_encode_byte_for_byte(self):
        p = HEPPacket(
            ip_family=2,
            ip_protocol=17,
            src_ip="212.202.0.1",
            dst_ip="82.116.0.211",
            src_port=12010,
            dst_port=5060,
            timestamp=0x4E4982CB,
            timestamp_usec=120000,
            proto_type=1,
            capture_id=228,
            payload=b"INVITE sip:bob",
        )
        self.assertEqual(p.encode(hep.SPEC_ORDER), SPEC_EXAMPLE)
        self.assertEqual(encode_hep(decode_hep(SPEC_EXAMPLE), hep.SPEC_ORDER), SPEC_EXAMPLE)

    def test_opensips_order_differs_only_in_order(self):
        p = decode_hep(SPEC_EXAMPLE)
        other = p.encode(hep.OPENSIPS_ORDER)
        self.assertNotEqual(other, SPEC_EXAMPLE)
        self.assertEqual(len(other), len(SPEC_EXAMPLE))
        self.assertEqual(decode_hep(other), p)


class OpenSIPSNetEventTests(SynchronousTestCase):
    def test_json_payload_vector(self):
        payload = hep.net_event_payload("TCP", "CONNECTED", "SUCCESS", "Successfully connected...")
        self.assertEqual(opensips_connected(payload).encode(), OPENSIPS_JSON)
        self.assertEqual(
            json.loads(payload),
            {
                "Protocol": "TCP",
                "Event": "CONNECTED",
                "Status": "SUCCESS",
                "Message": "Successfully connected...",
            },
        )

    def test_homer5_payload_vector(self):
        payload = hep.net_event_payload(
            "TCP", "CONNECTED", "SUCCESS", "Successfully connected...", homer5_delim=":"
        )
        self.assertEqual(payload, b"TCP:CONNECTED:SUCCESS:Successfully connected...")
        self.assertEqual(opensips_connected(payload).encode(), OPENSIPS_HOMER5)

    def test_vectors_decode(self):
        p = decode_hep(OPENSIPS_JSON)
        self.assertEqual(p.correlation_id, b"42")
        self.assertEqual(p.proto_type, 0x59)
        self.assertEqual((p.src_ip, p.src_port), ("10.0.0.1", 40000))
        self.assertEqual((p.dst_ip, p.dst_port), ("10.0.0.2", 2855))

    def test_message_is_optional(self):
        self.assertEqual(
            hep.net_event_payload("MSRP", "CLOSED", "SUCCESS", None),
            b'{\n\t"Protocol":\t"MSRP",\n\t"Event":\t"CLOSED",\n\t"Status":\t"SUCCESS"\n}',
        )

    def test_cjson_escaping(self):
        text = 'q"b\\s\x08\x0c\n\r\t\x01\x1f/é'
        out = hep.cjson_print_object([("k", text)])
        self.assertEqual(
            out,
            '{\n\t"k":\t"q\\"b\\\\s\\b\\f\\n\\r\\t\\u0001\\u001f/é"\n}'.encode("utf-8"),
        )
        self.assertEqual(json.loads(out), {"k": text})
        self.assertEqual(hep.cjson_print_object([]), b"{\n}")


class EncodeErrorTests(SynchronousTestCase):
    def assertRefused(self, packet, *words):
        with self.assertRaises(HEPEncodeError) as cm:
            packet.encode()
        self.assertIsInstance(cm.exception, SerializationError)
        for word in words:
            self.assertIn(word, str(cm.exception))

    def test_out_of_range_integers(self):
        self.assertRefused(HEPPacket(src_port=65536), "src_port", "16")
        self.assertRefused(HEPPacket(dst_port=-1), "dst_port")
        self.assertRefused(HEPPacket(proto_type=256), "proto_type")
        self.assertRefused(HEPPacket(capture_id=2**32), "capture_id", "32")
        self.assertRefused(HEPPacket(timestamp="now"), "timestamp", "int")
        self.assertRefused(HEPPacket(ip_protocol=True), "ip_protocol")

    def test_bad_addresses(self):
        self.assertRefused(HEPPacket(src_ip="example.com"), "src_ip", "example.com")
        self.assertRefused(HEPPacket(src_ip="10.0.0.1", dst_ip="::1"), "different IP versions")
        self.assertRefused(HEPPacket(ip_family=hep.FAMILY_IPV6, src_ip="10.0.0.1"), "ip_family")

    def test_octets_must_be_bytes(self):
        self.assertRefused(HEPPacket(payload="text"), "payload", "bytes")

    def test_too_big(self):
        self.assertRefused(HEPPacket(payload=b"x" * 65530), "payload", "65529")
        self.assertRefused(HEPPacket(payload=b"x" * 40000, auth_key=b"y" * 30000), "65535")
        HEPPacket(payload=b"x" * (65535 - 12)).encode()  # exactly the limit

    def test_bad_order(self):
        with self.assertRaises(HEPEncodeError):
            HEPPacket().encode(order=hep.SPEC_ORDER[:-1])

    def test_bad_unknown_chunk(self):
        self.assertRefused(HEPPacket(unknown_chunks=[(0, 1, b"")]), "HEPChunk")
        self.assertRefused(HEPPacket(unknown_chunks=[HEPChunk(0x10000, 1, b"")]), "vendor")

    def test_empty_packet(self):
        self.assertEqual(HEPPacket().encode(), b"HEP3\x00\x06")
        self.assertEqual(decode_hep(b"HEP3\x00\x06"), HEPPacket())


class DecodeErrorTests(SynchronousTestCase):
    def assertRejected(self, data, *words):
        with self.assertRaises(HEPDecodeError) as cm:
            decode_hep(data)
        self.assertIsInstance(cm.exception, MSRPError)
        self.assertIsInstance(cm.exception, ValueError)
        for word in words:
            self.assertIn(word, str(cm.exception))
        return cm.exception

    def test_short_header(self):
        self.assertRejected(b"HEP3\x00", "shorter than the 6-byte")

    def test_magic(self):
        self.assertRejected(b"HEP2\x00\x06", "bad magic")
        self.assertEqual(decode_hep(b"EEP3\x00\x06"), HEPPacket())

    def test_total_length(self):
        self.assertRejected(b"HEP3\x00\x05", "less than the header")
        self.assertRejected(b"HEP3\x00\x07", "says 7 bytes, got 6")
        self.assertRejected(SPEC_EXAMPLE + b"\x00", "says 113 bytes, got 114")
        self.assertRejected(SPEC_EXAMPLE[:-1], "says 113 bytes, got 112")

    def test_chunk_lengths(self):
        self.assertRejected(packet_of(b"\x00\x00\x00"), "trailing bytes at offset 6")
        self.assertRejected(packet_of(b"\x00\x00\x00\x0f\x00\x05"), "length 5 (< 6)")
        self.assertRejected(packet_of(b"\x00\x00\x00\x0f\x00\x09ab"), "past the end")

    def test_fixed_size_chunks(self):
        self.assertRejected(packet_of(chunk(hep.CHUNK_SRC_PORT, b"\x01")), "src_port", "expected 2")
        self.assertRejected(packet_of(chunk(hep.CHUNK_IPV4_SRC, b"\x01" * 16)), "IPv4", "expected 4")
        self.assertRejected(packet_of(chunk(hep.CHUNK_IPV6_DST, b"\x01" * 4)), "IPv6", "expected 16")

    def test_repeated_chunk(self):
        port = chunk(hep.CHUNK_SRC_PORT, b"\x00\x01")
        self.assertRejected(packet_of(port, port), "repeated")

    def test_inconsistent_addresses(self):
        self.assertRejected(
            packet_of(chunk(hep.CHUNK_IPV4_SRC, bytes(4)), chunk(hep.CHUNK_IPV6_SRC, bytes(16))),
            "both an IPv4 and an IPv6 src_ip",
        )
        self.assertRejected(
            packet_of(chunk(hep.CHUNK_IPV4_SRC, bytes(4)), chunk(hep.CHUNK_IPV6_DST, bytes(16))),
            "different IP versions",
        )
        self.assertRejected(
            packet_of(chunk(hep.CHUNK_IP_FAMILY, b"\x0a"), chunk(hep.CHUNK_IPV4_SRC, bytes(4))),
            "ip_family 10",
        )

    def test_unknown_chunks_are_kept_in_order(self):
        data = packet_of(
            chunk(hep.CHUNK_KEEP_ALIVE, b"\x00\x1e"),
            chunk(hep.CHUNK_PAYLOAD, b"x"),
            chunk(0x0001, b"vendor chunk", vendor=hep.VENDOR_OPENSIPS),
            chunk(hep.CHUNK_OPENSIPS_EXTRA_CORRELATION, b'{"a":"b"}'),
        )
        p = decode_hep(data)
        self.assertEqual(p.payload, b"x")
        self.assertEqual(
            p.unknown_chunks,
            [
                HEPChunk(0, hep.CHUNK_KEEP_ALIVE, b"\x00\x1e"),
                HEPChunk(hep.VENDOR_OPENSIPS, 1, b"vendor chunk"),
                HEPChunk(0, 0x65, b'{"a":"b"}'),
            ],
        )
        self.assertEqual(decode_hep(p.encode()), p)

    def test_ipv6(self):
        p = HEPPacket(ip_family=hep.FAMILY_IPV6, src_ip="::1", dst_ip="2001:db8::2", src_port=1)
        data = p.encode()
        self.assertIn(chunk(hep.CHUNK_IPV6_SRC, ipaddress.IPv6Address("::1").packed), data)
        self.assertIn(chunk(hep.CHUNK_IPV6_DST, ipaddress.IPv6Address("2001:db8::2").packed), data)
        self.assertEqual(decode_hep(data), p)


class StreamDecoderTests(SynchronousTestCase):
    def test_byte_by_byte(self):
        decoder = HEPStreamDecoder()
        stream = SPEC_EXAMPLE + OPENSIPS_JSON + OPENSIPS_HOMER5
        got = []
        for i in range(len(stream)):
            got.extend(decoder.feed(stream[i : i + 1]))
        expected = [decode_hep(v) for v in (SPEC_EXAMPLE, OPENSIPS_JSON, OPENSIPS_HOMER5)]
        self.assertEqual(got, expected)
        self.assertEqual(decoder.pending, 0)

    def test_several_in_one_read_with_a_partial_tail(self):
        decoder = HEPStreamDecoder()
        got = decoder.feed(SPEC_EXAMPLE * 3 + OPENSIPS_JSON[:10])
        self.assertEqual(len(got), 3)
        self.assertEqual(decoder.pending, 10)
        self.assertEqual(decoder.feed(OPENSIPS_JSON[10:]), [decode_hep(OPENSIPS_JSON)])

    def test_bad_magic_detected_early_and_sticky(self):
        decoder = HEPStreamDecoder()
        self.assertEqual(decoder.feed(b"HE"), [])
        with self.assertRaises(HEPDecodeError) as cm:
            decoder.feed(b"X")
        self.assertIn("bad magic", str(cm.exception))
        with self.assertRaises(HEPDecodeError) as cm:
            decoder.feed(SPEC_EXAMPLE)
        self.assertIn("already failed", str(cm.exception))

    def test_bad_length_and_bad_chunk(self):
        with self.assertRaises(HEPDecodeError):
            HEPStreamDecoder().feed(b"HEP3\x00\x02")
        decoder = HEPStreamDecoder()
        self.assertEqual(len(decoder.feed(SPEC_EXAMPLE)), 1)
        with self.assertRaises(HEPDecodeError) as cm:
            decoder.feed(packet_of(b"\x00\x00\x00\x0f\x00\x09ab"))
        self.assertIn("past the end", str(cm.exception))


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
octets = st.binary(max_size=300)


def maybe(strategy):
    return st.none() | strategy


@st.composite
def packets(draw):
    version = draw(st.sampled_from([4, 6]))
    address = ipv4 if version == 4 else ipv6
    family = {4: hep.FAMILY_IPV4, 6: hep.FAMILY_IPV6}[version]
    return HEPPacket(
        ip_family=draw(st.none() | st.just(family)),
        ip_protocol=draw(maybe(u8)),
        src_ip=draw(maybe(address)),
        dst_ip=draw(maybe(address)),
        src_port=draw(maybe(u16)),
        dst_port=draw(maybe(u16)),
        timestamp=draw(maybe(u32)),
        timestamp_usec=draw(maybe(u32)),
        proto_type=draw(maybe(u8)),
        capture_id=draw(maybe(u32)),
        auth_key=draw(maybe(octets)),
        payload=draw(maybe(octets)),
        correlation_id=draw(maybe(octets)),
        unknown_chunks=draw(
            st.lists(
                st.builds(
                    HEPChunk,
                    vendor=st.integers(1, 0xFFFF),
                    type=u16,
                    value=st.binary(max_size=40),
                ),
                max_size=3,
            )
        ),
    )


class RoundTripTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(packets(), st.sampled_from([hep.SPEC_ORDER, hep.OPENSIPS_ORDER]))
    def test_round_trip(self, packet, order):
        data = packet.encode(order)
        self.assertEqual(struct.unpack("!H", data[4:6])[0], len(data))
        self.assertEqual(decode_hep(data), packet)

    @settings(max_examples=50, deadline=None)
    @given(st.lists(packets(), min_size=1, max_size=5), st.data())
    def test_stream_round_trip_any_split(self, plist, data):
        stream = b"".join(p.encode() for p in plist)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
        decoder = HEPStreamDecoder()
        got = []
        start = 0
        for cut in cuts + [len(stream)]:
            got.extend(decoder.feed(stream[start:cut]))
            start = cut
        self.assertEqual(got, plist)
        self.assertEqual(decoder.pending, 0)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=80))
    def test_garbage_never_crashes(self, data):
        for candidate in (data, b"HEP3" + struct.pack("!H", len(data) + 6) + data):
            try:
                decode_hep(candidate)
            except HEPDecodeError:
                pass
