"""Faults around a running relay (issue 9): peers that vanish mid-chunk or
stop reading, a HEP collector that is down or stalled, an MI client that
goes away mid-command, a broken users file, TLS certificate rotation under
live sessions, and a relay process restarted under its clients.

After each fault the relay must have failed what was pending promptly (a
response or a failure REPORT to the sender, as it asked), leaked nothing
(sessions, pending transactions, connections: MSRPService.statistics(), or
the MI for the child process) and still relay legitimate traffic. As in
test_hostile, no test sleeps: timeouts are small and the tests wait for
what they do.
"""

import os
import shutil
import signal
import tempfile

from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred, DeferredQueue, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols import amp
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from msrp_twisted import mi
from msrp_twisted.core.ids import new_message_id
from msrp_twisted.core.uri import parse_uri
from msrp_twisted.protocol import IBodySink, TransportSettings
from msrp_twisted.tls import TLSSettings, clear_client_creator_cache, peer_certificate_info
from msrp_twisted.transactions import TransactionConnectionLost
from tests.certs import get_test_pki
from tests.relay_helpers import PatternProducer, Peer, TwistdProcess, write_users
from tests.test_hostile import (
    MIB,
    RELAY_OPTIONS,
    USERS,
    RelayFixture,
    assert_no_tracebacks,
)

READY = r"MSRP relay ready; URIs: (\S+)"


@implementer(IBodySink)
class _Announcing:
    """Passes a body on to a Peer's sink and says when the first bytes came."""

    def __init__(self, inner, queue, conn, request):
        self.inner = inner
        self.queue = queue
        self.conn = conn
        self.request = request
        self.started = False

    def body_data(self, data):
        self.inner.body_data(data)
        if not self.started:
            self.started = True
            self.queue.put((self.conn, self.request))

    def body_end(self, flag):
        self.inner.body_end(flag)

    def body_aborted(self, reason):
        self.inner.body_aborted(reason)


class StreamingPeer(Peer):
    """A Peer that hashes bodies as they stream in and announces, in
    ``body_started``, each request whose first body bytes have arrived."""

    def __init__(self, name, **kw):
        super().__init__(name, **kw)
        self.stream_bodies = True
        self.body_started = DeferredQueue()

    def head_received(self, conn, request):
        return _Announcing(super().head_received(conn, request), self.body_started, conn, request)


class _Producer(PatternProducer):
    """A PatternProducer whose end can be waited for."""

    def startProducing(self, consumer):
        self.finished = super().startProducing(consumer)
        return self.finished


class PatientPeer(Peer):
    """A Peer whose own writes may wait 10 s (send_timeout): it streams
    through a relay that holds it back while the far end is slow, and the
    proto_msrp default of 100 ms would have it give up first."""

    def __init__(self, name, **kw):
        super().__init__(name, settings=TransportSettings(send_timeout=10000), **kw)


def connection_of(peer):
    [conn] = [c for c in peer.connections.connections.values() if not c.closed]
    return conn


class FaultFixture(RelayFixture):
    relay_options = dict(RELAY_OPTIONS, max_chunk_size=32 * MIB, msg_read_timeout=2.0,
                         transaction_timeout=30.0, send_timeout=200)

    @inlineCallbacks
    def start(self, alice_class=Peer, bob_class=Peer, **options):
        self.make_fixture()
        yield self.start_relay(**options)
        self.alice = alice_class("alice")
        self.bob = bob_class("bob")
        self.peers += [self.alice, self.bob]
        self.ua = (yield self.alice.auth(self.relay_uri, "alice", USERS["alice"])).use_path[0]
        yield self.bob_auth()
        self.baseline = self.service.statistics()

    @inlineCallbacks
    def bob_auth(self, nc=1):
        self.ub = (yield self.bob.auth(self.relay_uri, "bob", USERS["bob"], nc=nc)).use_path[0]
        self.to_bob = [self.ua, self.ub, self.bob.uri]
        self.to_alice = [self.ub, self.ua, self.alice.uri]

    @inlineCallbacks
    def bob_gone(self):
        """bob's connection is closed at the relay and his session ended."""
        yield self.state.wait(lambda: len(self.service.relay.sessions) == self.baseline["relay_sessions"] - 1
                              and len(self.service.connections.connections) == self.baseline["connections_open"] - 1)
        stats = self.service.statistics()
        self.assertEqual(stats["transactions_pending"], 0)
        return stats

    @inlineCallbacks
    def bob_back(self):
        """bob re-authenticates on a new connection; the pair works again."""
        yield self.bob.close()
        yield self.bob_auth()
        yield self.recovered()


