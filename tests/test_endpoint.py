"""The endpoint API end to end over loopback sockets: sessions direct, through
our relay with Digest AUTH and through a chain of two relays over msrps;
large files, cancellation, 413, keep-alive, and the frames real clients
send, written raw on a socket."""

import hashlib
import os
import shutil
import tempfile

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.defer import Deferred, DeferredQueue, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from msrp_twisted.chunking import MessageAborted, MessageSendError, MessageTooLarge, SendCancelled
from msrp_twisted.config import MSRPConfig
from msrp_twisted.connections import ConnectionManager
from msrp_twisted.core import digest
from msrp_twisted.core.parser import BodyData, MessageEnd, MessageStart, Parser
from msrp_twisted.core.uri import parse_uri
from msrp_twisted.endpoint import AuthError, Endpoint, EndpointError
from msrp_twisted.protocol import TransportSettings
from msrp_twisted.service import MSRPService
from msrp_twisted.session import DeliveryFailed, SessionClosed
from msrp_twisted.tls import TLSSettings, clear_client_creator_cache
from msrp_twisted.transactions import IRequestHandler, TransactionManager
from tests.certs import get_test_pki

MiB = 1024 * 1024
REALM = "msrp"
USERS = {"alice": "wonderland", "bob": "builder"}
# A TLS handshake on a loaded 2-core machine can take more than proto_msrp's
# 100 ms default.
SLOW_HANDSHAKE = TransportSettings(tls_handshake_timeout=10000)


# -- helpers -------------------------------------------------------------------
def write_users(directory):
    path = os.path.join(directory, "users")
    with open(path, "w") as f:
        for user, password in USERS.items():
            f.write("%s:%s:%s\n" % (user, REALM, digest.compute_ha1(user, REALM, password)))
    return path


def random_file(path, size, piece=MiB):
    """Write size random bytes to path in pieces; return their sha256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            data = os.urandom(min(piece, left))
            h.update(data)
            f.write(data)
            left -= len(data)
    return h.hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for data in iter(lambda: f.read(MiB), b""):
            h.update(data)
    return h.hexdigest()


def close_connections(manager):
    """Close every connection of a ConnectionManager; fires once each one is
    really gone (a clean reactor for trial)."""

    class Watcher:
        def connection_event(self, conn, event, success, message):
            if event == "CLOSED" and conn.conn_id in waiting:
                waiting.pop(conn.conn_id).callback(None)

    waiting = {c.conn_id: Deferred() for c in manager.connections.values() if not c.closed}
    done = defer.gatherResults(list(waiting.values()))
    manager.observers.append(Watcher())
    manager.close_all("test finished")
    return done


@inlineCallbacks
def stop_relay(service):
    yield close_connections(service.connections)
    yield service.stopService()


@inlineCallbacks
def free_port():
    """A loopback port nobody listens on (bound, then released)."""
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(protocol.Factory())
    number = port.getHost().port
    yield port.stopListening()
    return number


class Collector:
    """on_message / on_message_failed callbacks that can be waited on."""

    def __init__(self):
        self.messages = DeferredQueue()
        self.failures = DeferredQueue()
        self.delivered = []

    def on_message(self, message):
        self.delivered.append(message)
        self.messages.put(message)

    def on_message_failed(self, message_id, error):
        self.failures.put((message_id, error))


class EndpointTestCase(TestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="msrp-endpoint-test-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.spool = os.path.join(self.directory, "spool")
        os.mkdir(self.spool)
        self.addCleanup(clear_client_creator_cache)

    @inlineCallbacks
    def endpoint(self, listen=None, **options):
        ep = Endpoint(**options)
        self.addCleanup(ep.close)
        if listen is not None:
            yield ep.listen(listen)
        return ep

    @inlineCallbacks
    def start_relay(self, **options):
        settings = {"listen": ["msrp:127.0.0.1:0"], "users": write_users(self.directory), "mi": "none"}
        settings.update(options)
        service = MSRPService(MSRPConfig.from_mapping(settings))
        yield service.start()
        self.addCleanup(stop_relay, service)
        return service

    @inlineCallbacks
    def direct_pair(self, **b_options):
        """B listens (passive), A does not and connects to B's path."""
        b = yield self.endpoint("msrp:127.0.0.1:0")
        sb = yield b.create_session(spool_dir=self.spool, **b_options)
        a = yield self.endpoint()
        sa = yield a.create_session()
        yield sa.connect(sb.path_text)
        return sa, sb


