"""Tests for msrp_twisted.core.uri."""

import copy
import pickle

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from msrp_twisted.core.errors import MSRPError, URIError
from msrp_twisted.core.uri import (
    CACHEABLE_URI_LENGTH,
    DEFAULT_PORT,
    DOTTED_DIGITS_RE,
    MSRPURI,
    format_path,
    parse_path,
    parse_uri,
)

# Example URIs as they appear in the text of RFC 4975 (SDP path attributes,
# To-Path / From-Path of the example flows).
RFC4975_EXAMPLES = [
    "msrp://atlanta.example.com:7654/jshA7weztas;tcp",
    "msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp",
    "msrp://host.example.com:8493/asfd34;tcp",
    "msrp://alice.example.com:7394/2s93i9ek2a;tcp",
    "msrp://bob.example.com:8493/si438dsaodes;tcp",
    "msrp://alicepc.example.com:7777/iau39soe2843z;tcp",
    "msrp://bob.example.com:8888/9di4eae923wzd;tcp",
    "msrp://alice.example.com:7777/iau39soe2843z;tcp",
    "msrp://bobpc.example.com:8888/9di4eae923wzd;tcp",
    "msrp://alicepc.example.com:7654/iau39soe2843z;tcp",
    "msrp://alicepc.example.com:8888/9di4eae923wzd;tcp",
    "msrp://example.com:7777/iau39soe2843z;tcp",
]

# Example URIs from the RFC 4976 AUTH flow (section 7): the relay URI
# carries userinfo and neither port nor session-id; the Use-Path URI is the
# one the relay hands back.
RFC4976_EXAMPLES = [
    "msrps://alice@intra.example.com;tcp",
    "msrps://alice.example.com:9892/98cjs;tcp",
    "msrps://intra.example.com:9000/jui787s2f;tcp",
]


class RFCExampleTests(SynchronousTestCase):
    def test_all_examples_round_trip_exactly(self):
        for text in RFC4975_EXAMPLES + RFC4976_EXAMPLES:
            uri = parse_uri(text)
            self.assertEqual(str(uri), text)
            self.assertEqual(parse_uri(str(uri)), uri)

    def test_rfc4975_atlanta(self):
        uri = parse_uri("msrp://atlanta.example.com:7654/jshA7weztas;tcp")
        self.assertEqual(uri.scheme, "msrp")
        self.assertIsNone(uri.userinfo)
        self.assertEqual(uri.host, "atlanta.example.com")
        self.assertEqual(uri.port, 7654)
        self.assertEqual(uri.session_id, "jshA7weztas")
        self.assertEqual(uri.transport, "tcp")
        self.assertEqual(uri.params, ())
        self.assertFalse(uri.secure)
        self.assertEqual(uri.effective_port, 7654)
        self.assertEqual(uri.authority, "atlanta.example.com:7654")
        self.assertEqual(uri.hostport, ("atlanta.example.com", 7654))

    def test_rfc4976_relay_with_userinfo(self):
        uri = parse_uri("msrps://alice@intra.example.com;tcp")
        self.assertEqual(uri.scheme, "msrps")
        self.assertTrue(uri.secure)
        self.assertEqual(uri.userinfo, "alice")
        self.assertEqual(uri.host, "intra.example.com")
        self.assertIsNone(uri.port)
        self.assertEqual(uri.effective_port, DEFAULT_PORT)
        self.assertEqual(DEFAULT_PORT, 2855)
        self.assertIsNone(uri.session_id)
        self.assertEqual(uri.hostport, ("intra.example.com", 2855))

    def test_rfc_examples_as_paths(self):
        # The AUTH request of RFC 4976 section 7 and a two-hop To-Path made
        # of RFC 4976 URIs.
        self.assertEqual(
            parse_path("msrps://alice@intra.example.com;tcp"),
            (parse_uri("msrps://alice@intra.example.com;tcp"),),
        )
        value = (
            "msrps://intra.example.com:9000/jui787s2f;tcp "
            "msrps://alice.example.com:9892/98cjs;tcp"
        )
        path = parse_path(value)
        self.assertEqual([u.session_id for u in path], ["jui787s2f", "98cjs"])
        self.assertEqual(format_path(path), value)


