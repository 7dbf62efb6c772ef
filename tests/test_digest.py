"""Tests for msrp_twisted.core.digest (RFC 2617 Digest for RFC 4976 AUTH)."""

import ast
import hashlib
import inspect

from twisted.trial.unittest import SynchronousTestCase

from msrp_twisted.core import digest
from msrp_twisted.core.errors import HeaderError, SerializationError
from msrp_twisted.core.digest import (
    check_rspauth,
    compute_ha1,
    compute_response,
    compute_rspauth,
    format_auth_info,
    format_challenge,
    format_credentials,
    make_authorization,
    parse_auth_info,
    parse_challenge,
    parse_credentials,
)


def md5(text):
    return hashlib.md5(text.encode("utf-8")).hexdigest()


# RFC 2617 section 3.5, with the header lines unfolded.
RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
    'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
RFC2617_AUTHORIZATION = (
    'Digest username="Mufasa", realm="testrealm@host.com", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", '
    'qop=auth, nc=00000001, cnonce="0a4f113b", '
    'response="6629fae49393a05397450978507c4ef1", '
    'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
RFC2617_RESPONSE = "6629fae49393a05397450978507c4ef1"

RELAY_URI = "msrps://alice@intra.example.com;tcp"


class RFC2617ExampleTests(SynchronousTestCase):
    """The worked example of RFC 2617 section 3.5."""

    def test_ha1(self):
        self.assertEqual(
            compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life"),
            md5("Mufasa:testrealm@host.com:Circle Of Life"),
        )

    def test_response(self):
        ha1 = compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
        self.assertEqual(
            compute_response(ha1, "dcd98b7102dd2f0e8b11d0f600bfb0c093", "00000001",
                             "0a4f113b", "auth", "GET", "/dir/index.html"),
            RFC2617_RESPONSE,
        )

    def test_nc_as_int(self):
        ha1 = compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
        self.assertEqual(
            compute_response(ha1, "dcd98b7102dd2f0e8b11d0f600bfb0c093", 1,
                             "0a4f113b", "auth", "GET", "/dir/index.html"),
            RFC2617_RESPONSE,
        )

    def test_parse_challenge(self):
        self.assertEqual(parse_challenge(RFC2617_CHALLENGE), {
            "realm": "testrealm@host.com",
            "qop": "auth,auth-int",
            "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "opaque": "5ccc069c403ebaf9f0171e9517f40e41",
        })

    def test_parse_credentials(self):
        creds = parse_credentials(RFC2617_AUTHORIZATION)
        self.assertEqual(creds["username"], "Mufasa")
        self.assertEqual(creds["uri"], "/dir/index.html")
        self.assertEqual(creds["qop"], "auth")
        self.assertEqual(creds["nc"], "00000001")
        self.assertEqual(creds["response"], RFC2617_RESPONSE)

    def test_make_authorization_reproduces_example(self):
        creds = make_authorization(RFC2617_CHALLENGE, "Mufasa", "Circle Of Life",
                                   "GET", "/dir/index.html", nc=1, cnonce="0a4f113b")
        self.assertEqual(creds, parse_credentials(RFC2617_AUTHORIZATION))

    def test_formatted_example_parses_back(self):
        creds = make_authorization(RFC2617_CHALLENGE, "Mufasa", "Circle Of Life",
                                   "GET", "/dir/index.html", cnonce="0a4f113b")
        text = format_credentials(creds)
        self.assertIn("qop=auth,", text)
        self.assertIn("nc=00000001", text)
        self.assertIn('response="%s"' % RFC2617_RESPONSE, text)
        self.assertEqual(parse_credentials(text), creds)


class ParseTests(SynchronousTestCase):

    def test_names_lowercased_and_scheme_case_insensitive(self):
        self.assertEqual(
            parse_credentials('dIgEsT UserName="a", NONCE=xyz'),
            {"username": "a", "nonce": "xyz"},
        )

    def test_backslash_escapes(self):
        params = parse_challenge(r'Digest realm="a\"b\\c\d", nonce="n"')
        self.assertEqual(params["realm"], 'a"b\\cd')

    def test_comma_inside_quotes(self):
        self.assertEqual(parse_challenge('Digest qop="auth, auth-int"')["qop"],
                         "auth, auth-int")

    def test_whitespace_and_empty_elements(self):
        self.assertEqual(
            parse_challenge('  Digest\trealm = "r" ,, nonce=n ,  '),
            {"realm": "r", "nonce": "n"},
        )

    def test_utf8_in_quoted_string(self):
        self.assertEqual(parse_credentials('Digest username="zoë"')["username"], "zoë")

    def test_empty_quoted_string(self):
        self.assertEqual(parse_challenge('Digest opaque=""')["opaque"], "")

    def assertHeaderError(self, func, value, *fragments):
        e = self.assertRaises(HeaderError, func, value)
        for fragment in fragments:
            self.assertIn(fragment, str(e))
        return e

    def test_duplicate_param(self):
        self.assertHeaderError(parse_credentials, 'Digest nonce="a", Nonce="b"',
                               "duplicate auth-param 'nonce'")

    def test_unterminated_quote(self):
        self.assertHeaderError(parse_challenge, 'Digest realm="abc, nonce=x',
                               "unterminated quoted-string", "'realm'")

    def test_trailing_backslash(self):
        self.assertHeaderError(parse_challenge, 'Digest realm="abc\\',
                               "unterminated quoted-string")

    def test_missing_scheme(self):
        self.assertHeaderError(parse_credentials, 'username="a", nonce="b"',
                               "missing auth-scheme")

    def test_empty_value(self):
        self.assertHeaderError(parse_credentials, "", "missing auth-scheme")

    def test_other_scheme(self):
        self.assertHeaderError(parse_credentials, "Basic realm=x",
                               "unsupported auth-scheme 'Basic'")

    def test_no_params(self):
        self.assertHeaderError(parse_challenge, "Digest", "no auth-params")
        self.assertHeaderError(parse_challenge, "Digest  ", "no auth-params")

    def test_param_without_value(self):
        self.assertHeaderError(parse_challenge, "Digest realm, nonce=x",
                               "'realm' has no '=value'")

    def test_param_with_empty_value(self):
        self.assertHeaderError(parse_challenge, "Digest realm=, nonce=x",
                               "'realm' has an empty or invalid value")

    def test_missing_comma(self):
        self.assertHeaderError(parse_challenge, 'Digest realm="r" nonce="n"',
                               "expected ',' after auth-param 'realm'")

    def test_junk_instead_of_name(self):
        self.assertHeaderError(parse_challenge, 'Digest realm="r", ="n"',
                               "expected an auth-param name")

    def test_control_character(self):
        self.assertHeaderError(parse_challenge, 'Digest realm="a\x00b"',
                               "control character")

    def test_not_str(self):
        self.assertHeaderError(parse_challenge, b'Digest realm="r"', "must be str")

    def test_auth_info_has_no_scheme(self):
        self.assertEqual(
            parse_auth_info('rspauth="abc", qop=auth, nc=00000001, cnonce="c"'),
            {"rspauth": "abc", "qop": "auth", "nc": "00000001", "cnonce": "c"},
        )
        self.assertHeaderError(parse_auth_info, 'Digest rspauth="abc"',
                               "'digest' has no '=value'")


class FormatTests(SynchronousTestCase):

    def test_challenge_tokens_and_quotes(self):
        self.assertEqual(
            format_challenge({"realm": "r", "nonce": "n", "qop": "auth",
                              "algorithm": "MD5", "stale": "true"}),
            'Digest realm="r", nonce="n", qop="auth", algorithm=MD5, stale=true',
        )

    def test_credentials_tokens(self):
        text = format_credentials({"username": "u", "qop": "auth", "nc": "00000001",
                                   "algorithm": "MD5", "uri": "msrp://h;tcp"})
        self.assertEqual(
            text,
            'Digest username="u", qop=auth, nc=00000001, algorithm=MD5, '
            'uri="msrp://h;tcp"',
        )

    def test_auth_info(self):
        self.assertEqual(
            format_auth_info({"qop": "auth", "rspauth": "ab", "cnonce": "c",
                              "nc": "00000002"}),
            'qop=auth, rspauth="ab", cnonce="c", nc=00000002',
        )

    def test_round_trip_of_awkward_values(self):
        params = {"realm": 'we "quote", and \\ escape', "nonce": "ñ,=;",
                  "opaque": "", "x-ext": "tab\there"}
        self.assertEqual(parse_challenge(format_challenge(params)), params)

    def test_pairs_keep_order(self):
        self.assertEqual(format_auth_info([("nc", "00000001"), ("qop", "auth")]),
                         "nc=00000001, qop=auth")

    def test_refuses_crlf(self):
        e = self.assertRaises(SerializationError, format_challenge,
                              {"realm": "a\r\nTo-Path: x"})
        self.assertIn("control character", str(e))

    def test_refuses_bad_token_value(self):
        e = self.assertRaises(SerializationError, format_challenge,
                              {"algorithm": "MD 5"})
        self.assertIn("'algorithm' must be a token", str(e))

    def test_refuses_bad_name(self):
        self.assertRaises(SerializationError, format_credentials, {"user name": "x"})

    def test_refuses_empty(self):
        self.assertRaises(SerializationError, format_challenge, {})

    def test_refuses_non_str_value(self):
        self.assertRaises(SerializationError, format_credentials, {"nc": 1})


class ComputeTests(SynchronousTestCase):
    ha1 = md5("alice:example.com:secret")

    def test_md5_sess(self):
        key = md5("%s:n1:c1" % self.ha1)
        expected = md5("%s:n1:00000001:c1:auth:%s" % (key, md5("AUTH:" + RELAY_URI)))
        self.assertEqual(
            compute_response(self.ha1, "n1", "00000001", "c1", "auth", "AUTH",
                             RELAY_URI, algorithm="MD5-sess"),
            expected,
        )

    def test_md5_sess_needs_cnonce(self):
        self.assertRaises(HeaderError, compute_response, self.ha1, "n", 1, None,
                          "auth", "AUTH", RELAY_URI, algorithm="MD5-sess")

    def test_rfc2069_form_without_qop(self):
        expected = md5("%s:n1:%s" % (self.ha1, md5("AUTH:" + RELAY_URI)))
        self.assertEqual(
            compute_response(self.ha1, "n1", None, None, None, "AUTH", RELAY_URI),
            expected,
        )

    def test_rspauth_has_empty_method(self):
        expected = md5("%s:n1:00000001:c1:auth:%s" % (self.ha1, md5(":" + RELAY_URI)))
        self.assertEqual(
            compute_rspauth(self.ha1, "n1", "00000001", "c1", "auth", RELAY_URI),
            expected,
        )

    def test_method_and_uri_change_the_response(self):
        base = compute_response(self.ha1, "n", 1, "c", "auth", "AUTH", RELAY_URI)
        self.assertNotEqual(
            base, compute_response(self.ha1, "n", 1, "c", "auth", "SEND", RELAY_URI))
        self.assertNotEqual(
            base, compute_response(self.ha1, "n", 1, "c", "auth", "AUTH", "msrp://x"))
        self.assertNotEqual(
            base, compute_response(self.ha1, "n", 2, "c", "auth", "AUTH", RELAY_URI))

    def test_unsupported(self):
        self.assertRaises(HeaderError, compute_response, self.ha1, "n", 1, "c",
                          "auth-int", "AUTH", RELAY_URI)
        self.assertRaises(HeaderError, compute_response, self.ha1, "n", 1, "c",
                          "auth", "AUTH", RELAY_URI, algorithm="SHA-256")

    def test_bad_nonce_count(self):
        for nc in (0, 2 ** 32, "1", "0000000g", True):
            self.assertRaises(HeaderError, compute_response, self.ha1, "n", nc, "c",
                              "auth", "AUTH", RELAY_URI)


class ClientTests(SynchronousTestCase):
    challenge = ('Digest realm="intra.example.com", qop="auth", '
                 'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093"')

    def test_rfc4976_style_challenge(self):
        creds = make_authorization(self.challenge, "Alice", "pw", "AUTH", RELAY_URI,
                                   cnonce="0a4f113b")
        ha1 = md5("Alice:intra.example.com:pw")
        self.assertEqual(creds["response"], compute_response(
            ha1, "dcd98b7102dd2f0e8b11d0f600bfb0c093", "00000001", "0a4f113b",
            "auth", "AUTH", RELAY_URI))
        self.assertEqual(creds["uri"], RELAY_URI)
        self.assertNotIn("opaque", creds)
        self.assertNotIn("algorithm", creds)

    def test_echoes_opaque_and_algorithm(self):
        creds = make_authorization(
            'Digest realm="r", nonce="n", qop="auth", algorithm=MD5-sess, opaque="o"',
            "u", "p", "AUTH", RELAY_URI, nc=10, cnonce="c")
        self.assertEqual((creds["opaque"], creds["algorithm"], creds["nc"]),
                         ("o", "MD5-sess", "0000000a"))
        key = md5("%s:n:c" % md5("u:r:p"))
        self.assertEqual(creds["response"], md5(
            "%s:n:0000000a:c:auth:%s" % (key, md5("AUTH:" + RELAY_URI))))

    def test_random_cnonce(self):
        a = make_authorization(self.challenge, "u", "p", "AUTH", RELAY_URI)
        b = make_authorization(self.challenge, "u", "p", "AUTH", RELAY_URI)
        self.assertNotEqual(a["cnonce"], b["cnonce"])
        self.assertGreaterEqual(len(a["cnonce"]), 16)

    def test_challenge_without_qop(self):
        creds = make_authorization('Digest realm="r", nonce="n"', "u", "p", "AUTH",
                                   RELAY_URI)
        self.assertNotIn("qop", creds)
        self.assertNotIn("cnonce", creds)
        self.assertNotIn("nc", creds)

    def test_refusals(self):
        for challenge, fragment in [
            ('Digest realm="r", nonce="n", qop="auth-int"', "offers no 'auth'"),
            ('Digest realm="r", nonce="n", algorithm=SHA-256', "unsupported algorithm"),
            ('Digest realm="r", qop="auth"', "no nonce"),
            ('Digest nonce="n", qop="auth"', "no realm"),
            ('Digest realm="r", nonce="n", algorithm=MD5-sess', "without qop"),
        ]:
            e = self.assertRaises(HeaderError, make_authorization, challenge,
                                  "u", "p", "AUTH", RELAY_URI)
            self.assertIn(fragment, str(e))


class RspauthTests(SynchronousTestCase):

    def setUp(self):
        self.creds = make_authorization(
            'Digest realm="r", nonce="n", qop="auth"', "u", "p", "AUTH", RELAY_URI,
            nc=3, cnonce="cc")
        self.rspauth = compute_rspauth(md5("u:r:p"), "n", "00000003", "cc", "auth",
                                       RELAY_URI)

    def info(self, **changes):
        params = {"qop": "auth", "rspauth": self.rspauth, "cnonce": "cc",
                  "nc": "00000003"}
        params.update(changes)
        return format_auth_info({k: v for k, v in params.items() if v is not None})

    def test_accepts_server_proof(self):
        self.assertTrue(check_rspauth(self.info(), self.creds, "p"))
        self.assertTrue(check_rspauth(self.info(), self.creds, ha1=md5("u:r:p")))

    def test_refuses_wrong_proof(self):
        self.assertFalse(check_rspauth(self.info(), self.creds, "other"))
        self.assertFalse(check_rspauth(self.info(rspauth="0" * 32), self.creds, "p"))

    def test_refuses_missing_proof(self):
        self.assertFalse(check_rspauth(self.info(rspauth=None), self.creds, "p"))

    def test_refuses_other_request(self):
        self.assertFalse(check_rspauth(self.info(cnonce="xx"), self.creds, "p"))
        self.assertFalse(check_rspauth(self.info(nc="00000004"), self.creds, "p"))
        self.assertFalse(check_rspauth(self.info(nc="zz"), self.creds, "p"))

    def test_needs_a_secret(self):
        self.assertRaises(ValueError, check_rspauth, self.info(), self.creds)


class SansIOTests(SynchronousTestCase):

    def test_no_twisted_import(self):
        tree = ast.parse(inspect.getsource(digest))
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
        self.assertEqual([m for m in imported if m.split(".")[0] == "twisted"], [])
