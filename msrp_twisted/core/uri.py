"""MSRP URIs and paths (RFC 4975 sections 6 and 9).

Every frame names its route in To-Path and From-Path, and a relay parses
both for every frame it forwards. The same few URIs repeat on every frame of
a session, so parsing is cached (bounded, and only for URIs of ordinary
length) and the parsed objects are immutable, which makes sharing them safe.

Equality follows the comparison rules of RFC 4975 section 6.1, not string
equality, so URIs can be used directly as keys for session lookup.
"""

import ipaddress
import re
from functools import lru_cache

from .errors import URIError

# The port IANA assigned to MSRP (RFC 4975), used when a URI has none.
DEFAULT_PORT = 2855

# RFC 4975 section 9:
#   MSRP-URI    = msrp-scheme "://" authority
#                 ["/" session-id] ";" transport *( ";" URI-parameter)
#                 ; authority as defined in RFC3986
#   msrp-scheme = "msrp" / "msrps"
# Schemes are case-insensitive (RFC 3986 section 3.1, RFC 4975 section 6.1).
SCHEMES = frozenset(("msrp", "msrps"))

# RFC 3986 section 2.1:
#   pct-encoded = "%" HEXDIG HEXDIG
PCT_ENCODED_RE = re.compile(r"%([0-9A-Fa-f]{2})")

# RFC 3986 section 2.3:
#   unreserved  = ALPHA / DIGIT / "-" / "." / "_" / "~"
UNRESERVED_RE = re.compile(r"[A-Za-z0-9\-._~]\Z")

# RFC 3986 section 3.2.1:
#   userinfo    = *( unreserved / pct-encoded / sub-delims / ":" )
#   sub-delims  = "!" / "$" / "&" / "'" / "(" / ")" / "*" / "+" / "," / ";" / "="
# ";" is left out here and in reg-name below: RFC 4975 section 9 puts
# ";" transport straight after the authority, so an unescaped ";" inside
# the authority cannot be told apart from the start of the transport. The
# first ";" always ends the authority and session-id; a literal ";" in a
# userinfo or host must be written %3B.
_USERINFO_CHAR = r"[A-Za-z0-9\-._~!$&'()*+,=:]"
USERINFO_RE = re.compile(rf"(?:{_USERINFO_CHAR}|%[0-9A-Fa-f]{{2}})*\Z")
USERINFO_CHAR_RE = re.compile(_USERINFO_CHAR)

# RFC 3986 section 3.2.2:
#   host        = IP-literal / IPv4address / reg-name
#   reg-name    = *( unreserved / pct-encoded / sub-delims )
# An empty reg-name is legal in RFC 3986 but names no MSRP host, so at least
# one character is required.
_REG_NAME_CHAR = r"[A-Za-z0-9\-._~!$&'()*+,=]"
REG_NAME_RE = re.compile(rf"(?:{_REG_NAME_CHAR}|%[0-9A-Fa-f]{{2}})+\Z")
REG_NAME_CHAR_RE = re.compile(_REG_NAME_CHAR)

# RFC 3986 section 3.2.2:
#   IPv4address = dec-octet "." dec-octet "." dec-octet "." dec-octet
#   dec-octet   = DIGIT / %x31-39 DIGIT / "1" 2DIGIT / "2" %x30-34 DIGIT
#               / "25" %x30-35
_DEC_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IPV4_RE = re.compile(rf"{_DEC_OCTET}(?:\.{_DEC_OCTET}){{3}}\Z")
# Digits and dots only is a legal reg-name, but no DNS name is all-numeric:
# such a host is a mistyped IPv4 address ("256.1.1.1", "010.0.0.1") and is
# refused rather than looked up as a name.
DOTTED_DIGITS_RE = re.compile(r"[0-9.]+\Z")