class ParseTests(SynchronousTestCase):
    def test_scheme_is_lower_cased(self):
        uri = parse_uri("MsRpS://example.com;tcp")
        self.assertEqual(uri.scheme, "msrps")
        self.assertTrue(uri.secure)
        self.assertEqual(str(uri), "msrps://example.com;tcp")

    def test_ipv6_lower_and_upper_hex(self):
        lower = parse_uri("msrp://[2001:db8::a:b]:2855/s;tcp")
        upper = parse_uri("msrp://[2001:DB8::A:B]:2855/s;tcp")
        self.assertEqual(lower.host, "2001:db8::a:b")
        self.assertEqual(upper.host, "2001:DB8::A:B")  # kept as written
        self.assertEqual(upper.authority, "[2001:DB8::A:B]:2855")
        self.assertEqual(upper.hostport, ("2001:DB8::A:B", 2855))
        self.assertEqual(str(upper), "msrp://[2001:DB8::A:B]:2855/s;tcp")

    def test_ipv6_forms(self):
        for literal in ("::1", "::", "fe80::1", "2001:db8:0:0:0:0:2:1", "::ffff:192.0.2.1"):
            uri = parse_uri(f"msrp://[{literal}];tcp")
            self.assertEqual(uri.host, literal)
            self.assertEqual(uri.port, None)
            self.assertEqual(uri.authority, f"[{literal}]:2855")

    def test_ipv4(self):
        uri = parse_uri("msrp://192.0.2.1:1/x;tcp")
        self.assertEqual(uri.hostport, ("192.0.2.1", 1))
        uri = parse_uri("msrp://255.255.255.255:65535/x;tcp")
        self.assertEqual(uri.port, 65535)

    def test_reg_name_characters(self):
        uri = parse_uri("msrp://my_host-1.example.~!$&'()*+,=;tcp")
        self.assertEqual(uri.host, "my_host-1.example.~!$&'()*+,=")

    def test_userinfo_with_escapes(self):
        uri = parse_uri("msrp://al%69ce:x%3By@h.example.com:99;tcp")
        self.assertEqual(uri.userinfo, "al%69ce:x%3By")
        self.assertEqual(uri.host, "h.example.com")
        self.assertEqual(uri.port, 99)
        self.assertEqual(str(uri), "msrp://al%69ce:x%3By@h.example.com:99;tcp")

    def test_empty_userinfo(self):
        uri = parse_uri("msrp://@h;tcp")
        self.assertEqual(uri.userinfo, "")
        self.assertEqual(str(uri), "msrp://@h;tcp")

    def test_session_id_characters_and_escapes(self):
        uri = parse_uri("msrp://h/Ab0-._~+=/x%2f%3B;tcp")
        self.assertEqual(uri.session_id, "Ab0-._~+=/x%2f%3B")  # kept as written

    def test_session_id_with_slashes(self):
        uri = parse_uri("msrp://h:1//a//b/;tcp")
        self.assertEqual(uri.session_id, "/a//b/")

    def test_transport_kept_as_written(self):
        self.assertEqual(parse_uri("msrp://h;TCP").transport, "TCP")
        self.assertEqual(parse_uri("msrp://h;sctp").transport, "sctp")

    def test_params(self):
        uri = parse_uri("msrp://h/s;tcp;foo=bar;flag;x-y=1.2")
        self.assertEqual(uri.transport, "tcp")
        self.assertEqual(uri.params, (("foo", "bar"), ("flag", None), ("x-y", "1.2")))
        self.assertEqual(str(uri), "msrp://h/s;tcp;foo=bar;flag;x-y=1.2")

    def test_leading_zeros_in_port(self):
        uri = parse_uri("msrp://h:02855;tcp")
        self.assertEqual(uri.port, 2855)

    def test_missing_transport_lenient(self):
        uri = parse_uri("msrp://relay.example.com:2855/abc", require_transport=False)
        self.assertEqual(uri.transport, "tcp")
        self.assertEqual(uri.session_id, "abc")
        self.assertEqual(str(uri), "msrp://relay.example.com:2855/abc;tcp")
        self.assertEqual(uri, parse_uri("msrp://relay.example.com:2855/abc;tcp"))

    def test_lenient_mode_still_validates_given_transport(self):
        self.assertEqual(
            parse_uri("msrp://h;tls", require_transport=False).transport, "tls"
        )
        with self.assertRaises(URIError):
            parse_uri("msrp://h;a=b", require_transport=False)

    def test_bytes_input(self):
        uri = parse_uri(b"msrp://h:1/s;tcp")
        self.assertEqual(uri, parse_uri("msrp://h:1/s;tcp"))
        self.assertEqual(parse_path(bytearray(b"msrp://h;tcp")), (parse_uri("msrp://h;tcp"),))

    def test_not_text(self):
        with self.assertRaises(TypeError):
            parse_uri(42)
        with self.assertRaises(TypeError):
            parse_path(None)

    def test_cache_returns_the_same_object(self):
        text = "msrp://cache.example.com:2855/abc;tcp"
        self.assertIs(parse_uri(text), parse_uri(text))
        path_text = text + " " + text
        self.assertIs(parse_path(path_text), parse_path(path_text))

    def test_cache_keyed_on_strictness(self):
        text = "msrp://strictness.example.com"
        self.assertEqual(parse_uri(text, require_transport=False).transport, "tcp")
        with self.assertRaises(URIError):
            parse_uri(text)

    def test_long_uri_parsed_without_cache(self):
        session = "a" * (CACHEABLE_URI_LENGTH + 10)
        text = f"msrp://h/{session};tcp"
        first = parse_uri(text)
        self.assertEqual(first.session_id, session)
        self.assertIsNot(parse_uri(text), first)
        self.assertEqual(parse_uri(text), first)


