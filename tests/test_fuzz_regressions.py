"""Failures the fuzzers of bench/fuzz.py found, kept as regression tests.

Each class holds the input the fuzzer saved, checks the property that broke
with a small hand-made case beside it, and replays the input through the
harness body, so every property of that target is checked again.
"""

import importlib.util
import os
import sys

from twisted.trial.unittest import SynchronousTestCase

from msrp_twisted.core import digest, hep
from msrp_twisted.core.errors import FramingError
from msrp_twisted.core.parser import Parser

HARNESS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "fuzz.py")


def load_fuzz_harness():
    """bench/fuzz.py as a module (bench/ is not a package)."""
    name = "msrp_bench_fuzz"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, HARNESS)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def outcome(pieces, **limits):
    """Event type names, or the error, for a stream fed in these pieces."""
    parser = Parser(**limits)
    names = []
    try:
        for piece in pieces:
            names.extend(type(ev).__name__ for ev in parser.feed(piece))
    except FramingError as e:
        return "FramingError: %s" % e
    return names


def every_cut(data):
    """The stream whole, byte by byte, and in two at every offset."""
    yield [data]
    yield [data[i:i + 1] for i in range(len(data))]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]


class ReplayMixin:
    target = None
    inputs = ()

    def test_replay_through_the_harness(self):
        check = load_fuzz_harness().TARGETS[self.target]
        for data in self.inputs:
            check(data)


# -- parser: max_start_line judged differently when the CRLF was cut ---------------

# Found by the random engine, small limits (64, 384, 256), fed byte by byte:
# the 64-byte start line plus its CR arrived without the LF and was refused
# as "start line exceeds 64 bytes", while the same bytes fed whole parsed.
START_LINE_INPUT = (
    b"MSRP dkei38sd REPAuthentication-Info: alicepc.example.-dkei38sd$\r\ncom:7777/ia#\r\n"
    b"soe2843z;tcp\r\nFrom-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp\r\n"
    b"Message-ID: 12339sdqwer\r\nByte-Range: 1-106/106\r\nStamsrps://tus: 000 200 OK\r\n"
    b"-------dk8sd$\r\n"
)


class StartLineLimitTests(ReplayMixin, SynchronousTestCase):
    target = "parser"
    inputs = (START_LINE_INPUT,)
    limits = dict(max_start_line=64, max_header_block=384, max_body=256)

    def test_fuzzer_input_does_not_depend_on_the_cuts(self):
        want = outcome([START_LINE_INPUT], **self.limits)
        self.assertNotIn("FramingError", want)
        for pieces in every_cut(START_LINE_INPUT):
            self.assertEqual(outcome(pieces, **self.limits), want, [len(p) for p in pieces])

    def test_line_at_the_limit_with_its_cr_only(self):
        line = b"MSRP tid12345 " + b"A" * 36  # 50 bytes
        parser = Parser(max_start_line=50)
        self.assertEqual(parser.feed(line + b"\r"), [])
        rest = (b"\nTo-Path: msrp://b.example.com/s;tcp\r\nFrom-Path: msrp://a.example.com/s;tcp\r\n"
                b"Message-ID: m1\r\n-------tid12345$\r\n")
        self.assertEqual([type(e).__name__ for e in parser.feed(rest)], ["MessageStart", "MessageEnd"])

    def test_one_byte_over_is_still_refused(self):
        line = b"MSRP tid12345 " + b"A" * 37  # 51 bytes
        for tail in (b"", b"\r"):
            with self.assertRaises(FramingError):
                Parser(max_start_line=50).feed(line + tail)


# -- parser: max_header_block judged differently while the end-line arrives ---------


def head_of_block_size(size, tid=b"t" * 32, start_len=64):
    """A bodiless SEND whose start line has start_len bytes and whose header
    block (between the start line's CRLF and the end-line) has size bytes."""
    start = b"MSRP " + tid + b" " + b"A" * (start_len - 6 - len(tid))
    block = (b"To-Path: msrp://b.example.com/s;tcp\r\nFrom-Path: msrp://a.example.com/s;tcp\r\n"
             b"Message-ID: m1\r\nX: ")
    block += b"v" * (size - len(block) - 2) + b"\r\n"
    assert len(block) == size and len(start) == start_len
    return start + b"\r\n" + block[:-2] + b"\r\n-------" + tid + b"$\r\n"