# -- direct --------------------------------------------------------------------
class DirectTests(EndpointTestCase):
    @inlineCallbacks
    def test_text_both_ways(self):
        """A opens the session with an empty SEND, sends text; B, which never
        called connect(), answers along the From-Path."""
        b = yield self.endpoint("msrp:127.0.0.1:0")
        sb = yield b.create_session()
        self.assertEqual(sb.path_text, "msrp://127.0.0.1:%d/%s;tcp" % (b.port, sb.session_id))
        a = yield self.endpoint()
        sa = yield a.create_session()
        yield sa.connect(sb.path_text)
        # The connection-opening SEND arrived and was answered, but it is no message.
        self.assertEqual(b.transactions.stats["requests_received"], 1)
        self.assertEqual(sb.receiver.stats["messages_delivered"], 0)

        out = sa.send_message("hello bob, \u00e7a va?")
        result = yield out.result
        self.assertEqual(result.size, len("hello bob, \u00e7a va?".encode("utf-8")))
        got = yield sb.next_message()
        self.assertEqual(got.data, "hello bob, \u00e7a va?".encode("utf-8"))
        self.assertEqual(got.content_type, "text/plain")
        self.assertEqual(got.message_id, out.message_id)
        self.assertEqual(got.request.from_path, (sa.local_uri,))
        self.assertEqual(sb.to_path, [sa.local_uri])

        reply = sb.send_message("hi alice")
        yield reply.result

        async def first(session):
            async for message in session:
                return message

        got = yield defer.ensureDeferred(first(sa))
        self.assertEqual(got.data, b"hi alice")
        self.assertEqual(got.request.from_path, (sb.local_uri,))
        # B answered on A's connection: it never connected anywhere.
        self.assertEqual(b.connections.stats["connections_opened"], 0)
        # close() fires once the connections are really gone.
        yield a.close()
        self.assertEqual(a.connections.connections, {})
        self.assertEqual(a.sessions, {})

    @inlineCallbacks
    def test_50_mib_file_with_success_report(self):
        """A 50 MiB file streams from disk in chunks; the result waits for
        the success REPORT; B spools it to disk with the right sha256;
        progress only grows and ends at the total."""
        sa, sb = yield self.direct_pair()
        size = 50 * MiB
        source = os.path.join(self.directory, "big.bin")
        expected = random_file(source, size)
        progress = []
        out = sa.send_message(source, "application/octet-stream", success_report=True,
                              chunk_size=64 * 1024, progress=lambda done, total: progress.append((done, total)),
                              headers=[("Content-Disposition", 'attachment; filename="big.bin"')])
        result = yield out.result
        self.assertEqual((result.size, result.acknowledged, result.chunks), (size, size, 800))
        self.assertEqual(out.report.method, "REPORT")
        self.assertEqual(out.report.status.code, 200)

        got = yield sb.next_message()
        self.assertIsNone(got.data)
        self.assertEqual(os.path.dirname(got.path), self.spool)
        self.assertEqual(got.size, size)
        self.assertEqual(got.sha256, expected)
        self.assertEqual(file_sha256(got.path), expected)
        self.assertEqual(got.headers.get("Content-Disposition"), 'attachment; filename="big.bin"')
        done = [d for d, _ in progress]
        self.assertEqual(done, sorted(done))
        self.assertEqual(done[-1], size)
        self.assertEqual({t for _, t in progress}, {size})
        got.discard()
        self.assertEqual(os.listdir(self.spool), [])

    @inlineCallbacks
    def test_close_ends_receiving(self):
        """Closing a session fails a pending next_message() with
        SessionClosed and ends async iteration."""
        ep = yield self.endpoint()
        session = yield ep.create_session()
        waiting = session.next_message()

        async def drain():
            return [m async for m in session]

        drained = defer.ensureDeferred(drain())
        session.close()
        yield self.assertFailure(waiting, SessionClosed)
        self.assertEqual((yield drained), [])
        self.assertNotIn(session.session_id, ep.sessions)
        self.assertRaises(SessionClosed, session.send_message, "too late")

    @inlineCallbacks
    def test_unreachable_peer(self):
        """connect() to a port nobody listens on fails with an EndpointError
        naming the peer."""
        port = yield free_port()
        a = yield self.endpoint()
        sa = yield a.create_session()
        peer = "msrp://127.0.0.1:%d/nobody-here;tcp" % port
        e = yield self.assertFailure(sa.connect(peer), EndpointError)
        self.assertIn("cannot reach %s" % peer, str(e))
        self.assertIn("refused", str(e))

    @inlineCallbacks
    def test_bad_peer_path(self):
        a = yield self.endpoint()
        sa = yield a.create_session()
        e = yield self.assertFailure(sa.connect("msrp:/no-slashes"), EndpointError)
        self.assertIn("bad peer path", str(e))


