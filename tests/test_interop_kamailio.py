"""Interoperability with an MSRP relay we did not write: Debian's Kamailio
with its msrp module (tests/interop/kamailio.cfg), alone and chained with
our relay (RFC 4976).

Kamailio runs as a real process on a free loopback port, started and
stopped by each test. Our endpoints are ConnectionManager +
TransactionManager stacks over real sockets. Kamailio's limits shape the
traffic: frames stay below 11,238 bytes and every endpoint lists its own
relay first (Kamailio routes by hop count, not by direction). See
tests/interop/README.md for what Kamailio does and does not do.

If kamailio is missing these tests fail (CI installs it with
tests/interop/install-kamailio.sh).
"""

import hashlib
import os

from twisted.internet import defer, task
from twisted.trial.unittest import TestCase

from msrp_twisted.config import MSRPConfig
from msrp_twisted.connections import ConnectionManager
from msrp_twisted.core import digest
from msrp_twisted.core.headers import Headers
from msrp_twisted.core.ids import new_message_id, new_session_id
from msrp_twisted.core.message import Request
from msrp_twisted.core.serializer import serialize
from msrp_twisted.core.uri import format_path, parse_uri
from msrp_twisted.endpoint import AuthError, authenticate
from msrp_twisted.protocol import TransportSettings
from msrp_twisted.service import MSRPService
from msrp_twisted.transactions import TransactionConnectionLost, TransactionManager
from tests.interop import MAX_SCRIPTABLE_FRAME, READ_BUFFER_SIZE, REALM, USERS, KamailioError, KamailioRelay

# Bounded waits: everything here happens on loopback within milliseconds.
WAIT = 5.0
OUR_REALM = "msrp-interop"


def _within(reactor, d, what, seconds=WAIT):
    """d, failing with a message naming what we waited for after seconds."""
    def timed_out(f):
        f.trap(defer.TimeoutError, defer.CancelledError)
        raise AssertionError("no %s within %.0f s" % (what, seconds))

    return d.addTimeout(seconds, reactor).addErrback(timed_out)


@defer.inlineCallbacks
def _until(reactor, predicate, what, seconds=WAIT):
    """Poll predicate on the reactor (bounded), for teardown only."""
    deadline = reactor.seconds() + seconds
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError("%s did not happen within %.0f s" % (what, seconds))
        yield task.deferLater(reactor, 0.01, lambda: None)


