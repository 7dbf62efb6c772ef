"""The incremental parser: RFC examples, framing rules, limits, streaming.

Every stream is checked fed whole, one byte at a time and split in two at
every offset: the events must not depend on how TCP cut the bytes.
"""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from msrp_twisted.core import abnf
from msrp_twisted.core.errors import FramingError, MessageError
from msrp_twisted.core.message import Request, Response
from msrp_twisted.core.parser import (
    DEFAULT_MAX_BODY,
    BodyData,
    InvalidMessage,
    MessageAssembler,
    MessageEnd,
    MessageStart,
    Parser,
)


def wire(*lines):
    """Lines joined with CRLF, each one terminated, as the RFC figures mean."""
    return "".join(line + "\r\n" for line in lines).encode("utf-8")


# -- RFC examples, transcribed from the RFC text ------------------------------
# Leading indentation is removed and every line ends with CRLF. The Byte-Range
# values are kept as printed even where they do not match the body length
# (the RFC counts differently); the parser does not check them.

# RFC 4975 section 4: the SEND and its 200 OK.
RFC4975_SEND = wire(
    "MSRP a786hjs2 SEND",
    "To-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp",
    "From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp",
    "Message-ID: 87652491",
    "Byte-Range: 1-25/25",
    "Content-Type: text/plain",
    "",
    "Hey Bob, are you there?",
    "-------a786hjs2$",
)
RFC4975_SEND_OK = wire(
    "MSRP a786hjs2 200 OK",
    "To-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp",
    "From-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp",
    "-------a786hjs2$",
)

# RFC 4975 section 5.1: "abcdEFGH" sent as two chunks. The RFC shows a
# snippet without To-Path and From-Path, so as printed both frames are
# delimitable but invalid.
RFC4975_CHUNK1_SNIPPET = wire(
    "MSRP dkei38sd SEND",
    "Message-ID: 4564dpWd",
    "Byte-Range: 1-*/8",
    "Content-Type: text/plain",
    "",
    "abcd",
    "-------dkei38sd+",
)
RFC4975_CHUNK2_SNIPPET = wire(
    "MSRP dkei38ia SEND",
    "Message-ID: 4564dpWd",
    "Byte-Range: 5-8/8",
    "Content-Type: text/plain",
    "",
    "EFGH",
    "-------dkei38ia$",
)
# The same two chunks with the paths of the section 10.1 session added.
ALICE = "msrp://alicepc.example.com:7777/iau39soe2843z;tcp"
BOB = "msrp://bob.example.com:8888/9di4eae923wzd;tcp"
RFC4975_CHUNK1 = wire(
    "MSRP dkei38sd SEND",
    "To-Path: " + BOB,
    "From-Path: " + ALICE,
    "Message-ID: 4564dpWd",
    "Byte-Range: 1-*/8",
    "Content-Type: text/plain",
    "",
    "abcd",
    "-------dkei38sd+",
)
RFC4975_CHUNK2 = wire(
    "MSRP dkei38ia SEND",
    "To-Path: " + BOB,
    "From-Path: " + ALICE,
    "Message-ID: 4564dpWd",
    "Byte-Range: 5-8/8",
    "Content-Type: text/plain",
    "",
    "EFGH",
    "-------dkei38ia$",
)

# RFC 4975 section 10.1: a basic IM session.
RFC4975_IM_SEND = wire(
    "MSRP d93kswow SEND",
    "To-Path: " + BOB,
    "From-Path: " + ALICE,
    "Message-ID: 12339sdqwer",
    "Byte-Range: 1-16/16",
    "Content-Type: text/plain",
    "",
    "Hi, I'm Alice!",
    "-------d93kswow$",
)
RFC4975_IM_OK = wire(
    "MSRP d93kswow 200 OK",
    "To-Path: " + ALICE,
    "From-Path: " + BOB,
    "-------d93kswow$",
)

# RFC 4975 section 10 (positive report): the REPORT Bob sends back.
RFC4975_REPORT = wire(
    "MSRP dkei38sd REPORT",
    "To-Path: " + ALICE,
    "From-Path: " + BOB,
    "Message-ID: 12339sdqwer",
    "Byte-Range: 1-106/106",
    "Status: 000 200 OK",
    "-------dkei38sd$",
)

# RFC 4976 section 7.1: Alice authenticates to her relay. The RFC folds the
# long digest headers over several lines for print ("\" at the end of a
# line); on the wire each is one line, joined here with single spaces.
RELAY = "msrps://alice@intra.example.com;tcp"
ALICE_TLS = "msrps://alice.example.com:9892/98cjs;tcp"
NONCE = "dcd98b7102dd2f0e8b11d0f600bfb0c093"
RFC4976_AUTH = wire(
    "MSRP 49fh AUTH",
    "To-Path: " + RELAY,
    "From-Path: " + ALICE_TLS,
    "-------49fh$",
)
RFC4976_401 = wire(
    "MSRP 49fh 401 Unauthorized",
    "To-Path: " + ALICE_TLS,
    "From-Path: " + RELAY,
    'WWW-Authenticate: Digest realm="intra.example.com", qop="auth", '
    'nonce="%s"' % NONCE,
    "-------49fh$",
)
RFC4976_AUTH2 = wire(
    "MSRP 49fi AUTH",
    "To-Path: " + RELAY,
    "From-Path: " + ALICE_TLS,
    'Authorization: Digest username="Alice", realm="intra.example.com", '
    'nonce="%s", qop=auth, nc=00000001, cnonce="0a4f113b", '
    'response="6629fae49393a05397450978507c4ef1"' % NONCE,
    "-------49fi$",
)
RFC4976_AUTH_OK = wire(
    "MSRP 49fi 200 OK",
    "To-Path: " + ALICE_TLS,
    "From-Path: " + RELAY,
    "Use-Path: msrps://intra.example.com:9000/jui787s2f;tcp",
    "Expires: 900",
    "-------49fi$",
)

