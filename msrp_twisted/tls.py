"""TLS for msrps: listener contexts, outbound client creators, certificate info.

This plays the part of OpenSIPS' tls_mgm for the MSRP stack.  Certificates and
keys are PEM files read with `cryptography`, checked here (so that a bad file
is reported by name instead of as an OpenSSL error stack), and handed to
Twisted's `CertificateOptions` / `optionsForClientTLS`.  TLS 1.0 and 1.1 are
never offered (RFC 8996).

How the transport learns about the handshake
--------------------------------------------
Both directions run over `twisted.protocols.tls.TLSMemoryBIOProtocol` (what
`listenSSL`, `SSL4ServerEndpoint`, `wrapClientTLS` and `TLSMemoryBIOFactory`
install).  The wrapped MSRP protocol:

* gets ``connectionMade()`` when TCP is up, *before* the handshake; that is
  where a ``tls_handshake_timeout`` IDelayedCall should be armed;
* gets ``handshakeCompleted()`` if it provides
  `twisted.internet.interfaces.IHandshakeListener`; cancel the timeout there.
  From then on `peer_certificate_info(self.transport)` works;
* gets only ``connectionLost(reason)`` if the handshake fails.  A
  connectionLost without a prior handshakeCompleted is the reliable sign of
  failure.  The reason says why: an `OpenSSL.SSL.Error` (protocol, chain or
  alert) or a `service_identity.VerificationError` (name mismatch), both
  recognised by `is_tls_failure(reason)`; but a peer that aborts TCP
  mid-handshake, as a Twisted client does on a name mismatch, leaves only a
  plain ConnectionLost.

With TLS 1.3 a client learns that the server rejected its certificate only
after its own ``handshakeCompleted()``: the server's alert arrives as a
`connectionLost` with an SSL.Error shortly afterwards.
"""

from __future__ import annotations  # X | None annotations on Python < 3.10 (PyPy 3.9)