class DirectTLSTests(EndpointTestCase):
    @inlineCallbacks
    def test_msrps_both_ways_on_one_connection(self):
        """A non-listening endpoint talking to an msrps peer names itself
        msrps, so the peer's answers go back on A's TLS connection."""
        pki = get_test_pki()
        b = yield self.endpoint("msrps:127.0.0.1:0", tls=TLSSettings(cert_file=pki.server.cert,
                                                                      key_file=pki.server.key),
                                settings=SLOW_HANDSHAKE)
        sb = yield b.create_session()
        a = yield self.endpoint(tls=TLSSettings(ca_file=pki.ca_bundle), settings=SLOW_HANDSHAKE)
        sa = yield a.create_session()
        yield sa.connect(sb.path_text)
        self.assertEqual(sa.local_uri.scheme, "msrps")
        yield sa.send_message("over TLS").result
        got = yield sb.next_message()
        self.assertEqual(got.data, b"over TLS")
        yield sb.send_message("and back").result
        got = yield sa.next_message()
        self.assertEqual(got.data, b"and back")
        self.assertEqual(b.connections.stats["connections_opened"], 0)
        self.assertEqual([c.scheme for c in a.connections.connections.values()], ["msrps"])


# -- through relays ---------------------------------------------------------------
class RelayTests(EndpointTestCase):
    @inlineCallbacks
    def test_text_and_file_through_relay(self):
        """Both ends AUTH at our relay; text both ways and a file with a
        success report go through it, paths as RFC 4976 draws them."""
        relay = yield self.start_relay()
        relay_uri = relay.relay.uris[0]
        a = yield self.endpoint()
        sa = yield a.create_session(relays=[(relay_uri, "alice", USERS["alice"])])
        b = yield self.endpoint()
        sb = yield b.create_session(relays=[(str(relay_uri), "bob", USERS["bob"])], spool_dir=self.spool)
        (u,), (v,) = sa.use_paths, sb.use_paths
        self.assertEqual(((u.host, u.port), (v.host, v.port)), (("127.0.0.1", relay_uri.port),) * 2)
        self.assertEqual(sa.path, [u, sa.local_uri])
        self.assertEqual(sorted(s["user"] for s in relay.relay.list_sessions()), ["alice", "bob"])

        yield sa.connect(sb.path_text)
        yield sa.send_message("through the relay").result
        got = yield sb.next_message()
        self.assertEqual(got.data, b"through the relay")
        self.assertEqual(got.request.from_path, (v, u, sa.local_uri))

        yield sb.send_message("and back").result
        got = yield sa.next_message()
        self.assertEqual(got.data, b"and back")
        self.assertEqual(got.request.from_path, (u, v, sb.local_uri))

        source = os.path.join(self.directory, "photo.jpg")
        expected = random_file(source, 3 * MiB + 17)
        out = sa.send_message(source, "image/jpeg", success_report=True, chunk_size=32 * 1024)
        result = yield out.result
        self.assertEqual(result.size, 3 * MiB + 17)
        self.assertEqual(out.report.status.code, 200)
        got = yield sb.next_message()
        self.assertEqual((got.content_type, got.size, got.sha256), ("image/jpeg", 3 * MiB + 17, expected))
        self.assertEqual(file_sha256(got.path), expected)

    @inlineCallbacks
    def test_wrong_password(self):
        """A refused AUTH fails create_session with AuthError and its code."""
        relay = yield self.start_relay()
        a = yield self.endpoint()
        e = yield self.assertFailure(
            a.create_session(relays=[(relay.relay.uris[0], "alice", "not-her-password")]), AuthError)
        self.assertEqual(e.code, 403)
        self.assertIn("refused AUTH of alice", str(e))
        self.assertEqual(a.sessions, {})
        self.assertEqual(relay.relay.list_sessions(), [])

    @inlineCallbacks
    def test_relay_unreachable(self):
        port = yield free_port()
        a = yield self.endpoint()
        relay = "msrp://127.0.0.1:%d" % port
        e = yield self.assertFailure(a.create_session(relays=[(relay, "alice", "x")]), EndpointError)
        self.assertNotIsInstance(e, AuthError)
        self.assertIn("cannot reach relay %s;tcp" % relay, str(e))
        self.assertIn("refused", str(e))


