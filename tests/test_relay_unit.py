"""The relay with a task.Clock and in-memory connections.

Peers are the real stack (tests/relay_helpers.Peer) joined to the relay by
twisted.test.iosim pumps; the backpressure tests drive the relay's
connections byte by byte over StringTransports.
"""

import itertools

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from msrp_twisted.connections import ConnectionManager
from msrp_twisted.core import digest
from msrp_twisted.core.headers import Headers
from msrp_twisted.core.ids import new_message_id, new_session_id
from msrp_twisted.core.message import Request, Response
from msrp_twisted.core.serializer import end_line, head, serialize
from msrp_twisted.core.uri import MSRPURI
from msrp_twisted.protocol import MSRPProtocol, TransportSettings
from msrp_twisted.relay.auth import DigestAuthenticator, ExpiresPolicy
from msrp_twisted.relay.relay import Relay
from msrp_twisted.transactions import TransactionManager
from tests.relay_helpers import Peer, parse_frames

USERS = {"alice": "wonderland", "bob": "builder", "relay1": "chain"}
RELAY_URI = "msrp://relay.example:2855;tcp"
_ports = itertools.count(40000)


def _address(port):
    return IPv4Address("TCP", "127.0.0.1", port)


class Harness:
    """One relay on a Clock, and peers connected to it in memory."""

    def __init__(self, transaction_timeout=30.0, idle_timeout=120.0, nonce_expire=30,
                 expires=(1800, 60, 3600)):
        self.clock = Clock()
        settings = TransportSettings(idle_timeout=idle_timeout)
        self.connections = ConnectionManager(settings=settings, reactor=self.clock)
        self.transactions = TransactionManager(self.connections, self.clock, transaction_timeout)
        users = {u: digest.compute_ha1(u, "msrp", p) for u, p in USERS.items()}
        self.authenticator = DigestAuthenticator("msrp", users, self.clock, nonce_expire=nonce_expire)
        self.relay = Relay(self.transactions, [RELAY_URI], self.authenticator,
                           ExpiresPolicy(*expires), reactor=self.clock)
        self.uri = self.relay.uris[0]
        self.pumps = []

    def peer(self, name, idle_timeout=10.0 ** 6, timeout=30.0):
        """A Peer connected to the relay (its own idle timer out of the way)."""
        p = Peer(name, reactor=self.clock, settings=TransportSettings(idle_timeout=idle_timeout),
                 timeout=timeout)
        client = MSRPProtocol(p.connections, "out", "msrp", ("relay.example", 2855))
        server = MSRPProtocol(self.connections, "in", "msrp")
        port = next(_ports)
        server_io = iosim.FakeTransport(server, True, _address(2855), _address(port))
        client_io = iosim.FakeTransport(client, False, _address(port), _address(2855))
        self.pumps.append(iosim.connect(server, server_io, client, client_io, greet=False,
                                        clock=self.clock))
        p.conn = client
        p.relay_side = server
        return p

    def flush(self):
        while any([pump.pump() for pump in self.pumps]):
            pass

    def run(self, d):
        """Pump until d has fired; return what it fired with."""
        self.flush()
        results = []
        d.addBoth(results.append)
        assert results, "%r did not fire" % (d,)
        if hasattr(results[0], "raiseException"):
            results[0].raiseException()
        return results[0]

    def authenticated(self, name, expires=None):
        p = self.peer(name)
        response = self.run(p.auth(self.uri, name, USERS[name], expires=expires))
        return p, response.use_path[0]

    def received(self, peer):
        """What peer received so far (and takes it out of its queue)."""
        self.flush()
        out = []
        while peer.received.pending:
            peer.received.get().addCallback(out.append)
        return out


