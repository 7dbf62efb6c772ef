"""The service's settings: one table of options shared by the command line
(tap.py), the TOML file and msrp.tac, so names, defaults and checks cannot
drift apart.

Every proto_msrp parameter keeps its name and default (send_timeout,
max_msg_chunks, tls_handshake_timeout, cert_check_on_conn_reusage,
trace_destination, trace_on, trace_filter_route as ``trace_filter``).
"""

try:
    import tomllib
except ImportError:  # Python < 3.11 (PyPy 3.9, see docs/performance.md): the same parser
    import tomli as tomllib
from dataclasses import dataclass, field, fields

DEFAULT_LISTEN = "msrp:127.0.0.1:2855"
DEFAULT_MI = "tcp:2856:interface=127.0.0.1"


class ConfigError(ValueError):
    """A setting with a bad value; the message names option, value and what is expected."""


def _int(lo=None, hi=None):
    def check(name, value):
        if isinstance(value, bool) or not isinstance(value, int):
            try:
                value = int(str(value).strip(), 10)
            except ValueError:
                raise ConfigError("--%s: %r is not a whole number" % (name, value)) from None
        if lo is not None and value < lo or hi is not None and value > hi:
            rng = "%s..%s" % ("" if lo is None else lo, "" if hi is None else hi)
            raise ConfigError("--%s: %d is out of range (expected %s)" % (name, value, rng))
        return value
    return check


def _float(lo=0.0):
    def check(name, value):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ConfigError("--%s: %r is not a number" % (name, value)) from None
        if value < lo or value != value:
            raise ConfigError("--%s: %r must be >= %g" % (name, value, lo))
        return value
    return check


def _flag(name, value):
    if isinstance(value, bool):
        return int(value)
    v = str(value).strip().lower()
    if v in ("1", "yes", "true", "on"):
        return 1
    if v in ("0", "no", "false", "off"):
        return 0
    raise ConfigError("--%s: %r is not 0 or 1" % (name, value))


def _str(name, value):
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError("--%s: expected a string, got %r" % (name, value))
    return value


def _list(name, value):
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError("--%s: expected a list of strings, got %r" % (name, value))
    return list(value)


# name -> (default, checker, help)
OPTIONS = {
    "listen": ([DEFAULT_LISTEN], _list,
               "listener msrp:IP[:PORT] or msrps:IP[:PORT] (IPv6 in brackets); repeatable"),
    "tls_cert": (None, _str, "PEM certificate (chain) for msrps listeners"),
    "tls_key": (None, _str, "PEM private key for msrps listeners (default: in the cert file)"),
    "tls_ca": (None, _str, "PEM CA bundle to verify peers (clients with --tls-verify-client, servers always)"),
    "tls_verify_client": (0, _flag, "require and verify client certificates on msrps listeners (0/1)"),
    "tls_insecure": (0, _flag, "do NOT verify outbound msrps servers (labs only; logs a warning)"),
    "tls_ciphers": (None, _str, "OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are OpenSSL's)"),
    "send_timeout": (100, _int(0, 3600000), "ms a blocked write may wait before the connection is closed"),
    "max_msg_chunks": (4, _int(0, 1000000),
                       "small reads (< 1 KiB) a message may arrive in before the connection is dropped; 0 = off"),
    "tls_handshake_timeout": (100, _int(1, 3600000), "ms for a TLS handshake, inbound and outbound"),
    "cert_check_on_conn_reusage": (0, _flag,
                                   "reuse outbound TLS connections only if made with the same client certificate (0/1)"),
    "max_chunk_size": (16 * 1024 * 1024, _int(0, 2**62),
                       "largest chunk body in bytes (0 = no limit); relayed bodies stream through, "
                       "so this bounds no buffer"),
    "msg_read_timeout": (4.0, _float(0.001), "s for a message head to arrive / a body to make progress"),
    "idle_timeout": (120.0, _float(1.0), "s without traffic before a connection is closed"),
    "transaction_timeout": (30.0, _float(0.001), "s to wait for a response (RFC 4975: 30)"),
    "trace_destination": (None, _str,
                          "HEPv3 collector: [name]host:port;transport=udp|tcp;version=3 or udp:HOST:PORT / tcp:HOST:PORT"),
    "trace_on": (0, _flag, "tracing on at start (0/1); switched at run time with the msrp_trace MI command"),
    "trace_filter": (None, _str, "package.module:function deciding per connection whether to trace (the seed's trace_filter_route)"),
    "trace_messages": (0, _flag, "also trace MSRP messages (start line, headers, body prefix) (0/1)"),
    "trace_max_body": (256, _int(0, 65000), "body bytes included in message traces"),
    "hep_capture_id": (1, _int(0, 2**32 - 1), "HEP capture agent id"),
    "hep_auth_key": (None, _str, "HEP authentication key"),
    "mi": (DEFAULT_MI, _str, "Twisted endpoint of the AMP management service ('none' to disable)"),
    "mi_secret_file": (None, _str, "file holding the MI secret (16+ bytes); MI clients must prove they "
                                   "know it (msrp-mi --secret-file); unset = MI commands unauthenticated"),
    "relay_uri": ([], _list, "the relay's own URI(s), as OpenSIPS' my_uri (default: one per listener); repeatable"),
    "auth_realm": ("msrp", _str, "Digest realm"),
    "users": (None, _str, "htdigest users file (user:realm:HA1), re-read when it changes"),
    "auth_expires": (1800, _int(1, 86400 * 365), "s a session lasts when the AUTH asks for no Expires"),
    "auth_min_expires": (60, _int(1, 86400 * 365), "smallest Expires granted (smaller: 423 with Min-Expires)"),
    "auth_max_expires": (3600, _int(1, 86400 * 365), "largest Expires granted (larger: 423 with Max-Expires)"),
    "nonce_expire": (30, _int(1, 86400), "s a Digest nonce stays valid"),
    "auth_max_failures": (10, _int(0, 1000000),
                          "failed AUTHs from one address within --auth-failure-window before it is blocked; 0 = off"),
    "auth_failure_window": (60.0, _float(1.0), "s over which failed AUTHs are counted"),
    "auth_block_time": (300.0, _float(0.0), "s an address stays blocked after too many failed AUTHs"),
    "max_connections_per_ip": (0, _int(0, 1000000), "simultaneous accepted connections from one address; 0 = no cap"),
    "max_sessions_per_user": (0, _int(0, 1000000),
                              "relay sessions one user may hold at once (more AUTHs: 403); 0 = no cap"),
    "workers": (1, _int(1, 64),
                "relay processes sharing the listeners (1 = one process does everything; "
                "see docs/scaling.md)"),
}


