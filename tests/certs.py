"""Throw-away PKI for tests that need real TLS.

Everything is EC P-256 so that generating the whole set takes milliseconds.
`get_test_pki()` builds one set per process in a temporary directory removed
at exit; `make_test_pki(directory)` builds a fresh one where a test wants
files of its own (for example to overwrite them before a reload).
"""

import atexit
import datetime
import ipaddress
import os
import shutil
import tempfile
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertFiles",
    "CertificateAuthority",
    "PKI",
    "SERVER_NAMES",
    "get_test_pki",
    "make_test_pki",
]

#: Names every server certificate of the test PKI is valid for.
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")

_ONE_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class CertFiles:
    """A certificate and its key on disk."""

    cert: str
    key: str
    #: SHA-256 of the DER certificate, lowercase hex without separators.
    fingerprint: str
    common_name: str


@dataclass(frozen=True)
class PKI:
    """The standard set of certificates used by the test suite."""

    directory: str
    #: The trusted CA; `ca_bundle` holds just its certificate.
    ca: CertFiles
    ca_bundle: str
    #: Valid for SERVER_NAMES, serverAuth.
    server: CertFiles
    #: Same names and CA as `server` but a different key: for rotation tests.
    server_alt: CertFiles
    #: CN "alice", clientAuth.
    client: CertFiles
    #: Valid names, trusted CA, but expired yesterday.
    expired: CertFiles
    #: A CA nobody trusts, and certificates it issued.
    unknown_ca: CertFiles
    unknown_ca_bundle: str
    unknown_server: CertFiles
    unknown_client: CertFiles


def _new_key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name):
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "msrp_twisted tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san_entry(name):
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write_pem(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


def _write_pair(directory, basename, cert, key):
    cert_path = _write_pem(
        os.path.join(directory, basename + ".crt"),
        cert.public_bytes(serialization.Encoding.PEM),
    )
    key_path = _write_pem(
        os.path.join(directory, basename + ".key"),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    common_name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return CertFiles(
        cert=cert_path,
        key=key_path,
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        common_name=common_name,
    )


class CertificateAuthority:
    """A self-signed CA that issues leaf certificates into one directory."""

    def __init__(self, directory, name="msrp_twisted test CA", basename="ca"):
        self.directory = directory
        self.key = _new_key()
        now = datetime.datetime.now(datetime.timezone.utc)
        subject = _name(name)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _ONE_DAY)
            .not_valid_after(now + 3650 * _ONE_DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.files = _write_pair(directory, basename, self.certificate, self.key)
        #: The bundle peers load to trust this CA (the CA certificate alone).
        self.bundle = self.files.cert

    def _issue(self, basename, common_name, names, usage, not_before, not_after):
        key = _new_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san_entry(n) for n in names]),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return _write_pair(self.directory, basename, cert, key)

    def issue_server(self, basename, names=SERVER_NAMES, expired=False):
        """A serverAuth certificate whose SANs are `names` (DNS or IP)."""
        now = datetime.datetime.now(datetime.timezone.utc)
        if expired:
            not_before, not_after = now - 30 * _ONE_DAY, now - _ONE_DAY
        else:
            not_before, not_after = now - _ONE_DAY, now + 365 * _ONE_DAY
        return self._issue(
            basename,
            names[0] if names else basename,
            names,
            ExtendedKeyUsageOID.SERVER_AUTH,
            not_before,
            not_after,
        )

    def issue_client(self, basename, common_name):
        """A clientAuth certificate identified by its CN only."""
        now = datetime.datetime.now(datetime.timezone.utc)
        return self._issue(
            basename,
            common_name,
            (),
            ExtendedKeyUsageOID.CLIENT_AUTH,
            now - _ONE_DAY,
            now + 365 * _ONE_DAY,
        )


def make_test_pki(directory):
    """Generate the standard PKI under `directory` (which must exist)."""
    ca = CertificateAuthority(directory)
    unknown = CertificateAuthority(
        directory, name="msrp_twisted unknown CA", basename="unknown-ca"
    )
    return PKI(
        directory=directory,
        ca=ca.files,
        ca_bundle=ca.bundle,
        server=ca.issue_server("server"),
        server_alt=ca.issue_server("server-alt"),
        client=ca.issue_client("client-alice", "alice"),
        expired=ca.issue_server("expired", expired=True),
        unknown_ca=unknown.files,
        unknown_ca_bundle=unknown.bundle,
        unknown_server=unknown.issue_server("unknown-server"),
        unknown_client=unknown.issue_client("unknown-client", "mallory"),
    )


_cached_pki = None


def get_test_pki():
    """The process-wide PKI, generated on first use and deleted at exit."""
    global _cached_pki
    if _cached_pki is None:
        directory = tempfile.mkdtemp(prefix="msrp-test-pki-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        _cached_pki = make_test_pki(directory)
    return _cached_pki