class VanishingPeerTests(FaultFixture, TestCase):
    timeout = 15

    @inlineCallbacks
    def test_destination_reset_mid_chunk(self):
        """bob's connection is reset (abortConnection: SO_LINGER 0, RST)
        while a 4 MiB chunk streams to him: alice's transaction fails at
        once (408, well before the 30 s transaction timeout), the rest of
        her body is discarded, bob's session ends."""
        yield self.start(bob_class=StreamingPeer)
        producer = _Producer(4 * MIB)
        started = reactor.seconds()
        sending = self.alice.send(self.to_bob, producer, content_type="application/octet-stream",
                                  byte_range="1-%d/%d" % (4 * MIB, 4 * MIB))
        conn, request = yield self.bob.body_started.get()
        conn.transport.abortConnection()
        response = yield sending
        self.assertEqual(response.code, 408)
        self.assertLess(reactor.seconds() - started, 5.0)
        yield self.log.wait_for(r"downstream 408 for SEND \S+ from 127\.0\.0\.1:%d: connection to "
                                r"127\.0\.0\.1:%d lost" % (connection_of(self.alice).local_port,
                                                           conn.local_port))
        yield producer.finished
        stats = yield self.bob_gone()
        self.assertEqual(stats["relay_downstream_errors"], 1)
        yield self.bob_back()

    @inlineCallbacks
    def test_destination_reset_after_the_relay_answered(self):
        """The relay has answered 200 and passed the chunk on; bob vanishes
        before answering: alice gets a failure REPORT (408) for the chunk's
        byte range at once."""
        yield self.start()
        self.bob.answer = None
        mid = new_message_id()
        started = reactor.seconds()
        response = yield self.alice.send(self.to_bob, b"into the void", message_id=mid)
        self.assertEqual(response.code, 200)
        got = yield self.bob.received.get()
        got.conn.transport.abortConnection()
        report = (yield self.alice.received.get()).request
        self.assertEqual((report.method, report.message_id), ("REPORT", mid))
        self.assertEqual((report.status.code, report.headers["Byte-Range"]), (408, "1-13/13"))
        self.assertLess(reactor.seconds() - started, 5.0)
        yield self.bob_gone()
        self.assertEqual(self.service.relay.stats["reports_generated"], 1)
        self.bob.answer = 200
        yield self.bob_back()

    @inlineCallbacks
    def test_no_failure_report_when_none_was_asked_for(self):
        """Failure-Report: no: the relay opens no transaction toward bob, so
        bob vanishing leaves nothing to fail and nothing is reported."""
        yield self.start()
        self.bob.answer = None
        sent = yield self.alice.send(self.to_bob, b"fire and forget", headers=[("Failure-Report", "no")])
        self.assertIsNone(sent)
        got = yield self.bob.received.get()
        self.assertEqual(self.service.statistics()["transactions_pending"], 0)
        got.conn.transport.abortConnection()
        yield self.bob_gone()
        self.bob.answer = 200
        yield self.bob_back()  # its exchanges come first on alice's queue: no REPORT came
        self.assertEqual(self.service.relay.stats["reports_generated"], 0)

    @inlineCallbacks
    def test_source_reset_mid_chunk(self):
        """alice's connection is reset while her chunk streams through: bob
        gets the chunk ended with '#' (abandoned) and answers it; alice's
        session ends and nothing stays pending."""
        yield self.start(bob_class=StreamingPeer)
        producer = _Producer(4 * MIB)
        sending = self.alice.send(self.to_bob, producer, content_type="application/octet-stream",
                                  byte_range="1-%d/%d" % (4 * MIB, 4 * MIB))
        sending.addErrback(lambda f: f.trap(TransactionConnectionLost))
        yield self.bob.body_started.get()
        connection_of(self.alice).transport.abortConnection()
        got = yield self.bob.received.get()
        self.assertEqual(got.request.flag, "#")
        self.assertLess(got.length, 4 * MIB)
        yield sending
        yield producer.finished
        yield self.state.wait(lambda: len(self.service.relay.sessions) == 1)
        # bob answered the '#' chunk before we saw it; his next request on
        # the same connection is answered after the relay took that answer.
        self.assertEqual((yield self.bob.send(self.nowhere, b"barrier")).code, 481)
        self.assertEqual(self.service.transactions.pending_count, 0)
        yield self.log.wait_for(r"relay session %s of alice ended: connection closed" % self.ua.session_id)
        yield self.alice.close()
        self.ua = (yield self.alice.auth(self.relay_uri, "alice", USERS["alice"])).use_path[0]
        self.to_bob = [self.ua, self.ub, self.bob.uri]
        self.to_alice = [self.ub, self.ua, self.alice.uri]
        yield self.recovered()

    @inlineCallbacks
    def test_silent_destination(self):
        """bob stops reading and never answers: the relay's transaction
        times out (transaction_timeout=0.3) and alice gets a failure REPORT
        408; bob's connection and session stay (he may just be slow)."""
        yield self.start(transaction_timeout=0.3)
        self.bob.answer = None
        mid = new_message_id()
        response = yield self.alice.send(self.to_bob, b"hello?", message_id=mid)
        self.assertEqual(response.code, 200)
        got = yield self.bob.received.get()
        got.conn.transport.pauseProducing()  # stops reading
        report = (yield self.alice.received.get()).request
        self.assertEqual((report.message_id, report.status.code), (mid, 408))
        yield self.log.wait_for(r"transaction \S+ \(SEND\) to 127\.0\.0\.1:%d timed out" % got.conn.local_port)
        stats = self.service.statistics()
        self.assertEqual((stats["transactions_pending"], stats["relay_sessions"]), (0, 2))
        self.assertEqual(stats["transactions_timed_out"], 1)
        got.conn.transport.resumeProducing()
        self.bob.answer = 200
        yield self.recovered()

    @inlineCallbacks
    def test_destination_stops_reading(self):
        """bob stops reading while a 24 MiB chunk is relayed to him: once the
        relay's buffer toward him is full and nothing drains for send_timeout
        (200 ms) the relay closes his connection, alice's transaction fails
        at once and her source is not stalled for good."""
        yield self.start(alice_class=PatientPeer, bob_class=StreamingPeer)
        producer = _Producer(24 * MIB)
        sending = self.alice.send(self.to_bob, producer, content_type="application/octet-stream",
                                  byte_range="1-%d/%d" % (24 * MIB, 24 * MIB))
        conn, request = yield self.bob.body_started.get()
        conn.transport.pauseProducing()
        line = yield self.log.wait_for(r"MSRP msrp connection 127\.0\.0\.1:%d closed: "
                                       r"(write blocked for more than 200 ms \(send_timeout\))" % conn.local_port)
        response = yield sending
        self.assertEqual(response.code, 408)
        yield producer.finished
        stats = yield self.bob_gone()
        self.assertEqual(stats["relay_downstream_errors"], 1)
        conn.transport.abortConnection()  # bob, not reading, would not notice
        yield self.bob_back()


