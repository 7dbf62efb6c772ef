"""Tests for msrp_twisted.relay.auth: htdigest file, Digest verification, Expires."""

import os

from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from msrp_twisted.core.digest import (
    check_rspauth,
    compute_ha1,
    compute_response,
    format_credentials,
    make_authorization,
    parse_auth_info,
    parse_challenge,
)
from msrp_twisted.relay.auth import (
    AuthResult,
    CredentialsFileError,
    DigestAuthenticator,
    ExpiresOutOfBounds,
    ExpiresPolicy,
    HtdigestFile,
    Outcome,
)

REALM = "relay.example.com"
RELAY_URI = "msrps://relay.example.com:2855;tcp"
ALICE_PASSWORD = "correct horse"
ALICE_HA1 = compute_ha1("alice", REALM, ALICE_PASSWORD)
BOB_PASSWORD = "battery staple"
BOB_HA1 = compute_ha1("bob", REALM, BOB_PASSWORD)


class LogCapture:
    """Collect twisted.logger events for the duration of a test."""

    def __init__(self, testcase):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def texts(self):
        return [formatEvent(e) for e in self.events]

    def assertNoSecret(self, testcase, *secrets):
        for event in self.events:
            dump = formatEvent(event) + repr(event)
            for secret in secrets:
                testcase.assertNotIn(secret, dump)


class AuthenticatorMixin:

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.users = {"alice": ALICE_HA1, "bob": BOB_HA1}
        self.auth = DigestAuthenticator(REALM, self.users, self.clock,
                                        nonce_expire=30)

    def credentials(self, auth=None, user="alice", password=ALICE_PASSWORD,
                    method="AUTH", uri=RELAY_URI, nc=1, challenge=None,
                    drop=(), edit=None):
        """Answer a fresh challenge the way a client would, then edit it."""
        if challenge is None:
            challenge = (auth or self.auth).challenge()
        creds = make_authorization(challenge, user, password, method, uri, nc=nc)
        for name in drop:
            del creds[name]
        creds.update(edit or {})
        return creds

    def verify(self, creds, auth=None, uri=RELAY_URI):
        value = creds if isinstance(creds, str) or creds is None else \
            format_credentials(creds)
        return (auth or self.auth).verify(value, "AUTH", uri)

    def assertOutcome(self, result, outcome, code):
        self.assertIsInstance(result, AuthResult)
        self.assertEqual((result.outcome, result.code), (outcome, code),
                         result.reason)
        self.assertIsNone(result.authentication_info)

    def assertFreshChallenge(self, result, stale):
        params = parse_challenge(result.www_authenticate)
        self.assertEqual(params.get("stale"), "true" if stale else None)
        self.assertEqual(params["realm"], REALM)
        return params


class ChallengeTests(AuthenticatorMixin, SynchronousTestCase):

    def test_challenge_parameters(self):
        value = self.auth.challenge()
        self.assertTrue(value.startswith("Digest "))
        self.assertIn('qop="auth"', value)
        self.assertIn("algorithm=MD5", value)
        params = parse_challenge(value)
        self.assertEqual(sorted(params),
                         ["algorithm", "nonce", "opaque", "qop", "realm"])
        self.assertEqual(params["realm"], REALM)

    def test_stale_flag(self):
        self.assertEqual(parse_challenge(self.auth.challenge(stale=True))["stale"],
                         "true")

    def test_nonces_are_unique(self):
        nonces = {parse_challenge(self.auth.challenge())["nonce"] for _ in range(50)}
        self.assertEqual(len(nonces), 50)

    def test_other_instances_nonces_differ(self):
        other = DigestAuthenticator(REALM, self.users, self.clock)
        self.assertNotEqual(parse_challenge(self.auth.challenge())["nonce"],
                            parse_challenge(other.challenge())["nonce"])


