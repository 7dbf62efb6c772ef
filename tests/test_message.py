"""Headers and the typed accessors of requests and responses."""

from twisted.trial.unittest import SynchronousTestCase

from msrp_twisted.core import digest
from msrp_twisted.core.errors import HeaderError, MSRPError, URIError
from msrp_twisted.core.headers import ByteRange, Headers, Status
from msrp_twisted.core.message import (
    ABORTED,
    COMPLETE,
    CONTINUED,
    REASONS,
    Message,
    Request,
    Response,
)
from msrp_twisted.core.parser import MessageAssembler
from msrp_twisted.core.uri import MSRPURI

from .test_parser import (
    ALICE,
    ALICE_TLS,
    BOB,
    NONCE,
    RELAY,
    RFC4975_REPORT,
    RFC4975_SEND,
    RFC4976_401,
    RFC4976_AUTH2,
    RFC4976_AUTH_OK,
)

TO = ("To-Path", "msrp://b.example.com:2855/s2;tcp")
FROM = ("From-Path", "msrp://a.example.com:2855/s1;tcp")


def request(*headers, method="SEND", body=None):
    return Request("tid12345", method, [TO, FROM] + list(headers), body)


def parsed(data):
    [message] = MessageAssembler().feed(data)
    return message


class HeadersTests(SynchronousTestCase):
    def setUp(self):
        self.headers = Headers([
            ("To-Path", "t"), ("From-Path", "f"), ("X-Tag", "1"), ("Content-Type", "a/b"),
            ("x-tag", "2"), ("X-Other", "o"),
        ])

    def test_order_is_kept(self):
        self.assertEqual([n for n, _ in self.headers],
                         ["To-Path", "From-Path", "X-Tag", "Content-Type", "x-tag", "X-Other"])
        self.assertEqual(self.headers.items()[4], ("x-tag", "2"))
        self.assertEqual(len(self.headers), 6)

    def test_lookup_is_case_insensitive(self):
        for name in ("content-type", "CONTENT-TYPE", "Content-Type", "cOnTeNt-TyPe"):
            self.assertEqual(self.headers[name], "a/b")
            self.assertEqual(self.headers.get(name), "a/b")
            self.assertIn(name, self.headers)
        self.assertNotIn("Content-ID", self.headers)
        self.assertIsNone(self.headers.get("Content-ID"))
        self.assertEqual(self.headers.get("Content-ID", "dflt"), "dflt")
        self.assertRaises(KeyError, lambda: self.headers["Content-ID"])

    def test_duplicates(self):
        self.assertEqual(self.headers["X-TAG"], "1")
        self.assertEqual(self.headers.get_all("X-Tag"), ["1", "2"])
        self.assertEqual(self.headers.get_all("Nope"), [])

    def test_add(self):
        self.headers.add("X-TAG", "3")
        self.assertEqual(self.headers.get_all("x-tag"), ["1", "2", "3"])
        self.assertEqual(self.headers.items()[-1], ("X-TAG", "3"))
        self.assertEqual(self.headers["x-tag"], "1")

    def test_set_replaces_at_the_first_place(self):
        self.headers.set("X-TAG", "new")
        self.assertEqual(self.headers.items(), [
            ("To-Path", "t"), ("From-Path", "f"), ("X-TAG", "new"), ("Content-Type", "a/b"),
            ("X-Other", "o"),
        ])
        self.assertEqual(self.headers["x-other"], "o")
        self.headers.set("Expires", "30")
        self.assertEqual(self.headers.items()[-1], ("Expires", "30"))

    def test_remove(self):
        self.headers.remove("x-TAG")
        self.assertNotIn("X-Tag", self.headers)
        self.assertEqual(self.headers["X-Other"], "o")
        self.assertEqual(self.headers["Content-Type"], "a/b")
        self.assertEqual(len(self.headers), 4)
        self.headers.remove("absent")
        self.assertEqual(len(self.headers), 4)

    def test_copy_is_independent(self):
        other = self.headers.copy()
        other.add("X-New", "n")
        other.set("To-Path", "changed")
        self.assertNotIn("X-New", self.headers)
        self.assertEqual(self.headers["To-Path"], "t")
        self.assertEqual(other["To-Path"], "changed")

    def test_equality(self):
        same = Headers([(n.upper(), v) for n, v in self.headers])
        self.assertEqual(self.headers, same)
        self.assertNotEqual(self.headers, Headers(list(self.headers)[::-1]))
        changed = self.headers.copy()
        changed.set("X-Other", "O")
        self.assertNotEqual(self.headers, changed)
        self.assertNotEqual(self.headers, list(self.headers))
        self.assertIn("X-Other", repr(self.headers))