class Peer:
    """One of our endpoints: answers SENDs with 200, sends the success
    REPORT a message asks for, reassembles chunked messages by Message-ID."""

    def __init__(self, name, reactor, transaction_timeout=WAIT, settings=None):
        self.name = name
        self.reactor = reactor
        self.connections = ConnectionManager(settings=settings or TransportSettings(), reactor=reactor)
        self.transactions = TransactionManager(self.connections, reactor, transaction_timeout)
        self.transactions.add_handler(self)
        # Nobody connects to our endpoints here (they are the active side),
        # so the URI's host need not resolve.
        self.uri = parse_uri("msrp://%s.invalid:2855/%s;tcp" % (name, new_session_id()))
        self.use_path = []
        self.granted = None
        self.errors = []
        self.messages = defer.DeferredQueue()
        self.reports = defer.DeferredQueue()
        self.chunks = []
        self._partial = {}

    # -- IRequestHandler ---------------------------------------------------
    def head_received(self, conn, request):
        return None

    def request_received(self, conn, request):
        if request.method == "REPORT":
            self.reports.put(request)
            return
        if request.method != "SEND":
            self.transactions.send_reply(conn, request, 501)
            return
        self.transactions.send_reply(conn, request, 200)
        self.chunks.append(request)
        parts = self._partial.setdefault(request.message_id, [])
        byte_range = request.byte_range
        parts.append((byte_range.start if byte_range else 1, request.body or b""))
        if request.flag != "$":
            return
        del self._partial[request.message_id]
        body = b"".join(data for _, data in sorted(parts))
        if request.success_report == "yes":
            d = self.transactions.send_report(request, 200, byte_range="1-%d/%d" % (len(body), len(body)))
            d.addErrback(self.errors.append)
        self.messages.put((request, body))

    # -- actions -------------------------------------------------------------
    @defer.inlineCallbacks
    def auth(self, relay_uri, user, password=None, expires=None):
        """AUTH through the relays already authenticated to; returns the new hops."""
        use_path, granted = yield authenticate(
            self.transactions, relay_uri, self.uri, user, USERS[user] if password is None else password,
            via=self.use_path, expires=expires)
        new = [u for u in use_path if u not in self.use_path]
        self.use_path.extend(new)
        self.granted = granted
        return new

    @property
    def advertised_path(self):
        """The path a peer sends along to reach us (our SDP a=path): the
        relay authenticated last comes first, since each relay's client is
        the relay before it; then our own URI."""
        return self.use_path[::-1] + [self.uri]

    def send_chunk(self, to_path, message_id, body, start, total, flag="$", extra=(), tid=None):
        headers = [("Message-ID", message_id),
                   ("Byte-Range", "%d-%d/%d" % (start, start + len(body) - 1, total)),
                   ("Content-Type", "text/plain")]
        headers.extend(extra)
        return self.transactions.send_request(to_path, [self.uri], "SEND", headers, body, flag=flag, tid=tid)

    @defer.inlineCallbacks
    def send_message(self, peer_path, body, chunk_size=8000, success_report=False):
        """Send body in chunks toward peer_path through our own relays;
        returns the responses (one per chunk)."""
        to_path = self.use_path + list(peer_path)
        message_id = new_message_id()
        extra = [("Success-Report", "yes")] if success_report else []
        responses = []
        for offset in range(0, len(body), chunk_size):
            piece = body[offset:offset + chunk_size]
            last = offset + chunk_size >= len(body)
            response = yield self.send_chunk(to_path, message_id, piece, offset + 1, len(body),
                                             flag="$" if last else "+", extra=extra)
            responses.append(response)
        return message_id, responses

    def next_message(self):
        return _within(self.reactor, self.messages.get(), "message at %s" % self.name)

    def next_report(self):
        return _within(self.reactor, self.reports.get(), "REPORT at %s" % self.name)

    def close(self):
        self.connections.close_all()
        return _until(self.reactor, lambda: not self.connections.connections,
                      "closing %s's connections" % self.name)


def _frame_size(peer, to_path, message_id, body, tid):
    """Bytes of the SEND frame Peer.send_chunk would write."""
    headers = Headers([("To-Path", format_path(to_path)), ("From-Path", format_path([peer.uri])),
                       ("Message-ID", message_id),
                       ("Byte-Range", "1-%d/%d" % (len(body), len(body))),
                       ("Content-Type", "text/plain")])
    return len(serialize(Request(tid, "SEND", headers, body, "$")))