class HeaderBlockLimitTests(SynchronousTestCase):
    """Found by reading the code next to the start-line failure, then confirmed
    against the old parser: a head within max_header_block was refused when
    the end-line arrived in pieces (the pending check counted the start line
    and the partial end-line against the limit)."""

    limits = dict(max_start_line=64, max_header_block=384)

    def test_block_at_the_limit_parses_however_cut(self):
        data = head_of_block_size(384)
        for pieces in every_cut(data):
            self.assertEqual(outcome(pieces, **self.limits), ["MessageStart", "MessageEnd"],
                             [len(p) for p in pieces])

    def test_one_byte_over_fails_however_cut(self):
        data = head_of_block_size(385)
        for pieces in every_cut(data):
            self.assertEqual(outcome(pieces, **self.limits), "FramingError: header block exceeds 384 bytes",
                             [len(p) for p in pieces])

    def test_never_ending_head_is_still_bounded(self):
        parser = Parser(**self.limits)
        parser.feed(b"MSRP " + b"t" * 32 + b" " + b"A" * 26 + b"\r\n")
        fed = 64 + 2
        with self.assertRaises(FramingError):
            while fed < 10000:
                parser.feed(b"X: y\r\n")
                fed += 6
        # Start line, block limit, and at most an end-line's worth (2 + 7 +
        # 32 + 3 bytes) that could still turn out to end it.
        self.assertLessEqual(fed, 66 + 384 + 44 + 6)


# -- digest: check_rspauth raised TypeError on a non-ASCII rspauth -------------------

# Found by the random engine: hmac.compare_digest() refuses str holding
# non-ASCII characters, so a server's Authentication-Info could raise
# TypeError out of check_rspauth() instead of giving False.
RSPAUTH_INPUT = b'rspauth="\x833b07450978507c4ef1"'


class RspauthTests(ReplayMixin, SynchronousTestCase):
    target = "digest"
    inputs = (RSPAUTH_INPUT,)

    def credentials(self):
        challenge = 'Digest realm="r", nonce="n", qop="auth"'
        return digest.make_authorization(challenge, "alice", "pw", "AUTH",
                                         "msrps://relay.example.com;tcp", cnonce="c0ffee")

    def test_non_ascii_rspauth_is_false(self):
        creds = self.credentials()
        for info in (RSPAUTH_INPUT.decode("utf-8", "replace"), 'rspauth="\u00e9"', 'rspauth="\u20ac" '):
            self.assertIs(digest.check_rspauth(info, creds, "pw"), False)

    def test_correct_rspauth_still_true(self):
        creds = self.credentials()
        ha1 = digest.compute_ha1("alice", "r", "pw")
        proof = digest.compute_rspauth(ha1, "n", creds["nc"], "c0ffee", "auth", creds["uri"])
        info = digest.format_auth_info({"rspauth": proof.upper(), "cnonce": "c0ffee",
                                        "nc": creds["nc"], "qop": "auth"})
        self.assertIs(digest.check_rspauth(info, creds, "pw"), True)
        self.assertIs(digest.check_rspauth(info.replace(proof.upper()[:4], "0000"), creds, "pw"), False)


# -- hep: packets before a stream error were kept or lost depending on the cuts ---

# Found by the random engine: a packet whose length field is 3 short of the
# bytes that follow, sent twice. The first packet frames, then its last 3
# bytes are read as a bad magic. Fed in one piece the first packet was lost
# with the error; fed in two it had already been returned.
HEP_INPUT = bytes.fromhex(
    "4845503300a600000001000702000000020007060000000700080b2700000008"
    "000813c400000009000a000000010000000a000a000000020000000b00075900"
    "00000c000a000007d100000003000a7f00000100000004000a7f000001000000"
    "0f0049") + b'{\n\t"Protocol":\t"msrp",\n6;\xf2\t"Event":\t"ACCEPTED",\n\t"Status":\t"success"\n}'


class HEPStreamTests(ReplayMixin, SynchronousTestCase):
    target = "hep"
    inputs = (HEP_INPUT,)

    def delivered(self, pieces):
        decoder = hep.HEPStreamDecoder()
        packets = []
        for piece in pieces:
            try:
                packets.extend(decoder.feed(piece))
            except hep.HEPDecodeError as e:
                return packets + list(e.packets), str(e)
        return packets, None

    def test_fuzzer_input(self):
        self.assertEqual(len(HEP_INPUT), 169)
        stream = HEP_INPUT + HEP_INPUT
        packets, error = self.delivered([stream])
        self.assertIn("bad magic", error)
        self.assertEqual(len(packets), 1)
        self.assertEqual(packets[0].capture_id, 2001)
        for pieces in every_cut(stream):
            # The error text quotes as much of the bad magic as had arrived.
            got, got_error = self.delivered(pieces)
            self.assertEqual((got, got_error is not None), (packets, True), [len(p) for p in pieces])

    def test_good_packets_before_garbage_in_one_read(self):
        packet = hep.HEPPacket(payload=b"x", capture_id=7)
        error = self.assertRaises(hep.HEPDecodeError, hep.HEPStreamDecoder().feed,
                                  packet.encode() * 2 + b"GARBAGE")
        self.assertEqual(error.packets, [packet, packet])

    def test_packets_default_is_empty(self):
        error = self.assertRaises(hep.HEPDecodeError, hep.decode_hep, b"HEP")
        self.assertEqual(tuple(error.packets), ())