RFC_EXAMPLES = {
    "rfc4975-send": RFC4975_SEND,
    "rfc4975-send-ok": RFC4975_SEND_OK,
    "rfc4975-chunk1": RFC4975_CHUNK1,
    "rfc4975-chunk2": RFC4975_CHUNK2,
    "rfc4975-im-send": RFC4975_IM_SEND,
    "rfc4975-im-ok": RFC4975_IM_OK,
    "rfc4975-report": RFC4975_REPORT,
    "rfc4976-auth": RFC4976_AUTH,
    "rfc4976-401": RFC4976_401,
    "rfc4976-auth2": RFC4976_AUTH2,
    "rfc4976-auth-ok": RFC4976_AUTH_OK,
}


# -- helpers --------------------------------------------------------------------

TO = "To-Path: msrp://b.example.com:2855/s2;tcp"
FROM = "From-Path: msrp://a.example.com:2855/s1;tcp"


def send(tid="tid12345", body=b"hello", flag="$", extra=(), content_type="text/plain"):
    """A SEND with the usual headers and a body (None: no body)."""
    head = ["MSRP %s SEND" % tid, TO, FROM, "Message-ID: m1"] + list(extra)
    if body is None:
        return wire(*head) + b"-------" + tid.encode() + flag.encode() + b"\r\n"
    if content_type is not None:
        head.append("Content-Type: " + content_type)
    return (wire(*head) + b"\r\n" + body + b"\r\n-------" + tid.encode()
            + flag.encode() + b"\r\n")


def summarize(events):
    """Events as comparable tuples, adjacent BodyData joined."""
    out = []
    for ev in events:
        if type(ev) is BodyData:
            assert type(ev.data) is bytes, type(ev.data)
            assert ev.data, "empty BodyData"
            if out and out[-1][0] == "body":
                out[-1] = ("body", out[-1][1] + ev.data)
            else:
                out.append(("body", ev.data))
        elif type(ev) is MessageStart:
            m = ev.message
            assert m.body is None
            if m.is_request:
                kind = ("request", m.tid, m.method)
            else:
                kind = ("response", m.tid, m.code, m.comment)
            out.append(("start",) + kind + (tuple(m.headers.items()), m.has_body))
        elif type(ev) is MessageEnd:
            out.append(("end", ev.flag))
        elif type(ev) is InvalidMessage:
            e = ev.error
            assert isinstance(e, MessageError)
            out.append(("invalid", e.tid, e.reason, e.method, e.is_request, e.code))
        else:
            raise AssertionError("unexpected event %r" % (ev,))
    return out


def parse_chunks(chunks, **kwargs):
    parser = Parser(**kwargs)
    events = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return summarize(events), parser


def parse(data, **kwargs):
    return parse_chunks([data], **kwargs)[0]


def request_start(tid, method, headers, has_body):
    return ("start", "request", tid, method, tuple(headers), has_body)


def response_start(tid, code, comment, headers):
    return ("start", "response", tid, code, comment, tuple(headers), False)


STD_HEADERS = [
    ("To-Path", TO[len("To-Path: "):]),
    ("From-Path", FROM[len("From-Path: "):]),
    ("Message-ID", "m1"),
]


class SplitMixin:
    def assertSplitInvariant(self, data, **kwargs):
        """Parse data whole, byte by byte and split at every offset; return
        the events, which must be the same every time."""
        whole, parser = parse_chunks([data], **kwargs)
        self.assertFalse(parser.in_message)
        self.assertEqual(parser._buf, b"")
        one_by_one, parser = parse_chunks(
            [data[i:i + 1] for i in range(len(data))], **kwargs)
        self.assertEqual(one_by_one, whole, "fed one byte at a time")
        self.assertFalse(parser.in_message)
        for i in range(len(data) + 1):
            split, parser = parse_chunks([data[:i], b"", data[i:]], **kwargs)
            self.assertEqual(split, whole, "split at offset %d" % i)
            self.assertFalse(parser.in_message)
        return whole


# -- RFC examples ----------------------------------------------------------------