class MessageTests(SynchronousTestCase):
    def test_request(self):
        msg = request(("Message-ID", "m1"))
        self.assertIsInstance(msg.headers, Headers)
        self.assertTrue(msg.is_request)
        self.assertFalse(msg.has_body)
        self.assertEqual((msg.tid, msg.method, msg.flag, msg.body),
                         ("tid12345", "SEND", "$", None))
        msg = request(("Message-ID", "m1"), body=b"x")
        self.assertTrue(msg.has_body)
        self.assertIn("SEND", repr(msg))
        self.assertIn("1 body bytes", repr(msg))
        headers = Headers([TO, FROM])
        self.assertIs(Request("abcd", "AUTH", headers).headers, headers)
        self.assertEqual(len(Request("abcd", "AUTH").headers), 0)

    def test_response(self):
        msg = Response("tid12345", 200, "OK", [TO, FROM])
        self.assertFalse(msg.is_request)
        self.assertFalse(msg.has_body)
        self.assertEqual((msg.code, msg.comment, msg.flag), (200, "OK", "$"))
        self.assertIn("200 OK", repr(msg))

    def test_flags_and_reasons(self):
        self.assertEqual((COMPLETE, CONTINUED, ABORTED), ("$", "+", "#"))
        self.assertEqual(REASONS[200], "OK")
        self.assertEqual(REASONS[401], "Unauthorized")
        self.assertEqual(REASONS[423], "Interval Out-of-Bounds")
        self.assertEqual(REASONS[481], "Session Does Not Exist")

    def test_to_bytes(self):
        msg = parsed(RFC4975_SEND)
        self.assertEqual(msg.to_bytes(), RFC4975_SEND)

    def test_parsed_messages_are_messages(self):
        self.assertIsInstance(parsed(RFC4975_SEND), Message)
        self.assertIsInstance(parsed(RFC4976_401), Message)


class PathTests(SynchronousTestCase):
    def test_paths(self):
        msg = parsed(RFC4975_REPORT)
        self.assertEqual(msg.to_path, (MSRPURI("alicepc.example.com", 7777, "iau39soe2843z"),))
        self.assertEqual(msg.from_path, (MSRPURI("bob.example.com", 8888, "9di4eae923wzd"),))
        self.assertEqual(str(msg.to_path[0]), ALICE)
        self.assertEqual(str(msg.from_path[0]), BOB)
        self.assertEqual(msg.use_path, ())

    def test_multi_hop_path_and_use_path(self):
        msg = parsed(RFC4976_AUTH_OK)
        self.assertEqual([str(u) for u in msg.to_path], [ALICE_TLS])
        self.assertEqual(msg.from_path[0].scheme, "msrps")
        self.assertEqual(msg.from_path[0].userinfo, "alice")
        self.assertEqual(str(msg.from_path[0]), RELAY)
        [use] = msg.use_path
        self.assertEqual((use.host, use.port, use.session_id),
                         ("intra.example.com", 9000, "jui787s2f"))
        msg = request(("Message-ID", "m1"))
        msg.headers.set("To-Path", "msrp://r1.example.com:1/a;tcp  msrp://r2.example.com:2/b;tcp")
        self.assertEqual([u.host for u in msg.to_path], ["r1.example.com", "r2.example.com"])

    def test_replace_header_forgets_the_parsed_value(self):
        msg = parsed(RFC4976_AUTH_OK)
        self.assertTrue(msg.headers.validated)
        self.assertEqual(len(msg.from_path), 1)
        msg.replace_header("From-Path", "msrp://x.example.com:1/a;tcp msrp://y.example.com:2/b;tcp")
        self.assertEqual([u.host for u in msg.from_path], ["x.example.com", "y.example.com"])
        self.assertFalse(msg.headers.validated)  # unknown text: checked again when serialized

    def test_replace_header_with_a_piece_of_itself_stays_validated(self):
        msg = parsed(RFC4975_REPORT)
        whole = msg.headers["From-Path"]
        msg.headers.set("From-Path", whole + " " + ALICE)
        msg.headers.validated = True
        self.assertEqual(len(msg.from_path), 2)
        msg.replace_header("From-Path", whole, well_formed=True)
        self.assertTrue(msg.headers.validated)
        self.assertEqual([str(u) for u in msg.from_path], [BOB])

    def test_missing_paths_are_empty(self):
        msg = Request("abcd", "AUTH")
        self.assertEqual((msg.to_path, msg.from_path, msg.use_path), ((), (), ()))

    def test_bad_path(self):
        msg = request(("Message-ID", "m1"))
        msg.headers.set("To-Path", "http://example.com/")
        e = self.assertRaises(URIError, lambda: msg.to_path)
        self.assertIn("scheme", str(e))
        self.assertIsInstance(e, MSRPError)