class KamailioTestCase(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.kamailio = KamailioRelay(reactor)
        try:
            yield self.kamailio.start()
        except KamailioError as e:
            self.fail(str(e))
        self.addCleanup(self.kamailio.stop)

    def peer(self, name, **options):
        peer = Peer(name, self.reactor, **options)
        self.addCleanup(peer.close)
        return peer

    @defer.inlineCallbacks
    def our_relay(self):
        """Our relay (MSRPService) on 127.0.0.1 port 0, with the same users."""
        tmp = self.mktemp()
        os.makedirs(tmp)
        users = os.path.join(tmp, "users")
        with open(users, "w") as f:
            for user, password in sorted(USERS.items()):
                f.write("%s:%s:%s\n" % (user, OUR_REALM, digest.compute_ha1(user, OUR_REALM, password)))
        service = MSRPService(MSRPConfig.from_mapping({
            "listen": ["msrp:127.0.0.1:0"], "users": users, "mi": "none", "auth_realm": OUR_REALM,
        }), reactor=self.reactor)
        yield service.start()

        @defer.inlineCallbacks
        def stop():
            yield service.stopService()
            yield _until(self.reactor, lambda: not service.connections.connections,
                         "closing our relay's connections")

        self.addCleanup(stop)
        return service

    def failure_log(self):
        return "\nkamailio log (tail):\n" + self.kamailio.log[-3000:]


class AuthTests(KamailioTestCase):
    """RFC 4976 AUTH against Kamailio's msrp_cmap_save() and auth module."""

    @defer.inlineCallbacks
    def test_challenge_then_use_path(self):
        alice = self.peer("alice")
        relay = self.kamailio.uri
        response = yield alice.transactions.send_request([relay], [alice.uri], "AUTH")
        self.assertEqual(response.code, 401)
        challenge = response.www_authenticate
        self.assertEqual(challenge["realm"], REALM)
        self.assertEqual(challenge["qop"], "auth")
        self.assertTrue(challenge["nonce"])

        hops = yield alice.auth(relay, "alice")
        self.assertEqual(len(hops), 1)
        use_path = hops[0]
        self.assertEqual((use_path.scheme, use_path.host, use_path.port, use_path.transport),
                         ("msrp", "127.0.0.1", self.kamailio.port, "tcp"))
        self.assertTrue(use_path.session_id)
        # Kamailio grants its auth_max_expires whatever was asked (README).
        self.assertEqual(alice.granted, 3600)

    @defer.inlineCallbacks
    def test_wrong_password_refused(self):
        alice = self.peer("alice")
        e = yield self.assertFailure(alice.auth(self.kamailio.uri, "alice", password="not-hers"), AuthError)
        self.assertEqual(e.code, 401)
        self.assertEqual(alice.use_path, [])

    @defer.inlineCallbacks
    def test_unknown_user_refused(self):
        mallory = self.peer("mallory")
        e = yield self.assertFailure(mallory.auth(self.kamailio.uri, "mallory", password="guess"), AuthError)
        self.assertEqual(e.code, 401)

    @defer.inlineCallbacks
    def test_replayed_credentials_get_a_stale_challenge(self):
        alice = self.peer("alice")
        relay = self.kamailio.uri
        response = yield alice.transactions.send_request([relay], [alice.uri], "AUTH")
        credentials = digest.make_authorization(response.www_authenticate, "alice", USERS["alice"],
                                                "AUTH", str(relay), nc=1)
        headers = [("Authorization", digest.format_credentials(credentials))]
        first = yield alice.transactions.send_request([relay], [alice.uri], "AUTH", headers)
        self.assertEqual(first.code, 200)
        replay = yield alice.transactions.send_request([relay], [alice.uri], "AUTH", headers)
        self.assertEqual(replay.code, 401)
        self.assertEqual(replay.www_authenticate.get("stale", "").lower(), "true")

    @defer.inlineCallbacks
    def test_expires_out_of_bounds_gets_423_with_the_bound(self):
        alice = self.peer("alice")
        relay = self.kamailio.uri
        response = yield alice.transactions.send_request([relay], [alice.uri], "AUTH")
        challenge = response.www_authenticate
        results = []
        for nc, expires in ((1, 10), (2, 99999)):
            credentials = digest.make_authorization(challenge, "alice", USERS["alice"], "AUTH", str(relay), nc=nc)
            response = yield alice.transactions.send_request(
                [relay], [alice.uri], "AUTH",
                [("Authorization", digest.format_credentials(credentials)), ("Expires", str(expires))])
            results.append((response.code, response.min_expires, response.max_expires))
        self.assertEqual(results, [(423, 60, None), (423, None, 3600)])

    @defer.inlineCallbacks
    def test_broken_423_for_expires_with_credentials_fails_fast(self):
        """Kamailio 5.6 answers Authorization + in-range Expires with a 423
        whose end-line has no CRLF before it (README): the frame cannot be
        delimited. Our client must give up on that connection quickly
        (msg_read_timeout), not wait for the transaction timeout, and
        authenticate again afterwards."""
        carol = self.peer("carol", transaction_timeout=20.0,
                          settings=TransportSettings(msg_read_timeout=1.0))
        started = self.reactor.seconds()
        yield self.assertFailure(carol.auth(self.kamailio.uri, "carol", expires=600), TransactionConnectionLost)
        self.assertLess(self.reactor.seconds() - started, 10.0)
        hops = yield carol.auth(self.kamailio.uri, "carol")
        self.assertEqual(len(hops), 1)


class RelayTests(KamailioTestCase):
    """Two of our endpoints exchanging traffic through Kamailio."""

    @defer.inlineCallbacks
    def setUp(self):
        yield KamailioTestCase.setUp(self)
        self.alice = self.peer("alice")
        self.bob = self.peer("bob")
        yield self.alice.auth(self.kamailio.uri, "alice")
        yield self.bob.auth(self.kamailio.uri, "bob")

    @defer.inlineCallbacks
    def test_chunked_message_both_ways_with_success_report(self):
        alice, bob = self.alice, self.bob
        body = hashlib.sha256(b"kamailio").hexdigest().encode("ascii") * 700  # 44,800 bytes
        message_id, responses = yield alice.send_message(bob.advertised_path, body, chunk_size=8000,
                                                         success_report=True)
        self.assertEqual([r.code for r in responses], [200] * 6, self.failure_log())
        request, received = yield bob.next_message()
        self.assertEqual(request.message_id, message_id)
        self.assertEqual(hashlib.sha256(received).hexdigest(), hashlib.sha256(body).hexdigest())
        # Every relay hop put itself on From-Path: Bob can answer along it.
        self.assertEqual(list(request.from_path), bob.use_path + alice.advertised_path)
        self.assertEqual(len(bob.chunks), 6)

        report = yield alice.next_report()
        self.assertEqual(report.message_id, message_id)
        self.assertEqual((report.status.code, str(report.byte_range)), (200, "1-44800/44800"))
        self.assertEqual(list(report.to_path), [alice.uri])

        # Bob answers along the From-Path he received (RFC 4975 section 6).
        reply = "Gr\u00fc\u00dfe zur\u00fcck".encode("utf-8")
        _, responses = yield bob.send_message(list(request.from_path)[len(bob.use_path):], reply)
        self.assertEqual([r.code for r in responses], [200])
        request, received = yield alice.next_message()
        self.assertEqual(received, reply)
        self.assertEqual(list(request.from_path), alice.use_path + bob.advertised_path)

    @defer.inlineCallbacks
    def test_report_passes_through(self):
        """A REPORT from Bob (no transaction, no response) reaches Alice."""
        alice, bob = self.alice, self.bob
        message_id = new_message_id()
        yield bob.transactions.send_request(
            bob.use_path + alice.advertised_path, [bob.uri], "REPORT",
            [("Message-ID", message_id), ("Byte-Range", "1-10/10"), ("Status", "000 415 Unsupported Media Type")])
        report = yield alice.next_report()
        self.assertEqual(report.message_id, message_id)
        self.assertEqual(report.status.code, 415)

    @defer.inlineCallbacks
    def test_frame_size_limit(self):
        """Kamailio relays frames up to 11,238 bytes; the config answers 413
        from 11,239 on; from 16,384 on Kamailio closes the connection."""
        alice, bob = self.alice, self.bob
        to_path = alice.use_path + bob.advertised_path
        tid = "interop-size-0001"
        message_id = new_message_id()
        overhead = _frame_size(alice, to_path, message_id, b"", tid)
        # Byte-Range digits grow with the body: size the body for the exact frame.
        fits = b"f" * (MAX_SCRIPTABLE_FRAME - overhead)
        fits = b"f" * (len(fits) - (_frame_size(alice, to_path, message_id, fits, tid) - MAX_SCRIPTABLE_FRAME))
        self.assertEqual(_frame_size(alice, to_path, message_id, fits, tid), MAX_SCRIPTABLE_FRAME)

        response = yield alice.send_chunk(to_path, message_id, fits, 1, len(fits), tid=tid)
        self.assertEqual(response.code, 200, self.failure_log())
        _, received = yield bob.next_message()
        self.assertEqual(received, fits)

        too_big = fits + b"f"
        response = yield alice.send_chunk(to_path, new_message_id(), too_big, 1, len(too_big), tid="interop-size-0002")
        self.assertEqual(response.code, 413)

        # Past the read buffer Kamailio drops the connection (and with it
        # every session on it): use a client of its own.
        carol = self.peer("carol")
        yield carol.auth(self.kamailio.uri, "carol")
        huge = b"h" * READ_BUFFER_SIZE
        yield self.assertFailure(
            carol.send_chunk(carol.use_path + bob.advertised_path, new_message_id(), huge, 1, len(huge)),
            TransactionConnectionLost)
        self.assertEqual(bob.messages.pending, [])

    @defer.inlineCallbacks
    def test_unknown_session_refused(self):
        """The config relays only for sessions Kamailio handed out."""
        alice, bob = self.alice, self.bob
        forged = parse_uri("msrp://127.0.0.1:%d/msrp-1-1-1;tcp" % self.kamailio.port)
        for to_path in ([forged, bob.uri], [forged] + bob.advertised_path):
            response = yield alice.send_chunk(to_path, new_message_id(), b"x", 1, 1)
            self.assertEqual(response.code, 481)
        self.assertEqual(bob.chunks, [])

    @defer.inlineCallbacks
    def test_failure_report_no_gets_no_response(self):
        alice, bob = self.alice, self.bob
        result = yield alice.send_chunk(alice.use_path + bob.advertised_path, new_message_id(), b"quiet", 1, 5,
                                        extra=[("Failure-Report", "no")])
        self.assertIsNone(result)
        _, received = yield bob.next_message()
        self.assertEqual(received, b"quiet")
        self.assertEqual(alice.transactions.stats["responses_unmatched"], 0)


class ChainTests(KamailioTestCase):
    """Kamailio and our relay in one path (RFC 4976 section 6)."""

    @defer.inlineCallbacks
    def exchange(self, alice, bob):
        """Both ways along each side's advertised path, with success REPORTs."""
        body = b"a->b " * 3000
        message_id, responses = yield alice.send_message(bob.advertised_path, body, success_report=True)
        self.assertEqual({r.code for r in responses}, {200}, self.failure_log())
        request, received = yield bob.next_message()
        self.assertEqual((request.message_id, received), (message_id, body))
        self.assertEqual(list(request.from_path), bob.use_path + alice.advertised_path)
        report = yield alice.next_report()
        self.assertEqual((report.message_id, report.status.code), (message_id, 200))

        body = b"b->a " * 100
        message_id, responses = yield bob.send_message(alice.advertised_path, body, success_report=True)
        self.assertEqual({r.code for r in responses}, {200}, self.failure_log())
        request, received = yield alice.next_message()
        self.assertEqual((request.message_id, received), (message_id, body))
        self.assertEqual(list(request.from_path), alice.use_path + bob.advertised_path)
        report = yield bob.next_report()
        self.assertEqual((report.message_id, report.status.code), (message_id, 200))

    @defer.inlineCallbacks
    def test_kamailio_then_our_relay(self):
        """A -> Kamailio -> our relay -> B."""
        ours = yield self.our_relay()
        alice, bob = self.peer("alice"), self.peer("bob")
        yield alice.auth(self.kamailio.uri, "alice")
        yield bob.auth(ours.relay.uris[0], "bob")
        yield self.exchange(alice, bob)

    @defer.inlineCallbacks
    def test_our_relay_then_kamailio(self):
        """A -> our relay -> Kamailio -> B. Our relay connects to Kamailio
        while Alice's first chunk is already in: it must go on reading her
        connection afterwards."""
        ours = yield self.our_relay()
        alice, bob = self.peer("alice"), self.peer("bob")
        yield alice.auth(ours.relay.uris[0], "alice")
        yield bob.auth(self.kamailio.uri, "bob")
        yield self.exchange(alice, bob)

    @defer.inlineCallbacks
    def test_two_relays_for_one_client_peer_on_our_relay(self):
        """Alice authenticates to Kamailio, then through it to our relay
        (RFC 4976 relay chain); Bob uses our relay."""
        ours = yield self.our_relay()
        alice, bob = self.peer("alice"), self.peer("bob")
        yield alice.auth(self.kamailio.uri, "alice")
        yield alice.auth(ours.relay.uris[0], "alice")
        self.assertEqual(len(alice.use_path), 2)
        yield bob.auth(ours.relay.uris[0], "bob")
        yield self.exchange(alice, bob)

    @defer.inlineCallbacks
    def test_two_relays_for_one_client_peer_on_kamailio(self):
        """Alice: Kamailio then our relay; Bob: Kamailio. Frames cross the
        one connection Kamailio keeps to our relay in both directions."""
        ours = yield self.our_relay()
        alice, bob = self.peer("alice"), self.peer("bob")
        yield alice.auth(self.kamailio.uri, "alice")
        yield alice.auth(ours.relay.uris[0], "alice")
        yield bob.auth(self.kamailio.uri, "bob")
        yield self.exchange(alice, bob)


class EndpointApiTests(KamailioTestCase):
    """The same flow through our Endpoint/Session API (issue 7)."""

    def endpoint(self):
        from msrp_twisted.endpoint import Endpoint

        endpoint = Endpoint(reactor=self.reactor, transaction_timeout=WAIT)

        @defer.inlineCallbacks
        def close():
            yield endpoint.close()
            yield _until(self.reactor, lambda: not endpoint.connections.connections,
                         "closing an endpoint's connections")

        self.addCleanup(close)
        return endpoint

    @defer.inlineCallbacks
    def test_sessions_through_kamailio(self):
        alice, bob = self.endpoint(), self.endpoint()
        relay = str(self.kamailio.uri)
        a = yield alice.create_session(relays=[(relay, "alice", USERS["alice"])], chunk_size=4096)
        b = yield bob.create_session(relays=[(relay, "bob", USERS["bob"])], chunk_size=4096)
        self.assertEqual(a.path[0].port, self.kamailio.port)
        yield b.connect(a.path_text, active=False)
        yield _within(self.reactor, a.connect(b.path_text), "session opened by Alice")

        text = "\u00bfQu\u00e9 tal? " * 2000  # chunked: about 24 KB of UTF-8
        outgoing = a.send_message(text, "text/plain; charset=utf-8", success_report=True)
        message = yield _within(self.reactor, b.next_message(), "message at Bob")
        self.assertEqual(message.data, text.encode("utf-8"))
        yield _within(self.reactor, outgoing.result, "delivery confirmed to Alice")

        reply = b.send_message("gracias", "text/plain")
        message = yield _within(self.reactor, a.next_message(), "message at Alice")
        self.assertEqual(message.data, b"gracias")
        yield _within(self.reactor, reply.result, "delivery confirmed to Bob")

    @defer.inlineCallbacks
    def test_auth_refresh_through_kamailio_changes_the_path(self):
        """Kamailio gives every AUTH a new session-id, so refreshing (which
        our relay answers with the same Use-Path) yields a new path here:
        the application hears of it through on_path_changed."""
        alice, bob = self.endpoint(), self.endpoint()
        relay = str(self.kamailio.uri)
        changed = []
        a = yield alice.create_session(relays=[(relay, "alice", USERS["alice"])],
                                       on_path_changed=changed.append)
        b = yield bob.create_session(relays=[(relay, "bob", USERS["bob"])])
        self.assertEqual(a.auth_expires, 3600)  # Kamailio's auth_max_expires, whatever is asked
        old_path = a.path_text
        yield _within(self.reactor, a.refresh_auth(), "AUTH refreshed at Kamailio")
        self.assertEqual(changed, [a])
        self.assertNotEqual(a.path_text, old_path)
        yield b.connect(a.path_text, active=False)
        yield _within(self.reactor, a.connect(b.path_text), "session opened by Alice")
        outgoing = b.send_message("to the new path", "text/plain")
        message = yield _within(self.reactor, a.next_message(), "message at Alice")
        self.assertEqual(message.data, b"to the new path")
        yield _within(self.reactor, outgoing.result, "delivery confirmed to Bob")