class RFCExampleTests(SplitMixin, SynchronousTestCase):
    def test_rfc4975_send_and_ok(self):
        events = self.assertSplitInvariant(RFC4975_SEND + RFC4975_SEND_OK)
        self.assertEqual(events, [
            request_start("a786hjs2", "SEND", [
                ("To-Path", "msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp"),
                ("From-Path", "msrp://atlanta.example.com:7654/jshA7weztas;tcp"),
                ("Message-ID", "87652491"),
                ("Byte-Range", "1-25/25"),
                ("Content-Type", "text/plain"),
            ], True),
            ("body", b"Hey Bob, are you there?"),
            ("end", "$"),
            response_start("a786hjs2", 200, "OK", [
                ("To-Path", "msrp://atlanta.example.com:7654/jshA7weztas;tcp"),
                ("From-Path", "msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp"),
            ]),
            ("end", "$"),
        ])

    def test_rfc4975_chunk_snippet_is_framed_but_invalid(self):
        """The section 5.1 snippet has no paths: both frames are delimited
        (the second one is found) and reported with their own tid."""
        events = self.assertSplitInvariant(RFC4975_CHUNK1_SNIPPET + RFC4975_CHUNK2_SNIPPET)
        self.assertEqual(events, [
            ("invalid", "dkei38sd", "missing To-Path", "SEND", True, 400),
            ("invalid", "dkei38ia", "missing To-Path", "SEND", True, 400),
        ])

    def test_rfc4975_chunks(self):
        events = self.assertSplitInvariant(RFC4975_CHUNK1 + RFC4975_CHUNK2)
        self.assertEqual([e[0] for e in events],
                         ["start", "body", "end", "start", "body", "end"])
        self.assertEqual(events[1], ("body", b"abcd"))
        self.assertEqual(events[2], ("end", "+"))
        self.assertEqual(events[4], ("body", b"EFGH"))
        self.assertEqual(events[5], ("end", "$"))
        self.assertEqual(events[0][2], "dkei38sd")
        self.assertEqual(events[3][2], "dkei38ia")
        self.assertIn(("Byte-Range", "1-*/8"), events[0][4])
        self.assertIn(("Byte-Range", "5-8/8"), events[3][4])

    def test_rfc4975_im_session(self):
        events = self.assertSplitInvariant(RFC4975_IM_SEND + RFC4975_IM_OK + RFC4975_REPORT)
        self.assertEqual(events, [
            request_start("d93kswow", "SEND", [
                ("To-Path", BOB), ("From-Path", ALICE), ("Message-ID", "12339sdqwer"),
                ("Byte-Range", "1-16/16"), ("Content-Type", "text/plain"),
            ], True),
            ("body", b"Hi, I'm Alice!"),
            ("end", "$"),
            response_start("d93kswow", 200, "OK", [("To-Path", ALICE), ("From-Path", BOB)]),
            ("end", "$"),
            request_start("dkei38sd", "REPORT", [
                ("To-Path", ALICE), ("From-Path", BOB), ("Message-ID", "12339sdqwer"),
                ("Byte-Range", "1-106/106"), ("Status", "000 200 OK"),
            ], False),
            ("end", "$"),
        ])

    def test_rfc4976_auth_exchange(self):
        events = self.assertSplitInvariant(
            RFC4976_AUTH + RFC4976_401 + RFC4976_AUTH2 + RFC4976_AUTH_OK)
        self.assertEqual(events[0], request_start(
            "49fh", "AUTH", [("To-Path", RELAY), ("From-Path", ALICE_TLS)], False))
        self.assertEqual(events[2], response_start("49fh", 401, "Unauthorized", [
            ("To-Path", ALICE_TLS), ("From-Path", RELAY),
            ("WWW-Authenticate", 'Digest realm="intra.example.com", qop="auth", '
                                 'nonce="%s"' % NONCE),
        ]))
        self.assertEqual(events[4][:3], ("start", "request", "49fi"))
        self.assertEqual(events[4][4][2][0], "Authorization")
        self.assertEqual(events[6], response_start("49fi", 200, "OK", [
            ("To-Path", ALICE_TLS), ("From-Path", RELAY),
            ("Use-Path", "msrps://intra.example.com:9000/jui787s2f;tcp"),
            ("Expires", "900"),
        ]))
        self.assertEqual([e for e in events if e[0] == "end"], [("end", "$")] * 4)
        self.assertEqual(len(events), 8)

    def test_every_example_alone(self):
        for name, data in RFC_EXAMPLES.items():
            events = self.assertSplitInvariant(data)
            self.assertEqual(events[0][0], "start", name)
            self.assertEqual(events[-1][0], "end", name)

    def test_assembler(self):
        assembler = MessageAssembler()
        out = []
        for i in range(len(RFC4975_SEND + RFC4975_SEND_OK)):
            out.extend(assembler.feed((RFC4975_SEND + RFC4975_SEND_OK)[i:i + 1]))
            if i == len(RFC4975_SEND) - 2:
                self.assertTrue(assembler.in_message)
                self.assertEqual(out, [])
        request, response = out
        self.assertIsInstance(request, Request)
        self.assertEqual(request.body, b"Hey Bob, are you there?")
        self.assertEqual(request.flag, "$")
        self.assertEqual(request.byte_range, (1, 25, 25))
        self.assertIsInstance(response, Response)
        self.assertIsNone(response.body)
        self.assertEqual((response.code, response.comment), (200, "OK"))
        self.assertFalse(assembler.in_message)

    def test_assembler_passes_invalid_messages_and_keeps_flags(self):
        assembler = MessageAssembler()
        out = assembler.feed(RFC4975_CHUNK1_SNIPPET + RFC4975_CHUNK1 + RFC4975_CHUNK2
                             + send(body=b"", flag="#"))
        self.assertEqual([type(m) for m in out], [InvalidMessage, Request, Request, Request])
        self.assertEqual([(m.body, m.flag) for m in out[1:]],
                         [(b"abcd", "+"), (b"EFGH", "$"), (b"", "#")])


# -- end-line rules ----------------------------------------------------------