class TypedHeaderTests(SynchronousTestCase):
    def assertHeaderError(self, attribute, name, value, fragment):
        msg = request((name, value))
        e = self.assertRaises(HeaderError, getattr, msg, attribute)
        self.assertIn(fragment, str(e))
        return e

    def test_message_id_and_content_type(self):
        msg = parsed(RFC4975_SEND)
        self.assertEqual(msg.message_id, "87652491")
        self.assertEqual(msg.content_type, "text/plain")
        self.assertIsNone(Request("abcd", "AUTH").message_id)
        self.assertIsNone(Request("abcd", "AUTH").content_type)
        msg = request(("Content-Type", "text/plain; charset=utf-8"))
        self.assertEqual(msg.content_type, "text/plain; charset=utf-8")
        self.assertEqual(request(("Content-Type", "message/cpim")).content_type, "message/cpim")

    def test_bad_content_type(self):
        for value in ("textplain", "text/", "/plain", "text/plain/x", "", "text plain",
                      "text/pl ain"):
            e = self.assertHeaderError("content_type", "Content-Type", value, "Content-Type")
            self.assertIn(repr(value), str(e))

    def test_mime_headers(self):
        msg = request(("Content-ID", "<1234@example.com>"),
                      ("Content-Description", "a picture of me"),
                      ("Content-Disposition", "inline; filename=me.jpg"),
                      ("Content-Type", "image/jpeg"))
        self.assertEqual(msg.content_id, "<1234@example.com>")
        self.assertEqual(msg.content_description, "a picture of me")
        self.assertEqual(msg.content_disposition, "inline; filename=me.jpg")
        bare = Request("abcd", "AUTH")
        self.assertEqual((bare.content_id, bare.content_description, bare.content_disposition),
                         (None, None, None))

    def test_extension_headers_are_kept(self):
        msg = parsed(RFC4975_SEND.replace(b"Content-Type", b"X-Custom: a: b\r\nContent-Type"))
        self.assertEqual(msg.headers["x-custom"], "a: b")
        self.assertEqual(msg.headers.items()[4], ("X-Custom", "a: b"))

    def test_byte_range(self):
        for value, expected in (("1-25/25", (1, 25, 25)), ("1-*/8", (1, None, 8)),
                                ("5-8/8", (5, 8, 8)), ("1-*/*", (1, None, None)),
                                ("7-10/*", (7, 10, None)), ("1-0/0", (1, 0, 0)),
                                (" 3-4/9 ", (3, 4, 9))):
            br = request(("Byte-Range", value)).byte_range
            self.assertIsInstance(br, ByteRange)
            self.assertEqual(br, expected, value)
            self.assertEqual(str(br), value.strip())
        self.assertIsNone(request().byte_range)

    def test_bad_byte_range(self):
        for value, fragment in (("abc", "malformed Byte-Range"), ("1-2", "malformed Byte-Range"),
                                ("1-2/3 x", "malformed Byte-Range"), ("-1-2/3", "malformed"),
                                ("*-2/3", "malformed"), ("1-2/-3", "malformed"),
                                ("", "malformed"), ("1 - 2/3", "malformed"),
                                ("0-5/5", "start must be >= 1"),
                                ("5-3/10", "end 3 before start 5"),
                                ("1-10/5", "end 10 beyond total 5"),
                                ("1-99999999999999999999/1", "malformed")):
            self.assertHeaderError("byte_range", "Byte-Range", value, fragment)

    def test_status(self):
        msg = parsed(RFC4975_REPORT)
        self.assertEqual(msg.status, Status(0, 200, "OK"))
        self.assertEqual(msg.status.code, 200)
        self.assertEqual(str(msg.status), "000 200 OK")
        self.assertEqual(request(("Status", "000 413")).status, (0, 413, None))
        self.assertEqual(request(("Status", "000 413 Message Too Large")).status.comment,
                         "Message Too Large")
        self.assertEqual(str(Status(0, 481, None)), "000 481")
        self.assertIsNone(request().status)

    def test_bad_status(self):
        for value in ("200 OK", "000200", "000 20", "0 200 OK", "abc 200", "000 2000", ""):
            self.assertHeaderError("status", "Status", value, "malformed Status")

    def test_report_headers(self):
        bare = request()
        self.assertEqual(bare.failure_report, "yes")
        self.assertEqual(bare.success_report, "no")
        for value in ("yes", "no", "partial", "YES", " Partial "):
            self.assertEqual(request(("Failure-Report", value)).failure_report,
                             value.strip().lower())
        for value in ("yes", "no", "No"):
            self.assertEqual(request(("Success-Report", value)).success_report, value.lower())

    def test_bad_report_headers(self):
        for value in ("maybe", "", "yes no", "true"):
            e = self.assertHeaderError("failure_report", "Failure-Report", value, "Failure-Report")
            self.assertIn("yes/no/partial", str(e))
        for value in ("partial", "maybe", ""):
            e = self.assertHeaderError("success_report", "Success-Report", value, "Success-Report")
            self.assertIn("yes/no", str(e))

    def test_expires(self):
        msg = parsed(RFC4976_AUTH_OK)
        self.assertEqual(msg.expires, 900)
        self.assertIsNone(msg.min_expires)
        self.assertIsNone(msg.max_expires)
        msg = request(("Min-Expires", "60"), ("Max-Expires", " 3600 "), ("Expires", "0"))
        self.assertEqual((msg.expires, msg.min_expires, msg.max_expires), (0, 60, 3600))

    def test_bad_expires(self):
        for attribute, name in (("expires", "Expires"), ("min_expires", "Min-Expires"),
                                ("max_expires", "Max-Expires")):
            for value in ("-1", "1.5", "soon", "", "12345678901", "0x10"):
                e = self.assertHeaderError(attribute, name, value, name)
                self.assertIn("number of seconds", str(e))

    def test_typed_values_are_cached(self):
        msg = request(("Byte-Range", "1-2/2"))
        self.assertIs(msg.byte_range, msg.byte_range)
        self.assertIs(msg.to_path, msg.to_path)