# RFC 3986 section 3.2.2:
#   IP-literal  = "[" ( IPv6address / IPvFuture  ) "]"
#   IPv6address = 6( h16 ":" ) ls32 / "::" 5( h16 ":" ) ls32 / ... (nine forms)
#   h16         = 1*4HEXDIG ; HEXDIG is case-insensitive (RFC 5234)
#   ls32        = ( h16 ":" h16 ) / IPv4address
# This pattern only checks the alphabet; the nine forms are checked by the
# ipaddress module. IPvFuture and zone ids (RFC 6874) are not accepted.
IPV6_CHARS_RE = re.compile(r"[0-9A-Fa-f:.]+\Z")

# RFC 3986 section 3.2.3:
#   port        = *DIGIT
# An empty port is legal there, but RFC 4975 gives it no meaning; it and
# anything outside 1..65535 are refused.
PORT_RE = re.compile(r"[0-9]{1,5}\Z")

# RFC 4975 section 9:
#   session-id  = 1*( unreserved / "+" / "=" / "/" )
# Leniency: %XX escapes are accepted as well (RFC 3986 would allow them in a
# path, and some clients send them). They are kept exactly as written and
# compared as written (see MSRPURI._key).
_SESSION_ID_CHAR = r"[A-Za-z0-9\-._~+=/]"
SESSION_ID_RE = re.compile(rf"(?:{_SESSION_ID_CHAR}|%[0-9A-Fa-f]{{2}})+\Z")
SESSION_ID_CHAR_RE = re.compile(_SESSION_ID_CHAR)

# RFC 4975 section 9:
#   transport   = "tcp" / 1*ALPHANUM
TRANSPORT_RE = re.compile(r"[A-Za-z0-9]+\Z")

# RFC 4975 section 9:
#   URI-parameter = token ["=" token]
# RFC 3261 section 25.1:
#   token       = 1*(alphanum / "-" / "." / "!" / "%" / "*"
#                 / "_" / "+" / "`" / "'" / "~" )
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
TOKEN_RE = re.compile(rf"{_TOKEN}\Z")
URI_PARAMETER_RE = re.compile(rf"({_TOKEN})(?:=({_TOKEN}))?\Z")

# RFC 4975 section 9 (To-Path, From-Path; RFC 4976 defines Use-Path alike):
#   To-Path     = "To-Path:" SP MSRP-URI *( SP MSRP-URI )
# Leniency: runs of SP or HTAB separate URIs, and leading or trailing
# blanks are ignored.
PATH_SEPARATOR_RE = re.compile(r"[ \t]+")

# Parsed URIs and paths are cached by their text. Only texts up to these
# lengths are cached, so that a peer sending thousands of distinct huge
# (but valid) URIs cannot make the cache hold megabytes.
CACHE_SIZE = 4096
CACHEABLE_URI_LENGTH = 512
CACHEABLE_PATH_LENGTH = 2048
# A cached path holds a parsed URI for each of its URIs: 2 KiB of text can
# name ~100 short ones, and 4096 such paths took 200 MiB. Real paths name a
# few hops; only those are cached.
CACHEABLE_PATH_URIS = 6