class EndLineTests(SplitMixin, SynchronousTestCase):
    def body_of(self, data, tid="tid12345"):
        events = self.assertSplitInvariant(data)
        self.assertEqual(events[0][:3], ("start", "request", tid))
        self.assertEqual(events[-1][0], "end")
        bodies = [e[1] for e in events if e[0] == "body"]
        self.assertLessEqual(len(bodies), 1)
        return bodies[0] if bodies else b"", events[-1][1]

    def test_other_transaction_id_is_body(self):
        """OpenSIPS and tshark end the body at any CRLF + 7 dashes."""
        for inner in (b"-------othertid$", b"-------tid1234$", b"-------tid123456$",
                      b"-------TID12345$"):
            body = b"line one\r\n" + inner + b"\r\nline three"
            self.assertEqual(self.body_of(send(body=body)), (body, "$"), inner)

    def test_dashes_without_id_are_body(self):
        for inner in (b"-------", b"-------$", b"--------tid12345$", b"------tid12345$",
                      b"- - - - - - -"):
            body = b"a diff\r\n" + inner + b"\r\nmore"
            self.assertEqual(self.body_of(send(body=body)), (body, "$"), inner)

    def test_id_followed_by_non_flag_is_body(self):
        for inner in (b"-------tid12345X", b"-------tid12345", b"-------tid12345$X",
                      b"-------tid12345$ ", b"-------tid12345\r", b"-------tid12345$\n"):
            body = b"x\r\n" + inner + b"\r\ny"
            self.assertEqual(self.body_of(send(body=body)), (body, "$"), inner)

    def test_end_line_needs_preceding_crlf(self):
        for inner in (b"x-------tid12345$\r\n", b"\n-------tid12345$\r\n",
                      b"\r-------tid12345$\r\n"):
            body = b"start" + inner + b"end"
            self.assertEqual(self.body_of(send(body=body)), (body, "$"), inner)

    def test_tid_ending_in_a_flag_character(self):
        """'+' is both an ident-char and a flag: '-------abc+' CRLF is the
        end-line of tid 'abc', not of 'abc+', wherever the split falls."""
        tid = "abc+"
        for body in (b"-------abc+", b"-------abc+\r\nmore", b"-------abc+\r\n",
                     b"x\r\n-------abc+\r\ny", b"x\r\n-------abc+#x"):
            self.assertEqual(self.body_of(send(tid=tid, body=body, flag="+"), tid),
                             (body, "+"), body)

    def test_no_body(self):
        data = send(body=None)
        events = self.assertSplitInvariant(data)
        self.assertEqual(events, [request_start("tid12345", "SEND", STD_HEADERS, False),
                                  ("end", "$")])

    def test_empty_body_strict(self):
        data = wire("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1",
                    "Content-Type: text/plain", "") + b"\r\n-------tid12345$\r\n"
        self.assertEqual(data, send(body=b""))
        events = self.assertSplitInvariant(data)
        self.assertEqual(events, [
            request_start("tid12345", "SEND",
                          STD_HEADERS + [("Content-Type", "text/plain")], True),
            ("end", "$"),
        ])

    def test_empty_body_lenient(self):
        """Some senders leave out the CRLF of the end-line after an empty body."""
        data = wire("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1",
                    "Content-Type: text/plain", "") + b"-------tid12345#\r\n"
        events = self.assertSplitInvariant(data + send(tid="next1234"))
        self.assertEqual(events[:2], [
            request_start("tid12345", "SEND",
                          STD_HEADERS + [("Content-Type", "text/plain")], True),
            ("end", "#"),
        ])
        self.assertEqual(events[2][2], "next1234")
        self.assertEqual(events[3:], [("body", b"hello"), ("end", "$")])

    def test_body_that_looks_like_a_lenient_end_line(self):
        """Only the exact lenient end-line right after the blank line counts."""
        for body in (b"-------tid12345", b"-------tid12345X\r\n", b"-------tid1234$\r\n",
                     b"-------tid12345$X", b"-------"):
            self.assertEqual(self.body_of(send(body=body)), (body, "$"), body)

    def test_binary_body(self):
        body = bytes(range(256)) * 4 + b"\r\n\r\n\x00\r\r\n\n-------\x00\r\n"
        self.assertEqual(self.body_of(send(body=body)), (body, "$"))

    def test_body_of_line_ends_only(self):
        for body in (b"\r\n", b"\r\n\r\n", b"\n", b"\r", b"\x00"):
            self.assertEqual(self.body_of(send(body=body)), (body, "$"), body)

    def test_utf8_body(self):
        body = "Grüße, 世界, 🙂\r\n-------ünïcode$\r\n".encode("utf-8")
        data = send(body=body, content_type="text/plain; charset=utf-8")
        self.assertEqual(self.body_of(data), (body, "$"))

    def test_flags(self):
        for flag in "+$#":
            self.assertEqual(self.body_of(send(body=b"chunk", flag=flag)), (b"chunk", flag))
            events = self.assertSplitInvariant(send(body=None, flag=flag))
            self.assertEqual(events[-1], ("end", flag))

    def test_bad_flag_is_not_an_end_line(self):
        """'-------tid!' CRLF does not end the body; the real end-line does."""
        body = b"x\r\n-------tid12345!\r\n-------tid12345-\r\n"
        self.assertEqual(self.body_of(send(body=body)), (body, "$"))

    def test_longest_tid_end_line_split_anywhere(self):
        tid = "A" + "b.-+%=9" * 4 + "z" * 3
        self.assertEqual(len(tid), 32)
        body = b"-------" + tid[:-1].encode() + b"$\r\n"
        self.assertEqual(self.body_of(send(tid=tid, body=body), tid), (body, "$"))


# -- head rules ----------------------------------------------------------------


def frame(start, *headers, body=None, tid="tid12345", flag="$"):
    """Arbitrary start line and header lines, end-line for tid."""
    if body is None:
        return wire(start, *headers) + b"-------" + tid.encode() + flag.encode() + b"\r\n"
    return (wire(start, *headers) + b"\r\n" + body + b"\r\n-------" + tid.encode()
            + flag.encode() + b"\r\n")