import ipaddress
import os
from collections import OrderedDict
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.internet.ssl import (
    AcceptableCiphers,
    Certificate,
    CertificateOptions,
    TLSVersion,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = [
    "ServerTLSContext",
    "TLSConfigError",
    "TLSSettings",
    "TLSVersion",
    "clear_client_creator_cache",
    "client_creator",
    "is_tls_failure",
    "peer_certificate_info",
    "tls_identity",
]

_log = Logger()


class TLSConfigError(ValueError):
    """TLS settings or files that cannot be used; the message names the file.

    `path` is the offending file, or None when the problem is not a file.
    """

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


# ---------------------------------------------------------------------------
# Settings

_VERSION_NAMES = {
    "1.2": TLSVersion.TLSv1_2,
    "1.3": TLSVersion.TLSv1_3,
}
_OBSOLETE_VERSIONS = (
    (TLSVersion.SSLv3, "SSLv3"),
    (TLSVersion.TLSv1_0, "TLSv1.0"),
    (TLSVersion.TLSv1_1, "TLSv1.1"),
)
_OBSOLETE_NAMES = {"3.0", "1.0", "1", "1.1"}


def _parse_min_version(value):
    if isinstance(value, str):
        text = value.strip().lower().replace("_", ".")
        for prefix in ("tlsv", "tls", "v"):
            if text.startswith(prefix):
                text = text[len(prefix):]
                break
        if text in _VERSION_NAMES:
            return _VERSION_NAMES[text]
        if text in _OBSOLETE_NAMES or value.strip().lower().startswith("ssl"):
            raise TLSConfigError(
                f"min_version {value!r} is not allowed: TLS below 1.2 is "
                "obsolete (RFC 8996)"
            )
    else:
        for constant, label in _OBSOLETE_VERSIONS:
            if value is constant:
                raise TLSConfigError(
                    f"min_version {label} is not allowed: TLS below 1.2 is "
                    "obsolete (RFC 8996)"
                )
        if value is TLSVersion.TLSv1_2 or value is TLSVersion.TLSv1_3:
            return value
    raise TLSConfigError(
        f"min_version {value!r} is not a TLS version; use 'TLSv1.2' or 'TLSv1.3'"
    )


def _path_or_none(name, value):
    if value is None:
        return None
    try:
        path = os.fspath(value)
    except TypeError:
        raise TLSConfigError(
            f"{name} must be a file path, not {type(value).__name__}"
        ) from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path:
        raise TLSConfigError(f"{name} is an empty path")
    return path


@dataclass(frozen=True)
class TLSSettings:
    """What a TLS domain is made of; hashable, so it can key caches.

    On a listener, `cert_file`/`key_file` are the server certificate; on
    outbound connections they are the client certificate presented, if any.
    `key_file` may be omitted when the key is in `cert_file`.  `cert_file`
    may hold the leaf followed by its intermediate certificates.  `ca_file`
    verifies peers: client certificates when `verify_client`, servers when
    `verify_server` (the platform's trust store is used if it is None).
    `ciphers` is an OpenSSL cipher string; it governs TLS 1.2 only, as
    OpenSSL configures TLS 1.3 suites separately.

    Construction checks the values; `validate()` also reads the files.
    """

    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    verify_client: bool = False
    verify_server: bool = True
    min_version: TLSVersion | str = TLSVersion.TLSv1_2
    ciphers: str | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        for name in ("cert_file", "key_file", "ca_file"):
            set_(self, name, _path_or_none(name, getattr(self, name)))
        for name in ("verify_client", "verify_server"):
            if not isinstance(getattr(self, name), bool):
                raise TLSConfigError(
                    f"{name} must be True or False, not {getattr(self, name)!r}"
                )
        set_(self, "min_version", _parse_min_version(self.min_version))
        if self.key_file is not None and self.cert_file is None:
            raise TLSConfigError(
                f"key_file {self.key_file!r} is set but cert_file is not",
                self.key_file,
            )
        if self.verify_client and self.ca_file is None:
            raise TLSConfigError(
                "verify_client needs ca_file: the CA bundle that client "
                "certificates are verified against"
            )
        if self.ciphers is not None:
            if not isinstance(self.ciphers, str) or not self.ciphers.strip():
                raise TLSConfigError(
                    f"ciphers must be a non-empty OpenSSL cipher string, "
                    f"not {self.ciphers!r}"
                )

    @property
    def effective_key_file(self):
        """Where the private key is read from."""
        return self.key_file if self.key_file is not None else self.cert_file

    def validate(self):
        """Read every file named and check it; raise TLSConfigError if unusable."""
        if self.cert_file is not None:
            _load_credentials(self.cert_file, self.effective_key_file)
        if self.ca_file is not None:
            _load_trust_root(self.ca_file)
        _acceptable_ciphers(self)


# ---------------------------------------------------------------------------
# Reading files


def _read_file(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise TLSConfigError(f"{what} file {path!r} does not exist", path) from None
    except IsADirectoryError:
        raise TLSConfigError(
            f"{what} file {path!r} cannot be read: it is a directory", path
        ) from None
    except OSError as e:
        raise TLSConfigError(
            f"{what} file {path!r} cannot be read: {e.strerror or e}", path
        ) from None


def _parse_certificates(path, what):
    data = _read_file(path, what)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise TLSConfigError(f"{what} file {path!r} contains no PEM certificate", path)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise TLSConfigError(
            f"{what} file {path!r} contains a malformed PEM certificate: {e}", path
        ) from None


def _parse_private_key(path):
    data = _read_file(path, "private key")
    if b"PRIVATE KEY-----" not in data:
        raise TLSConfigError(f"private key file {path!r} contains no PEM private key", path)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TLSConfigError(
            f"private key file {path!r} holds an encrypted key; passphrase-"
            "protected keys are not supported",
            path,
        ) from None
    except ValueError as e:
        raise TLSConfigError(
            f"private key file {path!r} contains a malformed private key: {e}", path
        ) from None


def _public_der(public_key):
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _fingerprint(certificate):
    """SHA-256 of the DER certificate, lowercase hex."""
    return certificate.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True)
class _Credentials:
    certificate: x509.Certificate
    chain: tuple
    key: object
    fingerprint: str


_SIGNING_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)