class RelayChainTests(EndpointTestCase):
    @inlineCallbacks
    def test_two_relays_over_msrps(self):
        """A authenticates at R1, then at R2 through R1; B at R2. Messages
        both ways over TLS, each side addressing the other by the path it
        advertises."""
        pki = get_test_pki()
        tls = dict(listen=["msrps:127.0.0.1:0"], tls_cert=pki.server.cert, tls_key=pki.server.key,
                   tls_ca=pki.ca_bundle, tls_handshake_timeout=10000)
        r1 = yield self.start_relay(**tls)
        r2 = yield self.start_relay(**tls)
        r1_uri, r2_uri = r1.relay.uris[0], r2.relay.uris[0]
        client_tls = TLSSettings(ca_file=pki.ca_bundle)
        a = yield self.endpoint(tls=client_tls, settings=SLOW_HANDSHAKE)
        b = yield self.endpoint(tls=client_tls, settings=SLOW_HANDSHAKE)
        sa = yield a.create_session(relays=[(r1_uri, "alice", USERS["alice"]), (r2_uri, "alice", USERS["alice"])])
        sb = yield b.create_session(relays=[(r2_uri, "bob", USERS["bob"])])
        u1, u2 = sa.use_paths
        (v2,) = sb.use_paths
        self.assertEqual((u1.port, u2.port, v2.port), (r1_uri.port, r2_uri.port, r2_uri.port))
        self.assertEqual((sa.local_uri.scheme, sb.local_uri.scheme), ("msrps", "msrps"))
        # Peers reach A through R2 first.
        self.assertEqual(sa.path, [u2, u1, sa.local_uri])

        yield sb.connect(sa.path_text)
        yield sb.send_message("from bob").result
        got = yield sa.next_message()
        self.assertEqual(got.data, b"from bob")
        self.assertEqual(got.request.from_path, (u1, u2, v2, sb.local_uri))

        yield sa.connect(sb.path_text, active=False)
        self.assertEqual(sa.to_path, [u1, u2, v2, sb.local_uri])
        yield sa.send_message("from alice").result
        got = yield sb.next_message()
        self.assertEqual(got.data, b"from alice")
        self.assertEqual(got.request.from_path, (v2, u2, u1, sa.local_uri))
        for ep in (a, b):
            self.assertEqual({c.scheme for c in ep.connections.connections.values()}, {"msrps"})