INVALID_FRAMES = {
    # name: (bytes, reason fragment, method, is_request)
    "missing To-Path": (
        frame("MSRP tid12345 SEND", FROM, "Message-ID: m1"), "missing To-Path", "SEND", True),
    "missing From-Path": (
        frame("MSRP tid12345 SEND", TO, "Message-ID: m1"), "missing From-Path", "SEND", True),
    "no headers": (frame("MSRP tid12345 SEND"), "missing To-Path", "SEND", True),
    "swapped paths": (
        frame("MSRP tid12345 SEND", FROM, TO, "Message-ID: m1"),
        "To-Path must be the first header", "SEND", True),
    "To-Path second": (
        frame("MSRP tid12345 SEND", "Message-ID: m1", TO, FROM),
        "To-Path must be the first header", "SEND", True),
    "From-Path third": (
        frame("MSRP tid12345 SEND", TO, "Message-ID: m1", FROM),
        "From-Path must be the second header", "SEND", True),
    "response paths swapped": (
        frame("MSRP tid12345 200 OK", FROM, TO), "To-Path must be the first header", None, False),
    "duplicate To-Path": (
        frame("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1", TO),
        "duplicate To-Path", "SEND", True),
    "duplicate From-Path": (
        frame("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1",
              "from-path: msrp://x.example.com/y;tcp"),
        "duplicate from-path", "SEND", True),
    "duplicate Message-ID": (
        frame("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1", "MESSAGE-ID: m2"),
        "duplicate MESSAGE-ID", "SEND", True),
    "duplicate Byte-Range": (
        frame("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1", "Byte-Range: 1-1/1",
              "Content-Type: text/plain", "Byte-Range: 1-1/1", body=b"x"),
        "duplicate Byte-Range", "SEND", True),
    "body without Content-Type": (
        frame("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1", body=b"hello"),
        "body without Content-Type", "SEND", True),
    "empty body without Content-Type": (
        frame("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1", body=b""),
        "body without Content-Type", "SEND", True),
    "SEND without Message-ID": (
        frame("MSRP tid12345 SEND", TO, FROM, "Content-Type: text/plain", body=b"x"),
        "missing Message-ID", "SEND", True),
    "REPORT without Message-ID": (
        frame("MSRP tid12345 REPORT", TO, FROM, "Status: 000 200 OK"),
        "missing Message-ID", "REPORT", True),
    "extension method without Message-ID": (
        frame("MSRP tid12345 NICKNAME", TO, FROM), "missing Message-ID", "NICKNAME", True),
    "lower-case method": (
        frame("MSRP tid12345 send", TO, FROM, "Message-ID: m1"), "upper-case", "send", True),
    "mixed-case method": (
        frame("MSRP tid12345 Send", TO, FROM, "Message-ID: m1"), "upper-case", "Send", True),
    "method with a digit": (
        frame("MSRP tid12345 SEND2", TO, FROM, "Message-ID: m1"), "upper-case", "SEND2", True),
    "junk after the method": (
        frame("MSRP tid12345 SEND now", TO, FROM, "Message-ID: m1"),
        "malformed start line", None, True),
    "two spaces before the method": (
        frame("MSRP tid12345  SEND", TO, FROM, "Message-ID: m1"),
        "malformed start line", None, True),
    "header folding": (
        frame("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1",
              "Authorization: Digest a=1,", " b=2"), "folding", "SEND", True),
    "header folding with a tab": (
        frame("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1", "X-Note: a", "\tb: c"),
        "folding", "SEND", True),
    "bare LF in a header": (
        frame("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1\nX-Evil: 1"),
        "bare CR or LF", "SEND", True),
    "bare CR in a header": (
        frame("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1\rX-Evil: 1"),
        "bare CR or LF", "SEND", True),
    "CR at the end of the header block": (
        frame("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1", "Content-Type: text/plain\r",
              body=b"x"),
        "bare CR or LF", "SEND", True),
    "bare LF in the start line": (
        frame("MSRP tid12345 SEND\n" + TO, FROM, "Message-ID: m1"),
        "malformed start line", None, True),
    "invalid UTF-8 in a header": (
        wire("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1")[:-2] + b"\xff\xfe\r\n"
        + b"-------tid12345$\r\n", "UTF-8", "SEND", True),
    "overlong UTF-8 in a header": (
        wire("MSRP tid12345 SEND", TO, FROM)[:-2] + b"\xc0\xaf\r\n"
        + b"-------tid12345$\r\n", "UTF-8", "SEND", True),
    "header line like an end-line with a bad flag": (
        frame("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1", "-------tid12345X: y"),
        "invalid header name", "SEND", True),
    "header line like an end-line without CRLF after the flag": (
        frame("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1", "-------tid12345$X: y"),
        "invalid header name", "SEND", True),
    "header line like another tid's end-line": (
        frame("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1", "-------tid54321$"),
        "malformed header line", "SEND", True),
    "header without colon": (
        frame("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1", "NoColonHere"),
        "malformed header line", "SEND", True),
    "header name with a space": (
        frame("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1", "Bad Name: x"),
        "invalid header name", "SEND", True),
    "empty header name": (
        frame("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1", ": x"),
        "invalid header name", "SEND", True),
    "response with a body": (
        frame("MSRP tid12345 200 OK", TO, FROM, "Content-Type: text/plain", body=b"oops"),
        "response must not carry a body", None, False),
    "response with an empty body": (
        frame("MSRP tid12345 200 OK", TO, FROM, "Content-Type: text/plain", body=b""),
        "response must not carry a body", None, False),
    "response comment not UTF-8": (
        frame("MSRP tid12345 200 OK", TO, FROM).replace(b"OK", b"O\xffK", 1),
        "comment is not valid UTF-8", None, False),
}


