"""Byte-exact serialization, refusals, and serialize -> parse round trips."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from msrp_twisted.core.errors import MSRPError, SerializationError
from msrp_twisted.core.headers import SINGLETON_HEADERS
from msrp_twisted.core.message import Request, Response
from msrp_twisted.core.parser import MessageAssembler, Parser
from msrp_twisted.core.serializer import check_body, end_line, head, path_response, serialize

from .test_parser import (
    ALICE,
    ALICE_TLS,
    BOB,
    NONCE,
    RELAY,
    RFC_EXAMPLES,
    RFC4975_CHUNK1,
    RFC4975_CHUNK2,
    RFC4975_IM_OK,
    RFC4975_IM_SEND,
    RFC4975_REPORT,
    RFC4975_SEND,
    RFC4975_SEND_OK,
    RFC4976_401,
    RFC4976_AUTH,
    RFC4976_AUTH2,
    RFC4976_AUTH_OK,
)

BILOXI = "msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp"
ATLANTA = "msrp://atlanta.example.com:7654/jshA7weztas;tcp"
TO = ("To-Path", "msrp://b.example.com:2855/s2;tcp")
FROM = ("From-Path", "msrp://a.example.com:2855/s1;tcp")


def parse_all(data, cuts=()):
    assembler = MessageAssembler(Parser(max_body=0))
    out = []
    cuts = sorted(cuts)
    for a, b in zip([0] + cuts, cuts + [len(data)]):
        out.extend(assembler.feed(data[a:b]))
    assert not assembler.in_message
    return out


class RFCExampleTests(SynchronousTestCase):
    def test_rfc4975_send_and_ok(self):
        send = Request("a786hjs2", "SEND", [
            ("To-Path", BILOXI), ("From-Path", ATLANTA), ("Message-ID", "87652491"),
            ("Byte-Range", "1-25/25"), ("Content-Type", "text/plain"),
        ], b"Hey Bob, are you there?")
        self.assertEqual(serialize(send), RFC4975_SEND)
        ok = Response("a786hjs2", 200, "OK", [("To-Path", ATLANTA), ("From-Path", BILOXI)])
        self.assertEqual(serialize(ok), RFC4975_SEND_OK)
        self.assertEqual(ok.to_bytes(), RFC4975_SEND_OK)

    def test_rfc4975_chunks(self):
        common = [("To-Path", BOB), ("From-Path", ALICE), ("Message-ID", "4564dpWd")]
        first = Request("dkei38sd", "SEND", common + [
            ("Byte-Range", "1-*/8"), ("Content-Type", "text/plain")], b"abcd", "+")
        second = Request("dkei38ia", "SEND", common + [
            ("Byte-Range", "5-8/8"), ("Content-Type", "text/plain")], b"EFGH")
        self.assertEqual(serialize(first), RFC4975_CHUNK1)
        self.assertEqual(serialize(second), RFC4975_CHUNK2)

    def test_rfc4975_im_and_report(self):
        send = Request("d93kswow", "SEND", [
            ("To-Path", BOB), ("From-Path", ALICE), ("Message-ID", "12339sdqwer"),
            ("Byte-Range", "1-16/16"), ("Content-Type", "text/plain"),
        ], b"Hi, I'm Alice!")
        self.assertEqual(serialize(send), RFC4975_IM_SEND)
        ok = Response("d93kswow", 200, "OK", [("To-Path", ALICE), ("From-Path", BOB)])
        self.assertEqual(serialize(ok), RFC4975_IM_OK)
        report = Request("dkei38sd", "REPORT", [
            ("To-Path", ALICE), ("From-Path", BOB), ("Message-ID", "12339sdqwer"),
            ("Byte-Range", "1-106/106"), ("Status", "000 200 OK"),
        ])
        self.assertEqual(serialize(report), RFC4975_REPORT)

    def test_rfc4976_auth_exchange(self):
        auth = Request("49fh", "AUTH", [("To-Path", RELAY), ("From-Path", ALICE_TLS)])
        self.assertEqual(serialize(auth), RFC4976_AUTH)
        challenge = Response("49fh", 401, "Unauthorized", [
            ("To-Path", ALICE_TLS), ("From-Path", RELAY),
            ("WWW-Authenticate",
             'Digest realm="intra.example.com", qop="auth", nonce="%s"' % NONCE),
        ])
        self.assertEqual(serialize(challenge), RFC4976_401)
        auth2 = Request("49fi", "AUTH", [
            ("To-Path", RELAY), ("From-Path", ALICE_TLS),
            ("Authorization",
             'Digest username="Alice", realm="intra.example.com", nonce="%s", qop=auth, '
             'nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1"'
             % NONCE),
        ])
        self.assertEqual(serialize(auth2), RFC4976_AUTH2)
        ok = Response("49fi", 200, "OK", [
            ("To-Path", ALICE_TLS), ("From-Path", RELAY),
            ("Use-Path", "msrps://intra.example.com:9000/jui787s2f;tcp"), ("Expires", "900"),
        ])
        self.assertEqual(serialize(ok), RFC4976_AUTH_OK)

    def test_parsed_examples_serialize_back(self):
        for name, data in RFC_EXAMPLES.items():
            [msg] = parse_all(data)
            self.assertEqual(serialize(msg), data, name)

    def test_streamed_form(self):
        """head() + body pieces + end_line() is what serialize() writes."""
        [msg] = parse_all(RFC4975_SEND)
        pieces = [msg.body[:5], msg.body[5:]]
        streamed = head(msg, has_body=True) + b"".join(pieces) + end_line(msg.tid, "$")
        self.assertEqual(streamed, RFC4975_SEND)
        self.assertTrue(head(msg, True).endswith(b"Content-Type: text/plain\r\n\r\n"))
        self.assertEqual(end_line("abcd", "+"), b"\r\n-------abcd+\r\n")
        self.assertEqual(end_line("abcd", "#", after_body=False), b"-------abcd#\r\n")
        [report] = parse_all(RFC4975_REPORT)
        self.assertEqual(head(report) + end_line(report.tid, "$", False), RFC4975_REPORT)

    def test_empty_body_and_flags(self):
        msg = Request("tid12345", "SEND", [TO, FROM, ("Message-ID", "m"),
                                            ("Content-Type", "text/plain")], b"", "#")
        data = serialize(msg)
        self.assertTrue(data.endswith(b"text/plain\r\n\r\n\r\n-------tid12345#\r\n"))
        [back] = parse_all(data)
        self.assertEqual((back.body, back.flag), (b"", "#"))
        for flag in "+$#":
            msg = Request("tid12345", "SEND", [TO, FROM, ("Message-ID", "m")], None, flag)
            self.assertTrue(serialize(msg).endswith(b"s1;tcp\r\nMessage-ID: m\r\n-------tid12345"
                                                    + flag.encode() + b"\r\n"))

    def test_body_types(self):
        for body in (bytearray(b"abc"), memoryview(b"abc")):
            msg = Request("tid12345", "SEND", [TO, FROM, ("Message-ID", "m"),
                                                ("Content-Type", "text/plain")], body)
            self.assertEqual(parse_all(serialize(msg))[0].body, b"abc")

    def test_response_without_comment(self):
        msg = Response("tid12345", 481, None, [TO, FROM])
        self.assertTrue(serialize(msg).startswith(b"MSRP tid12345 481\r\nTo-Path"))
        self.assertTrue(serialize(Response("tid12345", 7, "", [TO, FROM]))
                        .startswith(b"MSRP tid12345 007\r\n"))


class RefusalTests(SynchronousTestCase):
    def assertRefused(self, message, fragment):
        e = self.assertRaises(SerializationError, serialize, message)
        self.assertIsInstance(e, MSRPError)
        self.assertIsInstance(e, ValueError)
        self.assertIn(fragment, str(e))
        return e

    def send(self, tid="tid12345", headers=(("Message-ID", "m"), ("Content-Type", "text/plain")),
             body=b"hi", method="SEND"):
        return Request(tid, method, [TO, FROM] + list(headers), body)

    def test_bad_transaction_id(self):
        for tid in ("abc", "a" * 33, ".abcd", "-abcd", "ab cd", "ab_cd", "abcd\r\n", "", None,
                    b"abcd", "äbcd"):
            self.assertRefused(self.send(tid=tid), "invalid transaction id")
            self.assertRefused(Response(tid, 200, "OK", [TO, FROM]), "invalid transaction id")
        for tid in ("abcd", "a" * 32, "1.-+%=ab"):
            self.assertTrue(serialize(self.send(tid=tid)).startswith(b"MSRP " + tid.encode()))

    def test_bad_method(self):
        for method in ("send", "Send", "SEND2", "SE ND", "", None, "SEND\r\n"):
            self.assertRefused(self.send(method=method), "invalid method")

    def test_body_without_content_type(self):
        self.assertRefused(self.send(headers=[("Message-ID", "m")]), "Content-Type")
        self.assertRefused(self.send(headers=[("Message-ID", "m")], body=b""), "Content-Type")
        e = self.assertRaises(SerializationError, head, self.send(headers=[("Message-ID", "m")]),
                              True)
        self.assertIn("Content-Type", str(e))

    def test_cr_lf_in_header(self):
        for value in ("a\r\nX-Injected: 1", "a\rb", "a\nb", "\r\n"):
            self.assertRefused(self.send(headers=[("Message-ID", "m"), ("Content-Type", value)]),
                               "CR or LF")
            self.assertRefused(self.send(headers=[("Message-ID", "m"), ("X-Note", value),
                                                  ("Content-Type", "text/plain")]), "CR or LF")
        self.assertRefused(Request("tid12345", "SEND", [("To-Path", "x\r\ny"), FROM,
                                                         ("Message-ID", "m")]), "CR or LF")

    def test_bad_header_name_or_value(self):
        for name in ("Bad Name", "X:Y", "", "1abc", "-abc", "Ä"):
            self.assertRefused(self.send(headers=[("Message-ID", "m"), (name, "v"),
                                                  ("Content-Type", "text/plain")]),
                               "invalid header name")
        self.assertRefused(self.send(headers=[("Message-ID", "m"), ("X-Num", 5),
                                              ("Content-Type", "text/plain")]), "must be str")

    def test_not_encodable(self):
        """A lone surrogate (say from surrogateescape) cannot go on the wire."""
        self.assertRefused(self.send(headers=[("Message-ID", "m\udcff"),
                                              ("Content-Type", "text/plain")]), "UTF-8")
        self.assertRefused(Response("tid12345", 200, "O\udcffK", [TO, FROM]), "UTF-8")

    def test_cr_lf_in_comment(self):
        for comment in ("OK\r\nX: y", "O\rK", "O\nK"):
            self.assertRefused(Response("tid12345", 200, comment, [TO, FROM]), "CR or LF")

    def test_bad_status_code(self):
        for code in (1000, -1, "200", None, 200.0):
            self.assertRefused(Response("tid12345", code, "OK", [TO, FROM]), "invalid status code")

    def test_request_without_message_id(self):
        for method in ("SEND", "REPORT", "NICKNAME"):
            self.assertRefused(
                Request("tid12345", method, [TO, FROM, ("Status", "000 200 OK")]),
                "a %s request needs a Message-ID" % method)
        self.assertEqual(serialize(Request("abcd", "AUTH", [TO, FROM])),
                         b"MSRP abcd AUTH\r\nTo-Path: msrp://b.example.com:2855/s2;tcp\r\n"
                         b"From-Path: msrp://a.example.com:2855/s1;tcp\r\n-------abcd$\r\n")
        serialize(Response("abcd", 200, "OK", [TO, FROM]))

    def test_paths_first(self):
        for headers in ([FROM, TO], [TO], [], [("Message-ID", "m"), TO, FROM],
                        [TO, ("Message-ID", "m"), FROM]):
            self.assertRefused(Request("tid12345", "SEND", headers + [("Message-ID", "m")]),
                               "To-Path and From-Path must be the first two headers")
            self.assertRefused(Response("tid12345", 200, "OK", headers),
                               "To-Path and From-Path must be the first two headers")

    def test_duplicate_singleton_headers(self):
        """The parser rejects these duplicates; the serializer must not write them."""
        for name, value in (("To-Path", TO[1]), ("from-path", FROM[1]), ("Message-ID", "m2"),
                            ("BYTE-RANGE", "1-2/2")):
            headers = [("Message-ID", "m"), ("Byte-Range", "1-2/2"), (name, value),
                       ("Content-Type", "text/plain")]
            self.assertRefused(self.send(headers=headers), "duplicate")
        self.assertEqual(sorted(SINGLETON_HEADERS),
                         ["byte-range", "from-path", "message-id", "to-path"])
        headers = [("Message-ID", "m"), ("X-Tag", "1"), ("x-tag", "2"),
                   ("Content-Type", "text/plain")]
        self.assertEqual(parse_all(serialize(self.send(headers=headers)))[0]
                         .headers.get_all("X-Tag"), ["1", "2"])

    def test_body_containing_its_end_line(self):
        for body in (b"-------tid12345", b"x\r\n-------tid12345$\r\ny", b"-------tid12345X",
                     b"a-------tid12345"):
            for wrap in (bytes, bytearray, memoryview):
                e = self.assertRefused(self.send(body=wrap(body)), "-------tid12345")
                self.assertIn("choose another transaction id", str(e))
            self.assertRaises(SerializationError, check_body, "tid12345", body)
        # Another id, or too few dashes, is fine.
        for body in (b"\r\n-------tid12346$\r\n", b"\r\n------tid12345$\r\n"):
            self.assertEqual(parse_all(serialize(self.send(body=body)))[0].body, body)

    def test_response_with_body(self):
        msg = Response("tid12345", 200, "OK", [TO, FROM, ("Content-Type", "text/plain")])
        msg.body = b"oops"
        self.assertRefused(msg, "a response cannot carry a body")
        msg.body = b""
        self.assertRefused(msg, "a response cannot carry a body")

    def test_body_not_bytes(self):
        self.assertRefused(self.send(body="text"), "body must be bytes")

    def test_bad_flag(self):
        for flag in ("", "x", "$$", "-", None):
            self.assertRefused(Request("tid12345", "SEND", [TO, FROM, ("Message-ID", "m")],
                                       None, flag), "invalid continuation flag")
            self.assertRefused(Request("tid12345", "SEND", [TO, FROM, ("Message-ID", "m"),
                                                             ("Content-Type", "a/b")], b"x", flag),
                               "invalid continuation flag")
            self.assertRaises(SerializationError, end_line, "tid12345", flag)


# -- round trips ------------------------------------------------------------------

ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
TIDS = st.builds(lambda a, b: a + b, st.sampled_from(ALNUM),
                 st.text(ALNUM + ".-+%=", min_size=3, max_size=31))
HEADER_NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9\-.!%*_+`'~]{0,12}", fullmatch=True).filter(
    lambda n: n.lower() not in SINGLETON_HEADERS)
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
               max_size=24)
VALUES = TEXT.map(lambda v: v.strip(" \t"))
PATHS = st.one_of(st.sampled_from([ALICE, BOB, ALICE_TLS, RELAY, BILOXI + " " + ATLANTA]),
                  VALUES.filter(bool))


@st.composite
def bodies(draw, tid):
    """Binary bodies, often with things that look like end-lines."""
    others = [b"-------", b"\r\n", b"\r", b"\n", b"\x00", b"$", b"+", b"#",
              b"\r\n-------" + tid[:-1].encode("ascii"),
              b"\r\n-------" + draw(TIDS).encode("ascii") + b"$\r\n"]
    pieces = draw(st.lists(st.one_of(st.sampled_from(others), st.binary(max_size=40)),
                           max_size=12))
    return b"".join(pieces)


@st.composite
def messages(draw):
    tid = draw(TIDS)
    extra = draw(st.lists(st.tuples(HEADER_NAMES, VALUES), max_size=4))
    headers = [("To-Path", draw(PATHS)), ("From-Path", draw(PATHS))]
    if draw(st.booleans()):
        msg = Response(tid, draw(st.integers(0, 999)),
                       draw(st.one_of(st.none(), TEXT.filter(bool))), headers + extra)
        msg.flag = draw(st.sampled_from("$+#"))
        return msg
    method = draw(st.one_of(st.sampled_from(["SEND", "REPORT", "AUTH"]),
                            st.from_regex(r"[A-Z]{1,12}", fullmatch=True)))
    if method != "AUTH" or draw(st.booleans()):
        extra.insert(draw(st.integers(0, len(extra))), ("Message-ID", draw(TIDS)))
    body = draw(st.one_of(st.none(), bodies(tid)))
    if body is not None:
        extra.insert(draw(st.integers(0, len(extra))),
                     ("Content-Type", "application/octet-stream"))
    return Request(tid, method, headers + extra, body, draw(st.sampled_from("$+#")))


def describe(msg):
    kind = (msg.method,) if msg.is_request else (msg.code, msg.comment)
    return (type(msg), msg.tid) + kind + (msg.headers.items(), msg.body, msg.flag, msg.has_body)


class RoundTripTests(SynchronousTestCase):
    @settings(max_examples=150, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(messages(), st.data())
    def test_round_trip(self, msg, data):
        try:
            wire_bytes = serialize(msg)
        except SerializationError:
            # Only a body holding this message's own end-line is refused.
            self.assertIn(b"-------" + msg.tid.encode(), msg.body)
            return
        cuts = data.draw(st.lists(st.integers(0, len(wire_bytes)), max_size=5))
        [back] = parse_all(wire_bytes, cuts)
        self.assertEqual(describe(back), describe(msg))
        self.assertEqual(serialize(back), wire_bytes)

    @settings(max_examples=60, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(messages(), min_size=1, max_size=6), st.data())
    def test_pipelined_round_trip(self, msgs, data):
        msgs = [m for m in msgs if m.body is None or b"-------" + m.tid.encode() not in m.body]
        stream = b"".join(serialize(m) for m in msgs)
        cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
        self.assertEqual([describe(m) for m in parse_all(stream, cuts)],
                         [describe(m) for m in msgs])

    def test_round_trip_one_byte_at_a_time(self):
        """A tid ending in '+' next to end-lines of its prefixes."""
        tid = "x1++"
        body = b"".join(b"\r\n-------" + t + f + b"\r\n" for t in (b"x1", b"x1+", b"x1+-")
                        for f in (b"$", b"+", b"#", b"") if t + f != b"x1++")
        self.assertIn(b"\r\n-------x1+$\r\n", body)
        msg = Request(tid, "SEND", [TO, FROM, ("Message-ID", "m"),
                                    ("Content-Type", "text/plain")], body, "+")
        data = serialize(msg)
        [back] = parse_all(data, range(len(data)))
        self.assertEqual(describe(back), describe(msg))


class ValidatedHeadersTests(SynchronousTestCase):
    """Headers the parser built skip the per-header checks; any change made
    afterwards brings them back."""

    def parsed(self):
        from msrp_twisted.core.parser import MessageAssembler

        data = (b"MSRP tid12345 SEND\r\nTo-Path: msrp://b.example.com:2855/s2;tcp\r\n"
                b"From-Path: msrp://a.example.com:2855/s1;tcp\r\nMessage-ID: m1\r\n"
                b"-------tid12345$\r\n")
        [msg] = MessageAssembler().feed(data)
        return msg

    def test_parsed_headers_are_validated_and_serialize_identically(self):
        msg = self.parsed()
        self.assertTrue(msg.headers.validated)
        self.assertEqual(serialize(msg), serialize(Request(msg.tid, "SEND", msg.headers.items())))

    def test_a_change_removes_the_exemption(self):
        msg = self.parsed()
        msg.headers.add("X-Bad", "a\r\nb")
        self.assertFalse(msg.headers.validated)
        self.assertRaises(SerializationError, serialize, msg)

    def test_copy_keeps_the_flag_it_had(self):
        from msrp_twisted.core.headers import Headers

        self.assertFalse(Headers([("To-Path", "x")]).copy().validated)
        self.assertTrue(self.parsed().headers.copy().validated)


class PathResponseTests(SynchronousTestCase):
    """path_response writes what serialize(Response(...)) writes."""

    @settings(max_examples=200, database=None, deadline=None)
    @given(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9.\-+%=]{3,31}\Z"), st.integers(0, 999),
           st.one_of(st.none(), st.just(""), st.text(st.characters(blacklist_characters="\r\n"), max_size=30)),
           st.sampled_from([ALICE, BOB, RELAY, "msrp://[2001:db8::1]:2855/x;tcp", "msrp://h\u00e9.example:1/s;tcp"]),
           st.sampled_from([ALICE, BOB, RELAY + " " + ALICE]))
    def test_same_bytes_as_serialize(self, tid, code, comment, to, frm):
        expected = serialize(Response(tid, code, comment, [("To-Path", to), ("From-Path", frm)]))
        self.assertEqual(path_response(tid, code, comment, to, frm), expected)

    def test_refuses_what_head_refuses(self):
        for tid, code, comment in (("bad tid", 200, None), ("tid12345", 1000, None),
                                   ("tid12345", "200", None), ("tid12345", 200, "a\r\nb")):
            self.assertRaises(SerializationError, path_response, tid, code, comment, ALICE, BOB)