class _StalledCollector(Protocol):
    """A HEP collector that accepts and never reads."""

    def connectionMade(self):
        self.transport.pauseProducing()
        self.factory.connected.callback(self)


class TracingFaultTests(FaultFixture, TestCase):
    timeout = 20

    @inlineCallbacks
    def flood_traces(self, messages, size=10):
        """alice sends messages to bob 50 at a time; every one is delivered."""
        for start in range(0, messages, 50):
            n = min(50, messages - start)
            responses = yield defer.gatherResults([self.alice.send(self.to_bob, b"%09d" % i + b"m" * size)
                                                   for i in range(n)])
            self.assertEqual({r.code for r in responses}, {200})
            for _ in range(n):
                yield self.bob.received.get()

    @inlineCallbacks
    def test_collector_down(self):
        """tcp collector on a closed port: traces queue up to 1000 packets,
        the rest is dropped and counted; relaying is not affected."""
        closed = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        port = closed.getHost().port
        yield closed.stopListening()
        yield self.start(trace_destination="tcp:127.0.0.1:%d" % port, trace_on=1, trace_messages=1)
        yield self.flood_traces(400)
        sender = self.service.tracer.sender
        self.assertFalse(sender.connected)
        self.assertEqual(sender.stats["queued"], sender.max_queue)
        stats = self.service.statistics()
        self.assertGreater(stats["traces_dropped"], 0)
        self.assertEqual(stats["traces_dropped"], sender.stats["dropped"])
        yield self.log.wait_for(r"HEP queue for 127\.0\.0\.1:%d is full \(1000 packets\); dropping traces" % port)
        yield self.recovered()

    @inlineCallbacks
    def test_collector_stalled(self):
        """A collector that accepts and never reads: once the socket and the
        transport's buffer are full the sender is paused, queues 1000 packets
        and drops the rest; the relay keeps relaying."""
        factory = Factory.forProtocol(_StalledCollector)
        factory.connected = Deferred()
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        port = listening.getHost().port
        yield self.start(trace_destination="tcp:127.0.0.1:%d" % port, trace_on=1, trace_messages=1,
                         trace_max_body=8000)
        collector = yield factory.connected
        self.addCleanup(collector.transport.abortConnection)
        sender = self.service.tracer.sender
        for _ in range(40):
            yield self.flood_traces(100, size=8000)
            if sender.stats["dropped"]:
                break
        self.assertEqual(sender.stats["queued"], sender.max_queue)
        self.assertGreater(self.service.statistics()["traces_dropped"], 0)
        yield self.recovered()