class HeadRuleTests(SplitMixin, SynchronousTestCase):
    def test_invalid_frames(self):
        for name, (data, reason, method, is_request) in INVALID_FRAMES.items():
            events = self.assertSplitInvariant(data)
            self.assertEqual(len(events), 1, name)
            kind, tid, got_reason, got_method, got_is_request, code = events[0]
            self.assertEqual(kind, "invalid", name)
            self.assertEqual(tid, "tid12345", name)
            self.assertIn(reason, got_reason, name)
            self.assertEqual(got_method, method, name)
            self.assertEqual(got_is_request, is_request, name)
            self.assertEqual(code, 400, name)

    def test_parser_goes_on_after_an_invalid_message(self):
        """The frame after an invalid one is parsed whole and right."""
        follow = send(tid="next5678", body=b"after\r\n-------tid12345$\r\n")
        expected = parse(follow)
        self.assertEqual(expected[1:], [("body", b"after\r\n-------tid12345$\r\n"),
                                        ("end", "$")])
        for name, (data, _, _, _) in INVALID_FRAMES.items():
            events = self.assertSplitInvariant(data + follow + data)
            self.assertEqual(events[0][0], "invalid", name)
            self.assertEqual(events[1:-1], expected, name)
            self.assertEqual(events[-1], events[0], name)

    def test_invalid_message_event(self):
        [ev] = Parser().feed(INVALID_FRAMES["lower-case method"][0])
        self.assertIsInstance(ev, InvalidMessage)
        self.assertIsInstance(ev.error, MessageError)
        self.assertEqual((ev.error.tid, ev.error.method, ev.error.code), ("tid12345", "send", 400))
        self.assertIn("tid12345", repr(ev))

    def test_invalid_utf8_keeps_the_leading_paths(self):
        """A head that is not UTF-8 still hands over its To-Path and
        From-Path (ASCII URIs), so that the 400 can be addressed; a bad
        byte inside a path, or paths out of place, hand over none."""
        [ev] = Parser().feed(INVALID_FRAMES["invalid UTF-8 in a header"][0])
        self.assertEqual(ev.error.headers, [("To-Path", TO.split(": ", 1)[1]),
                                            ("From-Path", FROM.split(": ", 1)[1])])
        for head, kept in (
                (b"To-Path: msrp://\xc3\x28.invalid:2855/s;tcp\r\n" + FROM.encode(), 0),
                (TO.encode() + b"\r\nFrom-Path: msrp://a.invalid/\xff;tcp", 1),
                (FROM.encode() + b"\r\n" + TO.encode() + b"\r\nX: \xff", 0),
                (TO.encode() + b"\r\nX-\xff: 1\r\n" + FROM.encode(), 1)):
            [ev] = Parser().feed(b"MSRP tid12345 SEND\r\n" + head + b"\r\n-------tid12345$\r\n")
            self.assertIn("not valid UTF-8", ev.error.reason)
            self.assertEqual([name for name, _ in ev.error.headers], ["To-Path", "From-Path"][:kept], head)

    def test_streamed_invalid_body_is_not_emitted(self):
        """The body of an invalid frame is consumed silently, not streamed."""
        parser = Parser()
        data = INVALID_FRAMES["body without Content-Type"][0]
        events = parser.feed(data[:-20])
        self.assertEqual(events, [])
        self.assertTrue(parser.in_body)
        self.assertEqual(summarize(parser.feed(data[-20:]))[0][0], "invalid")

    def test_message_id_not_needed(self):
        for data in (frame("MSRP tid12345 AUTH", TO, FROM),
                     frame("MSRP tid12345 200 OK", TO, FROM),
                     frame("MSRP tid12345 481", TO, FROM)):
            events = self.assertSplitInvariant(data)
            self.assertEqual(events[0][0], "start")

    def test_response_comment(self):
        for start, comment in (("MSRP tid12345 200 OK", "OK"), ("MSRP tid12345 200", None),
                               ("MSRP tid12345 423 Interval Out-of-Bounds",
                                "Interval Out-of-Bounds"),
                               ("MSRP tid12345 200 Très bien", "Très bien")):
            events = self.assertSplitInvariant(frame(start, TO, FROM))
            self.assertEqual(events[0][4], comment)

    def test_duplicates_of_other_headers_are_kept(self):
        data = frame("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1", "X-Tag: 1",
                     "x-tag: 2", "Content-Type: text/plain", body=b"x")
        parser = MessageAssembler()
        [msg] = parser.feed(data)
        self.assertEqual(msg.headers.get_all("X-TAG"), ["1", "2"])
        self.assertEqual(msg.headers["X-Tag"], "1")

    def test_header_names_are_case_insensitive(self):
        data = frame("MSRP tid12345 SEND", "TO-PATH: " + TO[9:], "from-path: " + FROM[11:],
                     "message-id: m1", "content-type: text/plain", body=b"x")
        [msg] = MessageAssembler().feed(data)
        self.assertEqual(msg.message_id, "m1")
        self.assertEqual(msg.content_type, "text/plain")

    def test_header_values_are_trimmed(self):
        data = frame("MSRP tid12345 SEND", TO, FROM, "Message-ID:  m1 \t", "X-Empty:",
                     "X-Tight:v")
        [msg] = MessageAssembler().feed(data)
        self.assertEqual(msg.headers["Message-ID"], "m1")
        self.assertEqual(msg.headers["X-Empty"], "")
        self.assertEqual(msg.headers["X-Tight"], "v")

    def test_transaction_id_lengths(self):
        """ident = ALPHANUM 3*31ident-char: 4 to 32 characters."""
        for tid in ("abcd", "a" * 32, "1.-+", "Z%=9", "a.b-c+d%e=f"):
            events = self.assertSplitInvariant(send(tid=tid))
            self.assertEqual(events[0][2], tid)
            self.assertEqual(events[-1], ("end", "$"))

    def test_transaction_id_outside_the_grammar_is_a_framing_error(self):
        """Without a valid tid the end-line cannot be trusted: framing error."""
        for tid in ("abc", "a" * 33, ".abc", "-abcd", "+abcd", "ab_cd", "ab/cd", "ab:cd",
                    "äbcd", ""):
            data = send(tid=tid)
            self.assertRaises(FramingError, Parser().feed, data)
            parser = Parser()
            with self.assertRaises(FramingError, msg=tid):
                for i in range(len(data)):
                    parser.feed(data[i:i + 1])

    def test_start_line_shapes_that_cannot_be_framed(self):
        for start in (b"MSRP tid12345\r\n", b"MSRP  tid12345 SEND\r\n", b"MSRP\r\n",
                      b"MSRP tid12345\tSEND\r\n", b"MSRP tid12345\r\nSEND\r\n"):
            self.assertRaises(FramingError, Parser().feed, start + wire(TO, FROM))


# -- limits and dead parser ------------------------------------------------------