class MSRPURIObjectTests(SynchronousTestCase):
    def test_construct_and_format(self):
        uri = MSRPURI("2001:db8::1", 9000, "abc", scheme="msrps", userinfo="bob")
        self.assertEqual(str(uri), "msrps://bob@[2001:db8::1]:9000/abc;tcp")
        self.assertEqual(parse_uri(str(uri)), uri)

    def test_constructor_accepts_bracketed_ipv6(self):
        uri = MSRPURI("[::1]", 2855)
        self.assertEqual(uri.host, "::1")
        self.assertEqual(str(uri), "msrp://[::1]:2855;tcp")

    def test_defaults(self):
        uri = MSRPURI("relay.example.com")
        self.assertEqual(str(uri), "msrp://relay.example.com;tcp")
        self.assertEqual(uri.params, ())
        self.assertIsNone(uri.userinfo)

    def test_params_given_as_lists_are_stored_as_tuples(self):
        uri = MSRPURI("h", params=[["a", "1"], ("b", None)])
        self.assertEqual(uri.params, (("a", "1"), ("b", None)))
        hash(uri)

    def test_immutable(self):
        uri = parse_uri("msrp://h:1/s;tcp")
        with self.assertRaises(AttributeError):
            uri.port = 2
        with self.assertRaises(AttributeError):
            uri.extra = 1
        with self.assertRaises(AttributeError):
            del uri.host
        self.assertEqual(uri.port, 1)

    def test_with_session(self):
        uri = parse_uri("msrps://u@[::1]:99/old;TCP;p=v")
        new = uri.with_session("new")
        self.assertEqual(str(new), "msrps://u@[::1]:99/new;TCP;p=v")
        self.assertEqual(uri.session_id, "old")
        self.assertIsNone(uri.with_session(None).session_id)
        with self.assertRaises(URIError) as caught:
            uri.with_session("bad id")
        self.assertIn("invalid character ' ' in session-id", str(caught.exception))

    def test_copy_and_pickle(self):
        uri = parse_uri("msrps://u@[::1]:99/s;tcp;p=v")
        for clone in (copy.copy(uri), copy.deepcopy(uri), pickle.loads(pickle.dumps(uri))):
            self.assertEqual(clone, uri)
            self.assertEqual(str(clone), str(uri))
            self.assertEqual(clone.userinfo, "u")

    def test_repr(self):
        self.assertEqual(repr(parse_uri("msrp://h;tcp")), "<MSRPURI msrp://h;tcp>")

    def test_usable_as_dict_key(self):
        sessions = {parse_uri("msrp://Relay.Example.com:2855/abc;tcp"): "s1"}
        self.assertEqual(sessions[parse_uri("msrp://relay.example.com:2855/abc;TCP")], "s1")
        self.assertNotIn(parse_uri("msrp://relay.example.com:2855/ABC;tcp"), sessions)