class VerifyTests(AuthenticatorMixin, SynchronousTestCase):

    def test_ok(self):
        creds = self.credentials()
        result = self.verify(creds)
        self.assertEqual((result.outcome, result.code, result.reason),
                         (Outcome.OK, 200, "OK"))
        self.assertTrue(result.ok)
        self.assertEqual(result.username, "alice")
        self.assertIsNone(result.www_authenticate)
        info = parse_auth_info(result.authentication_info)
        self.assertEqual((info["qop"], info["nc"], info["cnonce"]),
                         ("auth", "00000001", creds["cnonce"]))
        self.assertTrue(check_rspauth(info, creds, ALICE_PASSWORD))
        self.assertEqual(result.headers(),
                         [("Authentication-Info", result.authentication_info)])

    def test_no_credentials_challenges(self):
        for value in (None, "", "   "):
            result = self.verify(value)
            self.assertOutcome(result, Outcome.CHALLENGE, 401)
            self.assertFreshChallenge(result, stale=False)
            self.assertEqual(result.headers(),
                             [("WWW-Authenticate", result.www_authenticate)])

    def test_other_scheme_challenges(self):
        result = self.verify("Basic YWxpY2U6cHc=")
        self.assertOutcome(result, Outcome.CHALLENGE, 401)
        self.assertFreshChallenge(result, stale=False)

    def test_malformed(self):
        logs = LogCapture(self)
        result = self.verify('Digest username="alice", nonce="x')
        self.assertOutcome(result, Outcome.BAD_REQUEST, 400)
        self.assertEqual(result.reason, "Bad Request (malformed Authorization)")
        self.assertIsNone(result.www_authenticate)
        self.assertTrue(any("unterminated" in t for t in logs.texts()))

    def test_missing_scheme_is_malformed(self):
        result = self.verify('username="alice", nonce="x"')
        self.assertOutcome(result, Outcome.BAD_REQUEST, 400)

    def test_client_text_not_reflected(self):
        logs = LogCapture(self)
        result = self.verify(self.credentials(edit={"qop": "q" * 5000}))
        self.assertEqual(result.reason, "Bad Request (unsupported qop)")
        self.assertFalse(any("q" * 100 in t for t in logs.texts()))

    def test_oversized_cnonce(self):
        creds = self.credentials(edit={"cnonce": "c" * 257})
        self.assertOutcome(self.verify(creds), Outcome.BAD_REQUEST, 400)

    def test_missing_parameters(self):
        for name in ("username", "realm", "nonce", "response", "qop", "nc", "cnonce"):
            result = self.verify(self.credentials(drop=(name,)))
            self.assertOutcome(result, Outcome.BAD_REQUEST, 400)
            self.assertIn("missing " + name, result.reason)

    def test_wrong_qop(self):
        result = self.verify(self.credentials(edit={"qop": "auth-int"}))
        self.assertOutcome(result, Outcome.BAD_REQUEST, 400)
        self.assertIn("qop", result.reason)

    def test_wrong_algorithm(self):
        for algorithm in ("SHA-256", "MD5-sess"):
            result = self.verify(self.credentials(edit={"algorithm": algorithm}))
            self.assertOutcome(result, Outcome.BAD_REQUEST, 400)
            self.assertIn("algorithm", result.reason)

    def test_explicit_md5_accepted(self):
        self.assertTrue(self.verify(self.credentials(edit={"algorithm": "MD5"})).ok)

    def test_bad_nc(self):
        for nc in ("0000001", "0000000g", "00000000"):
            result = self.verify(self.credentials(edit={"nc": nc}))
            self.assertOutcome(result, Outcome.BAD_REQUEST, 400)
            self.assertIn("nc", result.reason)

    def test_bad_response_syntax(self):
        result = self.verify(self.credentials(edit={"response": "abc"}))
        self.assertOutcome(result, Outcome.BAD_REQUEST, 400)

    def test_wrong_password_forbidden(self):
        result = self.verify(self.credentials(password="guess"))
        self.assertOutcome(result, Outcome.FORBIDDEN, 403)
        self.assertIsNone(result.www_authenticate)
        self.assertEqual(result.username, "alice")

    def test_unknown_user_looks_like_wrong_password(self):
        unknown = self.verify(self.credentials(user="mallory", password="x"))
        wrong = self.verify(self.credentials(password="guess"))
        self.assertOutcome(unknown, Outcome.FORBIDDEN, 403)
        self.assertEqual(unknown.reason, wrong.reason)

    def test_other_users_password_forbidden(self):
        result = self.verify(self.credentials(user="alice", password=BOB_PASSWORD))
        self.assertOutcome(result, Outcome.FORBIDDEN, 403)

    def test_digest_binds_method(self):
        result = self.verify(self.credentials(method="SEND"))
        self.assertOutcome(result, Outcome.FORBIDDEN, 403)

    def test_realm_mismatch(self):
        nonce_challenge = parse_challenge(self.auth.challenge())
        nonce_challenge["realm"] = "elsewhere.example.com"
        result = self.verify(self.credentials(challenge=nonce_challenge))
        self.assertOutcome(result, Outcome.REALM_MISMATCH, 401)
        self.assertFreshChallenge(result, stale=False)

    def test_opaque_mismatch(self):
        challenge = parse_challenge(self.auth.challenge())
        other = parse_challenge(self.auth.challenge())
        challenge["opaque"] = other["opaque"]
        result = self.verify(self.credentials(challenge=challenge))
        self.assertOutcome(result, Outcome.OPAQUE_MISMATCH, 400)

    def test_opaque_may_be_omitted(self):
        self.assertTrue(self.verify(self.credentials(drop=("opaque",))).ok)

    def test_uri_mismatch(self):
        # Correctly computed, but for another relay.
        creds = self.credentials(uri="msrps://evil.example.com:2855;tcp")
        result = self.verify(creds)
        self.assertOutcome(result, Outcome.URI_MISMATCH, 400)

    def test_uri_may_be_omitted(self):
        # RFC 4976's AUTH example carries no uri: the relay URI is implied.
        self.assertTrue(self.verify(self.credentials(drop=("uri",))).ok)

    def test_uri_omitted_but_hashed_for_another_relay(self):
        creds = self.credentials(uri="msrps://evil.example.com:2855;tcp")
        del creds["uri"]
        self.assertOutcome(self.verify(creds), Outcome.FORBIDDEN, 403)

    def test_custom_uri_matcher(self):
        auth = DigestAuthenticator(
            REALM, self.users, self.clock,
            uri_matches=lambda sent, expected: sent.lower() == expected.lower())
        creds = self.credentials(auth, uri=RELAY_URI.upper())
        self.assertTrue(self.verify(creds, auth).ok)