class ExpiryTests(SynchronousTestCase):
    def test_session_gone_after_expires(self):
        h = Harness()
        a, ua = h.authenticated("alice", expires=60)
        b, ub = h.authenticated("bob", expires=600)
        [session] = [s for s in h.relay.list_sessions() if s["user"] == "alice"]
        self.assertEqual(session["expires_in"], 60)
        h.clock.advance(59)
        self.assertEqual(h.run(b.send([ub, ua, a.uri], b"in time")).code, 200)
        self.assertEqual([r.body for r in h.received(a)], [b"in time"])
        h.clock.advance(1)
        self.assertIsNone(h.relay.sessions.get(ua.session_id))
        self.assertEqual(h.relay.sessions.stats["sessions_expired"], 1)
        self.assertEqual(h.run(b.send([ub, ua, a.uri], b"too late")).code, 481)
        self.assertEqual(h.run(a.send([ua, ub, b.uri], b"me neither")).code, 481)
        self.assertEqual(h.received(a), [])
        self.assertEqual(h.received(b), [])
        self.assertEqual([s["user"] for s in h.relay.list_sessions()], ["bob"])

    def test_second_auth_refreshes_the_session(self):
        """Another AUTH on the same connection for the same client URI keeps
        the Use-Path and restarts the lifetime instead of adding a session."""
        h = Harness()
        a, ua = h.authenticated("alice", expires=60)
        b, ub = h.authenticated("bob", expires=3600)
        h.clock.advance(50)
        response = h.run(a.auth(h.uri, "alice", USERS["alice"], expires=60))
        self.assertEqual((response.use_path[0], response.expires), (ua, 60))
        self.assertEqual(sorted(s["user"] for s in h.relay.list_sessions()), ["alice", "bob"])
        self.assertEqual((h.relay.stats["auth_ok"], h.relay.stats["auth_refreshed"]), (3, 1))
        self.assertEqual(h.relay.sessions.stats["sessions_created"], 2)
        h.clock.advance(59)  # t=109: past the first lifetime, within the second
        self.assertEqual(h.run(b.send([ub, ua, a.uri], b"still here")).code, 200)
        self.assertEqual([r.body for r in h.received(a)], [b"still here"])
        h.clock.advance(1)
        self.assertIsNone(h.relay.sessions.get(ua.session_id))

    def test_refresh_is_per_user_and_client_uri(self):
        """Another client URI, or another user, on the same connection gets
        a session of its own."""
        h = Harness()
        a, ua = h.authenticated("alice")
        a.uri = a.uri.with_session(new_session_id())  # a second chat over the connection
        other = h.run(a.auth(h.uri, "alice", USERS["alice"])).use_path[0]
        as_bob = h.run(a.auth(h.uri, "bob", USERS["bob"])).use_path[0]
        self.assertEqual(len({ua, other, as_bob}), 3)
        self.assertEqual(h.relay.stats["auth_refreshed"], 0)
        self.assertEqual(len(h.relay.list_sessions()), 3)

    def test_refresh_is_not_counted_against_max_sessions_per_user(self):
        h = Harness()
        h.relay.max_sessions_per_user = 1
        a, ua = h.authenticated("alice")
        self.assertEqual(h.run(a.auth(h.uri, "alice", USERS["alice"])).use_path[0], ua)

    def test_connection_kept_alive_for_the_auth_lifetime(self):
        """An idle authenticated connection outlives idle_timeout until its
        session expires; then the idle rule applies again."""
        h = Harness(idle_timeout=120.0)
        a, ua = h.authenticated("alice", expires=900)
        for _ in range(8):
            h.clock.advance(100)
            h.flush()
        self.assertFalse(a.conn.closed)
        self.assertFalse(a.relay_side.closed)
        h.clock.advance(100)  # t=900: session expired, idle for 900 s
        h.flush()
        self.assertIsNone(h.relay.sessions.get(ua.session_id))
        self.assertTrue(a.relay_side.closed)
        self.assertTrue(a.conn.closed)

    def test_unauthenticated_connection_closes_when_idle(self):
        h = Harness(idle_timeout=120.0)
        p = h.peer("stranger")
        h.run(p.request([h.uri], "AUTH"))  # challenged only
        h.clock.advance(120)
        h.flush()
        self.assertTrue(p.relay_side.closed)

    def test_session_ends_with_its_connection(self):
        h = Harness()
        a, ua = h.authenticated("alice")
        b, ub = h.authenticated("bob")
        a.conn.close("leaving", abort=False)
        h.flush()
        self.assertTrue(a.relay_side.closed)
        self.assertIsNone(h.relay.sessions.get(ua.session_id))
        self.assertEqual(h.relay.sessions.stats["sessions_ended"], 1)
        self.assertEqual(h.run(b.send([ub, ua, a.uri], b"gone?")).code, 481)

    def test_stale_nonce(self):
        h = Harness(nonce_expire=30)
        p = h.peer("alice")
        challenge = h.run(p.request([h.uri], "AUTH"))
        h.clock.advance(31)
        authorization = p.credentials(challenge, h.uri, "alice", USERS["alice"])
        stale = h.run(p.request([h.uri], "AUTH", [("Authorization", authorization)]))
        self.assertEqual(stale.code, 401)
        self.assertEqual(stale.www_authenticate["stale"], "true")
        fresh = p.credentials(stale, h.uri, "alice", USERS["alice"])
        self.assertEqual(h.run(p.request([h.uri], "AUTH", [("Authorization", fresh)])).code, 200)

    def test_operator_ends_session(self):
        h = Harness()
        a, ua = h.authenticated("alice")
        b, ub = h.authenticated("bob")
        self.assertTrue(h.relay.end_session(ua.session_id))
        self.assertFalse(h.relay.end_session(ua.session_id))
        self.assertFalse(h.relay.end_session("no-such-session"))
        self.assertEqual(h.run(b.send([ub, ua, a.uri], b"x")).code, 481)
        self.assertFalse(a.conn.closed)  # only the session ends
        self.assertEqual([s["user"] for s in h.relay.list_sessions()], ["bob"])