class LimitTests(SynchronousTestCase):
    def assertDead(self, parser):
        for data in (b"", send(), b"MSRP "):
            self.assertRaises(FramingError, parser.feed, data)

    def test_max_start_line(self):
        long_start = "MSRP tid12345 " + "A" * 60
        data = frame(long_start, TO, FROM, "Message-ID: m1")
        parser = Parser(max_start_line=50)
        self.assertRaises(FramingError, parser.feed, data)
        self.assertDead(parser)
        # Without its CRLF yet: refused as soon as it is too long.
        parser = Parser(max_start_line=50)
        self.assertEqual(parser.feed(b"MSRP tid12345 " + b"A" * 36), [])
        self.assertRaises(FramingError, parser.feed, b"A")
        self.assertDead(parser)
        # At the limit it is fine (60 capital letters are a valid method).
        events = summarize(Parser(max_start_line=len(long_start)).feed(data))
        self.assertEqual(events[0][:4], ("start", "request", "tid12345", "A" * 60))
        self.assertEqual(events[-1], ("end", "$"))

    def test_default_max_start_line(self):
        parser = Parser()
        parser.feed(b"MSRP " + b"x" * 4000)
        self.assertRaises(FramingError, parser.feed, b"x" * 200)

    def test_max_header_block(self):
        headers = ["X-Filler-%d: %s" % (i, "v" * 40) for i in range(10)]
        data = frame("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1", *headers)
        parser = Parser(max_header_block=200)
        self.assertRaises(FramingError, parser.feed, data)
        self.assertDead(parser)
        # Fed slowly, with the end of the head never arriving.
        parser = Parser(max_header_block=200, max_start_line=100)
        with self.assertRaises(FramingError):
            for i in range(len(data) - 20):
                parser.feed(data[i:i + 1])
        self.assertLess(i, 320)
        self.assertDead(parser)
        events = summarize(Parser(max_header_block=len(data)).feed(data))
        self.assertEqual(events[-1], ("end", "$"))

    def test_max_body(self):
        self.assertEqual(parse(send(body=b"x" * 10), max_body=10)[-2:],
                         [("body", b"x" * 10), ("end", "$")])
        parser = Parser(max_body=10)
        self.assertRaises(FramingError, parser.feed, send(body=b"x" * 11))
        self.assertDead(parser)
        # Streamed: refused before the end-line arrives.
        parser = Parser(max_body=1000)
        parser.feed(send(body=b"y" * 999)[:-30])
        with self.assertRaises(FramingError):
            parser.feed(b"y" * 100)
        self.assertDead(parser)
        # An invalid frame's body counts too.
        parser = Parser(max_body=10)
        self.assertRaises(FramingError, parser.feed,
                          INVALID_FRAMES["response with a body"][0].replace(b"oops", b"o" * 11))

    def test_max_body_zero_is_unlimited(self):
        self.assertEqual(DEFAULT_MAX_BODY, 16 * 1024 * 1024)
        body = b"z" * (DEFAULT_MAX_BODY + 1)
        data = send(body=body)
        self.assertRaises(FramingError, Parser().feed, data)
        events = Parser(max_body=0).feed(data)
        self.assertEqual(sum(len(e.data) for e in events if type(e) is BodyData), len(body))
        self.assertEqual(type(events[-1]), MessageEnd)

    def test_garbage_prefix_fails_fast(self):
        for garbage in (b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
                        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                        b"msrp tid12345 SEND\r\n", b"MSRPtid12345 SEND\r\n",
                        b"\r\nMSRP tid12345 SEND\r\n", b" MSRP tid12345 SEND\r\n"):
            parser = Parser()
            with self.assertRaises(FramingError):
                for i in range(len(garbage)):
                    parser.feed(garbage[i:i + 1])
            self.assertLess(i, 5, garbage)
            self.assertDead(parser)
            self.assertRaises(FramingError, Parser().feed, garbage)

    def test_garbage_after_a_message(self):
        parser = Parser()
        self.assertEqual(len(parser.feed(send())), 3)
        self.assertRaises(FramingError, parser.feed, b"HTTP/1.1 200 OK\r\n")
        self.assertDead(parser)

    def test_error_message_is_specific(self):
        e = self.assertRaises(FramingError, Parser().feed, b"GET / HTTP/1.1\r\n")
        self.assertIn("'MSRP '", str(e))
        self.assertIn("GET /", str(e))
        e = self.assertRaises(FramingError, Parser(max_body=3).feed, send(body=b"abcd"))
        self.assertIn("body exceeds 3 bytes", str(e))
        e = self.assertRaises(FramingError, Parser().feed, b"MSRP abc SEND\r\n")
        self.assertIn("invalid start line", str(e))
        parser = Parser(max_body=3)
        self.assertRaises(FramingError, parser.feed, send(body=b"abcd"))
        e = self.assertRaises(FramingError, parser.feed, send())
        self.assertIn("earlier error", str(e))
        self.assertIn("body exceeds 3 bytes", str(e))


# -- streaming and work bounds ------------------------------------------------------


class CountingBytes(bytes):
    """bytes whose find() adds the length it may scan to a shared counter."""

    counter = None

    def find(self, sub, start=0, end=None):
        stop = len(self) if end is None else min(end, len(self))
        self.counter[0] += 1
        self.counter[1] += max(0, stop - start)
        return bytes.find(self, sub, start, end)


class CountingBuffer(bytearray):
    counter = None

    def find(self, sub, start=0, end=None):
        stop = len(self) if end is None else min(end, len(self))
        self.counter[0] += 1
        self.counter[1] += max(0, stop - start)
        return bytearray.find(self, sub, start, end)


def counted_feed(pieces):
    """Feed pieces, counting find() calls and the bytes they may scan."""
    counter = [0, 0]
    CountingBytes.counter = CountingBuffer.counter = counter
    parser = Parser(max_body=0)
    events = []
    for piece in pieces:
        if parser._buf and type(parser._buf) is not CountingBuffer:
            parser._buf = CountingBuffer(parser._buf)
        events.extend(parser.feed(CountingBytes(piece)))
    return events, counter


class StreamingTests(SynchronousTestCase):
    def test_large_body_is_streamed(self):
        body = bytes(range(256)) * 4096
        self.assertEqual(len(body), 1024 * 1024)
        data = send(body=body)
        piece = 64 * 1024
        parser = Parser()
        seen_start = False
        body_pieces = []
        ends = []
        for offset in range(0, len(data), piece):
            events = parser.feed(data[offset:offset + piece])
            for ev in events:
                if type(ev) is MessageStart:
                    self.assertEqual(offset, 0)
                    seen_start = True
                    self.assertTrue(ev.message.has_body)
                elif type(ev) is BodyData:
                    self.assertTrue(seen_start)
                    self.assertLessEqual(len(ev.data), piece)
                    body_pieces.append(ev.data)
                elif type(ev) is MessageEnd:
                    ends.append(ev.flag)
            if offset + piece < len(data) - 100:
                # Each feed hands over all of its body bytes but the few that
                # may begin the end-line.
                self.assertTrue(parser.in_body)
                self.assertTrue(parser.in_message)
                self.assertLess(len(parser._buf), 64)
                head_and_end = len(data) - len(body)
                self.assertGreater(sum(map(len, body_pieces)), offset + piece - head_and_end - 64)
                self.assertEqual(ends, [])
        self.assertEqual(b"".join(body_pieces), body)
        self.assertEqual(ends, ["$"])
        self.assertFalse(parser.in_message)
        self.assertFalse(parser.in_body)

    def test_buffer_stays_small_with_longest_tid(self):
        tid = "T" * 32
        body = (b"\r\n-------" + b"T" * 31 + b"$\r\n") * 500
        data = send(tid=tid, body=body)
        parser = Parser()
        for i in range(0, len(data), 7):
            parser.feed(data[i:i + 7])
            if parser.in_body:
                self.assertLess(len(parser._buf), 64)

    def test_one_byte_body_work_is_linear(self):
        body = bytes(range(32, 127)) * 2200  # ~200 KB, no CR, nothing like an end-line
        data = send(body=body)
        events, (calls, scanned) = counted_feed(data[i:i + 1] for i in range(len(data)))
        self.assertEqual(b"".join(e.data for e in events if type(e) is BodyData), body)
        self.assertEqual(type(events[-1]), MessageEnd)
        # Every byte is looked at a bounded number of times (about twice the
        # 17-byte needle here); re-scanning what is buffered would be ~n/2
        # times per byte.
        self.assertGreater(calls, len(data))
        self.assertLess(scanned, 200 * len(data))

    def test_one_byte_head_work_is_linear(self):
        headers = ["X-H%d: %s" % (i, "v" * 50) for i in range(1000)]  # ~60 KB
        data = frame("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1", *headers,
                     "Content-Type: text/plain", body=b"hi")
        events, (calls, scanned) = counted_feed(data[i:i + 1] for i in range(len(data)))
        self.assertEqual(len(summarize(events)[0][4]), 1004)
        self.assertGreater(calls, len(data))
        self.assertLess(scanned, 200 * len(data))

    def test_large_pieces_are_scanned_about_once(self):
        body = bytes(range(256)) * 4096
        data = send(body=body)
        events, (calls, scanned) = counted_feed(
            data[i:i + 65536] for i in range(0, len(data), 65536))
        self.assertEqual(b"".join(e.data for e in events if type(e) is BodyData), body)
        self.assertLess(calls, 100)
        self.assertLess(scanned, 2 * len(data))

    def test_work_counter_sees_rescanning(self):
        """The counter would catch a parser that searched its whole buffer
        again on each feed: here the head is re-sent from scratch."""
        data = send(body=None)
        counter = [0, 0]
        CountingBytes.counter = counter
        for i in range(1, len(data)):
            Parser().feed(CountingBytes(data[:i]))
        self.assertGreater(counter[1], len(data) ** 2 / 4)


