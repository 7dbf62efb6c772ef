"""Authentication of AUTH requests at a relay (RFC 4976, HTTP Digest).

Nothing here touches the network: the relay hands in header values and gets
back a decision carrying the status code, the reason phrase and the headers
to answer with.  Time comes from an injected IReactorTime, so nonce expiry is
testable with task.Clock.

Nonces are stateless and self-validating: issue time, a per-instance epoch, a
serial number and random bytes, authenticated with HMAC-SHA256 under a secret
only the relay knows (random per process unless configured).  Only nonces that have actually been used take
memory (their last nonce-count, for replay detection), and that table is
bounded.

Secrets (passwords, HA1 values) never reach the log.
"""

import base64
import enum
import hashlib
import hmac
import os
import re
import secrets
import struct
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

from twisted.logger import Logger

from ..core import digest
from ..core.errors import HeaderError

__all__ = [
    "CredentialsFileError",
    "HtdigestFile",
    "Outcome",
    "AuthResult",
    "DigestAuthenticator",
    "ExpiresOutOfBounds",
    "ExpiresPolicy",
]

_HA1_RE = re.compile(r"[0-9a-fA-F]{32}\Z")
_RESPONSE_RE = _HA1_RE
_NC_RE = re.compile(r"[0-9a-fA-F]{8}\Z")
_MAX_CNONCE = 256
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


def _show(value, limit=64):
    """repr() of client-supplied text, cut short for the log."""
    if len(value) > limit:
        return repr(value[:limit]) + "..."
    return repr(value)


# -- htdigest file -----------------------------------------------------------


class CredentialsFileError(Exception):
    """The credentials file cannot be used; the message names file and line."""


class HtdigestFile:
    """Users of one realm from an Apache htdigest file (``user:realm:HA1``).

    The file is re-read when it changes (inode, size or mtime), checked at
    most once per second of ``clock`` time; without a clock every
    maybe_reload() call checks.  A file that breaks keeps the credentials
    loaded before, so a half-written edit never locks everybody out.
    """

    log = Logger()

    def __init__(self, path, realm, clock=None):
        self.path = os.fspath(path)
        self.realm = realm
        self._clock = clock
        self._users = {}
        self._stamp = None
        self._failed_stamp = None
        self._stat_failing = False
        self._last_check = None
        # Nothing to fall back to yet: a broken file at start-up is fatal.
        self.reload()
        if clock is not None:
            self._last_check = clock.seconds()

    def __len__(self):
        return len(self._users)

    def lookup(self, user):
        """The HA1 (lower-case hex) of ``user`` in our realm, or None."""
        self.maybe_reload()
        return self._users.get(user)

    def maybe_reload(self):
        """Re-read the file if it changed; return True if new data was loaded."""
        if self._clock is not None:
            now = self._clock.seconds()
            if self._last_check is not None and now - self._last_check < 1.0:
                return False
            self._last_check = now
        try:
            stamp = _file_stamp(os.stat(self.path))
        except OSError as e:
            if not self._stat_failing:
                self._stat_failing = True
                self.log.error(
                    "Credentials file {path}: cannot stat ({error}); "
                    "keeping the {count} users loaded before",
                    path=self.path, error=e.strerror or str(e),
                    count=len(self._users),
                )
            return False
        self._stat_failing = False
        if stamp == self._stamp or stamp == self._failed_stamp:
            return False
        try:
            self._load()
        except CredentialsFileError as e:
            # Log once per broken version, not once per second.
            self._failed_stamp = stamp
            self.log.error(
                "{error}; keeping the {count} users loaded before",
                error=str(e), count=len(self._users),
            )
            return False
        return True

    def reload(self):
        """Re-read the file now; return the number of users of our realm.

        Raises CredentialsFileError (the previous users stay in force), so an
        admin command can report what is wrong.
        """
        try:
            self._load()
        except CredentialsFileError as e:
            self.log.error(
                "{error}; keeping the {count} users loaded before",
                error=str(e), count=len(self._users),
            )
            raise
        return len(self._users)

    def _load(self):
        try:
            with open(self.path, "rb") as f:
                stamp = _file_stamp(os.fstat(f.fileno()))
                data = f.read()
        except OSError as e:
            raise CredentialsFileError(
                "Credentials file %s: cannot read (%s)"
                % (self.path, e.strerror or e)
            ) from None
        users = self._parse(data)
        self._users = users
        self._stamp = stamp
        self._failed_stamp = None
        if users:
            self.log.info(
                "Credentials file {path}: {count} users for realm {realm!r}",
                path=self.path, count=len(users), realm=self.realm,
            )
        else:
            self.log.warn(
                "Credentials file {path}: no users for realm {realm!r}",
                path=self.path, realm=self.realm,
            )

    def _parse(self, data):
        users = {}
        defined_on = {}
        for lineno, raw in enumerate(data.split(b"\n"), 1):
            # Error messages name the line, never echo it: it holds an HA1.
            where = "Credentials file %s line %d" % (self.path, lineno)
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise CredentialsFileError(where + ": not valid UTF-8") from None
            if not line or line.startswith("#"):
                continue
            user, sep, rest = line.partition(":")
            realm, sep2, ha1 = rest.rpartition(":")
            if not sep or not sep2 or not user:
                raise CredentialsFileError(where + ": expected user:realm:HA1")
            if not _HA1_RE.match(ha1):
                raise CredentialsFileError(
                    where + ": the HA1 field is not 32 hexadecimal digits"
                )
            if realm != self.realm:
                continue
            if user in users:
                raise CredentialsFileError(
                    "%s: user %r already defined on line %d"
                    % (where, user, defined_on[user])
                )
            users[user] = ha1.lower()
            defined_on[user] = lineno
        return users