def _load_credentials(cert_path, key_path):
    certificates = _parse_certificates(cert_path, "certificate")
    key = _parse_private_key(key_path)
    if not isinstance(key, _SIGNING_KEY_TYPES):
        raise TLSConfigError(
            f"private key file {key_path!r} holds a {type(key).__name__}, which "
            "cannot sign a TLS handshake",
            key_path,
        )
    leaf = certificates[0]
    if _public_der(leaf.public_key()) != _public_der(key.public_key()):
        raise TLSConfigError(
            f"private key file {key_path!r} does not match the certificate in "
            f"{cert_path!r}",
            key_path,
        )
    return _Credentials(
        certificate=leaf,
        chain=tuple(certificates[1:]),
        key=key,
        fingerprint=_fingerprint(leaf),
    )


def _load_trust_root(path):
    return trustRootFromCertificates(
        [
            Certificate(crypto.X509.from_cryptography(c))
            for c in _parse_certificates(path, "CA")
        ]
    )


def _acceptable_ciphers(settings):
    if settings.ciphers is None:
        return None
    ciphers = AcceptableCiphers.fromOpenSSLCipherString(settings.ciphers)
    try:
        CertificateOptions(raiseMinimumTo=settings.min_version, acceptableCiphers=ciphers)
    except ValueError:
        raise TLSConfigError(
            f"ciphers {settings.ciphers!r} selects no cipher this OpenSSL supports"
        ) from None
    return ciphers


def _file_stamp(path, what):
    """Identity of a file's current content, cheap enough for a cache key."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise TLSConfigError(f"{what} file {path!r} does not exist", path) from None
    except OSError as e:
        raise TLSConfigError(
            f"{what} file {path!r} cannot be read: {e.strerror or e}", path
        ) from None
    return (path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _common_options(settings, credentials):
    options = {"raiseMinimumTo": settings.min_version}
    ciphers = _acceptable_ciphers(settings)
    if ciphers is not None:
        options["acceptableCiphers"] = ciphers
    if credentials is not None:
        options["privateKey"] = credentials.key
        options["certificate"] = credentials.certificate
        if credentials.chain:
            options["extraCertChain"] = list(credentials.chain)
    return options


# ---------------------------------------------------------------------------
# Listeners


@dataclass(frozen=True)
class _ServerState:
    settings: TLSSettings
    options: CertificateOptions
    fingerprint: str


def _build_server_state(settings):
    if not isinstance(settings, TLSSettings):
        raise TypeError(f"expected TLSSettings, not {type(settings).__name__}")
    if settings.cert_file is None:
        raise TLSConfigError("an msrps listener needs cert_file and key_file")
    credentials = _load_credentials(settings.cert_file, settings.effective_key_file)
    options = _common_options(settings, credentials)
    if settings.verify_client:
        options["trustRoot"] = _load_trust_root(settings.ca_file)
    try:
        certificate_options = CertificateOptions(**options)
        # Build the SSL.Context now, so that a reload fails here and not on
        # the next accepted connection.
        certificate_options.getContext()
    except (TypeError, ValueError, SSL.Error) as e:
        raise TLSConfigError(
            f"OpenSSL rejected the TLS settings for {settings.cert_file!r}: {e}",
            settings.cert_file,
        ) from None
    return _ServerState(settings, certificate_options, credentials.fingerprint)


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLSContext:
    """Server connection creator whose certificate can be swapped at runtime.

    Pass it wherever Twisted takes server TLS options (`SSL4ServerEndpoint`,
    `listenSSL`, `TLSMemoryBIOFactory`).  Each accepted connection takes the
    context current at accept time, so `reload()` never disturbs live
    connections.
    """

    def __init__(self, settings):
        self._state = _build_server_state(settings)

    @property
    def settings(self):
        return self._state.settings

    @property
    def fingerprint(self):
        """SHA-256 fingerprint (hex) of the certificate being served."""
        return self._state.fingerprint

    def reload(self, settings=None):
        """Re-read the files (of `settings`, if given) and serve them from now on.

        On any error the previous context stays in force and TLSConfigError
        says why.  Returns the new certificate's fingerprint.
        """
        state = _build_server_state(self._state.settings if settings is None else settings)
        self._state = state
        return state.fingerprint

    def serverConnectionForTLS(self, tlsProtocol):
        return self._state.options.serverConnectionForTLS(tlsProtocol)


# ---------------------------------------------------------------------------
# Outbound connections


def _verification_name(hostname):
    """The name the server's certificate must carry, in canonical form.

    Accepts the bracketed IPv6 form of MSRP URIs and drops a zone index,
    which no certificate can contain.
    """
    if not isinstance(hostname, str):
        raise TypeError(f"TLS host name must be str, not {type(hostname).__name__}")
    name = hostname.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0] if ":" in name else name)
    except ValueError:
        pass
    else:
        return str(address)
    name = name.rstrip(".").lower()
    if not name:
        raise ValueError(f"invalid TLS host name {hostname!r}")
    try:
        name.encode("idna")
    except UnicodeError as e:
        raise ValueError(f"invalid TLS host name {hostname!r}: {e}") from None
    return name


def _is_ip(name):
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedClientCreator:
    """Client creator that accepts any server certificate; still sends SNI."""

    def __init__(self, options, hostname):
        self._options = options
        self._server_name = None if _is_ip(hostname) else hostname.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol):
        connection = self._options.clientConnectionForTLS(tlsProtocol)
        if self._server_name is not None:
            connection.set_tlsext_host_name(self._server_name)
        return connection


class _InsecureWarning:
    """Say once per process that servers are not being verified."""

    def __init__(self):
        self.emitted = False

    def __call__(self, hostname):
        if not self.emitted:
            self.emitted = True
            _log.warn(
                "msrps server certificate verification is OFF (verify_server="
                "False), first used for {hostname}; connections are open to "
                "interception",
                hostname=hostname,
            )


_warn_insecure = _InsecureWarning()

_CLIENT_CACHE_SIZE = 256
_client_cache = OrderedDict()


def clear_client_creator_cache():
    """Forget cached client creators, e.g. on an operator's reload_tls."""
    _client_cache.clear()


