"""ConnectionManager over real loopback sockets (port 0): listeners, TLS,
reuse, and proto_msrp's connection parameters against misbehaving peers."""

import errno
import os
import socket

from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from msrp_twisted import tls
from msrp_twisted.connections import (
    ConnectionManager,
    ListenerSpecError,
    SendError,
    parse_listener,
)
from msrp_twisted.core.uri import parse_uri
from msrp_twisted.protocol import ConnectionClosed, TransportSettings
from msrp_twisted.tls import TLSSettings, peer_certificate_info

from .certs import CertificateAuthority, get_test_pki
from .helpers import (
    Network,
    accepted_for,
    listen_and_connect,
    reactor_turn,
    request,
    request_bytes,
)


def free_port(family=socket.AF_INET, host="127.0.0.1"):
    """A port nothing listens on (bound, then released)."""
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def uri(scheme, port, host="127.0.0.1", session="s1"):
    if ":" in host:
        host = "[%s]" % host
    return parse_uri("%s://%s:%d/%s;tcp" % (scheme, host, port, session))


class ParseListenerTests(SynchronousTestCase):
    def test_valid(self):
        cases = {
            "msrp:127.0.0.1": ("msrp", "127.0.0.1", 2855),
            "MSRPS:10.1.2.3:5000": ("msrps", "10.1.2.3", 5000),
            "msrp:[::1]": ("msrp", "::1", 2855),
            "msrps:[0:0::1]:0": ("msrps", "::1", 0),
            " msrp:0.0.0.0:2856 ": ("msrp", "0.0.0.0", 2856),
        }
        for text, expected in cases.items():
            spec = parse_listener(text)
            self.assertEqual((spec.scheme, spec.host, spec.port), expected, text)
        spec = parse_listener("msrps:127.0.0.1:1;cert=/a.crt;key=/a.key;verify_client=1")
        self.assertEqual(spec.params, {"cert": "/a.crt", "key": "/a.key", "verify_client": "1"})
        self.assertEqual(str(parse_listener("msrp:[::1]:7")), "msrp:[::1]:7")

    def test_rejected_with_specific_messages(self):
        cases = {
            "tcp:127.0.0.1": "must start with msrp: or msrps:",
            "127.0.0.1:2855": "must start with msrp: or msrps:",
            "msrp://127.0.0.1:2855": "not a URI",
            "msrp:": "no IP address",
            "msrp::2855": "no IP address",
            "msrp:::1": "put the IPv6 address in brackets",
            "msrp:[::1": "'[' without ']'",
            "msrp:[::1]x": "after the IPv6 address",
            "msrp:[127.0.0.1]": "is not an IPv6 address",
            "msrp:[fe80::zz]": "is not an IPv6 address",
            "msrp:relay.example.com": "'relay.example.com' is not an IP address",
            "msrp:127.0.0.1:http": "port 'http' is not a number",
            "msrp:127.0.0.1:": "port '' is not a number",
            "msrp:127.0.0.1:65536": "port 65536 out of range",
            "msrp:127.0.0.1;cert=/x": "TLS parameters on a plain msrp listener",
            "msrps:127.0.0.1;pass=x": "unknown parameter 'pass'",
        }
        for text, expected in cases.items():
            e = self.assertRaises(ListenerSpecError, parse_listener, text)
            self.assertIn(expected, str(e), text)
            self.assertIn(repr(text), str(e), text)
        self.assertIn("not 2855", str(self.assertRaises(ListenerSpecError, parse_listener, 2855)))