class NonceTests(AuthenticatorMixin, SynchronousTestCase):

    def test_expired_nonce_is_stale(self):
        creds = self.credentials()
        self.clock.advance(31)
        result = self.verify(creds)
        self.assertOutcome(result, Outcome.STALE, 401)
        params = self.assertFreshChallenge(result, stale=True)
        self.assertNotEqual(params["nonce"], creds["nonce"])

    def test_nonce_valid_until_expiry(self):
        creds = self.credentials()
        self.clock.advance(30)
        self.assertTrue(self.verify(creds).ok)

    def test_stale_only_with_valid_digest(self):
        creds = self.credentials(password="guess")
        self.clock.advance(31)
        self.assertOutcome(self.verify(creds), Outcome.FORBIDDEN, 403)

    def test_client_recovers_from_stale(self):
        creds = self.credentials()
        self.clock.advance(60)
        result = self.verify(creds)
        retry = self.credentials(challenge=result.www_authenticate)
        self.assertTrue(self.verify(retry).ok)

    def test_replay_refused(self):
        creds = self.credentials()
        self.assertTrue(self.verify(creds).ok)
        result = self.verify(creds)
        self.assertOutcome(result, Outcome.REPLAY, 401)
        self.assertFreshChallenge(result, stale=True)

    def test_increasing_nonce_count_accepted(self):
        challenge = self.auth.challenge()
        for nc in (1, 2, 5):
            creds = self.credentials(challenge=challenge, nc=nc)
            self.assertTrue(self.verify(creds).ok, nc)
        for nc in (5, 4, 1):
            creds = self.credentials(challenge=challenge, nc=nc)
            self.assertOutcome(self.verify(creds), Outcome.REPLAY, 401)

    def test_failed_attempt_does_not_burn_the_count(self):
        challenge = self.auth.challenge()
        bad = self.credentials(challenge=challenge, password="guess")
        self.assertOutcome(self.verify(bad), Outcome.FORBIDDEN, 403)
        self.assertTrue(self.verify(self.credentials(challenge=challenge)).ok)

    def resign(self, creds):
        """Recompute the response so that only the nonce itself is wrong."""
        creds["response"] = compute_response(
            ALICE_HA1, creds["nonce"], creds["nc"], creds["cnonce"], "auth",
            "AUTH", creds["uri"])
        return creds

    def test_modified_nonce_refused(self):
        creds = self.credentials()
        nonce = creds["nonce"]
        for i in (0, len(nonce) // 2, len(nonce) - 1):
            flipped = "A" if nonce[i] != "A" else "B"
            forged = dict(creds, nonce=nonce[:i] + flipped + nonce[i + 1:])
            result = self.verify(self.resign(forged))
            self.assertOutcome(result, Outcome.BAD_NONCE, 401)
            self.assertFreshChallenge(result, stale=False)

    def test_invented_nonces_refused(self):
        creds = self.credentials()
        for nonce in ("dcd98b7102dd2f0e8b11d0f600bfb0c093", "", "x" * 64,
                      creds["nonce"] + "A", creds["nonce"][:-1] + "+"):
            forged = self.resign(dict(creds, nonce=nonce))
            self.assertOutcome(self.verify(forged), Outcome.BAD_NONCE, 401)

    def test_nonce_of_another_secret_refused(self):
        other = DigestAuthenticator(REALM, self.users, self.clock)
        self.assertOutcome(self.verify(self.credentials(other)), Outcome.BAD_NONCE, 401)

    def test_nonce_of_another_realm_refused(self):
        secret = b"s" * 32
        mine = DigestAuthenticator(REALM, self.users, self.clock, secret=secret)
        other = DigestAuthenticator("other.example.com", {}, self.clock, secret=secret)
        challenge = parse_challenge(other.challenge())
        challenge["realm"] = REALM
        creds = self.credentials(challenge=challenge)
        self.assertOutcome(self.verify(creds, mine), Outcome.BAD_NONCE, 401)

    def test_nonce_of_earlier_run_is_stale(self):
        # Same secret (a restart with a configured secret): we issued it, but
        # cannot know which nonce-counts were used.
        secret = b"s" * 32
        before = DigestAuthenticator(REALM, self.users, self.clock, secret=secret)
        after = DigestAuthenticator(REALM, self.users, self.clock, secret=secret)
        creds = self.credentials(before)
        self.assertTrue(self.verify(creds, before).ok)
        self.assertOutcome(self.verify(creds, after), Outcome.STALE, 401)

    def test_tracking_is_bounded(self):
        auth = DigestAuthenticator(REALM, self.users, self.clock,
                                   max_tracked_nonces=2)
        first, second, third = (auth.challenge() for _ in range(3))
        for challenge in (first, second, third):
            self.assertTrue(self.verify(self.credentials(challenge=challenge), auth).ok)
        self.assertEqual(auth.tracked_nonces, 2)
        # first was forgotten: its count history is unknown, so even a higher
        # count is not trusted.
        result = self.verify(self.credentials(challenge=first, nc=2), auth)
        self.assertOutcome(result, Outcome.STALE, 401)
        self.assertTrue(self.verify(self.credentials(challenge=third, nc=2), auth).ok)

    def test_expired_nonces_pruned(self):
        for _ in range(5):
            self.assertTrue(self.verify(self.credentials()).ok)
        self.assertEqual(self.auth.tracked_nonces, 5)
        self.clock.advance(31)
        self.assertTrue(self.verify(self.credentials()).ok)
        self.assertEqual(self.auth.tracked_nonces, 1)


class ConfigurationTests(SynchronousTestCase):

    def test_refusals(self):
        clock = Clock()
        self.assertRaises(ValueError, DigestAuthenticator, REALM, {}, clock,
                          secret=b"short")
        self.assertRaises(ValueError, DigestAuthenticator, REALM, {}, clock,
                          nonce_expire=0)
        self.assertRaises(ValueError, DigestAuthenticator, REALM, {}, clock,
                          max_tracked_nonces=0)
        self.assertRaises(TypeError, DigestAuthenticator, REALM, ["alice"], clock)

    def test_realm_of_credentials_must_match(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("alice:%s:%s\n" % (REALM, ALICE_HA1))
        users = HtdigestFile(path, REALM)
        self.assertRaises(ValueError, DigestAuthenticator, "other", users, Clock())


def write(path, text, mtime_ns=None):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def entry(user, realm, ha1):
    return "%s:%s:%s\n" % (user, realm, ha1)


BASE_MTIME = 1_700_000_000 * 10 ** 9


class HtdigestFileTests(SynchronousTestCase):

    def setUp(self):
        self.logs = LogCapture(self)
        self.clock = Clock()
        self.path = self.mktemp()
        write(self.path,
              "# users of the relay\n\n"
              + entry("alice", REALM, ALICE_HA1.upper())
              + entry("carol", "other.example.com", "0" * 32)
              + "  " + entry("bob", REALM, BOB_HA1).rstrip("\n") + "  \r\n",
              BASE_MTIME)
        self.users = HtdigestFile(self.path, REALM, clock=self.clock)

    def test_lookup(self):
        self.assertEqual(self.users.lookup("alice"), ALICE_HA1)
        self.assertEqual(self.users.lookup("bob"), BOB_HA1)
        self.assertIsNone(self.users.lookup("carol"))
        self.assertIsNone(self.users.lookup("mallory"))
        self.assertEqual(len(self.users), 2)

    def test_realm_may_contain_colons(self):
        path = self.mktemp()
        write(path, entry("dave", "a:b", ALICE_HA1))
        self.assertEqual(HtdigestFile(path, "a:b").lookup("dave"), ALICE_HA1)

    def test_unchanged_file_not_reread(self):
        self.clock.advance(5)
        self.assertFalse(self.users.maybe_reload())

    def test_reloaded_on_change(self):
        write(self.path, entry("alice", REALM, BOB_HA1), BASE_MTIME + 10 ** 9)
        self.clock.advance(1)
        self.assertTrue(self.users.maybe_reload())
        self.assertEqual(self.users.lookup("alice"), BOB_HA1)
        self.assertIsNone(self.users.lookup("bob"))

    def test_same_size_new_mtime_reloaded(self):
        text = (entry("alice", REALM, BOB_HA1) + entry("bob", REALM, ALICE_HA1))
        write(self.path, text, BASE_MTIME)
        self.clock.advance(1)
        self.users.maybe_reload()
        write(self.path, text.replace("alice", "erika"), BASE_MTIME + 1)
        self.clock.advance(1)
        self.assertTrue(self.users.maybe_reload())
        self.assertEqual(self.users.lookup("erika"), BOB_HA1)

    def test_checked_at_most_once_a_second(self):
        write(self.path, entry("zed", REALM, ALICE_HA1), BASE_MTIME + 10 ** 9)
        self.clock.advance(0.5)
        self.assertIsNone(self.users.lookup("zed"))
        self.assertFalse(self.users.maybe_reload())
        self.clock.advance(0.5)
        self.assertEqual(self.users.lookup("zed"), ALICE_HA1)

    def test_without_clock_checked_every_time(self):
        users = HtdigestFile(self.path, REALM)
        write(self.path, entry("zed", REALM, ALICE_HA1), BASE_MTIME + 10 ** 9)
        self.assertEqual(users.lookup("zed"), ALICE_HA1)

    def test_broken_file_keeps_old_credentials(self):
        write(self.path,
              entry("alice", REALM, BOB_HA1) + "# ok\n" + "bob:%s\n" % REALM,
              BASE_MTIME + 10 ** 9)
        self.clock.advance(1)
        self.assertFalse(self.users.maybe_reload())
        self.assertEqual(self.users.lookup("alice"), ALICE_HA1)
        self.assertEqual(self.users.lookup("bob"), BOB_HA1)
        errors = [t for t in self.logs.texts() if "line 3" in t]
        self.assertEqual(len(errors), 1)
        self.assertIn(self.path, errors[0])
        self.assertIn("keeping the 2 users", errors[0])
        # The same broken version is reported once, not every second.
        self.clock.advance(1)
        self.users.maybe_reload()
        self.assertEqual(len([t for t in self.logs.texts() if "line 3" in t]), 1)

    def test_reload_reports_the_error(self):
        write(self.path, entry("alice", REALM, "xyz" + ALICE_HA1[3:]))
        e = self.assertRaises(CredentialsFileError, self.users.reload)
        self.assertIn(self.path, str(e))
        self.assertIn("line 1", str(e))
        self.assertIn("32 hexadecimal digits", str(e))
        self.assertEqual(self.users.lookup("alice"), ALICE_HA1)

    def test_reload_returns_user_count(self):
        write(self.path, entry("alice", REALM, ALICE_HA1))
        self.assertEqual(self.users.reload(), 1)

    def test_fixed_file_loaded_again(self):
        write(self.path, "garbage\n", BASE_MTIME + 10 ** 9)
        self.clock.advance(1)
        self.assertFalse(self.users.maybe_reload())
        write(self.path, entry("alice", REALM, BOB_HA1), BASE_MTIME + 2 * 10 ** 9)
        self.clock.advance(1)
        self.assertTrue(self.users.maybe_reload())
        self.assertEqual(self.users.lookup("alice"), BOB_HA1)

    def test_malformed_lines(self):
        for text, fragment in [
            ("nocolons\n", "line 1: expected user:realm:HA1"),
            (":%s:%s\n" % (REALM, ALICE_HA1), "line 1: expected user:realm:HA1"),
            ("\n" + "alice:%s\n" % ALICE_HA1, "line 2: expected user:realm:HA1"),
            (entry("alice", REALM, ALICE_HA1[:31]), "line 1: the HA1 field"),
            (entry("alice", REALM, ALICE_HA1) * 2,
             "line 2: user 'alice' already defined on line 1"),
        ]:
            write(self.path, text)
            e = self.assertRaises(CredentialsFileError, self.users.reload)
            self.assertIn(fragment, str(e))

    def test_not_utf8(self):
        with open(self.path, "wb") as f:
            f.write(entry("alice", REALM, ALICE_HA1).encode() + b"b\xffb:r:x\n")
        e = self.assertRaises(CredentialsFileError, self.users.reload)
        self.assertIn("line 2: not valid UTF-8", str(e))

    def test_missing_file_at_start(self):
        e = self.assertRaises(CredentialsFileError, HtdigestFile,
                              self.mktemp(), REALM)
        self.assertIn("cannot read", str(e))

    def test_file_removed_later(self):
        os.remove(self.path)
        self.clock.advance(1)
        self.assertFalse(self.users.maybe_reload())
        self.assertEqual(self.users.lookup("alice"), ALICE_HA1)
        self.clock.advance(1)
        self.users.maybe_reload()
        self.assertEqual(len([t for t in self.logs.texts() if "cannot stat" in t]), 1)

    def test_empty_realm_warns(self):
        write(self.path, entry("carol", "other", ALICE_HA1))
        self.assertEqual(self.users.reload(), 0)
        self.assertTrue(any("no users for realm" in t for t in self.logs.texts()))

    def test_secrets_never_logged(self):
        write(self.path, entry("alice", REALM, BOB_HA1) + "bob:" + BOB_HA1 + "\n")
        self.assertRaises(CredentialsFileError, self.users.reload)
        write(self.path, entry("alice", REALM, BOB_HA1[:-1] + "z"))
        self.assertRaises(CredentialsFileError, self.users.reload)
        self.assertTrue(self.logs.events)
        self.logs.assertNoSecret(self, ALICE_HA1, BOB_HA1, BOB_HA1[:-1],
                                 ALICE_HA1.upper())


class EndToEndTests(AuthenticatorMixin, SynchronousTestCase):
    """An authenticator backed by a real htdigest file."""

    def setUp(self):
        self.logs = LogCapture(self)
        self.clock = Clock()
        self.path = self.mktemp()
        write(self.path, entry("alice", REALM, ALICE_HA1), BASE_MTIME)
        self.users = HtdigestFile(self.path, REALM, clock=self.clock)
        self.auth = DigestAuthenticator(REALM, self.users, self.clock)

    def test_password_change_picked_up(self):
        self.assertTrue(self.verify(self.credentials()).ok)
        write(self.path, entry("alice", REALM, compute_ha1("alice", REALM, "new pw")),
              BASE_MTIME + 10 ** 9)
        self.clock.advance(1)
        self.assertOutcome(self.verify(self.credentials()), Outcome.FORBIDDEN, 403)
        self.assertTrue(self.verify(self.credentials(password="new pw")).ok)

    def test_secrets_never_logged(self):
        self.verify(self.credentials())
        self.verify(self.credentials(password="wrong guess"))
        self.verify(self.credentials(user="mallory", password="mallory pw"))
        creds = self.credentials()
        self.clock.advance(31)
        self.verify(creds)
        self.verify(None)
        self.verify('Digest username="alice", response="x')
        texts = self.logs.texts()
        self.assertTrue(any("AUTH accepted for user 'alice'" in t for t in texts))
        self.assertTrue(any("nonce expired" in t for t in texts))
        self.assertTrue(any("forbidden" in t and "wrong password" in t for t in texts))
        self.logs.assertNoSecret(self, ALICE_HA1, ALICE_PASSWORD, "wrong guess",
                                 "mallory pw")


class ExpiresPolicyTests(SynchronousTestCase):

    def setUp(self):
        self.policy = ExpiresPolicy(default=1800, minimum=60, maximum=3600)

    def test_default_when_absent(self):
        self.assertEqual(self.policy.grant(None), 1800)

    def test_within_bounds(self):
        for value in (60, 900, 3600):
            self.assertEqual(self.policy.grant(value), value)

    def test_too_short_carries_min_expires(self):
        e = self.assertRaises(ExpiresOutOfBounds, self.policy.grant, 59)
        self.assertEqual((e.code, e.reason), (423, "Interval Out-of-Bounds"))
        self.assertEqual(e.headers, [("Min-Expires", "60")])
        self.assertEqual(e.requested, 59)

    def test_too_long_carries_max_expires(self):
        e = self.assertRaises(ExpiresOutOfBounds, self.policy.grant, 3601)
        self.assertEqual(e.code, 423)
        self.assertEqual(e.headers, [("Max-Expires", "3600")])

    def test_unbounded(self):
        policy = ExpiresPolicy(default=10, minimum=None, maximum=None)
        self.assertEqual(policy.grant(0), 0)
        self.assertEqual(policy.grant(10 ** 9), 10 ** 9)

    def test_bad_requests(self):
        self.assertRaises(TypeError, self.policy.grant, "600")
        self.assertRaises(TypeError, self.policy.grant, True)
        self.assertRaises(ValueError, self.policy.grant, -1)

    def test_bad_configuration(self):
        self.assertRaises(ValueError, ExpiresPolicy, default=30, minimum=60)
        self.assertRaises(ValueError, ExpiresPolicy, default=4000, maximum=3600)
        self.assertRaises(ValueError, ExpiresPolicy, minimum=100, maximum=50,
                          default=75)
        self.assertRaises(ValueError, ExpiresPolicy, default=-1, minimum=None)
        self.assertRaises(ValueError, ExpiresPolicy, default=None)
