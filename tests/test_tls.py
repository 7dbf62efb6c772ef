"""Tests for msrp_twisted.tls, mostly over real TLS on loopback sockets."""

import os
import shutil

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, gatherResults, inlineCallbacks
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from msrp_twisted import tls
from msrp_twisted.tls import (
    ServerTLSContext,
    TLSConfigError,
    TLSSettings,
    TLSVersion,
    client_creator,
    is_tls_failure,
    peer_certificate_info,
    tls_identity,
)
from tests.certs import get_test_pki, make_test_pki


@implementer(IHandshakeListener)
class Peer(Protocol):
    """Records the handshake outcome; servers echo what they receive."""

    def __init__(self, echo=False):
        self.echo = echo
        self.handshake_done = False
        # Fires with ("ok", self) on handshake, or ("lost", reason) before it.
        self.settled = Deferred()
        # Fires with None; the reason is kept in lost_reason.
        self.lost = Deferred()
        self.lost_reason = None
        self.received = b""
        self._waiting = None
        self.events = []

    def connectionMade(self):
        self.events.append("connectionMade")

    def handshakeCompleted(self):
        self.events.append("handshakeCompleted")
        self.handshake_done = True
        if not self.settled.called:
            self.settled.callback(("ok", self))

    def dataReceived(self, data):
        self.events.append("dataReceived")
        if self.echo:
            self.transport.write(data)
            return
        self.received += data
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.callback(self.received)

    def next_data(self):
        self._waiting = Deferred()
        return self._waiting

    def connectionLost(self, reason):
        self.events.append("connectionLost")
        if not self.settled.called:
            self.settled.callback(("lost", reason))
        self.lost_reason = reason
        self.lost.callback(None)


class PeerFactory(Factory):
    def __init__(self):
        self.accepted = DeferredQueue()

    def buildProtocol(self, addr):
        peer = Peer(echo=True)
        self.accepted.put(peer)
        return peer


@implementer(IOpenSSLClientConnectionCreator)
class RawClientCreator:
    """A deliberately old-fashioned client: fixed TLS versions, no verify."""

    def __init__(self, min_version, max_version):
        self.context = SSL.Context(SSL.TLS_METHOD)
        self.context.set_min_proto_version(min_version)
        self.context.set_max_proto_version(max_version)
        self.context.set_cipher_list(b"ALL:@SECLEVEL=0")

    def clientConnectionForTLS(self, tlsProtocol):
        return SSL.Connection(self.context)


@implementer(IOpenSSLServerConnectionCreator)
class PermissiveServerCreator:
    """A server that still accepts TLS 1.1: proves the raw client speaks it."""

    def __init__(self, files):
        self.context = SSL.Context(SSL.TLS_METHOD)
        self.context.set_min_proto_version(SSL.TLS1_1_VERSION)
        self.context.set_cipher_list(b"ALL:@SECLEVEL=0")
        self.context.use_certificate_file(files.cert)
        self.context.use_privatekey_file(files.key)

    def serverConnectionForTLS(self, tlsProtocol):
        return SSL.Connection(self.context)