class TransactionTests(SynchronousTestCase):
    def setUp(self):
        self.h = Harness(transaction_timeout=30.0)
        self.a, self.ua = self.h.authenticated("alice")
        self.b, self.ub = self.h.authenticated("bob")
        self.to_b = [self.ua, self.ub, self.b.uri]

    def test_downstream_timeout_reported_408(self):
        h, a, b = self.h, self.a, self.b
        b.answer = None
        mid = new_message_id()
        self.assertEqual(h.run(a.send(self.to_b, b"hello", message_id=mid)).code, 200)
        self.assertEqual(len(h.received(b)), 1)
        h.clock.advance(29.9)
        self.assertEqual(h.received(a), [])
        h.clock.advance(0.1)
        [report] = [r.request for r in h.received(a)]
        self.assertEqual(report.method, "REPORT")
        self.assertEqual((report.message_id, report.headers["Byte-Range"]), (mid, "1-5/5"))
        self.assertEqual(report.headers["Status"].split()[:2], ["000", "408"])

    def test_report_fills_in_unknown_byte_range(self):
        """A chunk with an unknown end ("*") is reported with the range the
        relay passed on; the total is known only for the last chunk."""
        h, a, b = self.h, self.a, self.b
        b.answer = 415
        for flag, expected in (("+", "1-5/*"), ("$", "1-5/5")):
            self.assertEqual(h.run(a.send(self.to_b, b"hello", byte_range="1-*/*", flag=flag)).code,
                             200)
            [report] = [r.request for r in h.received(a)]
            self.assertEqual(report.headers["Byte-Range"], expected)
            self.assertEqual(report.status.code, 415)

    def test_partial_silence_is_success(self):
        """Failure-Report: partial receivers never send 200, so the relay's
        downstream timeout is not a failure to report."""
        h, a, b = self.h, self.a, self.b
        sending = a.send(self.to_b, b"hello", headers=[("Failure-Report", "partial")],
                         timeout=3600)
        self.assertEqual(len(h.received(b)), 1)
        h.clock.advance(31)
        self.assertEqual(h.received(a), [])
        self.assertNoResult(sending)
        self.assertEqual(h.relay.stats["downstream_errors"], 0)
        self.assertEqual(h.relay.stats["reports_generated"], 0)
        sending.cancel()
        self.failureResultOf(sending)

    def test_no_report_for_report(self):
        """A REPORT that cannot be delivered is not reported on."""
        h, a, b = self.h, self.a, self.b
        self.assertEqual(h.run(a.send(self.to_b, b"hello")).code, 200)
        [got] = h.received(b)
        h.relay.end_session(self.ua.session_id)
        self.assertIsNone(h.run(b.report(got.request)))
        h.clock.advance(60)
        self.assertEqual(h.received(a), [])
        self.assertEqual(h.received(b), [])  # no 481 answer to a REPORT either


class RoutingTests(SynchronousTestCase):
    def test_session_client_may_be_another_relay(self):
        """In a chain the client of a session is a relay session URI; frames
        for it carry further hops after that URI and are passed on whole."""
        h = Harness()
        r1 = h.peer("relay1")  # plays the previous relay of a chain
        u = h.run(r1.auth(h.uri, "relay1", USERS["relay1"])).use_path[0]
        stranger = h.peer("stranger")
        alice = MSRPURI("alice.invalid", 2855, new_session_id())
        self.assertEqual(h.run(stranger.send([u, r1.uri, alice], b"via chain")).code, 200)
        [got] = h.received(r1)
        self.assertEqual(got.request.to_path, (r1.uri, alice))
        self.assertEqual(got.request.from_path, (u, stranger.uri))
        # ... but never to anyone but the session's client.
        self.assertEqual(h.run(stranger.send([u, alice, r1.uri], b"x")).code, 403)

    def test_auth_with_a_body_is_refused_without_buffering(self):
        h = Harness()
        p = h.peer("alice")
        response = h.run(p.request([h.uri], "AUTH", [("Content-Type", "text/plain")],
                                   b"x" * 100000))
        self.assertEqual(response.code, 400)
        self.assertEqual(len(h.relay.sessions), 0)

    def test_unknown_method_501(self):
        h = Harness()
        a, ua = h.authenticated("alice")
        b, ub = h.authenticated("bob")
        response = h.run(a.request([ua, ub, b.uri], "NICKNAME", [("Message-ID", new_message_id())]))
        self.assertEqual(response.code, 501)

    def test_refusal_logged_once_with_peer_and_reason_relaying_silent(self):
        h = Harness()
        a, ua = h.authenticated("alice")
        b, ub = h.authenticated("bob")
        with capturedLogs() as events:
            self.assertEqual(h.run(a.send([ua, ub, b.uri], b"quiet")).code, 200)
        self.assertEqual([e for e in events if e["log_level"] >= LogLevel.info], [])
        stranger = h.peer("stranger")
        with capturedLogs() as events:
            self.assertEqual(h.run(stranger.send([ua, b.uri], b"x")).code, 403)
        lines = [formatEvent(e) for e in events
                 if e["log_level"] >= LogLevel.info and e.get("log_namespace", "").startswith("msrp_twisted.relay")]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("403", lines[0])
        self.assertIn("127.0.0.1:", lines[0])
        self.assertIn("may only be used toward its client", lines[0])