def _file_stamp(st):
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


# -- digest verification -----------------------------------------------------


class Outcome(enum.Enum):
    """What verify() decided."""

    OK = "ok"
    CHALLENGE = "challenge"
    STALE = "stale"
    REPLAY = "replay"
    BAD_NONCE = "bad-nonce"
    REALM_MISMATCH = "realm-mismatch"
    BAD_REQUEST = "bad-request"
    OPAQUE_MISMATCH = "opaque-mismatch"
    URI_MISMATCH = "uri-mismatch"
    FORBIDDEN = "forbidden"


@dataclass(frozen=True)
class AuthResult:
    """A decision on one AUTH request and what the response must carry."""

    outcome: Outcome
    code: int
    reason: str
    username: Optional[str] = None
    www_authenticate: Optional[str] = None
    authentication_info: Optional[str] = None

    @property
    def ok(self):
        return self.outcome is Outcome.OK

    def headers(self):
        """The (name, value) pairs to add to the response."""
        out = []
        if self.www_authenticate is not None:
            out.append(("WWW-Authenticate", self.www_authenticate))
        if self.authentication_info is not None:
            out.append(("Authentication-Info", self.authentication_info))
        return out


# issue time (ms), epoch, serial; then 12 random bytes; then a 16-byte MAC.
_NONCE_HEAD = struct.Struct(">qIQ")
_NONCE_RANDOM = 12
_MAC_SIZE = 16
_NONCE_BYTES = _NONCE_HEAD.size + _NONCE_RANDOM + _MAC_SIZE
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{%d}\Z" % (_NONCE_BYTES * 4 // 3))