class MSRPURI:
    """One MSRP URI, immutable and hashable.

    ``host`` is stored as written, without brackets for IPv6; ``session_id``
    and ``transport`` are kept as written. ``params`` holds the URI
    parameters after the transport, in order, as (name, value-or-None).
    """

    __slots__ = (
        "scheme",
        "userinfo",
        "host",
        "port",
        "session_id",
        "transport",
        "params",
        "_key",
        "_text",
    )

    def __init__(
        self,
        host,
        port=None,
        session_id=None,
        transport="tcp",
        scheme="msrp",
        userinfo=None,
        params=(),
    ):
        set_ = object.__setattr__
        set_(self, "scheme", _check_scheme(scheme))
        host, host_key = _check_host(host)
        set_(self, "host", host)
        set_(self, "port", _check_port(port))
        set_(self, "session_id", _check_session_id(session_id))
        set_(self, "transport", _check_transport(transport))
        set_(self, "userinfo", _check_userinfo(userinfo))
        set_(self, "params", _check_params(params))
        # The comparison key, RFC 4975 section 6.1 as read here, rule by rule:
        # - Schemes must match, case-insensitively: stored lower-cased, so
        #   msrp and msrps never match.
        # - Userinfo takes no part in the comparison: left out.
        # - The authority: an IP address is compared as an address (IPv6 in
        #   canonical form, so "0:0::1" == "::1" whatever the hex case); a
        #   name is compared case-insensitively after percent-encoded
        #   unreserved characters are decoded (RFC 3986 section 6.2.2.2).
        #   No name resolution: a host name never equals an address.
        # - A port present in either URI must match exactly, and a URI with
        #   an explicit port never equals one without: the port as written
        #   (None when absent) takes part, so "h" != "h:2855" although both
        #   are reached on 2855.
        # - The session-id is compared case-sensitively and as written (the
        #   percent-encoding normalization is stated for the authority only);
        #   a URI without one never equals a URI with one.
        # - Different transports never match; the transport is compared
        #   case-insensitively.
        # - Other URI parameters are not among the compared parts: ignored.
        set_(
            self,
            "_key",
            (self.scheme, host_key, self.port, self.session_id, self.transport.lower()),
        )
        set_(self, "_text", None)

    def __setattr__(self, name, value):
        raise AttributeError("MSRPURI is immutable")

    def __delattr__(self, name):
        raise AttributeError("MSRPURI is immutable")

    def __reduce__(self):
        return (
            MSRPURI,
            (
                self.host,
                self.port,
                self.session_id,
                self.transport,
                self.scheme,
                self.userinfo,
                self.params,
            ),
        )

    def __eq__(self, other):
        if isinstance(other, MSRPURI):
            return self._key == other._key
        return NotImplemented

    def __hash__(self):
        return hash(self._key)

    def __str__(self):
        text = self._text
        if text is None:
            text = self._format()
            object.__setattr__(self, "_text", text)
        return text

    def __repr__(self):
        return f"<MSRPURI {self}>"

    def _format(self):
        parts = [self.scheme, "://"]
        if self.userinfo is not None:
            parts += [self.userinfo, "@"]
        parts.append(self._bracketed_host())
        if self.port is not None:
            parts += [":", str(self.port)]
        if self.session_id is not None:
            parts += ["/", self.session_id]
        parts += [";", self.transport]
        for name, value in self.params:
            parts += [";", name]
            if value is not None:
                parts += ["=", value]
        return "".join(parts)

    def _bracketed_host(self):
        if ":" in self.host:
            return f"[{self.host}]"
        return self.host

    @property
    def secure(self):
        """True for msrps: the hop must be made over TLS."""
        return self.scheme == "msrps"

    @property
    def effective_port(self):
        return DEFAULT_PORT if self.port is None else self.port

    @property
    def authority(self):
        """'host:port' with the effective port, IPv6 bracketed; no userinfo.

        Always carries a port so that it can label a connection target.
        """
        return f"{self._bracketed_host()}:{self.effective_port}"

    @property
    def host_key(self):
        """The host as section 6.1 compares it: canonical IPv6, lower-cased
        name with unreserved escapes decoded. For matching hosts alone."""
        return self._key[1]

    @property
    def hostport(self):
        """(host, port) to connect to; IPv6 without brackets."""
        return (self.host, self.effective_port)

    def with_session(self, session_id):
        """A copy with another session-id (None removes it)."""
        return MSRPURI(
            self.host,
            self.port,
            session_id,
            self.transport,
            self.scheme,
            self.userinfo,
            self.params,
        )


def _check_scheme(scheme):
    if isinstance(scheme, str):
        lowered = scheme.lower()
        if lowered in SCHEMES:
            return lowered
    raise URIError(f"unsupported scheme {scheme!r}")