class ListenerTests(TestCase):
    timeout = 10

    def setUp(self):
        self.net = Network(self)

    @defer.inlineCallbacks
    def exchange(self, spec):
        server, client = self.net.manager(), self.net.manager()
        target, conn, server_conn = yield listen_and_connect(client, server, spec)
        got = server.handler.next_message()
        conn.send_message(request("tidlist1", b"hello"))
        arrived_on, message = yield got
        self.assertIs(arrived_on, server_conn)
        self.assertEqual(message.body, b"hello")
        return target, conn, server_conn, server, client

    @defer.inlineCallbacks
    def test_ipv4(self):
        target, conn, server_conn, server, client = yield self.exchange("msrp:127.0.0.1:0")
        port = target.port
        # Events carry both ends and the connection id.
        (c, _, success, _), = server.events.of("ACCEPTED")
        self.assertIs(c, server_conn)
        self.assertTrue(success)
        self.assertEqual((c.local_host, c.local_port), ("127.0.0.1", port))
        self.assertEqual((c.remote_host, c.remote_port), ("127.0.0.1", conn.local_port))
        (c, _, _, _), = client.events.of("CONNECTED")
        self.assertIs(c, conn)
        self.assertEqual((c.remote_host, c.remote_port), ("127.0.0.1", port))
        self.assertNotEqual(conn.conn_id, server_conn.conn_id)
        self.assertEqual(server.listening[0].getHost().port, port)

    @defer.inlineCallbacks
    def test_ipv6(self):
        target, conn, server_conn, _, _ = yield self.exchange("msrp:[::1]:0")
        self.assertEqual(target.host, "::1")
        self.assertEqual(server_conn.remote_host, "::1")
        self.assertEqual(conn.peer, "[::1]:%d" % target.port)

    @defer.inlineCallbacks
    def test_several_listeners(self):
        server = self.net.manager()
        ports = yield defer.gatherResults([
            server.listen("msrp:127.0.0.1:0"), server.listen("msrp:[::1]:0")])
        self.assertEqual(len(server.listening), 2)
        self.assertNotEqual(ports[0].getHost().port, 0)
        yield server.stop_listening()
        self.assertEqual(server.listening, [])

    @defer.inlineCallbacks
    def test_port_in_use(self):
        busy = self.net.raw_socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        server = self.net.manager()
        e = yield self.assertFailure(server.listen("msrp:127.0.0.1:%d" % port), ListenerSpecError)
        self.assertEqual(str(e), "cannot listen on msrp:127.0.0.1:%d: %s"
                         % (port, os.strerror(errno.EADDRINUSE)))
        self.assertEqual(server.listening, [])

    @defer.inlineCallbacks
    def test_bad_string_is_a_failed_deferred(self):
        e = yield self.assertFailure(self.net.manager().listen("msrp:localhost"), ListenerSpecError)
        self.assertIn("is not an IP address", str(e))

    @defer.inlineCallbacks
    def test_msrps_listener_needs_a_certificate(self):
        e = yield self.assertFailure(self.net.manager().listen("msrps:127.0.0.1:0"), ListenerSpecError)
        self.assertIn("needs a TLS certificate", str(e))

    @defer.inlineCallbacks
    def test_msrps_listener_with_bad_files(self):
        manager = self.net.manager()
        e = yield self.assertFailure(
            manager.listen("msrps:127.0.0.1:0;cert=/nonexistent/x.crt"), ListenerSpecError)
        self.assertIn("'/nonexistent/x.crt' does not exist", str(e))
        pki = get_test_pki()
        e = yield self.assertFailure(
            manager.listen("msrps:127.0.0.1:0;cert=%s;key=%s;verify_client=1"
                           % (pki.server.cert, pki.server.key)), ListenerSpecError)
        self.assertIn("verify_client needs ca_file", str(e))