class ComparisonTests(SynchronousTestCase):
    """RFC 4975 section 6.1, one test per rule."""

    def assertEquivalent(self, a, b):
        ua, ub = parse_uri(a), parse_uri(b)
        self.assertTrue(ua == ub, f"{a} should equal {b}")
        self.assertFalse(ua != ub)
        self.assertEqual(hash(ua), hash(ub))

    def assertDifferent(self, a, b):
        ua, ub = parse_uri(a), parse_uri(b)
        self.assertTrue(ua != ub, f"{a} should differ from {b}")
        self.assertFalse(ua == ub)

    def test_scheme_case_insensitive(self):
        self.assertEquivalent("MSRP://h:1/s;tcp", "msrp://h:1/s;tcp")

    def test_scheme_must_match(self):
        self.assertDifferent("msrp://h:1/s;tcp", "msrps://h:1/s;tcp")

    def test_userinfo_not_considered(self):
        self.assertEquivalent("msrp://alice@h:1/s;tcp", "msrp://bob@h:1/s;tcp")
        self.assertEquivalent("msrp://alice@h:1/s;tcp", "msrp://h:1/s;tcp")

    def test_host_case_insensitive(self):
        self.assertEquivalent(
            "msrp://Relay.EXAMPLE.com:1/s;tcp", "msrp://relay.example.com:1/s;tcp"
        )

    def test_host_percent_encoded_unreserved_decoded(self):
        self.assertEquivalent(
            "msrp://%72elay%2Dx.example.com;tcp", "msrp://relay-x.example.com;tcp"
        )
        self.assertEquivalent("msrp://%52ELAY;tcp", "msrp://relay;tcp")

    def test_host_reserved_escapes_stay_escaped(self):
        # "!" is a sub-delim: its escape is not the same character.
        self.assertDifferent("msrp://a%21b;tcp", "msrp://a!b;tcp")
        # ...but escape hex digits are case-insensitive.
        self.assertEquivalent("msrp://a%2fb;tcp", "msrp://a%2Fb;tcp")

    def test_ipv6_address_equivalence(self):
        self.assertEquivalent(
            "msrp://[2001:DB8::1]:1/s;tcp", "msrp://[2001:db8:0:0:0:0:0:1]:1/s;tcp"
        )
        self.assertEquivalent("msrp://[::FFFF:192.0.2.1];tcp", "msrp://[::ffff:c000:201];tcp")
        self.assertDifferent("msrp://[::1];tcp", "msrp://[::2];tcp")

    def test_no_name_resolution(self):
        self.assertDifferent("msrp://127.0.0.1;tcp", "msrp://localhost;tcp")
        self.assertDifferent("msrp://[::1];tcp", "msrp://127.0.0.1;tcp")

    def test_explicit_port_never_equals_absent_port(self):
        self.assertDifferent("msrp://h:2855/s;tcp", "msrp://h/s;tcp")

    def test_ports_must_match(self):
        self.assertDifferent("msrp://h:1/s;tcp", "msrp://h:2/s;tcp")
        self.assertEquivalent("msrp://h:2855/s;tcp", "msrp://h:02855/s;tcp")

    def test_session_id_case_sensitive(self):
        self.assertDifferent("msrp://h:1/abc;tcp", "msrp://h:1/ABC;tcp")

    def test_session_id_present_vs_absent(self):
        self.assertDifferent("msrp://h:1/abc;tcp", "msrp://h:1;tcp")

    def test_session_id_compared_as_written(self):
        self.assertDifferent("msrp://h:1/a%41;tcp", "msrp://h:1/aA;tcp")

    def test_transport_case_insensitive(self):
        self.assertEquivalent("msrp://h:1/s;TCP", "msrp://h:1/s;tcp")

    def test_different_transports_never_match(self):
        self.assertDifferent("msrp://h:1/s;tcp", "msrp://h:1/s;sctp")

    def test_other_parameters_ignored(self):
        self.assertEquivalent("msrp://h:1/s;tcp;foo=bar", "msrp://h:1/s;tcp")
        self.assertEquivalent("msrp://h:1/s;tcp;foo=bar", "msrp://h:1/s;tcp;foo=baz")

    def test_host_key(self):
        self.assertEqual(parse_uri("msrp://[2001:DB8:0::1];tcp").host_key, "2001:db8::1")
        self.assertEqual(parse_uri("msrp://R%45lay.Example;tcp").host_key, "relay.example")
        self.assertEqual(parse_uri("msrp://192.0.2.1;tcp").host_key, "192.0.2.1")

    def test_not_equal_to_other_types(self):
        uri = parse_uri("msrp://h;tcp")
        self.assertNotEqual(uri, "msrp://h;tcp")
        self.assertFalse(uri == "msrp://h;tcp")
        self.assertNotEqual(uri, None)


