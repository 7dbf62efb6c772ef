"""HTTP Digest (RFC 2617, qop=auth) as MSRP relays use it (RFC 4976).

RFC 4976 borrows the WWW-Authenticate, Authorization and Authentication-Info
headers from HTTP for the AUTH method.  In the digest the method is "AUTH"
and the digest-uri is the URI of the relay being authenticated, i.e. the last
URI of the AUTH request's To-Path (the request is addressed to that relay).

Everything here is pure computation over strings, so the relay and the client
side share it and it can be tested without a network.
"""

import hashlib
import hmac
import re
import secrets

from .errors import HeaderError, SerializationError

__all__ = [
    "parse_challenge",
    "parse_credentials",
    "parse_auth_info",
    "format_challenge",
    "format_credentials",
    "format_auth_info",
    "compute_ha1",
    "compute_response",
    "compute_rspauth",
    "make_authorization",
    "check_rspauth",
]

# RFC 2616 section 2.2: token = 1*<any CHAR except CTLs or separators>
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789"
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_WS = " \t"
_LHEX8_RE = re.compile(r"[0-9a-fA-F]{8}\Z")

# Which auth-params RFC 2617 sends bare (token) rather than quoted.  Anything
# not listed is quoted, which the auth-param grammar always allows.
_CHALLENGE_TOKENS = frozenset(("stale", "algorithm"))
_CREDENTIALS_TOKENS = frozenset(("qop", "nc", "algorithm"))
_AUTH_INFO_TOKENS = frozenset(("qop", "nc"))


# -- parsing -----------------------------------------------------------------


def _skip_ws(s, i):
    n = len(s)
    while i < n and s[i] in _WS:
        i += 1
    return i


def _token_end(s, i):
    n = len(s)
    while i < n and s[i] in _TOKEN_CHARS:
        i += 1
    return i