class TLSTests(TestCase):
    timeout = 10

    def setUp(self):
        self.net = Network(self)
        self.pki = get_test_pki()
        tls.clear_client_creator_cache()
        self.addCleanup(tls.clear_client_creator_cache)

    def server_tls(self, files=None, **kw):
        files = files or self.pki.server
        return TLSSettings(cert_file=files.cert, key_file=files.key, **kw)

    def client_tls(self, client=None, **kw):
        if client is not None:
            kw.update(cert_file=client.cert, key_file=client.key)
        return TLSSettings(ca_file=self.pki.ca_bundle, **kw)

    @defer.inlineCallbacks
    def refused(self, server_tls, client_tls, host="127.0.0.1"):
        server, client = self.net.manager(tls=server_tls), self.net.manager()
        port = yield server.listen("msrps:127.0.0.1:0")
        e = yield self.assertFailure(
            client.connection_for(uri("msrps", port.getHost().port, host), client_tls), SendError)
        self.assertIn("connection to %s:%d failed: TLS handshake failed"
                      % (host, port.getHost().port), str(e))
        (_, _, success, message), = client.events.of("TLS_HANDSHAKE")
        self.assertFalse(success)
        self.assertEqual(client.stats["tls_failures"], 1)
        self.assertEqual(client.handler.made, [])
        self.assertEqual(client.connections, {})
        return str(e)

    @defer.inlineCallbacks
    def test_good_certificate(self):
        server = self.net.manager(tls=self.server_tls())
        client = self.net.manager(tls=self.client_tls())
        for host in ("127.0.0.1", "localhost"):
            port = yield server.listen("msrps:127.0.0.1:0")
            conn = yield client.connection_for(uri("msrps", port.getHost().port, host))
            self.assertTrue(conn.secure)
            server_conn = yield accepted_for(server, conn)
            got = server.handler.next_message()
            conn.send_message(request("tidtls01", b"secret"))
            _, message = yield got
            self.assertEqual(message.body, b"secret")
            info = peer_certificate_info(conn.transport)
            self.assertEqual(info["fingerprint_sha256"], self.pki.server.fingerprint)
            self.assertEqual(client.events.of("TLS_HANDSHAKE", conn)[0][2], True)
            self.assertEqual(server.events.names(server_conn), ["ACCEPTED", "TLS_HANDSHAKE"])

    @defer.inlineCallbacks
    def test_wrong_host_name_refused(self):
        ca = CertificateAuthority(self.mktemp_dir(), name="other CA")
        other = ca.issue_server("other", names=("other.example",))
        text = yield self.refused(self.server_tls(other), TLSSettings(ca_file=ca.bundle))
        self.assertTrue(text.endswith("TLS handshake failed: server certificate does not match 127.0.0.1"),
                        text)

    @defer.inlineCallbacks
    def test_unknown_ca_refused(self):
        text = yield self.refused(self.server_tls(self.pki.unknown_server), self.client_tls())
        self.assertIn("certificate verify failed", text)

    @defer.inlineCallbacks
    def test_expired_certificate_refused(self):
        text = yield self.refused(self.server_tls(self.pki.expired), self.client_tls())
        self.assertTrue(text.endswith("TLS handshake failed: certificate verify failed"), text)

    @defer.inlineCallbacks
    def test_verification_on_without_any_tls_settings(self):
        # No CA configured: the platform's trust store, which does not
        # know the test CA. Refused, not a TypeError.
        text = yield self.refused(self.server_tls(), None)
        self.assertIn("certificate verify failed", text)

    @defer.inlineCallbacks
    def test_client_certificate_required_and_present(self):
        pki = self.pki
        server, client = self.net.manager(), self.net.manager()
        port = yield server.listen("msrps:127.0.0.1:0;cert=%s;key=%s;ca=%s;verify_client=yes"
                                   % (pki.server.cert, pki.server.key, pki.ca_bundle))
        conn = yield client.connection_for(uri("msrps", port.getHost().port),
                                           self.client_tls(pki.client))
        server_conn = yield accepted_for(server, conn)
        got = server.handler.next_message()
        conn.send_message(request("tidcert1"))
        yield got
        info = peer_certificate_info(server_conn.transport)
        self.assertEqual(info["subject_cn"], "alice")

    @defer.inlineCallbacks
    def test_client_certificate_required_and_absent(self):
        pki = self.pki
        server_tls = self.server_tls(ca_file=pki.ca_bundle, verify_client=True)
        server, client = self.net.manager(tls=server_tls), self.net.manager()
        port = yield server.listen("msrps:127.0.0.1:0")
        server_failed = server.events.wait("TLS_HANDSHAKE")
        d = client.connection_for(uri("msrps", port.getHost().port), self.client_tls())
        _, _, success, message = yield server_failed
        self.assertFalse(success)
        self.assertIn("TLS handshake failed", message)
        self.assertEqual(server.handler.made, [])
        # Under TLS 1.3 the client finishes its side of the handshake before
        # the server's alert arrives; either way the connection is gone.
        try:
            conn = yield d
        except SendError:
            pass
        else:
            yield client.events.wait("CLOSED", conn)
        self.assertEqual(client.connections, {})

    def mktemp_dir(self):
        path = self.mktemp()
        os.makedirs(path)
        return path