_REQUIRED = ("username", "realm", "nonce", "response", "qop", "nc", "cnonce")


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class DigestAuthenticator:
    """Challenges and verifies Digest credentials of AUTH requests.

    ``users`` is anything with ``lookup(user) -> HA1 or None`` (such as an
    HtdigestFile) or a mapping of user to HA1.  ``uri_matches(sent,
    expected)`` decides whether the client's digest-uri designates this
    relay; by default the strings must be equal.
    """

    log = Logger()

    def __init__(self, realm, users, clock, nonce_expire=30, secret=None,
                 max_tracked_nonces=10000, uri_matches=None):
        if nonce_expire <= 0:
            raise ValueError("nonce_expire must be positive, got %r" % (nonce_expire,))
        if max_tracked_nonces < 1:
            raise ValueError("max_tracked_nonces must be at least 1")
        if getattr(users, "realm", realm) != realm:
            raise ValueError(
                "credentials are for realm %r, authenticator for %r"
                % (users.realm, realm)
            )
        if secret is None:
            secret = secrets.token_bytes(32)
        elif isinstance(secret, str):
            secret = secret.encode("utf-8")
        if len(secret) < 16:
            raise ValueError("secret must be at least 16 bytes")
        if hasattr(users, "lookup"):
            self._lookup = users.lookup
        elif isinstance(users, Mapping):
            self._lookup = users.get
        else:
            raise TypeError("users must have lookup() or be a mapping")
        self.realm = realm
        self.nonce_expire = nonce_expire
        self._clock = clock
        self._secret = secret
        self._realm_bytes = realm.encode("utf-8")
        self._uri_matches = uri_matches or (lambda sent, expected: sent == expected)
        # A nonce from another epoch (an earlier run sharing the secret) has
        # a count history we never saw, so it is only ever stale.
        self._epoch = secrets.randbits(32)
        self._serial = 0
        # Unknown users are checked against this so that they cost the same.
        self._dummy_ha1 = secrets.token_hex(16)
        self._max_tracked = max_tracked_nonces
        self._seen = OrderedDict()  # nonce -> [serial, issued, last nc]
        self._evicted_serial = 0
        self._next_prune = None

    @property
    def tracked_nonces(self):
        """How many used nonces are remembered for replay detection."""
        return len(self._seen)

    # nonces

    def _mac(self, purpose, data):
        msg = b"%s\0%s\0%s" % (purpose, self._realm_bytes, data)
        return hmac.new(self._secret, msg, hashlib.sha256).digest()[:_MAC_SIZE]

    def _new_nonce(self, now):
        self._serial += 1
        body = _NONCE_HEAD.pack(int(now * 1000), self._epoch, self._serial)
        body += secrets.token_bytes(_NONCE_RANDOM)
        return _b64(body + self._mac(b"nonce", body))

    def _open_nonce(self, nonce):
        """(issued, epoch, serial) of a nonce we issued, else None."""
        if not _NONCE_RE.match(nonce):
            return None
        raw = base64.urlsafe_b64decode(nonce)
        body, mac = raw[:-_MAC_SIZE], raw[-_MAC_SIZE:]
        if not hmac.compare_digest(mac, self._mac(b"nonce", body)):
            return None
        issued_ms, epoch, serial = _NONCE_HEAD.unpack_from(body)
        return issued_ms / 1000.0, epoch, serial

    def _opaque(self, nonce):
        return _b64(self._mac(b"opaque", nonce.encode("ascii")))

    def challenge(self, stale=False):
        """A WWW-Authenticate value with a fresh nonce."""
        nonce = self._new_nonce(self._clock.seconds())
        params = {
            "realm": self.realm,
            "nonce": nonce,
            "qop": "auth",
            "algorithm": "MD5",
            "opaque": self._opaque(nonce),
        }
        if stale:
            params["stale"] = "true"
        return digest.format_challenge(params)

    # verification

    def _refuse(self, outcome, code, reason, why, username=None, challenge=False,
                stale=False, level="info"):
        getattr(self.log, level)(
            "AUTH refused ({outcome}) for user {user} in realm {realm!r}: {why}",
            outcome=outcome.value, realm=self.realm, why=why,
            user="-" if username is None else _show(username),
        )
        www = self.challenge(stale=stale) if challenge else None
        return AuthResult(outcome, code, reason, username, www)

    def _bad_request(self, problem, why=None, username=None):
        # The wire gets our own short wording; what the client sent goes to
        # the log only (shortened), never back into a reason phrase.
        return self._refuse(Outcome.BAD_REQUEST, 400, "Bad Request (%s)" % problem,
                            why or problem, username)

    def verify(self, authorization, method, uri):
        """Decide on an AUTH request.

        ``authorization`` is the Authorization header value (None if absent),
        ``method`` the request method ("AUTH") and ``uri`` the relay's own URI
        as written in the request's To-Path: the digest-uri RFC 4976 has the
        client hash.
        """
        if authorization is None or not authorization.strip():
            self.log.debug("AUTH without credentials: challenging")
            return AuthResult(Outcome.CHALLENGE, 401, "Unauthorized",
                              www_authenticate=self.challenge())
        scheme = authorization.strip().split(None, 1)[0]
        if _TOKEN_RE.match(scheme) and scheme.lower() != "digest":
            # Credentials we cannot check count as none (RFC 2617 3.2.1).
            return self._refuse(Outcome.CHALLENGE, 401, "Unauthorized",
                                "unsupported scheme %s" % _show(scheme),
                                challenge=True)
        try:
            params = digest.parse_credentials(authorization)
        except HeaderError as e:
            return self._bad_request("malformed Authorization", str(e))
        username = params.get("username")
        for name in _REQUIRED:
            if name not in params:
                return self._bad_request("missing %s" % name, username=username)
        # RFC 2617 3.2.2: improper directive values are a 400.
        algorithm = params.get("algorithm", "MD5")
        if algorithm.upper() != "MD5":
            return self._bad_request("unsupported algorithm",
                                     "algorithm %s" % _show(algorithm), username)
        if params["qop"] != "auth":
            return self._bad_request("unsupported qop",
                                     "qop %s" % _show(params["qop"]), username)
        if not _NC_RE.match(params["nc"]) or int(params["nc"], 16) == 0:
            return self._bad_request("invalid nc", "nc %s" % _show(params["nc"]),
                                     username)
        if len(params["cnonce"]) > _MAX_CNONCE:
            # It is echoed in Authentication-Info: keep that bounded.
            return self._bad_request("invalid cnonce", "cnonce too long", username)
        if not _RESPONSE_RE.match(params["response"]):
            return self._bad_request("invalid response",
                                     "response is not 32 hex digits", username)

        if params["realm"] != self.realm:
            # Credentials for another protection space are no credentials.
            return self._refuse(
                Outcome.REALM_MISMATCH, 401, "Unauthorized (wrong realm)",
                "realm %s" % _show(params["realm"]), username, challenge=True,
            )

        # RFC 4976's own AUTH example omits uri; the digest then covers the
        # relay URI, which is what the client must have hashed anyway.
        digest_uri = params.get("uri", uri)
        if not self._uri_matches(digest_uri, uri):
            # RFC 2617 3.2.2.5: the server SHOULD return 400.
            return self._refuse(
                Outcome.URI_MISMATCH, 400,
                "Bad Request (digest uri is not this relay)",
                "digest uri %s, expected %s" % (_show(digest_uri), _show(uri)),
                username,
            )

        nonce = params["nonce"]
        opened = self._open_nonce(nonce)
        if opened is None:
            # Forged, altered, or from another realm or secret.  A fresh
            # challenge lets an honest client recover.
            return self._refuse(
                Outcome.BAD_NONCE, 401, "Unauthorized (unknown nonce)",
                "nonce not issued by this relay", username, challenge=True,
            )
        issued, epoch, serial = opened
        if "opaque" in params and not hmac.compare_digest(
            params["opaque"].encode("utf-8"), self._opaque(nonce).encode("ascii")
        ):
            return self._refuse(
                Outcome.OPAQUE_MISMATCH, 400, "Bad Request (opaque mismatch)",
                "opaque does not belong to the nonce", username,
            )

        ha1 = self._lookup(username)
        known = ha1 is not None
        expected = digest.compute_response(
            ha1 if known else self._dummy_ha1, nonce, params["nc"],
            params["cnonce"], "auth", method, digest_uri,
        )
        matched = hmac.compare_digest(expected, params["response"].lower())
        if not (matched and known):
            # RFC 4976 keeps 401 for the challenge (no credentials) and
            # answers credentials that fail with 403 (section 6.3, as the
            # OpenSIPS and AG Projects relays do).  Unknown user and wrong
            # password look the same from outside.
            return self._refuse(
                Outcome.FORBIDDEN, 403, "Forbidden",
                "wrong password" if known else "unknown user", username,
                level="warn",
            )

        # From here on the client has proved it knows the password, so
        # stale=true is honest (RFC 2617 3.2.1) and it can retry unprompted.
        now = self._clock.seconds()
        age = now - issued
        if epoch != self._epoch:
            why = "nonce from an earlier run"
        elif not -self.nonce_expire <= age <= self.nonce_expire:
            why = "nonce expired"
        else:
            why = None
        if why is not None:
            return self._refuse(Outcome.STALE, 401, "Unauthorized (stale nonce)",
                                why, username, challenge=True, stale=True)
        nc = int(params["nc"], 16)
        refusal = self._count(nonce, serial, issued, nc, now)
        if refusal is not None:
            # A replay gets 401 with stale=true rather than 403: the fresh
            # nonce is useless to anyone without the password, and a client
            # that merely retransmitted recovers without asking its user.
            outcome, reason, why = refusal
            return self._refuse(outcome, 401, reason, why, username,
                                challenge=True, stale=True)

        rspauth = digest.compute_rspauth(
            ha1, nonce, params["nc"], params["cnonce"], "auth", digest_uri,
        )
        info = digest.format_auth_info({
            "qop": "auth",
            "rspauth": rspauth,
            "cnonce": params["cnonce"],
            "nc": params["nc"],
        })
        self.log.info("AUTH accepted for user {user} in realm {realm!r}",
                      user=_show(username), realm=self.realm)
        return AuthResult(Outcome.OK, 200, "OK", username,
                          authentication_info=info)

    def _count(self, nonce, serial, issued, nc, now):
        """Record nc for nonce; return (outcome, reason, why) to refuse it."""
        self._prune(now)
        entry = self._seen.get(nonce)
        if entry is not None:
            if nc <= entry[2]:
                return (Outcome.REPLAY, "Unauthorized (nonce-count reused)",
                        "nonce-count %08x not above %08x" % (nc, entry[2]))
            entry[2] = nc
            return None
        if serial <= self._evicted_serial:
            # Its history may have been dropped to bound memory.
            return (Outcome.STALE, "Unauthorized (stale nonce)",
                    "nonce no longer tracked")
        while len(self._seen) >= self._max_tracked:
            _, (old_serial, _, _) = self._seen.popitem(last=False)
            self._evicted_serial = max(self._evicted_serial, old_serial)
        self._seen[nonce] = [serial, issued, nc]
        return None

    def _prune(self, now):
        if self._next_prune is not None and now < self._next_prune:
            return
        self._next_prune = now + 1.0
        expired = [n for n, (_, issued, _) in self._seen.items()
                   if now - issued > self.nonce_expire]
        for n in expired:
            del self._seen[n]