class TLSConnectionTests(TestCase):
    timeout = 20

    def setUp(self):
        self.pki = get_test_pki()
        self._peers = []
        tls.clear_client_creator_cache()
        self.addCleanup(tls.clear_client_creator_cache)
        self.addCleanup(self._close_peers)

    def _close_peers(self):
        pending = []
        for peer in self._peers:
            if not peer.lost.called:
                peer.transport.abortConnection()
            pending.append(peer.lost)
        return gatherResults(pending)

    def server_settings(self, files=None, **kw):
        files = files or self.pki.server
        return TLSSettings(cert_file=files.cert, key_file=files.key, **kw)

    @inlineCallbacks
    def listen(self, creator, interface="127.0.0.1"):
        factory = PeerFactory()
        port = yield SSL4ServerEndpoint(reactor, 0, creator, interface=interface).listen(
            factory
        )
        self.addCleanup(port.stopListening)
        original_get = factory.accepted.get

        def accepted():
            d = original_get()
            d.addCallback(self._track)
            return d

        factory.accepted.get = accepted
        return port.getHost().port, factory

    def _track(self, peer):
        self._peers.append(peer)
        return peer

    @inlineCallbacks
    def connect(self, creator, port, address="127.0.0.1"):
        endpoint_type = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        endpoint = wrapClientTLS(creator, endpoint_type(reactor, address, port))
        peer = Peer()
        yield connectProtocol(endpoint, peer)
        self._track(peer)
        outcome = yield peer.settled
        return outcome

    @inlineCallbacks
    def echo(self, peer, data):
        d = peer.next_data()
        peer.transport.write(data)
        received = yield d
        self.assertEqual(received[-len(data):], data)

    def assert_refused(self, outcome):
        kind, reason = outcome
        self.assertEqual(kind, "lost", "handshake unexpectedly completed")
        self.assertTrue(is_tls_failure(reason), reason)
        return reason

    def assert_verify_failed(self, reason):
        self.assertIsInstance(reason.value, SSL.Error)
        self.assertIn("certificate verify failed", str(reason.value))

    @inlineCallbacks
    def test_good_certificate_verifies(self):
        port, factory = yield self.listen(ServerTLSContext(self.server_settings()))
        creator = client_creator(TLSSettings(ca_file=self.pki.ca_bundle), "localhost")
        kind, peer = yield self.connect(creator, port)
        self.assertEqual(kind, "ok")
        server = yield factory.accepted.get()
        kind, _ = yield server.settled
        self.assertEqual(kind, "ok")
        yield self.echo(peer, b"MSRP a786hjs2 SEND\r\n")

        info = peer_certificate_info(peer.transport)
        self.assertEqual(info["fingerprint_sha256"], self.pki.server.fingerprint)
        self.assertEqual(info["subject_cn"], "localhost")
        self.assertEqual(info["issuer_cn"], "msrp_twisted test CA")
        self.assertIn("CN=localhost", info["subject"])
        self.assertEqual(info["dns_names"], ["localhost"])
        self.assertEqual(info["ip_addresses"], ["127.0.0.1", "::1"])
        self.assertIn(info["tls_version"], ("TLSv1.2", "TLSv1.3"))
        self.assertTrue(info["cipher"])
        # The listener did not ask for a client certificate.
        self.assertIsNone(peer_certificate_info(server.transport))

    @inlineCallbacks
    def test_handshake_notifications(self):
        # connectionMade comes before the handshake (arm a timeout there),
        # handshakeCompleted before any data; a failed handshake is only a
        # connectionLost with a TLS reason.
        port, factory = yield self.listen(ServerTLSContext(self.server_settings()))
        settings = TLSSettings(ca_file=self.pki.ca_bundle)
        _, peer = yield self.connect(client_creator(settings, "localhost"), port)
        yield self.echo(peer, b"ping")
        server = yield factory.accepted.get()
        self.assertEqual(server.events, ["connectionMade", "handshakeCompleted", "dataReceived"])
        self.assertEqual(peer.events, ["connectionMade", "handshakeCompleted", "dataReceived"])
        peer.transport.loseConnection()
        yield server.lost
        self.assertFalse(is_tls_failure(server.lost_reason))
        yield peer.lost

        kind, reason = yield self.connect(client_creator(settings, "wrong.example"), port)
        self.assertEqual(kind, "lost")
        self.assertTrue(is_tls_failure(reason))
        # The client aborts TCP on a name mismatch without an alert, so the
        # server may see a plain ConnectionLost; no handshakeCompleted is the
        # reliable sign.
        server = yield factory.accepted.get()
        yield server.lost
        self.assertEqual(server.events, ["connectionMade", "connectionLost"])

    @inlineCallbacks
    def test_wrong_host_name_refused(self):
        port, _ = yield self.listen(ServerTLSContext(self.server_settings()))
        creator = client_creator(TLSSettings(ca_file=self.pki.ca_bundle), "sip.example.com")
        reason = self.assert_refused((yield self.connect(creator, port)))
        self.assertIsInstance(reason.value, VerificationError)

    @inlineCallbacks
    def test_unknown_ca_refused(self):
        port, _ = yield self.listen(
            ServerTLSContext(self.server_settings(self.pki.unknown_server))
        )
        creator = client_creator(TLSSettings(ca_file=self.pki.ca_bundle), "localhost")
        self.assert_verify_failed(self.assert_refused((yield self.connect(creator, port))))

    @inlineCallbacks
    def test_expired_certificate_refused(self):
        port, _ = yield self.listen(ServerTLSContext(self.server_settings(self.pki.expired)))
        creator = client_creator(TLSSettings(ca_file=self.pki.ca_bundle), "localhost")
        self.assert_verify_failed(self.assert_refused((yield self.connect(creator, port))))

    @inlineCallbacks
    def test_client_certificate_required_and_present(self):
        server_settings = self.server_settings(
            ca_file=self.pki.ca_bundle, verify_client=True
        )
        port, factory = yield self.listen(ServerTLSContext(server_settings))
        client_files = (self.pki.client.cert, self.pki.client.key)
        creator = client_creator(
            TLSSettings(ca_file=self.pki.ca_bundle), "localhost", client_files
        )
        kind, peer = yield self.connect(creator, port)
        self.assertEqual(kind, "ok")
        server = yield factory.accepted.get()
        kind, _ = yield server.settled
        self.assertEqual(kind, "ok")
        yield self.echo(peer, b"hello")
        info = peer_certificate_info(server.transport)
        self.assertEqual(info["subject_cn"], "alice")
        self.assertEqual(info["fingerprint_sha256"], self.pki.client.fingerprint)
        self.assertEqual(info["fingerprint_sha256"], tls_identity(TLSSettings(), client_files))

    @inlineCallbacks
    def test_client_certificate_required_and_absent(self):
        server_settings = self.server_settings(
            ca_file=self.pki.ca_bundle, verify_client=True
        )
        port, factory = yield self.listen(ServerTLSContext(server_settings))
        creator = client_creator(TLSSettings(ca_file=self.pki.ca_bundle), "localhost")
        _, peer = yield self.connect(creator, port)
        server = yield factory.accepted.get()
        self.assert_refused((yield server.settled))
        # Under TLS 1.3 the client finishes its side first, then gets the alert.
        yield peer.lost
        self.assertTrue(is_tls_failure(peer.lost_reason), peer.lost_reason)

    @inlineCallbacks
    def test_client_certificate_from_unknown_ca_refused(self):
        server_settings = self.server_settings(
            ca_file=self.pki.ca_bundle, verify_client=True
        )
        port, factory = yield self.listen(ServerTLSContext(server_settings))
        files = (self.pki.unknown_client.cert, self.pki.unknown_client.key)
        creator = client_creator(TLSSettings(ca_file=self.pki.ca_bundle), "localhost", files)
        _, peer = yield self.connect(creator, port)
        server = yield factory.accepted.get()
        self.assert_verify_failed(self.assert_refused((yield server.settled)))
        yield peer.lost
        self.assertTrue(is_tls_failure(peer.lost_reason), peer.lost_reason)

    @inlineCallbacks
    def test_insecure_switch_accepts_unknown_ca_and_warns_once(self):
        port, _ = yield self.listen(
            ServerTLSContext(self.server_settings(self.pki.unknown_server))
        )
        self.patch(tls._warn_insecure, "emitted", False)
        insecure = TLSSettings(ca_file=self.pki.ca_bundle, verify_server=False)
        with capturedLogs() as events:
            creator = client_creator(insecure, "localhost")
            client_creator(insecure, "elsewhere.example")
        warnings = [e for e in events if e.get("log_namespace") == "msrp_twisted.tls"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["log_level"], LogLevel.warn)
        self.assertIn("verification is OFF", warnings[0]["log_format"])
        kind, peer = yield self.connect(creator, port)
        self.assertEqual(kind, "ok")
        info = peer_certificate_info(peer.transport)
        self.assertEqual(info["fingerprint_sha256"], self.pki.unknown_server.fingerprint)

    @inlineCallbacks
    def test_ipv4_address_san(self):
        port, _ = yield self.listen(ServerTLSContext(self.server_settings()))
        settings = TLSSettings(ca_file=self.pki.ca_bundle)
        kind, _ = yield self.connect(client_creator(settings, "127.0.0.1"), port)
        self.assertEqual(kind, "ok")
        # The address is checked against the SANs, not merely accepted.
        reason = self.assert_refused(
            (yield self.connect(client_creator(settings, "127.0.0.2"), port))
        )
        self.assertIsInstance(reason.value, VerificationError)

    @inlineCallbacks
    def test_ipv6_address_san(self):
        port, _ = yield self.listen(ServerTLSContext(self.server_settings()), "::1")
        settings = TLSSettings(ca_file=self.pki.ca_bundle)
        for name in ("::1", "[::1]", "0:0:0:0:0:0:0:1"):
            kind, _ = yield self.connect(client_creator(settings, name), port, "::1")
            self.assertEqual(kind, "ok", name)
        reason = self.assert_refused(
            (yield self.connect(client_creator(settings, "::2"), port, "::1"))
        )
        self.assertIsInstance(reason.value, VerificationError)

    @inlineCallbacks
    def test_reload_swaps_certificate_and_keeps_connections(self):
        directory = self.mktemp()
        os.makedirs(directory)
        cert = os.path.join(directory, "msrps.crt")
        key = os.path.join(directory, "msrps.key")
        shutil.copy(self.pki.server.cert, cert)
        shutil.copy(self.pki.server.key, key)
        context = ServerTLSContext(TLSSettings(cert_file=cert, key_file=key))
        self.assertEqual(context.fingerprint, self.pki.server.fingerprint)
        port, _ = yield self.listen(context)
        settings = TLSSettings(ca_file=self.pki.ca_bundle)

        _, old = yield self.connect(client_creator(settings, "localhost"), port)
        self.assertEqual(
            peer_certificate_info(old.transport)["fingerprint_sha256"],
            self.pki.server.fingerprint,
        )

        shutil.copy(self.pki.server_alt.cert, cert)
        shutil.copy(self.pki.server_alt.key, key)
        self.assertEqual(context.reload(), self.pki.server_alt.fingerprint)

        _, new = yield self.connect(client_creator(settings, "localhost"), port)
        self.assertEqual(
            peer_certificate_info(new.transport)["fingerprint_sha256"],
            self.pki.server_alt.fingerprint,
        )
        self.assertFalse(old.lost.called)
        yield self.echo(old, b"still here")

    @inlineCallbacks
    def test_failed_reload_keeps_serving_old_certificate(self):
        directory = self.mktemp()
        os.makedirs(directory)
        cert = os.path.join(directory, "msrps.crt")
        key = os.path.join(directory, "msrps.key")
        shutil.copy(self.pki.server.cert, cert)
        shutil.copy(self.pki.server.key, key)
        context = ServerTLSContext(TLSSettings(cert_file=cert, key_file=key))
        port, _ = yield self.listen(context)

        # Half-done rotation: new certificate, old key.
        shutil.copy(self.pki.server_alt.cert, cert)
        error = self.assertRaises(TLSConfigError, context.reload)
        self.assertIn("does not match", str(error))
        self.assertIn(key, str(error))
        self.assertEqual(context.fingerprint, self.pki.server.fingerprint)

        settings = TLSSettings(ca_file=self.pki.ca_bundle)
        _, peer = yield self.connect(client_creator(settings, "localhost"), port)
        self.assertEqual(
            peer_certificate_info(peer.transport)["fingerprint_sha256"],
            self.pki.server.fingerprint,
        )

    @inlineCallbacks
    def test_tls_1_1_client_refused(self):
        old_client = RawClientCreator(SSL.TLS1_1_VERSION, SSL.TLS1_1_VERSION)
        # Control: this OpenSSL can really negotiate TLS 1.1.
        port, _ = yield self.listen(PermissiveServerCreator(self.pki.server))
        kind, peer = yield self.connect(old_client, port)
        self.assertEqual(kind, "ok")
        self.assertEqual(peer.transport.getHandle().get_protocol_version_name(), "TLSv1.1")

        port, factory = yield self.listen(ServerTLSContext(self.server_settings()))
        self.assert_refused((yield self.connect(old_client, port)))
        server = yield factory.accepted.get()
        reason = self.assert_refused((yield server.settled))
        self.assertIn("unsupported protocol", str(reason.value))

    @inlineCallbacks
    def test_min_version_1_3_refuses_tls_1_2(self):
        port, _ = yield self.listen(
            ServerTLSContext(self.server_settings(min_version="TLSv1.3"))
        )
        old_client = RawClientCreator(SSL.TLS1_2_VERSION, SSL.TLS1_2_VERSION)
        self.assert_refused((yield self.connect(old_client, port)))
        modern = RawClientCreator(SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION)
        kind, peer = yield self.connect(modern, port)
        self.assertEqual(kind, "ok")
        self.assertEqual(peer.transport.getHandle().get_protocol_version_name(), "TLSv1.3")

    @inlineCallbacks
    def test_cipher_string_applies_to_tls_1_2(self):
        port, _ = yield self.listen(
            ServerTLSContext(self.server_settings(ciphers="ECDHE-ECDSA-CHACHA20-POLY1305"))
        )
        client = RawClientCreator(SSL.TLS1_2_VERSION, SSL.TLS1_2_VERSION)
        kind, peer = yield self.connect(client, port)
        self.assertEqual(kind, "ok")
        self.assertEqual(
            peer.transport.getHandle().get_cipher_name(), "ECDHE-ECDSA-CHACHA20-POLY1305"
        )