# -- failures of a send ------------------------------------------------------------
class CancelTests(EndpointTestCase):
    @inlineCallbacks
    def test_cancel_midway(self):
        """Cancelling halfway fails the result with SendCancelled; the
        receiver drops the partial message (no delivery, no reassembler,
        no spool file) and the session goes on."""
        collector = Collector()
        sa, sb = yield self.direct_pair(on_message=collector.on_message,
                                        on_message_failed=collector.on_message_failed)
        size = 8 * MiB
        out = sa.send_message(os.urandom(size), "application/octet-stream", chunk_size=32 * 1024,
                              progress=lambda done, total: done >= size // 2 and out.cancel())
        e = yield self.assertFailure(out.result, SendCancelled)
        self.assertTrue(size // 2 <= e.acknowledged < size, e.acknowledged)

        message_id, error = yield collector.failures.get()
        self.assertEqual(message_id, out.message_id)
        self.assertIsInstance(error, MessageAborted)
        self.assertEqual(collector.delivered, [])
        self.assertEqual(len(sb.receiver.incoming), 0)
        self.assertEqual(os.listdir(self.spool), [])

        yield sa.send_message("still here").result
        got = yield collector.messages.get()
        self.assertEqual(got.data, b"still here")


class TooLargeTests(EndpointTestCase):
    @inlineCallbacks
    def test_receiver_answers_413(self):
        """A receiver with a small max_size answers 413; the sender's result
        fails with an error carrying it."""
        collector = Collector()
        sa, sb = yield self.direct_pair(max_size=64 * 1024, on_message=collector.on_message,
                                        on_message_failed=collector.on_message_failed)
        out = sa.send_message(os.urandom(MiB), "application/octet-stream", chunk_size=16 * 1024)
        e = yield self.assertFailure(out.result, MessageSendError)
        self.assertEqual(e.code, 413)
        self.assertEqual(e.acknowledged, 0)
        message_id, error = yield collector.failures.get()
        self.assertEqual(message_id, out.message_id)
        self.assertIsInstance(error, MessageTooLarge)
        self.assertEqual(collector.delivered, [])

        yield sa.send_message("small is fine").result
        got = yield collector.messages.get()
        self.assertEqual(got.data, b"small is fine")


# -- keep-alive ---------------------------------------------------------------------
@implementer(IRequestHandler)
class CountingPeer:
    """A bare transaction layer that answers every SEND 200 and queues it."""

    def __init__(self):
        self.connections = ConnectionManager()
        self.transactions = TransactionManager(self.connections)
        self.transactions.add_handler(self)
        self.received = DeferredQueue()
        self.count = 0
        self.uri = None

    @inlineCallbacks
    def listen(self):
        port = yield self.connections.listen("msrp:127.0.0.1:0")
        self.uri = parse_uri("msrp://127.0.0.1:%d/counting-peer;tcp" % port.getHost().port)

    def head_received(self, conn, request):
        return None

    def request_received(self, conn, request):
        self.count += 1
        self.respond(conn, request)
        self.received.put(request)

    def respond(self, conn, request):
        self.transactions.send_reply(conn, request, 200)

    def report(self, conn, request, code):
        self.transactions.send_report(request, code, conn=conn).addErrback(lambda f: None)

    @inlineCallbacks
    def close(self):
        yield self.connections.stop_listening()
        yield close_connections(self.connections)


class KeepAliveTests(EndpointTestCase):
    @inlineCallbacks
    def test_empty_send_every_interval(self):
        """An empty SEND goes out at each interval, never in between, and
        none after stop_keepalive()."""
        peer = CountingPeer()
        yield peer.listen()
        self.addCleanup(peer.close)
        a = yield self.endpoint()
        sa = yield a.create_session()
        yield sa.connect([peer.uri])
        opening = yield peer.received.get()
        self.assertEqual(opening.body, None)

        clock = task.Clock()
        sa.start_keepalive(15, clock=clock)
        sent = a.transactions.stats["requests_sent"]
        for n in range(1, 4):
            clock.advance(14.9)
            self.assertEqual(a.transactions.stats["requests_sent"], sent + n - 1)
            clock.advance(0.1)
            self.assertEqual(a.transactions.stats["requests_sent"], sent + n)
            ping = yield peer.received.get()
            self.assertEqual(ping.method, "SEND")
            self.assertIn(ping.body, (None, b""))
            self.assertIsNotNone(ping.message_id)
            self.assertEqual((ping.to_path, ping.from_path), ((peer.uri,), (sa.local_uri,)))
        sa.stop_keepalive()
        clock.advance(60)
        self.assertEqual(a.transactions.stats["requests_sent"], sent + 3)
        self.assertEqual(peer.count, 4)

    @inlineCallbacks
    def test_close_stops_keepalive(self):
        peer = CountingPeer()
        yield peer.listen()
        self.addCleanup(peer.close)
        a = yield self.endpoint()
        sa = yield a.create_session()
        yield sa.connect([peer.uri])
        clock = task.Clock()
        sa.start_keepalive(5, clock=clock)
        sent = a.transactions.stats["requests_sent"]
        sa.close()
        clock.advance(30)
        self.assertEqual(a.transactions.stats["requests_sent"], sent)
        self.assertEqual(clock.getDelayedCalls(), [])


class ReportTests(EndpointTestCase):
    @inlineCallbacks
    def peer_session(self):
        peer = CountingPeer()
        yield peer.listen()
        self.addCleanup(peer.close)
        a = yield self.endpoint()
        sa = yield a.create_session()
        yield sa.connect([peer.uri])
        yield peer.received.get()
        return peer, sa

    @inlineCallbacks
    def test_success_report_before_the_last_200(self):
        """A success REPORT that overtakes the last 200 (as it may through
        relays) still resolves the result with the SendResult."""
        peer, sa = yield self.peer_session()

        def report_then_answer(conn, request):
            peer.report(conn, request, 200)
            peer.transactions.send_reply(conn, request, 200)

        peer.respond = report_then_answer
        out = sa.send_message(b"x" * 5000, "application/octet-stream", success_report=True, chunk_size=5000)
        result = yield out.result
        self.assertEqual((result.message_id, result.size, result.acknowledged), (out.message_id, 5000, 5000))
        self.assertEqual(out.report.status.code, 200)

    @inlineCallbacks
    def test_failure_report_midway_is_delivery_failed(self):
        """A failure REPORT while chunks are still going fails the result
        with DeliveryFailed and its code (not as a cancel) and stops the
        send with a '#' chunk."""
        peer, sa = yield self.peer_session()

        def refuse_after_first_chunk(conn, request):
            peer.transactions.send_reply(conn, request, 200)
            if request.byte_range.start == 1:
                peer.report(conn, request, 415)

        peer.respond = refuse_after_first_chunk
        out = sa.send_message(b"y" * 3000, "application/x-unwanted", chunk_size=1000, window=1)
        e = yield self.assertFailure(out.result, DeliveryFailed)
        self.assertEqual(e.code, 415)
        self.assertEqual(out.report.status.code, 415)
        # Chunk 2 left on chunk 1's 200, before the REPORT was read; chunk 3
        # never did: the '#' chunk says the message ends after byte 2000.
        frames = yield defer.gatherResults([peer.received.get() for _ in range(3)])
        self.assertEqual([(f.headers["Byte-Range"], f.flag) for f in frames],
                         [("1-1000/3000", "+"), ("1001-2000/3000", "+"), ("2001-2000/3000", "#")])


# -- what real clients send -------------------------------------------------------
class RawClient(protocol.Protocol):
    """Writes hand-made frames; queues what comes back, parsed."""

    def __init__(self):
        self.parser = Parser()
        self.frames = DeferredQueue()
        self.closed = Deferred()
        self._current = None
        self._parts = []

    def connectionLost(self, reason):
        self.closed.callback(None)

    def close(self):
        self.transport.loseConnection()
        return self.closed

    def dataReceived(self, data):
        for event in self.parser.feed(data):
            if isinstance(event, MessageStart):
                self._current, self._parts = event.message, []
            elif isinstance(event, BodyData):
                self._parts.append(event.data)
            elif isinstance(event, MessageEnd):
                message, self._current = self._current, None
                if message.has_body:
                    message.body = b"".join(self._parts)
                self.frames.put(message)

    @inlineCallbacks
    def next_frames(self, n):
        frames = []
        for _ in range(n):
            frames.append((yield self.frames.get()))
        return frames


CLIENT = "msrp://client.invalid:2855/raw-client;tcp"


def send_frame(tid, to, headers, body=None, flag="$"):
    """A SEND as a client would write it, headers in the given order."""
    lines = ["MSRP %s SEND" % tid, "To-Path: %s" % to, "From-Path: %s" % CLIENT]
    lines += ["%s: %s" % item for item in headers]
    head = ("\r\n".join(lines) + "\r\n").encode("ascii")
    if body is not None:
        head += b"\r\n" + body + b"\r\n"
    return head + ("-------%s%s\r\n" % (tid, flag)).encode("ascii")


class RealClientTests(EndpointTestCase):
    @inlineCallbacks
    def listening_session(self):
        collector = Collector()
        b = yield self.endpoint("msrp:127.0.0.1:0")
        sb = yield b.create_session(on_message=collector.on_message)
        client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", b.port), RawClient())
        self.addCleanup(client.close)
        return sb, client, collector

    @inlineCallbacks
    def test_open_ended_range_mime_headers_and_cpim(self):
        """Byte-Range 1-*/N, Content-ID and Content-Description, and a
        message/cpim body delivered byte for byte; the success REPORT comes
        back on the client's connection."""
        sb, client, collector = yield self.listening_session()
        cpim = (b"From: <sip:alice@example.com>\r\nTo: <sip:bob@example.com>\r\n"
                b"DateTime: 2024-05-01T10:00:00Z\r\nNS: imdn <urn:ietf:params:imdn>\r\n\r\n"
                b"Content-Type: text/plain;charset=utf-8\r\nContent-Length: 12\r\n\r\n"
                b"hello, CPIM\n")
        client.transport.write(send_frame("tx1abc", sb.path_text, [
            ("Message-ID", "cpim-1"), ("Success-Report", "yes"), ("Byte-Range", "1-*/%d" % len(cpim)),
            ("Content-ID", "<part1@client.invalid>"), ("Content-Description", "a greeting"),
            ("Content-Type", "message/cpim")], cpim))
        response, report = yield client.next_frames(2)
        self.assertEqual((response.tid, response.code), ("tx1abc", 200))
        self.assertEqual(response.to_path, (parse_uri(CLIENT),))
        self.assertEqual((report.method, report.message_id, report.status.code),
                         ("REPORT", "cpim-1", 200))
        self.assertEqual(report.headers["Byte-Range"], "1-%d/%d" % (len(cpim), len(cpim)))

        got = yield collector.messages.get()
        self.assertEqual(got.content_type, "message/cpim")
        self.assertEqual(got.data, cpim)
        self.assertEqual(got.headers["Content-ID"], "<part1@client.invalid>")
        self.assertEqual(got.headers["Content-Description"], "a greeting")
        self.assertEqual(got.request.from_path, (parse_uri(CLIENT),))

    @inlineCallbacks
    def test_chunks_in_any_order(self):
        """Chunks arriving middle, last, first (the last of them with '+')
        make one message; an interrupted 1-*/N chunk is completed by the
        next."""
        sb, client, collector = yield self.listening_session()
        body = b"0123456789abcdefghijKLMNOPQRST"
        chunks = [("t-mid1", "11-20/30", body[10:20], "+"), ("t-last", "21-30/30", body[20:], "$"),
                  ("t-first", "1-10/30", body[:10], "+")]
        for tid, byte_range, data, flag in chunks:
            client.transport.write(send_frame(tid, sb.path_text, [
                ("Message-ID", "any-order"), ("Byte-Range", byte_range), ("Content-Type", "text/plain")],
                data, flag))
        responses = yield client.next_frames(3)
        self.assertEqual([(r.tid, r.code) for r in responses], [("t-mid1", 200), ("t-last", 200), ("t-first", 200)])
        got = yield collector.messages.get()
        self.assertEqual((got.message_id, got.data), ("any-order", body))

        for tid, byte_range, data, flag in [("t-open", "1-*/30", body[:12], "+"),
                                            ("t-rest", "13-30/30", body[12:], "$")]:
            client.transport.write(send_frame(tid, sb.path_text, [
                ("Message-ID", "interrupted"), ("Byte-Range", byte_range), ("Content-Type", "text/plain")],
                data, flag))
        responses = yield client.next_frames(2)
        self.assertEqual([r.code for r in responses], [200, 200])
        got = yield collector.messages.get()
        self.assertEqual((got.message_id, got.data), ("interrupted", body))
        self.assertEqual(len(collector.delivered), 2)
        self.assertEqual(len(sb.receiver.incoming), 0)