class ReuseTests(TestCase):
    timeout = 10

    def setUp(self):
        self.net = Network(self)
        self.pki = get_test_pki()
        tls.clear_client_creator_cache()
        self.addCleanup(tls.clear_client_creator_cache)

    def server_tls(self):
        return TLSSettings(cert_file=self.pki.server.cert, key_file=self.pki.server.key)

    @defer.inlineCallbacks
    def check_reuse(self, scheme, **kw):
        server, client = self.net.manager(**kw), self.net.manager()
        client_tls = TLSSettings(ca_file=self.pki.ca_bundle) if scheme == "msrps" else None
        port = yield server.listen("%s:127.0.0.1:0" % scheme)
        first = yield client.connection_for(uri(scheme, port.getHost().port, session="a"), client_tls)
        # Another session at the same authority: same connection.
        second = yield client.connection_for(uri(scheme, port.getHost().port, session="b"), client_tls)
        self.assertIs(first, second)
        yield accepted_for(server, first)
        self.assertEqual(server.stats["connections_accepted"], 1)
        self.assertEqual(client.stats["connections_opened"], 1)
        # Once it is gone, the next send opens a new one.
        first.close("test")
        yield client.events.wait("CLOSED", first)
        third = yield client.connection_for(uri(scheme, port.getHost().port), client_tls)
        self.assertIsNot(third, first)
        self.assertEqual(client.stats["connections_opened"], 2)

    def test_msrp(self):
        return self.check_reuse("msrp")

    def test_msrps(self):
        return self.check_reuse("msrps", tls=self.server_tls())

    @defer.inlineCallbacks
    def test_inbound_connection_reused_via_from_path(self):
        server, client = self.net.manager(register=True), self.net.manager()
        _, conn, server_conn = yield listen_and_connect(client, server)
        # The client's own URI: nothing listens there, so only reuse works.
        client_uri = uri("msrp", free_port(), session="client")
        got = server.handler.next_message()
        conn.send_message(request("tidfrom1", from_=str(client_uri)))
        yield got
        back = yield server.connection_for(client_uri)
        self.assertIs(back, server_conn)
        self.assertEqual(back.direction, "in")
        self.assertEqual(server.events.of("CONNECTED") + server.events.of("CONNECT"), [])
        # The reply really travels back on it.
        got = client.handler.next_message()
        back.send_message(request("tidback1", to=str(client_uri)))
        arrived_on, _ = yield got
        self.assertIs(arrived_on, conn)
        # And it is forgotten when the connection goes.
        server_conn.close("test")
        yield server.events.wait("CLOSED", server_conn)
        self.assertIsNone(server.find_connection(client_uri))

    @defer.inlineCallbacks
    def test_plain_inbound_never_carries_msrps(self):
        server, client = self.net.manager(register=True), self.net.manager()
        _, conn, server_conn = yield listen_and_connect(client, server)
        claimed = uri("msrps", free_port(), session="client")
        got = server.handler.next_message()
        conn.send_message(request("tidfrom2", from_=str(claimed)))
        yield got
        self.assertIsNone(server.find_connection(claimed))
        self.assertEqual(server_conn.peer_uris, set())

    @defer.inlineCallbacks
    def test_cert_check_0_ignores_the_client_certificate(self):
        pki = self.pki
        server = self.net.manager(tls=self.server_tls())
        client = self.net.manager(TransportSettings(cert_check_on_conn_reusage=0,
                                                    tls_handshake_timeout=5000))
        port = (yield server.listen("msrps:127.0.0.1:0")).getHost().port
        alice = TLSSettings(ca_file=pki.ca_bundle, cert_file=pki.client.cert, key_file=pki.client.key)
        anonymous = TLSSettings(ca_file=pki.ca_bundle)
        first = yield client.connection_for(uri("msrps", port), alice)
        second = yield client.connection_for(uri("msrps", port), anonymous)
        self.assertIs(first, second)

    @defer.inlineCallbacks
    def test_cert_check_1_matches_the_client_certificate(self):
        pki = self.pki
        server = self.net.manager(tls=self.server_tls())
        client = self.net.manager(TransportSettings(cert_check_on_conn_reusage=1,
                                                    tls_handshake_timeout=5000))
        port = (yield server.listen("msrps:127.0.0.1:0")).getHost().port
        alice = TLSSettings(ca_file=pki.ca_bundle, cert_file=pki.client.cert, key_file=pki.client.key)
        alice_again = TLSSettings(ca_file=pki.ca_bundle, cert_file=pki.client.cert,
                                  key_file=pki.client.key, verify_server=True)
        mallory = TLSSettings(ca_file=pki.ca_bundle, cert_file=pki.unknown_client.cert,
                              key_file=pki.unknown_client.key)
        first = yield client.connection_for(uri("msrps", port), alice)
        self.assertIs((yield client.connection_for(uri("msrps", port), alice_again)), first)
        other = yield client.connection_for(uri("msrps", port), mallory)
        self.assertIsNot(other, first)
        anonymous = yield client.connection_for(uri("msrps", port), TLSSettings(ca_file=pki.ca_bundle))
        self.assertNotIn(anonymous, (first, other))
        self.assertEqual({first.tls_identity, other.tls_identity, anonymous.tls_identity},
                         {pki.client.fingerprint, pki.unknown_client.fingerprint, None})
        self.assertEqual(client.stats["connections_opened"], 3)

    @defer.inlineCallbacks
    def test_cert_check_1_accepted_connections_always_match(self):
        pki = self.pki
        server = self.net.manager(TransportSettings(cert_check_on_conn_reusage=1,
                                                    tls_handshake_timeout=5000),
                                  tls=self.server_tls(), register=True)
        client = self.net.manager()
        _, conn, server_conn = yield listen_and_connect(
            client, server, "msrps:127.0.0.1:0", client_tls=TLSSettings(ca_file=pki.ca_bundle))
        client_uri = uri("msrps", free_port(), session="client")
        got = server.handler.next_message()
        conn.send_message(request("tidfrom3", from_=str(client_uri)))
        yield got
        alice = TLSSettings(ca_file=pki.ca_bundle, cert_file=pki.client.cert, key_file=pki.client.key)
        self.assertIs((yield server.connection_for(client_uri, alice)), server_conn)

    @defer.inlineCallbacks
    def test_concurrent_sends_share_one_connect(self):
        for scheme in ("msrp", "msrps"):
            server = self.net.manager(tls=self.server_tls())
            client = self.net.manager(tls=TLSSettings(ca_file=self.pki.ca_bundle))
            port = (yield server.listen("%s:127.0.0.1:0" % scheme)).getHost().port
            waiting = [client.connection_for(uri(scheme, port, session="s%d" % i)) for i in range(5)]
            for d in waiting:
                self.assertNoResult(d)
            conns = yield defer.gatherResults(waiting)
            self.assertEqual(len(set(map(id, conns))), 1, scheme)
            yield accepted_for(server, conns[0])
            self.assertEqual(client.stats["connections_opened"], 1, scheme)
            self.assertEqual(server.stats["connections_accepted"], 1, scheme)

    @defer.inlineCallbacks
    def test_connect_refused_fails_promptly(self):
        client = self.net.manager()
        port = free_port()
        start = reactor.seconds()
        waiting = [client.connection_for(uri("msrp", port)) for _ in range(3)]
        for d in waiting:
            e = yield self.assertFailure(d, SendError)
            self.assertIn("cannot connect to 127.0.0.1:%d" % port, str(e))
            self.assertIn("refused", str(e))
        self.assertLess(reactor.seconds() - start, 1.0)
        (info, _, success, message), = client.events.of("CONNECT")  # one attempt
        self.assertFalse(success)
        self.assertEqual((info.remote_host, info.remote_port), ("127.0.0.1", port))
        self.assertEqual(client.stats["connect_failures"], 1)
        # Nothing is left pending: the next send tries again.
        yield self.assertFailure(client.connection_for(uri("msrp", port)), SendError)
        self.assertEqual(client.stats["connect_failures"], 2)

    @defer.inlineCallbacks
    def test_bad_client_certificate_file_fails_the_send(self):
        client = self.net.manager()
        bad = TLSSettings(cert_file="/nonexistent/client.crt")
        e = yield self.assertFailure(client.connection_for(uri("msrps", free_port()), bad), SendError)
        self.assertIn("/nonexistent/client.crt", str(e))