def _quoted_string(s, i, what, name):
    """Read a quoted-string starting at the opening quote; return (text, end)."""
    out = []
    i += 1
    n = len(s)
    while i < n:
        c = s[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            i += 1
            if i >= n:
                break
            c = s[i]
        if (c < " " and c != "\t") or c == "\x7f":
            raise HeaderError(
                "%s: control character %r in the value of auth-param %r"
                % (what, c, name)
            )
        out.append(c)
        i += 1
    raise HeaderError(
        "%s: unterminated quoted-string in auth-param %r" % (what, name)
    )


def _parse_params(s, i, what):
    params = {}
    n = len(s)
    while True:
        i = _skip_ws(s, i)
        if i >= n:
            break
        if s[i] == ",":
            # RFC 2616 #rule: empty list elements are allowed and ignored.
            i += 1
            continue
        j = _token_end(s, i)
        if j == i:
            raise HeaderError(
                "%s: expected an auth-param name at offset %d, found %r"
                % (what, i, s[i])
            )
        name = s[i:j].lower()
        i = _skip_ws(s, j)
        if i >= n or s[i] != "=":
            raise HeaderError("%s: auth-param %r has no '=value'" % (what, name))
        i = _skip_ws(s, i + 1)
        if i < n and s[i] == '"':
            value, i = _quoted_string(s, i, what, name)
        else:
            j = _token_end(s, i)
            if j == i:
                raise HeaderError(
                    "%s: auth-param %r has an empty or invalid value" % (what, name)
                )
            value = s[i:j]
            i = j
        if name in params:
            raise HeaderError("%s: duplicate auth-param %r" % (what, name))
        params[name] = value
        i = _skip_ws(s, i)
        if i < n and s[i] != ",":
            raise HeaderError(
                "%s: expected ',' after auth-param %r, found %r" % (what, name, s[i])
            )
    if not params:
        raise HeaderError("%s: no auth-params" % (what,))
    return params


def _parse_digest(value, what):
    if not isinstance(value, str):
        raise HeaderError("%s: value must be str, got %s" % (what, type(value).__name__))
    i = _skip_ws(value, 0)
    j = _token_end(value, i)
    if j == i or (j < len(value) and value[j] not in _WS):
        raise HeaderError("%s: missing auth-scheme (expected 'Digest ...')" % (what,))
    scheme = value[i:j]
    if scheme.lower() != "digest":
        raise HeaderError(
            "%s: unsupported auth-scheme %r, only Digest is supported" % (what, scheme)
        )
    return _parse_params(value, j, what)


def parse_challenge(value):
    """Parse a WWW-Authenticate value into a dict with lower-cased names."""
    return _parse_digest(value, "WWW-Authenticate")


def parse_credentials(value):
    """Parse an Authorization value into a dict with lower-cased names."""
    return _parse_digest(value, "Authorization")


def parse_auth_info(value):
    """Parse an Authentication-Info value (auth-params without a scheme)."""
    if not isinstance(value, str):
        raise HeaderError(
            "Authentication-Info: value must be str, got %s" % type(value).__name__
        )
    return _parse_params(value, 0, "Authentication-Info")


# -- formatting --------------------------------------------------------------


def _is_token(text):
    return bool(text) and all(c in _TOKEN_CHARS for c in text)


def _format_params(params, bare, what):
    items = list(params.items()) if hasattr(params, "items") else list(params)
    if not items:
        raise SerializationError("%s: no auth-params to send" % (what,))
    parts = []
    for name, value in items:
        if not isinstance(name, str) or not _is_token(name):
            raise SerializationError("%s: invalid auth-param name %r" % (what, name))
        if not isinstance(value, str):
            raise SerializationError(
                "%s: auth-param %r must be str, got %s"
                % (what, name, type(value).__name__)
            )
        if name.lower() in bare:
            if not _is_token(value):
                raise SerializationError(
                    "%s: auth-param %r must be a token, got %r" % (what, name, value)
                )
            parts.append("%s=%s" % (name, value))
            continue
        for c in value:
            if (c < " " and c != "\t") or c == "\x7f":
                raise SerializationError(
                    "%s: control character %r in auth-param %r" % (what, c, name)
                )
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        parts.append('%s="%s"' % (name, escaped))
    return ", ".join(parts)


def format_challenge(params):
    """Build a WWW-Authenticate value; stale and algorithm go out as tokens."""
    return "Digest " + _format_params(params, _CHALLENGE_TOKENS, "WWW-Authenticate")


def format_credentials(params):
    """Build an Authorization value; qop, nc and algorithm go out as tokens."""
    return "Digest " + _format_params(params, _CREDENTIALS_TOKENS, "Authorization")


def format_auth_info(params):
    """Build an Authentication-Info value (no scheme, RFC 2617 section 3.2.3)."""
    return _format_params(params, _AUTH_INFO_TOKENS, "Authentication-Info")


# -- computation -------------------------------------------------------------


def _h(text):
    # MD5 is what the protocol mandates, not a choice made here.
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def _nc_value(nc):
    if isinstance(nc, bool):
        raise HeaderError("nonce-count must be an int or 8 hex digits, got %r" % (nc,))
    if isinstance(nc, int):
        if not 1 <= nc <= 0xFFFFFFFF:
            raise HeaderError("nonce-count %d out of range 1..ffffffff" % nc)
        return "%08x" % nc
    if isinstance(nc, str) and _LHEX8_RE.match(nc):
        return nc
    raise HeaderError("nonce-count must be 8 hex digits, got %r" % (nc,))


def compute_ha1(user, realm, password):
    """H(A1) for algorithm MD5: what an htdigest file stores."""
    return _h("%s:%s:%s" % (user, realm, password))


def compute_response(ha1, nonce, nc, cnonce, qop, method, uri, algorithm="MD5"):
    """The request-digest of RFC 2617 section 3.2.2.1.

    ``ha1`` is H(user:realm:password); for MD5-sess the session key is derived
    here from it.  ``qop=None`` gives the RFC 2069 form (no nc, no cnonce).
    """
    alg = (algorithm or "MD5").upper()
    if alg == "MD5-SESS":
        if not cnonce:
            raise HeaderError("MD5-sess needs a cnonce")
        key = _h("%s:%s:%s" % (ha1, nonce, cnonce))
    elif alg == "MD5":
        key = ha1
    else:
        raise HeaderError("unsupported digest algorithm %r" % (algorithm,))
    ha2 = _h("%s:%s" % (method, uri))
    if qop is None:
        return _h("%s:%s:%s" % (key, nonce, ha2))
    if qop != "auth":
        # auth-int would need the body hash; MSRP AUTH has no body anyway.
        raise HeaderError("unsupported qop %r, only 'auth' is supported" % (qop,))
    return _h("%s:%s:%s:%s:%s:%s" % (key, nonce, _nc_value(nc), cnonce, qop, ha2))


def compute_rspauth(ha1, nonce, nc, cnonce, qop, uri, algorithm="MD5"):
    """The response-digest of Authentication-Info: A2 has an empty method."""
    return compute_response(ha1, nonce, nc, cnonce, qop, "", uri, algorithm)


def make_authorization(challenge_params, username, password, method, uri,
                       nc=1, cnonce=None):
    """Answer a challenge: return the credentials dict for format_credentials.

    For MSRP, ``method`` is "AUTH" and ``uri`` is the relay's URI as written
    in the To-Path of the AUTH request.
    """
    if isinstance(challenge_params, str):
        challenge_params = parse_challenge(challenge_params)
    for required in ("realm", "nonce"):
        if required not in challenge_params:
            raise HeaderError("WWW-Authenticate: challenge has no %s" % required)
    realm = challenge_params["realm"]
    nonce = challenge_params["nonce"]
    algorithm = challenge_params.get("algorithm")
    if algorithm is not None and algorithm.upper() not in ("MD5", "MD5-SESS"):
        raise HeaderError("WWW-Authenticate: unsupported algorithm %r" % (algorithm,))
    qop = None
    if "qop" in challenge_params:
        offered = [q.strip().lower() for q in challenge_params["qop"].split(",")]
        if "auth" not in offered:
            raise HeaderError(
                "WWW-Authenticate: qop %r offers no 'auth'" % (challenge_params["qop"],)
            )
        qop = "auth"
    elif algorithm is not None and algorithm.upper() == "MD5-SESS":
        raise HeaderError("WWW-Authenticate: MD5-sess without qop cannot be answered")

    creds = {"username": username, "realm": realm, "nonce": nonce, "uri": uri}
    ha1 = compute_ha1(username, realm, password)
    if qop is None:
        creds["response"] = compute_response(ha1, nonce, None, None, None,
                                             method, uri, algorithm)
    else:
        nc_text = _nc_value(nc)
        if cnonce is None:
            cnonce = secrets.token_hex(8)
        creds["response"] = compute_response(ha1, nonce, nc_text, cnonce, qop,
                                             method, uri, algorithm)
    if algorithm is not None:
        creds["algorithm"] = algorithm
    if qop is not None:
        creds["cnonce"] = cnonce
    if "opaque" in challenge_params:
        creds["opaque"] = challenge_params["opaque"]
    if qop is not None:
        creds["qop"] = qop
        creds["nc"] = nc_text
    return creds


def check_rspauth(auth_info, credentials, password=None, *, ha1=None):
    """Check the server's proof (rspauth) in an Authentication-Info value.

    ``credentials`` is what was sent (make_authorization's dict).  Returns
    False when the proof is missing or wrong, or when cnonce/nc/qop do not
    echo the request (RFC 2617 section 3.2.3).
    """
    if isinstance(auth_info, str):
        auth_info = parse_auth_info(auth_info)
    if ha1 is None:
        if password is None:
            raise ValueError("check_rspauth needs the password or the HA1")
        ha1 = compute_ha1(credentials["username"], credentials["realm"], password)
    qop = credentials.get("qop")
    rspauth = auth_info.get("rspauth")
    if rspauth is None:
        return False
    for name in ("cnonce", "qop"):
        if name in auth_info and auth_info[name] != credentials.get(name):
            return False
    if "nc" in auth_info:
        try:
            if int(auth_info["nc"], 16) != int(credentials.get("nc", ""), 16):
                return False
        except ValueError:
            return False
    try:
        expected = compute_rspauth(
            ha1, credentials["nonce"], credentials.get("nc"),
            credentials.get("cnonce"), qop, credentials["uri"],
            credentials.get("algorithm", "MD5"),
        )
    except HeaderError:
        return False
    # As bytes: compare_digest refuses str with non-ASCII characters, and a
    # server's garbage must give False, not a TypeError.
    return hmac.compare_digest(expected.encode("ascii"), rspauth.lower().encode("utf-8", "replace"))