class ErrorTests(SynchronousTestCase):
    """Each bad URI fails with a URIError that names what is wrong."""

    CASES = [
        ("", "empty URI"),
        (" msrp://h;tcp", "leading or trailing whitespace"),
        ("msrp://h;tcp\r\n", "leading or trailing whitespace"),
        ("h.example.com:2855/s;tcp", "missing scheme"),
        ("://h;tcp", "missing scheme"),
        ("msrp:h;tcp", "missing '//' after scheme"),
        ("MSRPS:/h;tcp", "missing '//' after scheme"),
        ("sip://h;tcp", "unsupported scheme 'sip'"),
        ("msrpx://h;tcp", "unsupported scheme 'msrpx'"),
        ("msrp://h:99999;tcp", "bad port '99999'"),
        ("msrp://h:65536;tcp", "bad port '65536'"),
        ("msrp://h:0;tcp", "bad port '0'"),
        ("msrp://h:123456;tcp", "bad port '123456'"),
        ("msrp://h:12a/s;tcp", "bad port '12a'"),
        ("msrp://h:-1;tcp", "bad port '-1'"),
        ("msrp://h:;tcp", "empty port"),
        ("msrp://2001:db8::1;tcp", "IPv6 address must be in brackets"),
        ("msrp://2001:db8::1:2855/s;tcp", "IPv6 address must be in brackets"),
        ("msrp://[2001:db8::1/s;tcp", "unterminated IPv6 address"),
        ("msrp://[2001:db8::1]x;tcp", "invalid character 'x' after IPv6 address"),
        ("msrp://[2001:db8::g];tcp", "invalid character 'g' in IPv6 address"),
        ("msrp://[fe80::1%25eth0];tcp", "invalid character '%' in IPv6 address"),
        ("msrp://[2001:db8:::1];tcp", "invalid IPv6 address '2001:db8:::1'"),
        ("msrp://[1:2:3:4:5:6:7:8:9];tcp", "invalid IPv6 address '1:2:3:4:5:6:7:8:9'"),
        ("msrp://[1.2.3.4];tcp", "invalid IPv6 address '1.2.3.4'"),
        ("msrp://[v1.fe];tcp", "unsupported IPvFuture address 'v1.fe'"),
        ("msrp://[];tcp", "empty IPv6 address"),
        ("msrp://;tcp", "missing host"),
        ("msrp:///s;tcp", "missing host"),
        ("msrp://alice@;tcp", "missing host"),
        ("msrp://:2855;tcp", "missing host"),
        ("msrp://ho st;tcp", "invalid character ' ' in host"),
        ("msrp://h\u00e9.example.com;tcp", "invalid character '\u00e9' in host"),
        ("msrp://a@b@h;tcp", "invalid character '@' in host"),
        ("msrp://h?x;tcp", "invalid character '?' in host"),
        ("msrp://h%zz;tcp", "bad %-escape '%zz' in host"),
        ("msrp://h%4;tcp", "bad %-escape '%4' in host"),
        ("msrp://256.0.0.1;tcp", "bad IPv4 address '256.0.0.1'"),
        ("msrp://1.2.3;tcp", "bad IPv4 address '1.2.3'"),
        ("msrp://010.0.0.1;tcp", "bad IPv4 address '010.0.0.1'"),
        ("msrp://al ice@h;tcp", "invalid character ' ' in userinfo"),
        ("msrp://a[b@h;tcp", "invalid character '[' in userinfo"),
        ("msrp://al%g1@h;tcp", "bad %-escape '%g1' in userinfo"),
        ("msrp://h/;tcp", "empty session-id"),
        ("msrp://h/ab?c;tcp", "invalid character '?' in session-id"),
        ("msrp://h/a b;tcp", "invalid character ' ' in session-id"),
        ("msrp://h/x\x00;tcp", "invalid character '\\x00' in session-id"),
        ("msrp://h/ab%2;tcp", "bad %-escape '%2' in session-id"),
        ("msrp://h/s", "missing transport"),
        ("msrp://h:1", "missing transport"),
        ("msrp://h/s;", "missing transport"),
        ("msrp://h/s;;tcp", "missing transport"),
        ("msrp://h/s;t-c-p", "invalid transport 't-c-p'"),
        ("msrp://h/s;transport=tcp", "invalid transport 'transport=tcp'"),
        ("msrp://h/s;tcp;", "empty URI parameter"),
        ("msrp://h/s;tcp;a=b=c", "invalid URI parameter 'a=b=c'"),
        ("msrp://h/s;tcp;a b", "invalid URI parameter 'a b'"),
        ("msrp://h/s;tcp;=v", "invalid URI parameter '=v'"),
        ("msrp://h/s;tcp;a=", "invalid URI parameter 'a='"),
    ]

    def test_cases(self):
        for text, reason in self.CASES:
            with self.assertRaises(URIError, msg=text) as caught:
                parse_uri(text)
            message = str(caught.exception)
            self.assertIn(reason, message, f"parsing {text!r}")
            self.assertIn(repr(text), message)

    def test_error_is_a_value_error_and_an_msrp_error(self):
        with self.assertRaises(ValueError):
            parse_uri("nonsense")
        with self.assertRaises(MSRPError):
            parse_uri("nonsense")

    def test_bad_ascii_check_in_bytes(self):
        with self.assertRaises(URIError) as caught:
            parse_uri(b"msrp://h\xff;tcp")
        self.assertIn("non-ASCII byte", str(caught.exception))

    def test_long_text_clipped_in_message(self):
        text = "msrp://h/" + "x" * 1000 + "?;tcp"
        with self.assertRaises(URIError) as caught:
            parse_uri(text)
        message = str(caught.exception)
        self.assertIn("invalid character '?' in session-id", message)
        self.assertLess(len(message), 300)
        self.assertIn("...", message)