class _Side:
    """One relay-side connection over a StringTransport."""

    def __init__(self, harness):
        self.port = next(_ports)
        self.transport = StringTransport(_address(2855), _address(self.port))
        self.protocol = MSRPProtocol(harness.connections, "in", "msrp")
        self.protocol.makeConnection(self.transport)

    def frames(self):
        data = self.transport.value()
        self.transport.clear()
        return parse_frames(data)


class BackpressureTests(SynchronousTestCase):
    """The relay passes a body through as it arrives and stops reading the
    sender while the receiver's connection cannot take more."""

    def setUp(self):
        h = self.h = Harness()
        self.src, self.dst = _Side(h), _Side(h)
        self.a_uri = MSRPURI("alice.invalid", 2855, new_session_id())
        self.b_uri = MSRPURI("bob.invalid", 2855, new_session_id())
        self.sa = h.relay.sessions.create("alice", self.src.protocol, self.a_uri, h.uri, 600)
        self.sb = h.relay.sessions.create("bob", self.dst.protocol, self.b_uri, h.uri, 600)
        self.request = Request("tidsrc1234", "SEND", Headers([
            ("To-Path", "%s %s %s" % (self.sa.use_path, self.sb.use_path, self.b_uri)),
            ("From-Path", str(self.a_uri)),
            ("Message-ID", new_message_id()),
            ("Byte-Range", "1-300000/300000"),
            ("Content-Type", "application/octet-stream")]))
        self.addCleanup(h.relay.sessions.clear)

    def test_body_streams_with_backpressure(self):
        src, dst = self.src, self.dst
        src.protocol.dataReceived(head(self.request, True) + b"a" * 100000)
        # Passed on before the end-line arrived (all but a possible start
        # of the end-line, which the parser holds back).
        forwarded = dst.transport.value().count(b"a")
        self.assertGreater(forwarded, 100000 - 64)
        self.assertEqual(src.transport.producerState, "producing")
        dst.protocol.pauseProducing()  # the receiver's buffer is full
        self.assertEqual(src.transport.producerState, "paused")
        src.protocol.dataReceived(b"b" * 100000)  # what was already in flight
        dst.protocol.resumeProducing()
        self.assertEqual(src.transport.producerState, "producing")
        src.protocol.dataReceived(b"c" * 100000 + end_line("tidsrc1234", "$", True))
        [sent] = dst.frames()
        self.assertEqual(sent.body, b"a" * 100000 + b"b" * 100000 + b"c" * 100000)
        self.assertNotEqual(sent.tid, "tidsrc1234")
        self.assertEqual(sent.to_path, (self.b_uri,))
        self.assertEqual(sent.from_path, (self.sb.use_path, self.sa.use_path, self.a_uri))
        [ok] = src.frames()
        self.assertEqual((ok.tid, ok.code), ("tidsrc1234", 200))
        # The downstream 200 is consumed, not passed back.
        dst.protocol.dataReceived(serialize(Response(sent.tid, 200, "OK", [
            ("To-Path", str(self.sb.use_path)), ("From-Path", str(self.b_uri))])))
        self.assertEqual(src.transport.value(), b"")

    def test_early_downstream_error_is_the_upstream_response(self):
        """An error from downstream while the body is still arriving is the
        sender's response (no 200, no REPORT later)."""
        src, dst = self.src, self.dst
        src.protocol.dataReceived(head(self.request, True) + b"a" * 5000)
        start_line = dst.transport.value().split(b"\r\n", 1)[0].decode()
        _, tid, method = start_line.split()
        self.assertEqual(method, "SEND")
        dst.protocol.dataReceived(serialize(Response(tid, 415, "Unsupported Media Type", [
            ("To-Path", str(self.sb.use_path)), ("From-Path", str(self.b_uri))])))
        [error] = src.frames()
        self.assertEqual((error.tid, error.code), ("tidsrc1234", 415))
        src.protocol.dataReceived(b"a" * 295000 + end_line("tidsrc1234", "$", True))
        self.assertEqual(src.frames(), [])
        self.assertEqual(self.h.relay.stats["reports_generated"], 0)
