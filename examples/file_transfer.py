"""Send a file over MSRP with TLS (msrps), endpoint to endpoint, no relay.

    python examples/file_transfer.py [SIZE_IN_BYTES]

Makes a throwaway CA and a server certificate for 127.0.0.1 in a temporary
directory (with the `cryptography` package; see docs/admin-guide.md for the
openssl commands you would use for real ones), starts a receiving endpoint
on msrps:127.0.0.1 (a random free port) and sends it a file of random bytes
(256 KiB by default) in 16 KiB chunks, asking for a success REPORT. The
receiver checks the SHA-256. Exits 0 when the file arrived intact and its
delivery was confirmed, 1 otherwise.
"""

import datetime
import hashlib
import ipaddress
import os
import sys
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet import defer, task

from msrp_twisted.endpoint import Endpoint
from msrp_twisted.protocol import TransportSettings
from msrp_twisted.tls import TLSSettings


def make_certificates(directory):
    """ca.pem, plus server.pem/server.key valid for IP 127.0.0.1, signed by it."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject, issuer, public_key, signing_key, extensions):
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1)))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("Example MSRP CA", "Example MSRP CA", ca_key.public_key(), ca_key, [
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                       crl_sign=True, encipher_only=False, decipher_only=False), True),
    ])
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = certificate("127.0.0.1", "Example MSRP CA", server_key.public_key(), ca_key, [
        (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False),
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
    ])
    paths = {name: os.path.join(directory, name) for name in ("ca.pem", "server.pem", "server.key")}
    with open(paths["ca.pem"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["server.pem"], "wb") as f:
        f.write(server.public_bytes(serialization.Encoding.PEM))
    with open(paths["server.key"], "wb") as f:
        f.write(server_key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    return paths


@defer.inlineCallbacks
def main(reactor, size):
    with tempfile.TemporaryDirectory() as directory:
        pem = make_certificates(directory)
        source = os.path.join(directory, "report.bin")
        with open(source, "wb") as f:
            f.write(os.urandom(size))
        with open(source, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()

        # Handshakes get 5 s instead of proto_msrp's 100 ms default, which is
        # tight for a busy machine.
        settings = TransportSettings(tls_handshake_timeout=5000)
        receiver = Endpoint(reactor, settings=settings,
                            tls=TLSSettings(cert_file=pem["server.pem"], key_file=pem["server.key"]))
        sender = Endpoint(reactor, settings=settings, tls=TLSSettings(ca_file=pem["ca.pem"]))
        try:
            yield receiver.listen("msrps:127.0.0.1:0")
            receiver_session = yield receiver.create_session(spool_dir=directory)
            print("receiver listening on msrps, port", receiver.port)

            session = yield sender.create_session()
            yield session.connect(receiver_session.path_text)

            seen = []

            def progress(done, total):
                # Called as chunks are confirmed; print quarters only.
                quarter = done * 4 // total
                if quarter not in seen:
                    seen.append(quarter)
                    print("confirmed %d of %d bytes" % (done, total))

            outgoing = session.send_message(
                source, "application/octet-stream", chunk_size=16 * 1024,
                success_report=True, progress=progress,
                headers=[("Content-Disposition", 'attachment; filename="report.bin"')])
            received = yield receiver_session.next_message()
            result = yield outgoing.result
            print("delivery confirmed by the receiver's REPORT (%s)" % outgoing.report.status.code)
            print("received %d bytes, %s, %s" % (
                received.size, received.content_type,
                "spooled to disk" if received.path else "in memory"))
            if received.sha256 != digest:
                raise RuntimeError("SHA-256 mismatch: sent %s, received %s" % (digest, received.sha256))
            print("sha256 matches:", received.sha256)
            print("sender confirmed %d bytes in %d chunks" % (result.size, result.chunks))
        finally:
            yield sender.close()
            yield receiver.close()


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 256 * 1024

    def run(reactor):
        def failed(failure):
            print("file_transfer failed: %s" % failure.getErrorMessage(), file=sys.stderr)
            raise SystemExit(1)

        return main(reactor, size).addErrback(failed)

    task.react(run)