class SettingsTests(SynchronousTestCase):
    def setUp(self):
        self.pki = get_test_pki()
        self.directory = self.mktemp()
        os.makedirs(self.directory)

    def write(self, name, data):
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def read(self, path):
        with open(path, "rb") as f:
            return f.read()

    def assert_config_error(self, settings, *fragments, path=None):
        error = self.assertRaises(TLSConfigError, settings.validate)
        for fragment in fragments:
            self.assertIn(fragment, str(error))
        if path is not None:
            self.assertEqual(error.path, path)
        # The listener reports the same problem the same way.
        self.assertEqual(
            str(self.assertRaises(TLSConfigError, ServerTLSContext, settings)),
            str(error),
        )
        return error

    def test_defaults(self):
        settings = TLSSettings()
        self.assertIs(settings.verify_client, False)
        self.assertIs(settings.verify_server, True)
        self.assertIs(settings.min_version, TLSVersion.TLSv1_2)
        self.assertIsNone(settings.ciphers)
        self.assertTrue(issubclass(TLSConfigError, ValueError))

    def test_valid_settings(self):
        settings = TLSSettings(
            cert_file=self.pki.server.cert,
            key_file=self.pki.server.key,
            ca_file=self.pki.ca_bundle,
            verify_client=True,
        )
        settings.validate()
        self.assertEqual(hash(settings), hash(TLSSettings(**vars(settings))))

    def test_missing_certificate_file(self):
        missing = os.path.join(self.directory, "nope.crt")
        settings = TLSSettings(cert_file=missing, key_file=self.pki.server.key)
        self.assert_config_error(settings, missing, "does not exist", path=missing)

    def test_missing_key_file(self):
        missing = os.path.join(self.directory, "nope.key")
        settings = TLSSettings(cert_file=self.pki.server.cert, key_file=missing)
        self.assert_config_error(settings, missing, "private key", "does not exist")

    def test_unreadable_file(self):
        settings = TLSSettings(cert_file=self.directory, key_file=self.pki.server.key)
        self.assert_config_error(settings, self.directory, "cannot be read")

    def test_key_does_not_match_certificate(self):
        settings = TLSSettings(cert_file=self.pki.server.cert, key_file=self.pki.client.key)
        self.assert_config_error(
            settings, self.pki.client.key, self.pki.server.cert, "does not match"
        )

    def test_no_certificate_in_file(self):
        settings = TLSSettings(cert_file=self.pki.server.key, key_file=self.pki.server.key)
        self.assert_config_error(settings, self.pki.server.key, "no PEM certificate")

    def test_malformed_certificate(self):
        path = self.write(
            "broken.crt", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
        settings = TLSSettings(cert_file=path, key_file=self.pki.server.key)
        self.assert_config_error(settings, path, "malformed")

    def test_no_key_in_file(self):
        settings = TLSSettings(cert_file=self.pki.server.cert, key_file=self.pki.server.cert)
        self.assert_config_error(settings, self.pki.server.cert, "no PEM private key")

    def test_encrypted_key(self):
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(self.read(self.pki.server.key), None)
        path = self.write(
            "encrypted.key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            ),
        )
        settings = TLSSettings(cert_file=self.pki.server.cert, key_file=path)
        self.assert_config_error(settings, path, "encrypted")

    def test_combined_pem_file(self):
        path = self.write(
            "combined.pem",
            self.read(self.pki.server.cert) + self.read(self.pki.server.key),
        )
        settings = TLSSettings(cert_file=path)
        self.assertEqual(settings.effective_key_file, path)
        self.assertEqual(ServerTLSContext(settings).fingerprint, self.pki.server.fingerprint)

    def test_empty_ca_bundle(self):
        path = self.write("empty-ca.pem", b"")
        settings = TLSSettings(
            cert_file=self.pki.server.cert,
            key_file=self.pki.server.key,
            ca_file=path,
            verify_client=True,
        )
        self.assert_config_error(settings, path, "CA file", "no PEM certificate")
        error = self.assertRaises(
            TLSConfigError, client_creator, TLSSettings(ca_file=path), "localhost"
        )
        self.assertIn(path, str(error))

    def test_listener_needs_certificate(self):
        error = self.assertRaises(TLSConfigError, ServerTLSContext, TLSSettings())
        self.assertIn("cert_file", str(error))

    def test_verify_client_needs_ca(self):
        error = self.assertRaises(
            TLSConfigError,
            TLSSettings,
            cert_file=self.pki.server.cert,
            key_file=self.pki.server.key,
            verify_client=True,
        )
        self.assertIn("ca_file", str(error))

    def test_key_without_certificate(self):
        error = self.assertRaises(TLSConfigError, TLSSettings, key_file=self.pki.server.key)
        self.assertIn(self.pki.server.key, str(error))

    def test_obsolete_versions_refused(self):
        for version in (TLSVersion.TLSv1_0, TLSVersion.TLSv1_1, TLSVersion.SSLv3,
                        "TLSv1.1", "tlsv1_0", "1.1", "SSLv3"):
            error = self.assertRaises(TLSConfigError, TLSSettings, min_version=version)
            self.assertIn("not allowed", str(error))

    def test_version_names(self):
        for name in ("TLSv1.2", "tlsv1_2", "1.2", "TLS1.2"):
            self.assertIs(TLSSettings(min_version=name).min_version, TLSVersion.TLSv1_2)
        self.assertIs(TLSSettings(min_version="TLSv1.3").min_version, TLSVersion.TLSv1_3)
        error = self.assertRaises(TLSConfigError, TLSSettings, min_version="1.4")
        self.assertIn("'1.4'", str(error))

    def test_bad_flags(self):
        self.assertRaises(TLSConfigError, TLSSettings, verify_server="no")
        self.assertRaises(TLSConfigError, TLSSettings, verify_client=1)
        self.assertRaises(TLSConfigError, TLSSettings, cert_file=42)
        self.assertRaises(TLSConfigError, TLSSettings, ciphers="")

    def test_cipher_string_matching_nothing(self):
        settings = TLSSettings(
            cert_file=self.pki.server.cert,
            key_file=self.pki.server.key,
            ciphers="NO-SUCH-CIPHER",
        )
        self.assert_config_error(settings, "NO-SUCH-CIPHER")

    def test_obsolete_versions_disabled_on_context(self):
        context = ServerTLSContext(
            TLSSettings(cert_file=self.pki.server.cert, key_file=self.pki.server.key)
        )
        options = context._state.options.getContext().set_options(0)
        for flag in (SSL.OP_NO_SSLv3, SSL.OP_NO_TLSv1, SSL.OP_NO_TLSv1_1):
            self.assertTrue(options & flag, flag)
        self.assertFalse(options & SSL.OP_NO_TLSv1_2)


class ClientCreatorTests(SynchronousTestCase):
    def setUp(self):
        self.pki = get_test_pki()
        tls.clear_client_creator_cache()
        self.addCleanup(tls.clear_client_creator_cache)
        self.settings = TLSSettings(ca_file=self.pki.ca_bundle)

    def test_creators_cached_per_host_and_certificate(self):
        a = client_creator(self.settings, "localhost")
        self.assertTrue(IOpenSSLClientConnectionCreator.providedBy(a))
        self.assertIs(client_creator(self.settings, "localhost"), a)
        self.assertIs(client_creator(self.settings, "LocalHost."), a)
        self.assertIsNot(client_creator(self.settings, "other.example"), a)
        files = (self.pki.client.cert, self.pki.client.key)
        with_cert = client_creator(self.settings, "localhost", files)
        self.assertIsNot(with_cert, a)
        self.assertIs(client_creator(self.settings, "localhost", files), with_cert)
        self.assertIs(client_creator(self.settings, "[::1]"), client_creator(self.settings, "::1"))

    def test_changed_file_rebuilds_creator(self):
        directory = self.mktemp()
        os.makedirs(directory)
        cert = os.path.join(directory, "c.crt")
        key = os.path.join(directory, "c.key")
        shutil.copy(self.pki.client.cert, cert)
        shutil.copy(self.pki.client.key, key)
        first = client_creator(self.settings, "localhost", (cert, key))
        self.assertEqual(tls_identity(self.settings, (cert, key)), self.pki.client.fingerprint)
        other = make_test_pki(directory)
        shutil.copy(other.client.cert, cert)
        shutil.copy(other.client.key, key)
        self.assertIsNot(client_creator(self.settings, "localhost", (cert, key)), first)
        self.assertEqual(tls_identity(self.settings, (cert, key)), other.client.fingerprint)

    def test_bad_host_names(self):
        self.assertRaises(TypeError, client_creator, self.settings, b"localhost")
        self.assertRaises(ValueError, client_creator, self.settings, "")
        self.assertRaises(ValueError, client_creator, self.settings, "a..b")

    def test_bad_client_cert_files(self):
        error = self.assertRaises(
            TLSConfigError, client_creator, self.settings, "localhost", (1, 2, 3)
        )
        self.assertIn("client_cert_files", str(error))
        error = self.assertRaises(
            TLSConfigError,
            client_creator,
            self.settings,
            "localhost",
            (self.pki.client.cert, self.pki.server.key),
        )
        self.assertIn("does not match", str(error))

    def test_tls_identity(self):
        self.assertIsNone(tls_identity(self.settings))
        alice = tls_identity(self.settings, (self.pki.client.cert, self.pki.client.key))
        self.assertEqual(alice, self.pki.client.fingerprint)
        own = TLSSettings(cert_file=self.pki.client.cert, key_file=self.pki.client.key)
        self.assertEqual(tls_identity(own), alice)
        self.assertNotEqual(
            tls_identity(self.settings, (self.pki.unknown_client.cert, self.pki.unknown_client.key)),
            alice,
        )


class InspectionTests(SynchronousTestCase):
    def test_plain_transport_has_no_certificate(self):
        self.assertIsNone(peer_certificate_info(StringTransport()))

    def test_is_tls_failure(self):
        self.assertTrue(is_tls_failure(Failure(SSL.Error([("SSL routines", "", "x")]))))
        self.assertTrue(is_tls_failure(SSL.Error()))
        self.assertTrue(is_tls_failure(Failure(VerificationError(errors=[]))))
        self.assertFalse(is_tls_failure(Failure(ConnectionLost())))
        self.assertFalse(is_tls_failure(ValueError("x")))