# -- Expires -----------------------------------------------------------------


class ExpiresOutOfBounds(Exception):
    """The requested Expires is refused: answer 423 with the bound it broke.

    Too short carries Min-Expires, too long carries Max-Expires.
    """

    code = 423
    reason = "Interval Out-of-Bounds"

    def __init__(self, requested, header_name, limit):
        super().__init__(
            "Expires %d refused: %s is %d" % (requested, header_name, limit)
        )
        self.requested = requested
        self.header_name = header_name
        self.limit = limit

    @property
    def headers(self):
        return [(self.header_name, str(self.limit))]


class ExpiresPolicy:
    """How long an AUTH grants its URI, within operator bounds.

    ``minimum``/``maximum`` of None mean no bound on that side.
    """

    def __init__(self, default=1800, minimum=60, maximum=3600):
        for name, value in (("default", default), ("minimum", minimum),
                            ("maximum", maximum)):
            if value is None and name != "default":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError("%s must be a non-negative int, got %r" % (name, value))
        if minimum is not None and maximum is not None and minimum > maximum:
            raise ValueError("minimum %d above maximum %d" % (minimum, maximum))
        if (minimum is not None and default < minimum) or (
            maximum is not None and default > maximum
        ):
            raise ValueError("default %d outside [%s, %s]" % (default, minimum, maximum))
        self.default = default
        self.minimum = minimum
        self.maximum = maximum

    def grant(self, requested):
        """Seconds to grant for the request's Expires (None if absent).

        Raises ExpiresOutOfBounds for a value outside the bounds.
        """
        if requested is None:
            return self.default
        if isinstance(requested, bool) or not isinstance(requested, int):
            raise TypeError("requested Expires must be an int or None, got %r"
                            % (requested,))
        if requested < 0:
            raise ValueError("requested Expires must not be negative")
        if self.minimum is not None and requested < self.minimum:
            raise ExpiresOutOfBounds(requested, "Min-Expires", self.minimum)
        if self.maximum is not None and requested > self.maximum:
            raise ExpiresOutOfBounds(requested, "Max-Expires", self.maximum)
        return requested