def _client_cert_paths(settings, client_cert_files):
    if client_cert_files is not None:
        if isinstance(client_cert_files, (str, os.PathLike)):
            path = _path_or_none("client_cert_files", client_cert_files)
            return (path, path)
        try:
            cert_path, key_path = client_cert_files
        except (TypeError, ValueError):
            raise TLSConfigError(
                "client_cert_files must be a (cert_file, key_file) pair, not "
                f"{client_cert_files!r}"
            ) from None
        cert_path = _path_or_none("client cert_file", cert_path)
        key_path = _path_or_none("client key_file", key_path) or cert_path
        if cert_path is None:
            raise TLSConfigError("client_cert_files has no certificate file")
        return (cert_path, key_path)
    if settings.cert_file is not None:
        return (settings.cert_file, settings.effective_key_file)
    return None


def client_creator(settings, hostname, client_cert_files=None):
    """An IOpenSSLClientConnectionCreator for an msrps connection to `hostname`.

    `hostname` is what the server certificate must match: a DNS name or an
    IP address (``'[::1]'`` is accepted).  The client certificate is
    `client_cert_files` -- a ``(cert_file, key_file)`` pair or one combined
    PEM file -- or else the settings' own cert_file/key_file, or none.
    Creators are cached and rebuilt when a file they were made from changes.
    """
    if not isinstance(settings, TLSSettings):
        raise TypeError(f"expected TLSSettings, not {type(settings).__name__}")
    name = _verification_name(hostname)
    cert_paths = _client_cert_paths(settings, client_cert_files)
    stamps = []
    if cert_paths is not None:
        stamps.append(_file_stamp(cert_paths[0], "certificate"))
        stamps.append(_file_stamp(cert_paths[1], "private key"))
    if settings.verify_server and settings.ca_file is not None:
        stamps.append(_file_stamp(settings.ca_file, "CA"))
    key = (settings, name, tuple(stamps))
    creator = _client_cache.get(key)
    if creator is not None:
        _client_cache.move_to_end(key)
        return creator

    credentials = None if cert_paths is None else _load_credentials(*cert_paths)
    options = _common_options(settings, credentials)
    try:
        if settings.verify_server:
            if settings.ca_file is not None:
                trust = _load_trust_root(settings.ca_file)
            else:
                trust = platformTrust()
            creator = optionsForClientTLS(
                name, trustRoot=trust, extraCertificateOptions=options
            )
        else:
            _warn_insecure(name)
            creator = _UnverifiedClientCreator(CertificateOptions(**options), name)
    except (ValueError, SSL.Error) as e:
        raise TLSConfigError(f"OpenSSL rejected the client TLS settings: {e}") from None
    _client_cache[key] = creator
    while len(_client_cache) > _CLIENT_CACHE_SIZE:
        _client_cache.popitem(last=False)
    return creator