class MisbehavingPeerTests(TestCase):
    timeout = 10

    def setUp(self):
        self.net = Network(self)
        self.pki = get_test_pki()
        tls.clear_client_creator_cache()
        self.addCleanup(tls.clear_client_creator_cache)

    def raw_listener(self):
        raw = self.net.raw_socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited
        raw.bind(("127.0.0.1", 0))
        raw.listen(1)
        return raw, raw.getsockname()[1]

    @defer.inlineCallbacks
    def test_peer_that_never_reads_hits_send_timeout(self):
        raw, port = self.raw_listener()
        client = self.net.manager(TransportSettings(send_timeout=100))
        conn = yield client.connection_for(uri("msrp", port))
        peer, _ = raw.accept()  # accepted, and never read from
        self.net.sockets.append(peer)
        conn.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        timed_out = client.events.wait("SEND_TIMEOUT", conn)
        closed = client.events.wait("CLOSED", conn)
        start = reactor.seconds()
        body = b"m" * (1024 * 1024)
        conn.send_message(request("tidstuck", body))
        self.assertFalse(conn.writable)
        _, _, success, message = yield timed_out
        yield closed
        self.assertFalse(success)
        self.assertIn("send_timeout", message)
        self.assertLess(reactor.seconds() - start, 1.5)
        self.assertIn("send_timeout", conn.close_reason)
        self.assertRaises(ConnectionClosed, conn.send_bytes, b"more")

    @defer.inlineCallbacks
    def test_slow_drip_is_dropped(self):
        server = self.net.manager()
        port = (yield server.listen("msrp:127.0.0.1:0")).getHost().port
        raw = self.net.raw_socket()
        raw.connect(("127.0.0.1", port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.setblocking(False)
        data = request_bytes("tiddrip9", b"d" * 22)
        self.assertEqual(len(data), 200)
        dropped = server.events.wait("MAX_MSG_CHUNKS")
        sent = [0]

        def drip():
            if dropped.called or sent[0] == len(data):
                return
            try:
                raw.send(data[sent[0]:sent[0] + 1])
            except OSError:  # reset by the drop
                return
            sent[0] += 1
            reactor.callLater(0, drip)

        drip()
        conn, _, success, message = yield dropped
        self.assertFalse(success)
        self.assertIn("max_msg_chunks=4", message)
        self.assertLess(sent[0], len(data))
        yield server.events.wait("CLOSED", conn)
        self.assertEqual(server.handler.messages, [])

    @defer.inlineCallbacks
    def check_fast_sender(self, spec, server_tls=None, client_tls=None):
        server, client = self.net.manager(tls=server_tls, stream=True), self.net.manager()
        _, conn, server_conn = yield listen_and_connect(client, server, spec, client_tls=client_tls)
        reads = []
        received = server_conn.dataReceived

        def counting(data):
            reads.append(len(data))
            received(data)

        server_conn.dataReceived = counting
        body = os.urandom(1024 * 1024).replace(b"-------", b"+++++++")
        conn.send_message(request("tidfast9", body))
        yield self.wait_for_head(server)
        sink = server.handler.sinks[0]
        yield sink.done
        self.assertEqual(sink.body, body)
        self.assertEqual(sink.flag, "$")
        self.assertGreater(len(reads), 4)  # many more reads than max_msg_chunks
        self.assertEqual(server.events.of("MAX_MSG_CHUNKS"), [])
        self.assertFalse(server_conn.closed)

    @defer.inlineCallbacks
    def wait_for_head(self, server):
        while not server.handler.sinks:
            yield reactor_turn()

    def test_fast_1mib_sender_passes(self):
        return self.check_fast_sender("msrp:127.0.0.1:0")

    def test_fast_1mib_sender_passes_over_tls(self):
        pki = self.pki
        return self.check_fast_sender(
            "msrps:127.0.0.1:0", TLSSettings(cert_file=pki.server.cert, key_file=pki.server.key),
            TLSSettings(ca_file=pki.ca_bundle))

    @defer.inlineCallbacks
    def test_inbound_peer_that_never_starts_tls(self):
        pki = self.pki
        server = self.net.manager(TransportSettings(tls_handshake_timeout=100),
                                  tls=TLSSettings(cert_file=pki.server.cert, key_file=pki.server.key))
        port = (yield server.listen("msrps:127.0.0.1:0")).getHost().port
        failed = server.events.wait("TLS_HANDSHAKE")
        raw = self.net.raw_socket()
        raw.connect(("127.0.0.1", port))
        start = reactor.seconds()
        conn, _, success, message = yield failed
        yield server.events.wait("CLOSED", conn)
        self.assertFalse(success)
        self.assertEqual(message, "TLS handshake not completed within 100 ms")
        self.assertLess(reactor.seconds() - start, 1.0)
        self.assertEqual(server.handler.made, [])
        self.assertEqual(server.stats["tls_failures"], 1)
        raw.settimeout(5)  # the bytes are there already; this only bounds a bug
        try:
            self.assertEqual(raw.recv(1), b"")
        except ConnectionResetError:
            pass

    @defer.inlineCallbacks
    def test_outbound_to_a_server_that_never_answers_tls(self):
        raw, port = self.raw_listener()
        client = self.net.manager(TransportSettings(tls_handshake_timeout=100))
        start = reactor.seconds()
        e = yield self.assertFailure(
            client.connection_for(uri("msrps", port), TLSSettings(ca_file=self.pki.ca_bundle)),
            SendError)
        self.assertEqual(str(e), "connection to 127.0.0.1:%d failed: TLS handshake not "
                         "completed within 100 ms" % port)
        self.assertLess(reactor.seconds() - start, 1.0)
        self.assertEqual(client.events.names()[-2:], ["TLS_HANDSHAKE", "CLOSED"])


class BackpressureTests(TestCase):
    timeout = 10

    def setUp(self):
        self.net = Network(self)
        self.pki = get_test_pki()
        tls.clear_client_creator_cache()
        self.addCleanup(tls.clear_client_creator_cache)

    @defer.inlineCallbacks
    def test_paused_reader_pauses_the_sender(self):
        server = self.net.manager()
        client = self.net.manager(TransportSettings(send_timeout=0))
        _, conn, server_conn = yield listen_and_connect(client, server)
        conn.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        server_conn.pause_reading()
        observer = WritabilityRecorder()
        conn.add_writability_observer(observer)
        body = b"b" * (1024 * 1024)  # far more than the socket buffers hold
        got = server.handler.next_message()
        conn.send_message(request("tidpress", body))
        self.assertEqual(observer.calls, ["pause"])
        for _ in range(50):
            yield reactor_turn()
        # Nothing buffers without bound: the sender is still held back.
        self.assertFalse(conn.writable)
        self.assertFalse(got.called)
        self.assertLess(server_conn.bytes_in, len(body))
        server_conn.resume_reading()
        _, message = yield got
        self.assertEqual(len(message.body), len(body))
        yield observer.resumed
        self.assertEqual(observer.calls, ["pause", "resume"])
        self.assertTrue(conn.writable)

    @defer.inlineCallbacks
    def test_idle_close_completes_over_tls(self):
        # A graceful close with our producer registered would never finish.
        pki = self.pki
        server = self.net.manager(TransportSettings(idle_timeout=0.2, tls_handshake_timeout=5000),
                                  tls=TLSSettings(cert_file=pki.server.cert, key_file=pki.server.key))
        client = self.net.manager()
        _, conn, server_conn = yield listen_and_connect(
            client, server, "msrps:127.0.0.1:0", client_tls=TLSSettings(ca_file=pki.ca_bundle))
        start = reactor.seconds()
        yield server.events.wait("CLOSED", server_conn)
        yield client.events.wait("CLOSED", conn)
        self.assertEqual(len(server.events.of("IDLE", server_conn)), 1)
        self.assertIn("idle for", server_conn.close_reason)
        self.assertLess(reactor.seconds() - start, 1.5)

    @defer.inlineCallbacks
    def test_frames_written_during_a_read_survive_a_full_socket(self):
        """Frames held during a read go to the socket directly; what the
        kernel does not take queues in Twisted behind it, in order."""
        server = self.net.manager()
        client = self.net.manager(TransportSettings(send_timeout=0))
        _, conn, server_conn = yield listen_and_connect(client, server)
        server_conn.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        conn.pause_reading()
        bodies = [bytes([65 + i]) * 65536 for i in range(24)]

        class Burst:
            def connection_made(self, c):
                pass

            def head_received(self, c, message):
                return None

            def message_received(self, c, message):
                for i, body in enumerate(bodies):
                    c.send_message(request("tidburst%02d" % i, body))

            def connection_lost(self, c, reason):
                pass

        server_conn.handler = Burst()
        conn.send_message(request("tidtrigger", b"go"))
        for _ in range(200):
            if server_conn.messages_out:
                break
            yield reactor_turn()
        self.assertEqual(server_conn.messages_out, len(bodies))
        # The kernel took part of the burst; the rest waits in Twisted.
        self.assertGreater(server_conn.transport.offset + len(server_conn.transport.dataBuffer)
                           + server_conn.transport._tempDataLen, 0)
        conn.resume_reading()
        got = client.handler.messages
        while len(got) < len(bodies) and not conn.closed:
            yield client.handler.next_message()
        self.assertEqual((server_conn.close_reason, conn.close_reason), (None, None))
        self.assertEqual([m.tid for _, m in got], ["tidburst%02d" % i for i in range(len(bodies))])
        self.assertEqual([m.body for _, m in got], bodies)

    @defer.inlineCallbacks
    def test_producer_outside_a_read_is_paused_after_the_write_buffer(self):
        """A producer writing outside any read goes through Twisted's buffer,
        so it is paused once write_buffer_size is queued and the process
        gets back to its other connections; it is not allowed to push
        megabytes into loopback socket buffers in one loop."""
        server = self.net.manager()
        client = self.net.manager(TransportSettings(send_timeout=0))
        _, conn, server_conn = yield listen_and_connect(client, server)
        server_conn.pause_reading()
        writer = yield conn.open_stream(request("tidprod1", b""))
        written = 0
        piece = b"p" * 65536
        while conn.writable and written < 64 * 1024 * 1024:
            writer.write(piece)
            written += len(piece)
        self.assertFalse(conn.writable)
        self.assertLessEqual(written, conn.settings.write_buffer_size + 2 * len(piece))
        writer.abort()


class WritabilityRecorder:
    writable = True

    def __init__(self):
        self.calls = []
        self.resumed = defer.Deferred()

    def pause_producing(self):
        self.calls.append("pause")

    def resume_producing(self):
        self.calls.append("resume")
        if not self.resumed.called:
            self.resumed.callback(None)


class ManagerUnitTests(SynchronousTestCase):
    def test_close_all_is_graceful(self):
        from .helpers import unit_connection

        conn, transport, _, _, _ = unit_connection()
        conn.manager.close_all()
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        self.assertIsNone(transport.producer)

    def test_default_manager_settings(self):
        manager = ConnectionManager()
        s = manager.settings
        self.assertEqual((s.send_timeout, s.max_msg_chunks, s.tls_handshake_timeout,
                          s.cert_check_on_conn_reusage, s.msg_read_timeout, s.idle_timeout),
                         (100, 4, 100, 0, 4.0, 120.0))
