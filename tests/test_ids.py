"""Tests for msrp_twisted.core.ids."""

import functools
import math

from twisted.trial.unittest import SynchronousTestCase

from msrp_twisted.core import ids
from msrp_twisted.core.uri import parse_uri

# Transcribed independently from RFC 4975 section 9 so that the module's own
# patterns are checked against the grammar, not against themselves:
#   ident      = ALPHANUM 3*31ident-char
#   ident-char = ALPHANUM / "." / "-" / "+" / "%" / "="
#   session-id = 1*( unreserved / "+" / "=" / "/" )
ALPHANUM = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
IDENT_CHARS = ALPHANUM | set(".-+%=")
SESSION_ID_CHARS = ALPHANUM | set("-._~") | set("+=/")

HEX_ALPHABET = set("0123456789abcdef")
URLSAFE_ALPHABET = ALPHANUM | set("-_")

SAMPLES = 10_000


@functools.lru_cache(maxsize=None)
def samples():
    """One shared draw of SAMPLES ids of each kind, reused by the tests."""
    return (
        [ids.new_transaction_id() for _ in range(SAMPLES)],
        [ids.new_message_id() for _ in range(SAMPLES)],
        [ids.new_session_id() for _ in range(SAMPLES)],
    )


def is_ident_by_grammar(value):
    return (
        4 <= len(value) <= 32
        and value[0] in ALPHANUM
        and all(char in IDENT_CHARS for char in value[1:])
    )


class IdentifierShapeTests(SynchronousTestCase):
    def setUp(self):
        self.transaction_ids, self.message_ids, self.session_ids = samples()

    def test_transaction_ids_are_idents(self):
        for tid in self.transaction_ids:
            self.assertTrue(is_ident_by_grammar(tid), tid)
            self.assertTrue(ids.is_valid_ident(tid), tid)
            self.assertEqual(len(tid), 24)

    def test_message_ids_are_idents(self):
        for mid in self.message_ids:
            self.assertTrue(is_ident_by_grammar(mid), mid)
            self.assertTrue(ids.is_valid_ident(mid), mid)
            self.assertEqual(len(mid), 32)

    def test_session_ids_use_session_id_characters(self):
        for sid in self.session_ids:
            self.assertEqual(len(sid), 20)
            self.assertTrue(set(sid) <= SESSION_ID_CHARS, sid)
            self.assertTrue(ids.is_valid_session_id(sid), sid)

    def test_session_id_fits_in_a_uri(self):
        sid = self.session_ids[0]
        uri = parse_uri(f"msrp://relay.example.com:2855/{sid};tcp")
        self.assertEqual(uri.session_id, sid)

    def test_all_unique(self):
        self.assertEqual(len(set(self.transaction_ids)), SAMPLES)
        self.assertEqual(len(set(self.message_ids)), SAMPLES)
        self.assertEqual(len(set(self.session_ids)), SAMPLES)

    def test_every_position_uses_the_whole_alphabet(self):
        """Each character carries full entropy: no fixed or biased position.

        With 10,000 samples the chance that a uniformly random position
        misses one of 64 symbols is below 1e-60, so a miss means the
        construction is wrong, not bad luck.
        """
        for name, values, alphabet in (
            ("transaction", self.transaction_ids, HEX_ALPHABET),
            ("message", self.message_ids, HEX_ALPHABET),
            ("session", self.session_ids, URLSAFE_ALPHABET),
        ):
            for position in range(len(values[0])):
                seen = {value[position] for value in values}
                self.assertEqual(seen, alphabet, f"{name} id position {position}")


class EntropyTests(SynchronousTestCase):
    """Entropy computed from the construction: length x log2(alphabet)."""

    def bits(self, value, alphabet_size):
        return len(value) * math.log2(alphabet_size)

    def test_transaction_id_bits(self):
        bits = self.bits(ids.new_transaction_id(), 16)
        self.assertEqual(bits, ids.TRANSACTION_ID_BITS)
        self.assertGreaterEqual(bits, 96)

    def test_message_id_bits(self):
        bits = self.bits(ids.new_message_id(), 16)
        self.assertEqual(bits, ids.MESSAGE_ID_BITS)
        self.assertGreaterEqual(bits, 96)

    def test_session_id_bits(self):
        # 15 random bytes, base64 without padding: every character is 6 bits.
        bits = self.bits(ids.new_session_id(), 64)
        self.assertEqual(bits, ids.SESSION_ID_BITS)
        self.assertGreaterEqual(bits, 96)
        self.assertGreaterEqual(bits, 80)  # RFC 4975's floor for session-ids


class IdentValidationTests(SynchronousTestCase):
    def test_valid(self):
        for value in (
            "a786hjs2",  # RFC 4975 examples
            "dkei38sd",
            "49fh",
            "12339sdqwer",
            "a" * 32,
            "A.b-c+d%e=f",
            "0000",
        ):
            self.assertTrue(ids.is_valid_ident(value), value)

    def test_invalid(self):
        for value in (
            "",
            "abc",  # too short
            "a" * 33,  # too long
            ".abc",  # must start with ALPHANUM
            "-abc",
            "ab_cd",  # "_" is not an ident-char
            "ab cd",
            "abcd\n",
            "abcé",
        ):
            self.assertFalse(ids.is_valid_ident(value), value)

    def test_non_string(self):
        self.assertFalse(ids.is_valid_ident(b"abcd"))
        self.assertFalse(ids.is_valid_ident(None))
        self.assertFalse(ids.is_valid_session_id(1234))

    def test_session_id_validation(self):
        for value in ("jshA7weztas", "kjhd37s2s20w2a", "a/b+c=d~e_f-g.h", "x"):
            self.assertTrue(ids.is_valid_session_id(value), value)
        for value in ("", "a b", "a;b", "a%41", "a?b", "é"):
            self.assertFalse(ids.is_valid_session_id(value), value)

    def test_ident_pattern_matches_grammar(self):
        """The module pattern agrees with the transcribed grammar."""
        candidates = ["a" * n for n in range(0, 40)] + [
            c + "bcd" for c in map(chr, range(32, 127))
        ] + ["abc" + c for c in map(chr, range(32, 127))]
        for value in candidates:
            self.assertEqual(
                ids.is_valid_ident(value), is_ident_by_grammar(value), repr(value)
            )
            self.assertEqual(
                bool(ids.IDENT_RE.match(value)), is_ident_by_grammar(value), repr(value)
            )

    def test_session_id_pattern_matches_grammar(self):
        for code in range(0, 256):
            char = chr(code)
            self.assertEqual(
                ids.is_valid_session_id("ab" + char), char in SESSION_ID_CHARS, repr(char)
            )


class PatternAnchoringTests(SynchronousTestCase):
    def test_no_trailing_newline_accepted(self):
        # "$" would accept a trailing newline; the patterns use \Z.
        self.assertIsNone(ids.IDENT_RE.match("abcd\n"))
        self.assertIsNone(ids.SESSION_ID_RE.match("abcd\n"))