class ConstructorErrorTests(SynchronousTestCase):
    CASES = [
        (dict(host="h", port=0), "bad port 0"),
        (dict(host="h", port=65536), "bad port 65536"),
        (dict(host="h", port="2855"), "bad port '2855'"),
        (dict(host="h", port=True), "bad port True"),
        (dict(host="h", scheme="sip"), "unsupported scheme 'sip'"),
        (dict(host="h", scheme=None), "unsupported scheme None"),
        (dict(host=""), "missing host"),
        (dict(host=5), "host must be a string"),
        (dict(host="[::1"), "unterminated IPv6 address"),
        (dict(host="[1.2.3.4]"), "invalid IPv6 address '1.2.3.4'"),
        (dict(host="h h"), "invalid character ' ' in host"),
        (dict(host="h", transport=""), "missing transport"),
        (dict(host="h", transport="t;x"), "invalid transport 't;x'"),
        (dict(host="h", transport=None), "transport must be a string"),
        (dict(host="h", session_id=""), "empty session-id"),
        (dict(host="h", session_id=7), "session-id must be a string"),
        (dict(host="h", session_id="a;b"), "invalid character ';' in session-id"),
        (dict(host="h", userinfo="a;b"), "invalid character ';' in userinfo"),
        (dict(host="h", userinfo=1), "userinfo must be a string"),
        (dict(host="h", params=[("a b", None)]), "invalid URI parameter name 'a b'"),
        (dict(host="h", params=[("a", "b c")]), "invalid value 'b c' for URI parameter 'a'"),
        (dict(host="h", params=[("a", 1)]), "invalid value 1 for URI parameter 'a'"),
        (dict(host="h", params=["abc"]), "URI parameter must be a (name, value) pair"),
    ]

    def test_cases(self):
        for kwargs, reason in self.CASES:
            with self.assertRaises(URIError, msg=repr(kwargs)) as caught:
                MSRPURI(**kwargs)
            self.assertIn(reason, str(caught.exception), repr(kwargs))