# -- properties --------------------------------------------------------------------

FRAGMENTS = [
    b"MSRP ", b"MSRP tid12345 ", b"tid12345", b"abc", b" SEND", b" AUTH", b" send",
    b" 200 OK", b" 200", b"\r\n", b"\r", b"\n", b"\r\n\r\n", b"-------", b"-------tid12345",
    b"$", b"+", b"#", b"\r\n-------tid12345$\r\n", (TO + "\r\n").encode(),
    (FROM + "\r\n").encode(), b"Message-ID: m1\r\n", b"Content-Type: text/plain\r\n",
    b"Byte-Range: 1-*/*\r\n", b" folded\r\n", b"\xff", b"\x00", b":", b"To-Path: ",
]


def garbage():
    pieces = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=12)),
                      max_size=40).map(b"".join)
    valid = st.sampled_from([send(), send(body=None), RFC4975_SEND + RFC4975_SEND_OK,
                             RFC4976_401, send(body=b"")])

    def mutate(args):
        data, edits = args
        data = bytearray(data)
        for pos, byte, kind in edits:
            pos %= len(data) + 1
            if kind == 0:
                data[pos:pos + 1] = b""
            elif kind == 1:
                data[pos:pos] = bytes([byte])
            elif pos < len(data):
                data[pos] = byte
        return bytes(data)

    edits = st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 255), st.integers(0, 2)),
                     max_size=4)
    mutated = st.tuples(valid, edits).map(mutate)
    return st.one_of(pieces, mutated, st.tuples(valid, pieces).map(b"".join),
                     st.binary(max_size=200))


class BoundedParser(Parser):
    """Fails instead of hanging: every step must consume bytes or stop."""

    steps = 0
    limit = 0

    def _parse_head(self, buf, pos, events):
        self.steps += 1
        assert self.steps <= self.limit, "parser does not progress"
        return Parser._parse_head(self, buf, pos, events)

    def _parse_body(self, buf, pos, events):
        self.steps += 1
        assert self.steps <= self.limit, "parser does not progress"
        return Parser._parse_body(self, buf, pos, events)


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=300, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(garbage(), st.data())
    def test_garbage(self, data, draw):
        cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=6)))
        pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
        parser = BoundedParser(max_header_block=300, max_start_line=100, max_body=300)
        events = []
        failed = False
        for piece in pieces:
            parser.limit = parser.steps + 4 * (len(piece) + len(parser._buf)) + 8
            try:
                events.extend(parser.feed(piece))
            except FramingError:
                failed = True
                break
        if failed:
            self.assertRaises(FramingError, parser.feed, b"MSRP ")
        for ev in events:
            if type(ev) is InvalidMessage:
                self.assertIsInstance(ev.error, MessageError)
                self.assertIsNotNone(abnf.IDENT_STR_RE.match(ev.error.tid), ev)
                self.assertEqual(ev.error.code, 400)
        # Whatever came out does not depend on the cuts.
        whole = Parser(max_header_block=300, max_start_line=100, max_body=300)
        try:
            whole_events = whole.feed(data)
        except FramingError:
            self.assertTrue(failed)
        else:
            self.assertFalse(failed)
            self.assertEqual(summarize(whole_events), summarize(events))


class FramingErrorEventsTests(SynchronousTestCase):
    def test_messages_before_garbage_are_kept(self):
        # A good SEND followed by garbage in the same read: the SEND is not
        # lost, it travels on the error for the caller to dispatch first.
        parser = Parser()
        try:
            parser.feed(send() + b"GARBAGE\r\n")
        except FramingError as e:
            events = summarize(e.events)
        else:
            self.fail("no FramingError")
        self.assertEqual(events[0][:4], ("start", "request", "tid12345", "SEND"))
        self.assertEqual(events[-1], ("end", "$"))


class LenientNoBodyTests(SynchronousTestCase):
    def test_blank_line_before_end_line_without_content_type_is_no_body(self):
        # Some stacks end a REPORT's headers with a blank line although no
        # body follows; without Content-Type that is a message with no body.
        data = wire("MSRP tid12345 REPORT", TO, FROM, "Message-ID: m1", "Status: 000 200 OK") + \
            b"\r\n-------tid12345$\r\n"
        for i in range(len(data) + 1):
            events, _ = parse_chunks([data[:i], data[i:]])
            self.assertEqual(events[0][:4], ("start", "request", "tid12345", "REPORT"), i)
            self.assertEqual(events[-1], ("end", "$"), i)

    def test_same_form_with_content_type_is_an_empty_body(self):
        data = wire("MSRP tid12345 SEND", TO, FROM, "Message-ID: m1", "Content-Type: text/plain") + \
            b"\r\n-------tid12345$\r\n"
        events, _ = parse_chunks([data])
        self.assertEqual(events[-1], ("end", "$"))
        self.assertFalse(any(e[0] == "invalid" for e in events))