class _MIServerSide(mi.ManagementProtocol):
    def connectionMade(self):
        super().connectionMade()
        self.lost = Deferred()
        self.factory.sides.put(self)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.lost.callback(None)


class ManagementFaultTests(FaultFixture, TestCase):
    timeout = 15

    @inlineCallbacks
    def start_with_mi(self, **options):
        yield self.start(mi="tcp:0:interface=127.0.0.1", **options)
        factory = self.service.mi_port.factory
        factory.protocol = _MIServerSide
        factory.sides = DeferredQueue()
        self.mi_port = self.service.mi_port.getHost().port

    @inlineCallbacks
    def mi_client(self):
        client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.mi_port), amp.AMP())
        side = yield self.service.mi_port.factory.sides.get()
        self.addCleanup(lambda: side.lost)
        self.addCleanup(client.transport.loseConnection)
        return client, side

    @inlineCallbacks
    def test_client_gone_mid_command(self):
        """The MI client resets its connection while the service is still
        working on its command: the answer is dropped with a log line and the
        next client is served."""
        yield self.start_with_mi()
        client, side = yield self.mi_client()
        working = Deferred()
        called = Deferred()
        real = self.service.list_sessions

        def slow_list_sessions():
            called.callback(None)
            return working.addCallback(lambda _: real())

        self.service.list_sessions = slow_list_sessions
        asked = client.callRemote(mi.ListSessions)
        asked.addErrback(lambda f: None)  # the client is gone: its own call fails
        yield called
        client.transport.abortConnection()
        yield side.lost
        working.callback(None)
        yield self.log.wait_for(r"MI \S+ list_sessions: ok \(client went away, answer dropped\) sessions=2 total=2")
        del self.service.list_sessions
        other, _ = yield self.mi_client()
        sessions, total = yield mi.call_paged(other, mi.ListSessions, "sessions")
        self.assertEqual(total, 2)
        counters = {c["name"]: c["value"] for c in (yield other.callRemote(mi.Statistics))["counters"]}
        self.assertEqual((counters["relay_sessions"], counters["transactions_pending"]), (2, 0))
        yield self.recovered()

    @inlineCallbacks
    def test_client_gone_mid_box(self):
        """Half an AMP box, then the connection is reset: nothing runs and
        nothing is logged as an error."""
        yield self.start_with_mi()
        client, side = yield self.mi_client()
        box = amp.AmpBox({b"_command": b"reload_users", b"_ask": b"1"}).serialize()
        client.transport.write(box[:len(box) // 2])
        client.transport.abortConnection()
        yield side.lost
        self.assertEqual(len(self.service.users), 4)
        self.assertNotIn("reload_users", self.log.text())
        other, _ = yield self.mi_client()
        self.assertEqual((yield other.callRemote(mi.ReloadUsers))["status"], "ok")
        yield self.recovered()

    @inlineCallbacks
    def test_broken_users_file(self):
        """The users file is replaced by a broken one: reload_users reports
        why over the MI, the log says the old users are kept, and they are:
        alice still authenticates, a user only in the broken file does not.
        A fixed file is then taken."""
        yield self.start_with_mi()
        client, _ = yield self.mi_client()
        broken = os.path.join(self.directory, "users.new")
        with open(broken, "w") as f:
            f.write("dave:msrp:0123456789abcdef0123456789abcdef\n")
            f.write("alice:msrp:this-is-not-a-hash\n")
        os.replace(broken, self.users_file)
        error = yield self.assertFailure(client.callRemote(mi.ReloadUsers), mi.ReloadFailed)
        self.assertIn("line 2", str(error))
        self.assertIn("HA1 field is not 32 hexadecimal digits", str(error))
        self.assertNotIn("this-is-not-a-hash", str(error))
        yield self.log.wait_for(r"Credentials file %s line 2: the HA1 field is not 32 hexadecimal digits; "
                                r"keeping the 4 users loaded before" % self.users_file)
        self.assertNotIn("this-is-not-a-hash", self.log.text())
        carol = self.peer("carol")
        yield carol.auth(self.relay_uri, "carol", USERS["carol"])
        yield carol.close()
        # The fixed file is taken: dave exists, carol no longer does.
        write_users(self.directory, {"alice": USERS["alice"], "bob": USERS["bob"], "carol": USERS["carol"],
                                     "dave": "diver"})
        self.assertEqual((yield client.callRemote(mi.ReloadUsers))["status"], "ok")
        dave = self.peer("dave")
        yield dave.auth(self.relay_uri, "dave", "diver")
        yield dave.close()
        yield self.recovered()

    @inlineCallbacks
    def test_tls_rotation_with_live_sessions(self):
        """reload_tls under live msrps sessions: alice and bob keep their
        connections (and the certificate they were served) and keep
        exchanging; a new client gets the new certificate and reaches
        alice through the relay."""
        pki = get_test_pki()
        files = tempfile.mkdtemp(prefix="msrp-faults-tls-")
        self.addCleanup(shutil.rmtree, files, True)
        cert = shutil.copy(pki.server.cert, os.path.join(files, "cert.pem"))
        key = shutil.copy(pki.server.key, os.path.join(files, "key.pem"))
        self.addCleanup(clear_client_creator_cache)
        tls = TLSSettings(ca_file=pki.ca_bundle)
        settings = TransportSettings(tls_handshake_timeout=10000)

        class TLSPeer(Peer):
            def __init__(self, name):
                super().__init__(name, tls=tls, settings=settings, scheme="msrps")

        yield self.start_with_mi(alice_class=TLSPeer, bob_class=TLSPeer, listen=["msrps:127.0.0.1:0"],
                                 tls_cert=cert, tls_key=key, tls_ca=pki.ca_bundle, tls_handshake_timeout=10000)

        def served(peer):
            return peer_certificate_info(connection_of(peer).transport)["fingerprint_sha256"]

        live = (connection_of(self.alice), connection_of(self.bob))
        self.assertEqual({served(self.alice), served(self.bob)}, {pki.server.fingerprint})
        shutil.copy(pki.server_alt.cert, cert)
        shutil.copy(pki.server_alt.key, key)
        client, _ = yield self.mi_client()
        self.assertEqual((yield client.callRemote(mi.ReloadTLS))["status"], "ok")
        yield self.exchange(self.alice, self.to_bob, self.bob, b"after the rotation")
        yield self.exchange(self.bob, self.to_alice, self.alice, b"same connection")
        self.assertEqual((connection_of(self.alice), connection_of(self.bob)), live)
        self.assertEqual({served(self.alice), served(self.bob)}, {pki.server.fingerprint})
        carol = TLSPeer("carol")
        self.peers.append(carol)
        uc = (yield carol.auth(self.relay_uri, "carol", USERS["carol"])).use_path[0]
        self.assertEqual(served(carol), pki.server_alt.fingerprint)
        yield self.exchange(carol, [uc, self.ua, self.alice.uri], self.alice, b"new certificate, same relay")
        yield self.exchange(self.alice, [self.ua, uc, carol.uri], carol, b"old certificate, same relay")
        # carol's answer is in before anything she sends next: then she may go.
        yield carol.send([uc, self.ua, self.alice.uri], b"bye", headers=[("Failure-Report", "no")])
        self.assertEqual((yield self.alice.received.get()).body, b"bye")
        yield carol.close()
        self.peers.remove(carol)
        yield self.recovered_tls(TLSPeer)

    @inlineCallbacks
    def recovered_tls(self, peer_class):
        """recovered(), with a TLS newcomer."""
        yield self.settled()
        carol = peer_class("carol")
        self.peers.append(carol)
        uc = (yield carol.auth(self.relay_uri, "carol", USERS["carol"])).use_path[0]
        yield self.exchange(carol, [uc, self.ua, self.alice.uri], self.alice, b"hello again")
        yield self.alice.send(self.to_bob, b"over", headers=[("Failure-Report", "no")])
        self.assertEqual((yield self.bob.received.get()).body, b"over")
        yield carol.close()
        yield self.settled()
        stats = self.service.statistics()
        self.assertEqual((stats["transactions_pending"], stats["relay_sessions"]), (0, 2))
        assert_no_tracebacks(self, self.log.text())


class _LossWatcher:
    """Records why a Peer's connections went away."""

    def __init__(self, peer):
        self.reasons = DeferredQueue()
        peer.transactions.add_handler(self, match=lambda uri: False)

    def head_received(self, conn, request):
        raise AssertionError("routes nothing")

    request_received = head_received

    def connection_lost(self, conn, reason):
        self.reasons.put(reason)


class RestartTests(TestCase):
    """`twistd -n msrp` stopped with SIGTERM and started again on the same
    port: what clients see, and that they get back in with a new AUTH."""

    timeout = 30

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.users_file = write_users(self.directory, USERS)
        self.peers = []
        self.addCleanup(lambda: defer.gatherResults([p.close() for p in self.peers]))

    @inlineCallbacks
    def spawn(self, port):
        relay = TwistdProcess.spawn(reactor, [
            "msrp", "--listen", "msrp:127.0.0.1:%d" % port, "--users", self.users_file,
            "--mi", "tcp:0:interface=127.0.0.1"], path=self.directory)
        self.addCleanup(relay.stop)
        ready = yield relay.wait_for(READY)
        mi_line = yield relay.wait_for(r"MSRP management \(AMP\) on \S+ \(127\.0\.0\.1:(\d+)\)")
        client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", int(mi_line.group(1))), amp.AMP())
        self.addCleanup(client.transport.loseConnection)
        return relay, parse_uri(ready.group(1)), client

    @staticmethod
    @inlineCallbacks
    def counters(client):
        answer = yield client.callRemote(mi.Statistics)
        return {c["name"]: c["value"] for c in answer["counters"]}

    @inlineCallbacks
    def test_stop_and_start(self):
        free = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        port = free.getHost().port
        yield free.stopListening()
        relay, relay_uri, mi_client = yield self.spawn(port)
        alice, bob = Peer("alice"), Peer("bob")
        self.peers += [alice, bob]
        losses = {"alice": _LossWatcher(alice), "bob": _LossWatcher(bob)}
        ua = (yield alice.auth(relay_uri, "alice", USERS["alice"])).use_path[0]
        ub = (yield bob.auth(relay_uri, "bob", USERS["bob"])).use_path[0]
        self.assertEqual((yield alice.send([ua, ub, bob.uri], b"before")).code, 200)
        self.assertEqual((yield bob.received.get()).body, b"before")
        before = yield self.counters(mi_client)
        self.assertEqual((before["relay_sessions"], before["connections_open"]), (2, 2))

        # SIGTERM: the relay closes every connection (cleanly) and exits.
        status = yield relay.stop()
        self.assertEqual(status, -signal.SIGTERM)
        for name in ("alice", "bob"):
            reason = yield losses[name].reasons.get()
            self.assertEqual(reason, "closed by peer")
        self.assertRegex(relay.output(), r"MSRP msrp connection 127\.0\.0\.1:\d+ closed: shutting down")
        self.assertIn("relay session %s of alice ended: shutdown" % ua.session_id, relay.output())
        self.assertIn("Server Shut Down.", relay.output())
        assert_no_tracebacks(self, relay.output())
        # While it is down, sending fails at once with the reason.
        failure = yield self.assertFailure(alice.send([ua, ub, bob.uri], b"anyone?"), Exception)
        self.assertIn("cannot connect to 127.0.0.1:%d" % port, str(failure))

        relay, relay_uri2, mi_client = yield self.spawn(port)
        self.assertEqual(relay_uri2, relay_uri)
        # The old Use-Paths name sessions the new process never had: 481.
        response = yield alice.send([ua, ub, bob.uri], b"after")
        self.assertEqual(response.code, 481)
        # A new AUTH (a fresh challenge: nonces of the old process are not
        # valid) gives new sessions, and traffic flows again.
        ua2 = (yield alice.auth(relay_uri, "alice", USERS["alice"])).use_path[0]
        ub2 = (yield bob.auth(relay_uri, "bob", USERS["bob"])).use_path[0]
        self.assertNotEqual((ua2.session_id, ub2.session_id), (ua.session_id, ub.session_id))
        self.assertEqual((yield alice.send([ua2, ub2, bob.uri], b"again")).code, 200)
        self.assertEqual((yield bob.received.get()).body, b"again")
        after = yield self.counters(mi_client)
        self.assertEqual((after["relay_sessions"], after["connections_open"], after["relay_auth_ok"]), (2, 2, 2))