class PathTests(SynchronousTestCase):
    A = "msrp://a.example.com:1/sa;tcp"
    B = "msrps://[2001:db8::1]:2/sb;tcp"
    C = "msrp://c.example.com/sc;tcp"

    def test_single(self):
        self.assertEqual(parse_path(self.A), (parse_uri(self.A),))

    def test_several_separated_by_runs_of_blanks(self):
        expected = (parse_uri(self.A), parse_uri(self.B), parse_uri(self.C))
        for value in (
            f"{self.A} {self.B} {self.C}",
            f"{self.A}   {self.B}\t{self.C}",
            f"  {self.A} \t {self.B} {self.C}\t ",
        ):
            self.assertEqual(parse_path(value), expected, value)

    def test_empty(self):
        for value in ("", "   ", "\t \t"):
            with self.assertRaises(URIError) as caught:
                parse_path(value)
            self.assertIn("empty path", str(caught.exception))

    def test_bad_uri_in_path_is_named(self):
        with self.assertRaises(URIError) as caught:
            parse_path(f"{self.A} msrp://h:99999;tcp {self.C}")
        message = str(caught.exception)
        self.assertIn("bad port '99999'", message)
        self.assertIn("msrp://h:99999;tcp", message)

    def test_other_whitespace_is_not_a_separator(self):
        with self.assertRaises(URIError):
            parse_path(f"{self.A}\r\n{self.B}")

    def test_require_transport_passes_through(self):
        value = "msrp://relay.example.com:2855/abc"
        with self.assertRaises(URIError) as caught:
            parse_path(value)
        self.assertIn("missing transport", str(caught.exception))
        (uri,) = parse_path(value, require_transport=False)
        self.assertEqual(uri.transport, "tcp")

    def test_format_path(self):
        uris = parse_path(f"  {self.A}\t{self.B}  {self.C} ")
        self.assertEqual(format_path(uris), f"{self.A} {self.B} {self.C}")
        self.assertEqual(parse_path(format_path(uris)), uris)

    def test_format_path_accepts_one_uri_and_strings(self):
        self.assertEqual(format_path(parse_uri(self.A)), self.A)
        self.assertEqual(format_path(self.A), self.A)
        self.assertEqual(format_path([self.A, parse_uri(self.B)]), f"{self.A} {self.B}")

    def test_format_path_validates_strings(self):
        with self.assertRaises(URIError):
            format_path(["msrp://h:0;tcp"])

    def test_format_empty_path(self):
        with self.assertRaises(URIError) as caught:
            format_path([])
        self.assertIn("empty path", str(caught.exception))


# -- property tests -------------------------------------------------------

def _atoms(chars, escapes=True):
    atom = st.sampled_from(sorted(chars))
    if escapes:
        escape = st.tuples(st.integers(0, 255), st.booleans()).map(
            lambda pair: ("%%%02X" if pair[1] else "%%%02x") % pair[0]
        )
        atom = st.one_of(atom, escape)
    return atom


ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
USERINFO_CHARS = ALNUM + "-._~!$&'()*+,=:"
REG_NAME_CHARS = ALNUM + "-._~!$&'()*+,="
SESSION_CHARS = ALNUM + "-._~+=/"
TOKEN_CHARS = ALNUM + "-.!%*_+`'~"


def _random_case(text):
    return st.lists(st.booleans(), min_size=len(text), max_size=len(text)).map(
        lambda flags: "".join(c.upper() if f else c.lower() for c, f in zip(text, flags))
    )


reg_names = (
    st.lists(_atoms(REG_NAME_CHARS), min_size=1, max_size=12)
    .map("".join)
    .filter(lambda name: not DOTTED_DIGITS_RE.match(name))
)
ipv4_hosts = st.ip_addresses(v=4).map(str)
ipv6_hosts = st.ip_addresses(v=6).map(lambda a: a.exploded if int(a) % 2 else str(a)).flatmap(
    _random_case
)
hosts = st.one_of(reg_names, ipv4_hosts, ipv6_hosts)
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=6)