class DigestHeaderTests(SynchronousTestCase):
    def test_rfc4976_challenge(self):
        msg = parsed(RFC4976_401)
        self.assertEqual(msg.www_authenticate,
                         {"realm": "intra.example.com", "qop": "auth", "nonce": NONCE})
        self.assertIsNone(msg.authorization)

    def test_rfc4976_credentials(self):
        msg = parsed(RFC4976_AUTH2)
        self.assertEqual(msg.authorization, {
            "username": "Alice", "realm": "intra.example.com", "nonce": NONCE,
            "qop": "auth", "nc": "00000001", "cnonce": "0a4f113b",
            "response": "6629fae49393a05397450978507c4ef1",
        })
        self.assertEqual(msg.authorization, digest.parse_credentials(msg.headers["Authorization"]))
        self.assertIsNone(msg.www_authenticate)

    def test_authentication_info(self):
        msg = Response("49fi", 200, "OK", [
            ("To-Path", ALICE_TLS), ("From-Path", RELAY),
            ("Authentication-Info",
             'nextnonce="40f2e879449675f288476d772627370a", rspauth="7327", '
             'cnonce="0a4f113b", nc=00000001, qop=auth'),
        ])
        info = msg.authentication_info
        self.assertEqual(info["nextnonce"], "40f2e879449675f288476d772627370a")
        self.assertEqual(info["qop"], "auth")
        self.assertIsNone(parsed(RFC4976_AUTH_OK).authentication_info)

    def test_bad_digest_headers(self):
        for attribute, name in (("www_authenticate", "WWW-Authenticate"),
                                ("authorization", "Authorization")):
            for value in ("Basic QWxhZGRpbjpvcGVu", "Digest", "", 'Digest realm="x'):
                msg = request((name, value))
                e = self.assertRaises(HeaderError, getattr, msg, attribute)
                self.assertIn(name, str(e))
        msg = request(("Authentication-Info", 'nextnonce="unterminated'))
        e = self.assertRaises(HeaderError, getattr, msg, "authentication_info")
        self.assertIn("Authentication-Info", str(e))