@dataclass
class MSRPConfig:
    listen: list = field(default_factory=lambda: [DEFAULT_LISTEN])
    tls_cert: str = None
    tls_key: str = None
    tls_ca: str = None
    tls_verify_client: int = 0
    tls_insecure: int = 0
    tls_ciphers: str = None
    send_timeout: int = 100
    max_msg_chunks: int = 4
    tls_handshake_timeout: int = 100
    cert_check_on_conn_reusage: int = 0
    max_chunk_size: int = 16 * 1024 * 1024
    msg_read_timeout: float = 4.0
    idle_timeout: float = 120.0
    transaction_timeout: float = 30.0
    trace_destination: str = None
    trace_on: int = 0
    trace_filter: str = None
    trace_messages: int = 0
    trace_max_body: int = 256
    hep_capture_id: int = 1
    hep_auth_key: str = None
    mi: str = DEFAULT_MI
    mi_secret_file: str = None
    relay_uri: list = field(default_factory=list)
    auth_realm: str = "msrp"
    users: str = None
    auth_expires: int = 1800
    auth_min_expires: int = 60
    auth_max_expires: int = 3600
    nonce_expire: int = 30
    auth_max_failures: int = 10
    auth_failure_window: float = 60.0
    auth_block_time: float = 300.0
    max_connections_per_ip: int = 0
    max_sessions_per_user: int = 0
    workers: int = 1

    @classmethod
    def from_mapping(cls, values, source="configuration"):
        """Build from a dict (TOML or options), checking every value."""
        known = {f.name for f in fields(cls)}
        kwargs = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError("%s: unknown setting %r (known: %s)" % (source, key, ", ".join(sorted(known))))
            if value is None:
                continue
            kwargs[name] = OPTIONS[name][1](name.replace("_", "-"), value)
        config = cls(**kwargs)
        config.check()
        return config

    def check(self):
        from .connections import ListenerSpecError, parse_listener

        if not self.listen:
            raise ConfigError("--listen: at least one listener is needed")
        for spec in self.listen:
            try:
                parsed = parse_listener(spec)
            except ListenerSpecError as e:
                raise ConfigError("--listen: %s" % e) from None
            if parsed.secure and not (self.tls_cert or parsed.params.get("cert")):
                raise ConfigError("--listen: %s is a TLS listener but no --tls-cert is given" % spec)
        if self.auth_min_expires > self.auth_max_expires:
            raise ConfigError("--auth-min-expires: %d is larger than --auth-max-expires %d"
                              % (self.auth_min_expires, self.auth_max_expires))
        if not self.auth_min_expires <= self.auth_expires <= self.auth_max_expires:
            raise ConfigError("--auth-expires: %d is outside --auth-min-expires..--auth-max-expires (%d..%d)"
                              % (self.auth_expires, self.auth_min_expires, self.auth_max_expires))
        if self.workers > 1 and 0 < self.max_connections_per_ip < self.workers - 1:
            raise ConfigError("--max-connections-per-ip: %d is too small for --workers %d: each worker "
                              "accepts one connection from each of the other %d on 127.0.0.1"
                              % (self.max_connections_per_ip, self.workers, self.workers - 1))
        if self.trace_destination:
            from .tracing import parse_trace_destination

            try:
                parse_trace_destination(self.trace_destination)
            except ValueError as e:
                raise ConfigError("--trace-destination: %s" % e) from None
        if self.trace_filter:
            from .tracing import load_filter

            try:
                load_filter(self.trace_filter)
            except ValueError as e:
                raise ConfigError("--trace-filter: %s" % e) from None
        if self.mi_secret_file:
            from .mi import read_secret

            try:
                read_secret(self.mi_secret_file)
            except ValueError as e:
                raise ConfigError("--mi-secret-file: %s" % e) from None
        from .core.uri import parse_uri

        for uri in self.relay_uri:
            try:
                parse_uri(uri, require_transport=False)
            except ValueError as e:
                raise ConfigError("--relay-uri: %r: %s" % (uri, e)) from None
        return self


def load_toml(path):
    """Read a TOML file of settings (keys as in OPTIONS, snake_case)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError("--config: cannot read %s: %s" % (path, e.strerror or e)) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("--config: %s is not valid TOML: %s" % (path, e)) from None
    # Accept either top-level keys or an [msrp] table.
    if "msrp" in data and isinstance(data["msrp"], dict):
        data = data["msrp"]
    return data
