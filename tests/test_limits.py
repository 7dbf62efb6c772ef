"""Per-address limits: AUTH brute-force throttling and the connection cap."""

from twisted.internet import defer, reactor
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from msrp_twisted.connections import ConnectionManager
from msrp_twisted.limits import AuthThrottle, ConnectionCap
from msrp_twisted.protocol import TransportSettings
from msrp_twisted.transactions import TransactionManager
from tests.test_relay_unit import USERS, Harness


class AuthThrottleUnitTests(SynchronousTestCase):
    def test_blocks_after_max_failures_within_window(self):
        clock = Clock()
        t = AuthThrottle(clock, max_failures=3, window=60, block=300)
        self.assertFalse(t.failed("127.0.0.9"))
        self.assertFalse(t.failed("127.0.0.9"))
        self.assertEqual(t.blocked("127.0.0.9"), 0)
        self.assertTrue(t.failed("127.0.0.9"))
        self.assertEqual(t.blocked("127.0.0.9"), 300)
        self.assertEqual(t.blocked("127.0.0.8"), 0)  # other addresses unaffected
        clock.advance(299)
        self.assertEqual(t.blocked("127.0.0.9"), 1)
        clock.advance(1)
        self.assertEqual(t.blocked("127.0.0.9"), 0)

    def test_failures_outside_the_window_do_not_add_up(self):
        clock = Clock()
        t = AuthThrottle(clock, max_failures=3, window=60, block=300)
        t.failed("127.0.0.9")
        t.failed("127.0.0.9")
        clock.advance(61)
        self.assertFalse(t.failed("127.0.0.9"))
        self.assertEqual(t.blocked("127.0.0.9"), 0)

    def test_success_clears_the_record(self):
        clock = Clock()
        t = AuthThrottle(clock, max_failures=3)
        t.failed("127.0.0.9")
        t.failed("127.0.0.9")
        t.succeeded("127.0.0.9")
        self.assertFalse(t.failed("127.0.0.9"))

    def test_zero_disables(self):
        t = AuthThrottle(Clock(), max_failures=0)
        for _ in range(100):
            self.assertFalse(t.failed("127.0.0.9"))
        self.assertEqual(t.blocked("127.0.0.9"), 0)

    def test_table_is_bounded(self):
        t = AuthThrottle(Clock(), max_failures=5, max_tracked=100)
        for i in range(1000):
            t.failed("127.0.%d.%d" % (i // 256, i % 256))
        self.assertEqual(len(t), 100)


class ConnectionCapUnitTests(SynchronousTestCase):
    def test_cap(self):
        cap = ConnectionCap(2)
        self.assertTrue(cap.admit("127.0.0.1"))
        self.assertTrue(cap.admit("127.0.0.1"))
        self.assertFalse(cap.admit("127.0.0.1"))
        self.assertTrue(cap.admit("127.0.0.2"))
        cap.release("127.0.0.1")
        self.assertTrue(cap.admit("127.0.0.1"))
        self.assertEqual(cap.stats["connections_refused"], 1)

    def test_zero_is_no_cap(self):
        cap = ConnectionCap(0)
        for _ in range(1000):
            self.assertTrue(cap.admit("127.0.0.1"))


class RelayThrottleTests(SynchronousTestCase):
    def harness(self):
        h = Harness()
        h.relay.throttle = AuthThrottle(h.clock, max_failures=3, window=60, block=300)
        return h

    def auth_code(self, h, p, password):
        challenge = h.run(p.request([h.uri], "AUTH"))
        creds = p.credentials(challenge, h.uri, "alice", password)
        return h.run(p.request([h.uri], "AUTH", [("Authorization", creds)]))

    def test_brute_force_is_blocked_then_released(self):
        h = self.harness()
        p = h.peer("alice")
        codes = [self.auth_code(h, p, "guess%d" % i).code for i in range(3)]
        self.assertEqual(codes, [403, 403, 403])
        # Now even the right password is refused, without a challenge.
        blocked = h.run(p.request([h.uri], "AUTH"))
        self.assertEqual((blocked.code, blocked.comment), (403, "Too many failed AUTH attempts"))
        self.assertEqual(h.relay.sessions.stats["sessions_created"], 0)
        h.clock.advance(300)  # the idle connection is gone by now: reconnect
        ok = self.auth_code(h, h.peer("alice"), USERS["alice"])
        self.assertEqual(ok.code, 200)

    def test_challenges_do_not_count(self):
        h = self.harness()
        p = h.peer("alice")
        for _ in range(10):
            self.assertEqual(h.run(p.request([h.uri], "AUTH")).code, 401)
        self.assertEqual(self.auth_code(h, p, USERS["alice"]).code, 200)


class _Idle(Protocol):
    def connectionMade(self):
        self.factory.made.callback(self)

    def connectionLost(self, reason):
        self.factory.lost.callback(None)


class ConnectionCapIntegrationTests(TestCase):
    """Real sockets: the N+1st connection from one address is closed at once,
    with a CONNECTION_LIMIT event; when one closes, a new one is admitted."""

    @defer.inlineCallbacks
    def test_cap_on_a_real_listener(self):
        events = []

        class Observer:
            def connection_event(self, conn, event, success, message):
                events.append((event, success, message))

        cm = ConnectionManager(settings=TransportSettings(max_connections_per_ip=2), observers=[Observer()])
        TransactionManager(cm)
        port = yield cm.listen("msrp:127.0.0.1:0")
        self.addCleanup(cm.stop_listening)
        clients = []

        @defer.inlineCallbacks
        def connect():
            f = ClientFactory()
            f.protocol = _Idle
            f.made, f.lost = defer.Deferred(), defer.Deferred()
            reactor.connectTCP("127.0.0.1", port.getHost().port, f)
            proto = yield f.made
            clients.append((proto, f))
            return f

        first = yield connect()
        second = yield connect()
        third = yield connect()
        yield third.lost  # closed by the relay
        refusals = [e for e in events if e[0] == "CONNECTION_LIMIT"]
        self.assertEqual(len(refusals), 1)
        self.assertIn("max_connections_per_ip=2", refusals[0][2])
        self.assertEqual(cm.connection_cap.count("127.0.0.1"), 2)
        clients[0][0].transport.loseConnection()
        yield first.lost
        while cm.connection_cap.count("127.0.0.1") != 1:
            d = defer.Deferred()
            reactor.callLater(0, d.callback, None)
            yield d
        fourth = yield connect()
        for proto, f in clients[1:2] + clients[3:]:
            proto.transport.loseConnection()
        yield defer.gatherResults([second.lost, fourth.lost])
        self.assertEqual(cm.connection_cap.stats["connections_refused"], 1)