uri_parts = st.fixed_dictionaries(
    {
        "scheme": st.sampled_from(["msrp", "msrps"]).flatmap(_random_case),
        "userinfo": st.none() | st.lists(_atoms(USERINFO_CHARS), max_size=8).map("".join),
        "host": hosts,
        "port": st.none() | st.integers(1, 65535),
        "session_id": st.none()
        | st.lists(_atoms(SESSION_CHARS), min_size=1, max_size=16).map("".join),
        "transport": st.text(ALNUM, min_size=1, max_size=6),
        "params": st.lists(st.tuples(tokens, st.none() | tokens), max_size=3),
    }
)


def _to_text(parts):
    text = parts["scheme"] + "://"
    if parts["userinfo"] is not None:
        text += parts["userinfo"] + "@"
    host = parts["host"]
    text += f"[{host}]" if ":" in host else host
    if parts["port"] is not None:
        text += f":{parts['port']}"
    if parts["session_id"] is not None:
        text += "/" + parts["session_id"]
    text += ";" + parts["transport"]
    for name, value in parts["params"]:
        text += f";{name}" if value is None else f";{name}={value}"
    return text


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=200, database=None, deadline=None)
    @given(uri_parts)
    def test_parse_recovers_parts_and_round_trips(self, parts):
        text = _to_text(parts)
        uri = parse_uri(text)
        self.assertEqual(uri.scheme, parts["scheme"].lower())
        self.assertEqual(uri.userinfo, parts["userinfo"])
        self.assertEqual(uri.host, parts["host"])
        self.assertEqual(uri.port, parts["port"])
        self.assertEqual(uri.session_id, parts["session_id"])
        self.assertEqual(uri.transport, parts["transport"])
        self.assertEqual(uri.params, tuple(parts["params"]))
        again = parse_uri(str(uri))
        self.assertEqual(again, uri)
        self.assertEqual(hash(again), hash(uri))
        self.assertEqual(str(again), str(uri))
        scheme_length = len(parts["scheme"])
        self.assertEqual(str(uri), text[:scheme_length].lower() + text[scheme_length:])
        built = MSRPURI(**{**parts, "params": parts["params"]})
        self.assertEqual(built, uri)
        self.assertEqual(str(built), str(uri))

    @settings(max_examples=100, database=None, deadline=None)
    @given(uri_parts, st.data())
    def test_case_changes_in_compared_insensitive_parts_keep_equality(self, parts, data):
        original = parse_uri(_to_text(parts))
        changed = dict(parts)
        changed["transport"] = data.draw(_random_case(parts["transport"]))
        changed["host"] = data.draw(_random_case(parts["host"]))
        if parts["userinfo"] is not None:
            changed["userinfo"] = None
        other = parse_uri(_to_text(changed))
        self.assertEqual(other, original)
        self.assertEqual(hash(other), hash(original))

    @settings(max_examples=100, database=None, deadline=None)
    @given(
        st.lists(uri_parts, min_size=1, max_size=4),
        st.lists(st.sampled_from([" ", "\t", "  "]), min_size=5, max_size=5),
    )
    def test_path_round_trip(self, many, blanks):
        texts = [_to_text(parts) for parts in many]
        value = blanks[0]
        for index, text in enumerate(texts):
            value += text + blanks[(index + 1) % len(blanks)]
        path = parse_path(value)
        self.assertEqual(len(path), len(texts))
        self.assertEqual(parse_path(format_path(path)), path)

    @settings(max_examples=300, database=None, deadline=None)
    @given(
        st.one_of(
            st.text(max_size=60),
            st.text("msrp:/[]@;=%.:0123456789abcdefABCDEF tcp", max_size=60),
        )
    )
    def test_arbitrary_text_gives_uri_or_uri_error(self, text):
        for strict in (True, False):
            try:
                uri = parse_uri(text, require_transport=strict)
            except URIError:
                continue
            self.assertIsInstance(uri, MSRPURI)
            self.assertEqual(parse_uri(str(uri)), uri)
        try:
            parse_path(text)
        except URIError:
            pass