_identity_cache = {}


def tls_identity(settings, client_cert_files=None):
    """A hashable key for the client certificate outbound connections present.

    Two connections may be shared (cert_check_on_conn_reusage) only if this
    is equal for both.  It is the certificate's SHA-256 fingerprint, or None
    when no client certificate is used.
    """
    cert_paths = _client_cert_paths(settings, client_cert_files)
    if cert_paths is None:
        return None
    stamp = _file_stamp(cert_paths[0], "certificate")
    fingerprint = _identity_cache.get(stamp)
    if fingerprint is None:
        certificate = _parse_certificates(cert_paths[0], "certificate")[0]
        fingerprint = _fingerprint(certificate)
        if len(_identity_cache) >= _CLIENT_CACHE_SIZE:
            _identity_cache.clear()
        _identity_cache[stamp] = fingerprint
    return fingerprint


# ---------------------------------------------------------------------------
# Inspecting connections


def _name_attribute(name, oid):
    attributes = name.get_attributes_for_oid(oid)
    return attributes[0].value if attributes else None


def _tls_connection(transport):
    get_handle = getattr(transport, "getHandle", None)
    handle = get_handle() if get_handle is not None else None
    return handle if isinstance(handle, SSL.Connection) else None


def _peer_certificate(connection):
    try:
        return connection.get_peer_certificate(as_cryptography=True)
    except TypeError:
        # pyOpenSSL before 24.3 only returns its own X509 type.
        peer = connection.get_peer_certificate()
        return None if peer is None else peer.to_cryptography()


def peer_certificate_info(transport):
    """What the management interface shows about a TLS peer, or None.

    None when `transport` is not TLS, the connection is gone, or the peer
    sent no certificate (yet: the handshake may still be running).
    """
    connection = _tls_connection(transport)
    if connection is None:
        return None
    certificate = _peer_certificate(connection)
    if certificate is None:
        return None
    try:
        san = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except (x509.ExtensionNotFound, ValueError):
        dns_names, ip_addresses = [], []
    else:
        dns_names = san.get_values_for_type(x509.DNSName)
        ip_addresses = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    return {
        "subject": certificate.subject.rfc4514_string(),
        "subject_cn": _name_attribute(certificate.subject, NameOID.COMMON_NAME),
        "issuer": certificate.issuer.rfc4514_string(),
        "issuer_cn": _name_attribute(certificate.issuer, NameOID.COMMON_NAME),
        "serial": format(certificate.serial_number, "x"),
        "not_before": certificate.not_valid_before_utc.isoformat(),
        "not_after": certificate.not_valid_after_utc.isoformat(),
        "fingerprint_sha256": _fingerprint(certificate),
        "dns_names": dns_names,
        "ip_addresses": ip_addresses,
        "tls_version": connection.get_protocol_version_name(),
        "cipher": connection.get_cipher_name(),
    }


def is_tls_failure(reason):
    """Whether a connectionLost reason (Failure or exception) is a TLS failure.

    True for OpenSSL errors (handshake, bad chain, expired or unknown
    certificate, alerts from the peer) and for certificate name mismatches.
    A peer that just closes TCP mid-handshake gives ConnectionLost, which is
    not reported as a TLS failure.
    """
    if isinstance(reason, Failure):
        reason = reason.value
    return isinstance(reason, (SSL.Error, VerificationError, CertificateError))