def _check_host(host):
    """Validate a host; return it as stored and its comparison key."""
    if not isinstance(host, str):
        raise URIError(f"host must be a string, not {type(host).__name__}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise URIError("unterminated IPv6 address")
        return _check_ipv6(host[1:-1])
    if ":" in host:
        return _check_ipv6(host)
    if not host:
        raise URIError("missing host")
    if IPV4_RE.match(host):
        return host, host
    if DOTTED_DIGITS_RE.match(host):
        raise URIError(f"bad IPv4 address {host!r}")
    if not REG_NAME_RE.match(host):
        raise URIError(_explain(host, "host", REG_NAME_CHAR_RE, escapes=True))
    if "%" in host:
        return host, PCT_ENCODED_RE.sub(_decode_unreserved, host).lower()
    return host, host.lower()


def _check_ipv6(literal):
    if not IPV6_CHARS_RE.match(literal):
        if literal[:1] in ("v", "V"):
            raise URIError(f"unsupported IPvFuture address {literal!r}")
        if not literal:
            raise URIError("empty IPv6 address")
        bad = next(ch for ch in literal if ch not in "0123456789abcdefABCDEF:.")
        raise URIError(f"invalid character {bad!r} in IPv6 address")
    try:
        address = ipaddress.IPv6Address(literal)
    except ValueError:
        raise URIError(f"invalid IPv6 address {literal!r}") from None
    return literal, address.compressed


def _decode_unreserved(match):
    char = chr(int(match.group(1), 16))
    if UNRESERVED_RE.match(char):
        return char
    return match.group(0)


def _check_port(port):
    if port is None:
        return None
    if type(port) is not int or not 1 <= port <= 65535:
        raise URIError(f"bad port {port!r}")
    return port


def _check_session_id(session_id):
    if session_id is None:
        return None
    if not isinstance(session_id, str):
        raise URIError(f"session-id must be a string, not {type(session_id).__name__}")
    if not session_id:
        raise URIError("empty session-id")
    if not SESSION_ID_RE.match(session_id):
        raise URIError(_explain(session_id, "session-id", SESSION_ID_CHAR_RE, escapes=True))
    return session_id


def _check_transport(transport):
    if not isinstance(transport, str):
        raise URIError(f"transport must be a string, not {type(transport).__name__}")
    if not transport:
        raise URIError("missing transport")
    if not TRANSPORT_RE.match(transport):
        raise URIError(f"invalid transport {transport!r}")
    return transport


def _check_userinfo(userinfo):
    if userinfo is None:
        return None
    if not isinstance(userinfo, str):
        raise URIError(f"userinfo must be a string, not {type(userinfo).__name__}")
    if not USERINFO_RE.match(userinfo):
        raise URIError(_explain(userinfo, "userinfo", USERINFO_CHAR_RE, escapes=True))
    return userinfo


def _check_params(params):
    if not params:
        return ()
    checked = []
    for param in params:
        try:
            name, value = param
        except (TypeError, ValueError):
            raise URIError(f"URI parameter must be a (name, value) pair: {param!r}") from None
        if not isinstance(name, str) or not TOKEN_RE.match(name):
            raise URIError(f"invalid URI parameter name {name!r}")
        if value is not None and (not isinstance(value, str) or not TOKEN_RE.match(value)):
            raise URIError(f"invalid value {value!r} for URI parameter {name!r}")
        checked.append((name, value))
    return tuple(checked)


def _explain(value, what, char_re, escapes):
    """Name the first thing wrong in a value that failed its pattern."""
    index = 0
    length = len(value)
    while index < length:
        char = value[index]
        if char == "%" and escapes:
            if PCT_ENCODED_RE.match(value, index):
                index += 3
                continue
            return f"bad %-escape {value[index:index + 3]!r} in {what}"
        if not char_re.match(char):
            return f"invalid character {char!r} in {what}"
        index += 1
    return f"invalid {what} {value!r}"


def _clip(text, limit=120):
    if len(text) > limit:
        return text[:limit] + "..."
    return text


def _as_text(text):
    if isinstance(text, str):
        return text
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            return bytes(text).decode("ascii")
        except UnicodeDecodeError:
            raise URIError("non-ASCII byte in MSRP URI") from None
    raise TypeError(f"an MSRP URI must be str or bytes, not {type(text).__name__}")


def _split(text, require_transport):
    """Cut an MSRP URI into its parts and build it; errors are bare reasons."""
    if not text:
        raise URIError("empty URI")
    if text[0] in " \t" or text[-1] in " \t\r\n":
        raise URIError("leading or trailing whitespace")
    sep = text.find("://")
    if sep <= 0:
        if text[:6].lower().startswith(("msrp:", "msrps:")):
            raise URIError("missing '//' after scheme")
        raise URIError("missing scheme")
    scheme = text[:sep]
    if scheme.lower() not in SCHEMES:
        raise URIError(f"unsupported scheme {scheme!r}")
    rest = text[sep + 3:]

    semicolon = rest.find(";")
    if semicolon < 0:
        hier, tail = rest, None
    else:
        hier, tail = rest[:semicolon], rest[semicolon + 1:]

    slash = hier.find("/")
    if slash < 0:
        authority, session_id = hier, None
    else:
        authority, session_id = hier[:slash], hier[slash + 1:]

    # userinfo cannot contain "@", so the first one ends it.
    at = authority.find("@")
    if at < 0:
        userinfo, hostport = None, authority
    else:
        userinfo, hostport = authority[:at], authority[at + 1:]

    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise URIError("unterminated IPv6 address")
        host, after = hostport[:close + 1], hostport[close + 1:]
        if not after:
            port_text = None
        elif after[0] == ":":
            port_text = after[1:]
        else:
            raise URIError(f"invalid character {after[0]!r} after IPv6 address")
    else:
        colon = hostport.find(":")
        if colon < 0:
            host, port_text = hostport, None
        elif hostport.find(":", colon + 1) >= 0:
            raise URIError("IPv6 address must be in brackets")
        else:
            host, port_text = hostport[:colon], hostport[colon + 1:]
        if not host:
            raise URIError("missing host")

    if port_text is None:
        port = None
    elif not port_text:
        raise URIError("empty port")
    elif PORT_RE.match(port_text) and 1 <= int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise URIError(f"bad port {port_text!r}")

    if tail is None:
        if require_transport:
            raise URIError("missing transport")
        # MSRP defines no transport but tcp (RFC 4975 section 9).
        transport, params = "tcp", ()
    else:
        transport, *raw_params = tail.split(";")
        params = []
        for raw in raw_params:
            match = URI_PARAMETER_RE.match(raw)
            if match is None:
                if not raw:
                    raise URIError("empty URI parameter")
                raise URIError(f"invalid URI parameter {raw!r}")
            params.append(match.groups())

    return MSRPURI(host, port, session_id, transport, scheme, userinfo, params)


def _parse(text, require_transport):
    try:
        return _split(text, require_transport)
    except URIError as error:
        raise URIError(f"{error} (MSRP URI {_clip(text)!r})") from None


_parse_cached = lru_cache(maxsize=CACHE_SIZE)(_parse)


def parse_uri(text, require_transport=True):
    """Parse one MSRP URI; raise URIError saying what is wrong with it.

    ``require_transport=False`` accepts a URI without ";transport" (user
    input, some Use-Path values) and takes it as tcp.
    """
    if type(text) is not str:
        text = _as_text(text)
    if len(text) <= CACHEABLE_URI_LENGTH:
        return _parse_cached(text, require_transport)
    return _parse(text, require_transport)


def _parse_path(text, require_transport):
    stripped = text.strip(" \t")
    if not stripped:
        raise URIError("empty path")
    return tuple(
        parse_uri(item, require_transport) for item in PATH_SEPARATOR_RE.split(stripped)
    )


_parse_path_cached = lru_cache(maxsize=CACHE_SIZE)(_parse_path)


def parse_path(text, require_transport=True):
    """Parse a To-Path, From-Path or Use-Path value into a tuple of MSRPURI."""
    if type(text) is not str:
        text = _as_text(text)
    if len(text) <= CACHEABLE_PATH_LENGTH and text.count("://") <= CACHEABLE_PATH_URIS:
        return _parse_path_cached(text, require_transport)
    return _parse_path(text, require_transport)


def format_path(uris):
    """The header value for a path: the URIs separated by single spaces."""
    if isinstance(uris, (MSRPURI, str)):
        uris = (uris,)
    parts = [str(uri if isinstance(uri, MSRPURI) else parse_uri(uri)) for uri in uris]
    if not parts:
        raise URIError("empty path")
    return " ".join(parts)
