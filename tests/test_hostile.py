"""Hostile clients against a running relay on loopback (issue 9).

Each test starts an MSRPService on 127.0.0.1 with small limits and
timeouts, authenticates a legitimate pair (alice and bob, from 127.0.0.1)
and attacks it from 127.0.0.2 (another loopback address, so per-address
limits can be seen to hit the attacker only). Every attack must get its
documented answer: a status code on the wire, or the connection closed with
a log line naming the attacker's address and port and the reason. Then
``recovered()`` checks that alice and bob still exchange messages, that a
new client can still authenticate, that the relay is back to its baseline
(connections, sessions, pending transactions) and that nothing in the log
is a traceback.

Time never passes by sleeping: a test waits on responses, on connections
being lost, on log lines and on the relay's own connection events; where a
timeout has to fire it is configured small and the test waits for what the
timeout does. ProcessMemoryTests run attacks against a `twistd -n msrp`
child process, to see its resident memory go back to where it was.
"""

import hashlib
import re
import shutil
import socket
import tempfile

from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred, DeferredQueue, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols import amp
from twisted.trial.unittest import TestCase

from msrp_twisted import mi
from msrp_twisted.config import MSRPConfig
from msrp_twisted.core import digest
from msrp_twisted.core.errors import FramingError
from msrp_twisted.core.headers import Headers
from msrp_twisted.core.ids import new_message_id, new_session_id, new_transaction_id
from msrp_twisted.core.message import Request
from msrp_twisted.core.parser import BodyData, InvalidMessage, MessageEnd, MessageStart, Parser
from msrp_twisted.core.serializer import serialize
from msrp_twisted.core.uri import MSRPURI, format_path, parse_uri
from msrp_twisted.service import MSRPService
from msrp_twisted.tls import TLSVersion
from tests.certs import get_test_pki
from tests.relay_helpers import Peer, TwistdProcess, write_users

USERS = {"alice": "wonderland", "bob": "builder", "carol": "singer", "mallory": "evil"}
ATTACKER = "127.0.0.2"
KIB = 1024
MIB = 1024 * 1024

# The relay's settings in these tests: small enough that every limit and
# timeout is reached quickly.
RELAY_OPTIONS = {
    "msg_read_timeout": 0.3,
    "idle_timeout": 1.0,  # the smallest the option allows
    "max_chunk_size": 64 * KIB,
    "max_msg_chunks": 4,
    "auth_max_failures": 3,
    "auth_failure_window": 60.0,
    "auth_block_time": 300.0,
    "max_connections_per_ip": 4,
    "max_sessions_per_user": 3,
    "transaction_timeout": 5.0,
}


# -- log and state watching ---------------------------------------------------


class LogWatcher:
    """Every log event of the process as text; waits for a line to appear."""

    def __init__(self):
        self.lines = []
        self._watches = []

    def __call__(self, event):
        text = formatEvent(event) or ""
        failure = event.get("log_failure")
        if failure is not None:
            text += "\n" + failure.getTraceback()
        self.lines.append(text)
        for watch in list(self._watches):
            m = watch[0].search(text)
            if m:
                self._watches.remove(watch)
                watch[1].callback(m)

    def wait_for(self, pattern, since=0):
        regex = re.compile(pattern)
        for line in self.lines[since:]:
            m = regex.search(line)
            if m:
                return defer.succeed(m)
        d = Deferred()
        self._watches.append((regex, d))
        return d

    def text(self):
        return "\n".join(self.lines)


def assert_no_tracebacks(test, text):
    for marker in ("Traceback", "Unhandled"):
        test.assertNotIn(marker, text, "the relay logged a %s:\n%s" % (marker, text[-3000:]))


def assert_no_secrets(test, text):
    """No password and no HA1 of any user in the log."""
    for user, password in USERS.items():
        test.assertNotIn(digest.compute_ha1(user, "msrp", password), text, "HA1 of %s logged" % user)
        if len(password) > 5:  # short ones occur in ordinary words
            test.assertNotIn(password, text, "password of %s logged" % user)


class StateWatcher:
    """Fires waits on the relay's state when it could have changed: after
    each connection event and after each lost connection has been seen by
    every upper layer (registered after the relay, so it hears last)."""

    def __init__(self, service):
        self.service = service
        self._waits = []
        self.accepted = {}  # remote port -> server-side connection
        self._accept_waits = {}
        service.connections.observers.append(self)
        service.transactions.add_handler(self, match=lambda uri: False)

    def head_received(self, conn, request):
        raise AssertionError("routes no requests")

    request_received = head_received

    def connection_event(self, conn, event, success, message):
        if event == "ACCEPTED":
            self.accepted[conn.remote_port] = conn
            d = self._accept_waits.pop(conn.remote_port, None)
            if d is not None:
                d.callback(conn)
        self._check()

    def connection_lost(self, conn, reason):
        self._check()

    def _check(self):
        for wait in list(self._waits):
            if wait[0]():
                self._waits.remove(wait)
                wait[1].callback(None)

    def wait(self, predicate):
        if predicate():
            return defer.succeed(None)
        d = Deferred()
        self._waits.append((predicate, d))
        return d

    def server_side(self, port):
        """The relay's connection for a client's local port, once accepted."""
        conn = self.accepted.get(port)
        if conn is not None:
            return defer.succeed(conn)
        return self._accept_waits.setdefault(port, Deferred())


# -- a raw client -------------------------------------------------------------


class RawClient(Protocol):
    """A client that writes whatever bytes it is given and parses what comes
    back: responses complete the request with their tid, everything else is
    queued in ``incoming``."""

    def __init__(self):
        self.parser = Parser(max_body=0)
        self.incoming = DeferredQueue()
        self.responses = []
        self.pending = {}
        self.lost = Deferred()
        self.closed = False
        self.framing_error = None
        self._current = None
        self._parts = []
        self.uri = MSRPURI("attacker.invalid", 2855, new_session_id())

    def connectionMade(self):
        host = self.transport.getHost()
        self.port = host.port
        self.local = "%s:%d" % (host.host, host.port)

    def connectionLost(self, reason):
        self.closed = True
        pending, self.pending = self.pending, {}
        for d in pending.values():
            d.errback(reason)
        self.lost.callback(None)

    def dataReceived(self, data):
        try:
            events = self.parser.feed(data)
        except FramingError as e:
            self.framing_error = e
            self.transport.abortConnection()
            return
        for ev in events:
            if isinstance(ev, MessageStart):
                self._current, self._parts = ev.message, []
            elif isinstance(ev, BodyData):
                self._parts.append(ev.data)
            elif isinstance(ev, MessageEnd):
                msg, self._current = self._current, None
                if msg.has_body:
                    msg.body = b"".join(self._parts)
                msg.flag = ev.flag
                if not msg.is_request:
                    self.responses.append(msg)
                    d = self.pending.pop(msg.tid, None)
                    if d is not None:
                        d.callback(msg)
                        continue
                self.incoming.put(msg)
            elif isinstance(ev, InvalidMessage):
                self.incoming.put(ev)

    def write(self, data):
        self.transport.write(data)

    def expect(self, tid):
        """A Deferred for the response to tid."""
        return self.pending.setdefault(tid, Deferred())

    def frame(self, method, to_path, headers=(), body=None, flag="$", tid=None, from_path=None):
        tid = tid or new_transaction_id()
        items = [("To-Path", format_path(to_path)),
                 ("From-Path", format_path(from_path or [self.uri]))]
        items.extend(headers)
        return tid, serialize(Request(tid, method, Headers(items), body, flag))

    def request(self, method, to_path, headers=(), body=None, **kw):
        tid, data = self.frame(method, to_path, headers, body, **kw)
        d = self.expect(tid)
        self.write(data)
        return d

    def send(self, to_path, body=b"hi", headers=(), **kw):
        items = [("Message-ID", new_message_id()),
                 ("Byte-Range", "1-%d/%d" % (len(body), len(body)))]
        items.extend(headers)
        if body:
            items.append(("Content-Type", "text/plain"))
        return self.request("SEND", to_path, items, body or None, **kw)

    @inlineCallbacks
    def auth(self, relay_uri, user, password, nc=1):
        challenge = yield self.request("AUTH", [relay_uri])
        creds = digest.make_authorization(challenge.www_authenticate, user, password, "AUTH",
                                          str(relay_uri), nc=nc)
        response = yield self.request("AUTH", [relay_uri],
                                      [("Authorization", digest.format_credentials(creds))])
        return response


def connect_raw(port, source=ATTACKER, host="127.0.0.1"):
    endpoint = TCP4ClientEndpoint(reactor, host, port, bindAddress=(source, 0))
    return connectProtocol(endpoint, RawClient())


# -- the fixture --------------------------------------------------------------


class RelayFixture:
    """A relay, a legitimate pair on it, and the checks after an attack."""

    relay_options = RELAY_OPTIONS

    def make_fixture(self):
        self.directory = tempfile.mkdtemp(prefix="msrp-hostile-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.users_file = write_users(self.directory, USERS)
        self.log = LogWatcher()
        globalLogPublisher.addObserver(self.log)
        self.addCleanup(globalLogPublisher.removeObserver, self.log)
        self.peers = []
        self.raw = []
        self.service = None

    @inlineCallbacks
    def start_relay(self, **options):
        settings = {"listen": ["msrp:127.0.0.1:0"], "users": self.users_file, "mi": "none"}
        settings.update(self.relay_options)
        settings.update(options)
        service = MSRPService(MSRPConfig.from_mapping(settings))
        yield service.start()
        self.service = service
        self.state = StateWatcher(service)
        self.addCleanup(self._stop_relay, service, self.state)
        self.relay_uri = service.relay.uris[0]
        self.port = self.relay_uri.port
        # A session nobody has: requests to it get 481 (a barrier, since
        # responses on a connection come back in order).
        self.nowhere = [self.relay_uri.with_session(new_session_id()), MSRPURI("x.invalid", 2855, "s")]
        return service

    @inlineCallbacks
    def _stop_relay(self, service, state):
        for client in self.raw:
            if not client.closed:
                client.transport.abortConnection()
        yield defer.gatherResults([c.lost for c in self.raw])
        yield defer.gatherResults([p.close() for p in self.peers])
        yield state.wait(lambda: not service.connections.connections)
        yield service.stopService()

    def peer(self, name, **kw):
        p = Peer(name, **kw)
        self.peers.append(p)
        return p

    @inlineCallbacks
    def legit_pair(self):
        """alice and bob authenticated; the relay's state as the baseline."""
        self.alice = self.peer("alice")
        self.bob = self.peer("bob")
        self.ua = (yield self.alice.auth(self.relay_uri, "alice", USERS["alice"])).use_path[0]
        self.ub = (yield self.bob.auth(self.relay_uri, "bob", USERS["bob"])).use_path[0]
        self.to_bob = [self.ua, self.ub, self.bob.uri]
        self.to_alice = [self.ub, self.ua, self.alice.uri]
        self.baseline = self.service.statistics()

    @inlineCallbacks
    def connect(self, source=ATTACKER):
        client = yield connect_raw(self.port, source)
        self.raw.append(client)
        return client

    @inlineCallbacks
    def closed_by_relay(self, client, reason_pattern, event=None):
        """The relay closed client's connection, logging client's address
        and port with the reason."""
        line = yield self.log.wait_for(r"MSRP msrp connection %s closed: (%s)"
                                       % (re.escape(client.local), reason_pattern))
        yield client.lost
        return line.group(1)

    def settled(self):
        base = self.baseline
        service = self.service

        def at_baseline():
            return (len(service.connections.connections) == base["connections_open"]
                    and len(service.relay.sessions) == base["relay_sessions"])

        return self.state.wait(at_baseline)

    @inlineCallbacks
    def exchange(self, a, to_b, b, body):
        """a sends body to b; bob's answer goes back after it (in order)."""
        response = yield a.send(to_b, body)
        self.assertEqual(response.code, 200)
        yield self.expect_body(b, body)

    @inlineCallbacks
    def expect_body(self, peer, body):
        """The next thing peer receives is a SEND of body."""
        got = yield peer.received.get()
        self.assertEqual(got.request.method, "SEND")
        if got.sha256 is not None:  # a peer that hashes bodies as they stream in
            self.assertEqual((got.length, got.sha256), (len(body), hashlib.sha256(body).hexdigest()))
        else:
            self.assertEqual(got.body, body)

    @inlineCallbacks
    def recovered(self):
        """After an attack: legitimate traffic flows, a new client gets in,
        and the relay's state and log are clean."""
        yield self.settled()
        yield self.exchange(self.alice, self.to_bob, self.bob, b"still here, bob?")
        yield self.exchange(self.bob, self.to_alice, self.alice, b"yes, alice")
        carol = self.peer("carol")
        uc = (yield carol.auth(self.relay_uri, "carol", USERS["carol"])).use_path[0]
        yield self.exchange(carol, [uc, self.ua, self.alice.uri], self.alice, b"hello from carol")
        # A last SEND that opens no transaction: once bob has it, the relay
        # has taken alice's answer to carol's (it came first on her connection).
        yield self.alice.send(self.to_bob, b"over", headers=[("Failure-Report", "no")])
        yield self.expect_body(self.bob, b"over")
        yield carol.close()
        yield self.settled()
        stats = self.service.statistics()
        self.assertEqual(stats["transactions_pending"], 0)
        self.assertEqual(stats["connections_open"], self.baseline["connections_open"])
        self.assertEqual(stats["relay_sessions"], self.baseline["relay_sessions"])
        self.assertEqual(len(self.alice.received.pending) + len(self.bob.received.pending), 0)
        assert_no_tracebacks(self, self.log.text())
        assert_no_secrets(self, self.log.text())
        return stats


class HostileTestCase(RelayFixture, TestCase):
    timeout = 20

    @inlineCallbacks
    def setUp(self):
        self.make_fixture()
        yield self.start_relay()
        yield self.legit_pair()


# -- malformed framing ----------------------------------------------------------


class FramingAttackTests(HostileTestCase):
    @inlineCallbacks
    def test_garbage_bytes(self):
        client = yield self.connect()
        client.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)))
        reason = yield self.closed_by_relay(client, r"framing error: stream does not start with 'MSRP '.*")
        self.assertIn(r"\x16\x03", reason)
        self.assertEqual(client.responses, [])
        yield self.recovered()

    @inlineCallbacks
    def test_garbage_after_a_valid_frame(self):
        """What was valid before the garbage is handled (here refused 481);
        then the connection is reset at once: a response still in the
        relay's buffer is dropped with it."""
        client = yield self.connect()
        tid, data = client.frame("SEND", self.nowhere, [
            ("Message-ID", "m1"), ("Byte-Range", "1-1/1"), ("Content-Type", "text/plain")], b"x")
        client.write(data + b"GET / HTTP/1.1\r\nHost: relay\r\n\r\n")
        yield self.log.wait_for(r"relay refused SEND %s from %s: 481" % (tid, re.escape(client.local)))
        yield self.closed_by_relay(client, r"framing error: stream does not start with 'MSRP '.*GET")
        yield self.recovered()

    @inlineCallbacks
    def test_oversized_start_line(self):
        client = yield self.connect()
        client.write(b"MSRP abcd1234 SEND " + b"x" * 5000)
        yield self.closed_by_relay(client, r"framing error: start line exceeds 4096 bytes")
        yield self.recovered()

    @inlineCallbacks
    def test_invalid_start_line(self):
        client = yield self.connect()
        client.write(b"MSRP a SEND\r\n\r\n")  # a transaction id needs 4 characters
        yield self.closed_by_relay(client, r"framing error: invalid start line .*")
        yield self.recovered()

    @inlineCallbacks
    def test_oversized_header_block(self):
        """A header block past 64 KiB, even in large reads, closes the connection."""
        client = yield self.connect()
        tid, head = client.frame("SEND", [self.ub, self.bob.uri], [("Message-ID", "m")])
        head = head[:head.index(b"-------")]  # start line, To-Path, From-Path, Message-ID
        client.write(head + b"X-Padding: " + b"p" * (70 * KIB) + b"\r\n\r\nbody")
        yield self.closed_by_relay(client, r"framing error: header block exceeds 65536 bytes")
        self.assertEqual(client.responses, [])
        yield self.recovered()

    @inlineCallbacks
    def test_never_ending_header_block(self):
        """Header lines that never end in a blank line: once 64 KiB have come
        the connection is closed, however the lines are cut."""
        client = yield self.connect()
        client.write(b"MSRP abcd1234 SEND\r\nTo-Path: %s\r\nFrom-Path: %s\r\n"
                     % (str(self.ub).encode(), str(client.uri).encode()))
        for i in range(2000):
            client.write(b"X-Header-%d: %s\r\n" % (i, b"v" * 40))
        yield self.closed_by_relay(client, r"framing error: header block exceeds 65536 bytes")
        yield self.recovered()

    @inlineCallbacks
    def test_thousands_of_headers(self):
        """5000 extension headers within the 64 KiB block are parsed (in
        linear time) and the request is judged on its merits: 481."""
        client = yield self.connect()
        headers = [("Message-ID", "m"), ("Byte-Range", "1-1/1")]
        headers += [("X-%d" % i, "v") for i in range(5000)]
        headers.append(("Content-Type", "text/plain"))
        bogus = self.relay_uri.with_session(new_session_id())
        response = yield client.request("SEND", [bogus, self.bob.uri], headers, b"x")
        self.assertEqual(response.code, 481)
        # Thousands of copies of a header that may appear once: 400.
        answered = client.expect("dup12345")
        client.write(b"MSRP dup12345 SEND\r\nTo-Path: %s\r\nFrom-Path: %s\r\nMessage-ID: m\r\n%s"
                     b"Content-Type: text/plain\r\n\r\nx\r\n-------dup12345$\r\n"
                     % (str(bogus).encode(), str(client.uri).encode(), b"Byte-Range: 1-1/1\r\n" * 3000))
        response = yield answered
        self.assertEqual(response.code, 400)
        self.assertIn("duplicate Byte-Range", response.comment)
        client.transport.loseConnection()
        yield client.lost
        yield self.recovered()

    @inlineCallbacks
    def test_oversized_body_unauthenticated(self):
        """The head is refused at once (481); the body is discarded as it
        comes, and past max_chunk_size the connection is closed."""
        client = yield self.connect()
        bogus = self.relay_uri.with_session(new_session_id())
        tid, data = client.frame("SEND", [bogus, self.bob.uri], [
            ("Message-ID", "m"), ("Byte-Range", "1-*/*"), ("Content-Type", "text/plain")],
            b"b" * 4, flag="+")
        # The head and a first bit of body (until a byte after the blank
        # line has come the parser cannot tell an empty body from a body).
        head = data[:data.index(b"\r\n\r\n") + 8]
        answered = client.expect(tid)
        client.write(head)
        self.assertEqual((yield answered).code, 481)
        for _ in range(5):
            client.write(b"z" * (16 * KIB))
        yield self.closed_by_relay(client, r"framing error: body exceeds 65536 bytes")
        yield self.recovered()

    @inlineCallbacks
    def test_oversized_body_relayed(self):
        """An authenticated sender's chunk streams through toward bob until
        it passes max_chunk_size; then the sender is cut off and bob gets
        the chunk ended with '#' (abandoned), never a truncated '$'."""
        mallory = yield self.connect()
        um = (yield mallory.auth(self.relay_uri, "mallory", USERS["mallory"])).use_path[0]
        tid, data = mallory.frame("SEND", [um, self.ub, self.bob.uri], [
            ("Message-ID", "big"), ("Byte-Range", "1-*/*"), ("Content-Type", "text/plain")],
            b"b", flag="+", from_path=[mallory.uri])
        mallory.write(data[:data.index(b"\r\n\r\n") + 4])
        for _ in range(6):
            mallory.write(b"z" * (16 * KIB))
        yield self.closed_by_relay(mallory, r"framing error: body exceeds 65536 bytes")
        got = yield self.bob.received.get()
        self.assertEqual((got.request.message_id, got.request.flag), ("big", "#"))
        self.assertLessEqual(len(got.body), 64 * KIB)
        yield self.recovered()


class EncodingAttackTests(HostileTestCase):
    @inlineCallbacks
    def test_invalid_utf8_in_a_header(self):
        """A request whose headers are not UTF-8 is invalid. Its To-Path and
        From-Path are readable, so it is answered 400 on them, and the
        connection goes on."""
        client = yield self.connect()
        refused = client.expect("bad1utf8")
        client.write(b"MSRP bad1utf8 SEND\r\nTo-Path: %s\r\nFrom-Path: %s\r\nMessage-ID: \xff\xfe\r\n"
                     b"-------bad1utf8$\r\n" % (str(self.ub).encode(), str(client.uri).encode()))
        response = yield refused
        self.assertEqual(response.code, 400)
        self.assertIn("not valid UTF-8", response.comment)
        self.assertEqual(response.headers["To-Path"], str(client.uri))
        yield self.log.wait_for(r"invalid MSRP message from %s \(tid bad1utf8\): header block is not valid UTF-8"
                                % re.escape(client.local))
        # The connection still works: the next request is answered.
        response = yield client.send(self.nowhere)
        self.assertEqual(response.code, 481)
        self.assertEqual([r.tid for r in client.responses], ["bad1utf8", response.tid])
        client.transport.loseConnection()
        yield self.recovered()

    @inlineCallbacks
    def test_invalid_utf8_in_a_path(self):
        """Invalid UTF-8 in the To-Path: no path to answer on, so it is
        logged and left unanswered, and the connection goes on."""
        client = yield self.connect()
        client.write(b"MSRP bad2utf8 SEND\r\nTo-Path: msrp://\xc3\x28.invalid:2855/s;tcp\r\n"
                     b"From-Path: %s\r\nMessage-ID: m\r\n-------bad2utf8$\r\n" % str(client.uri).encode())
        yield self.log.wait_for(r"invalid MSRP message from %s \(tid bad2utf8\)" % re.escape(client.local))
        yield self.log.wait_for(r"cannot answer invalid request from %s \(tid bad2utf8\)" % re.escape(client.local))
        response = yield client.send(self.nowhere)
        self.assertEqual(response.code, 481)
        self.assertEqual([r.tid for r in client.responses], [response.tid])
        client.transport.loseConnection()
        yield self.recovered()

    @inlineCallbacks
    def test_invalid_utf8_in_a_response_comment(self):
        client = yield self.connect()
        client.write(b"MSRP bad3utf8 200 \xff\xfe\xfd\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------bad3utf8$\r\n"
                     % (str(self.relay_uri).encode(), str(client.uri).encode()))
        yield self.log.wait_for(r"invalid MSRP message from %s \(tid bad3utf8\): response comment is not valid UTF-8"
                                % re.escape(client.local))
        response = yield client.send(self.nowhere)
        self.assertEqual(response.code, 481)
        self.assertEqual(len(client.responses), 1)
        client.transport.loseConnection()
        yield self.recovered()

    @inlineCallbacks
    def test_bad_paths_get_400(self):
        client = yield self.connect()
        for to_path in (b"not-a-uri", b"msrp://relay.invalid:99999/x;tcp", b"msrp://[::1/x;tcp"):
            tid = new_transaction_id().encode()
            answered = client.expect(tid.decode())
            client.write(b"MSRP %s SEND\r\nTo-Path: %s\r\nFrom-Path: %s\r\nMessage-ID: m\r\n-------%s$\r\n"
                         % (tid, to_path, str(client.uri).encode(), tid))
            response = yield answered
            self.assertEqual(response.code, 400, to_path)
        client.transport.loseConnection()
        yield self.recovered()


class TransactionAttackTests(HostileTestCase):
    @inlineCallbacks
    def test_end_line_with_another_transaction_id(self):
        """An end-line naming another transaction is body data: the frame
        never ends, so the relay closes the connection when the body makes
        no progress (msg_read_timeout)."""
        client = yield self.connect()
        bogus = self.relay_uri.with_session(new_session_id())
        tid, data = client.frame("SEND", [bogus, self.bob.uri], [
            ("Message-ID", "m"), ("Content-Type", "text/plain")], b"hello", tid="realtid1")
        answered = client.expect(tid)
        client.write(data.replace(b"-------realtid1$", b"-------faketid2$"))
        self.assertEqual((yield answered).code, 481)  # the head was answered
        yield self.closed_by_relay(client, r"body made no progress within 0.3s \(msg_read_timeout\)")
        yield self.recovered()

    @inlineCallbacks
    def test_end_line_spoofed_inside_a_body(self):
        """A body carrying end-lines and whole frames of other transactions
        reaches bob as one message, byte for byte; nothing in it is taken
        for a request by the relay."""
        mallory = yield self.connect()
        um = (yield mallory.auth(self.relay_uri, "mallory", USERS["mallory"])).use_path[0]
        smuggled = serialize(Request("smuggled1", "SEND", Headers([
            ("To-Path", format_path([self.ua, self.alice.uri])),
            ("From-Path", format_path([self.ub, self.bob.uri])),
            ("Message-ID", "evil"), ("Byte-Range", "1-4/4"), ("Content-Type", "text/plain")]), b"evil"))
        body = b"innocent\r\n-------othertid$\r\n" + smuggled + b"\r\n-------smuggled1#\r\ntail"
        relayed = self.service.relay.stats["frames_relayed"]
        response = yield mallory.send([um, self.ub, self.bob.uri], body)
        self.assertEqual(response.code, 200)
        got = yield self.bob.received.get()
        self.assertEqual(got.body, body)
        self.assertEqual(self.service.relay.stats["frames_relayed"], relayed + 1)
        self.assertEqual(len(self.alice.received.pending), 0)
        mallory.transport.loseConnection()
        yield self.recovered()

    @inlineCallbacks
    def test_own_end_line_inside_a_body_ends_the_frame(self):
        """A sender that writes its own end-line early just sends two
        frames; the second is judged like any other (a session of someone
        else: 403), so framing tricks never bypass the session checks."""
        mallory = yield self.connect()
        um = (yield mallory.auth(self.relay_uri, "mallory", USERS["mallory"])).use_path[0]
        tid, second = mallory.frame("SEND", [self.ua, self.ub, self.bob.uri], [
            ("Message-ID", "x2"), ("Byte-Range", "1-1/1"), ("Content-Type", "text/plain")], b"y",
            from_path=[self.alice.uri])
        first_tid, first = mallory.frame("SEND", [um, self.ub, self.bob.uri], [
            ("Message-ID", "x1"), ("Byte-Range", "1-1/1"), ("Content-Type", "text/plain")], b"x")
        first_answer = mallory.expect(first_tid)
        second_answer = mallory.expect(tid)
        mallory.write(first + second)
        self.assertEqual((yield first_answer).code, 200)
        self.assertEqual((yield second_answer).code, 403)
        got = yield self.bob.received.get()
        self.assertEqual(got.body, b"x")
        mallory.transport.loseConnection()
        yield self.recovered()

    @inlineCallbacks
    def test_responses_to_nothing(self):
        """Responses matching no transaction are dropped and counted; they
        get no answer and the connection stays usable."""
        client = yield self.connect()
        for i, code in enumerate((200, 403, 481, 999)):
            client.write(b"MSRP nothing%d %d OK\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------nothing%d$\r\n"
                         % (i, code, str(self.relay_uri).encode(), str(client.uri).encode(), i))
        response = yield client.send(self.nowhere)  # a barrier: answered in order
        self.assertEqual(response.code, 481)
        self.assertEqual(len(client.responses), 1)
        self.assertEqual(self.service.transactions.stats["responses_unmatched"], 4)
        yield self.log.wait_for(r"dropped response nothing0 200 from %s" % re.escape(client.local))
        client.transport.loseConnection()
        yield self.recovered()

    @inlineCallbacks
    def test_response_for_a_transaction_on_another_connection(self):
        """mallory answers, on her own connection, the transaction the relay
        opened toward bob: it matches nothing there; bob's own answer still
        completes it."""
        mallory = yield self.connect()
        yield mallory.auth(self.relay_uri, "mallory", USERS["mallory"])
        self.bob.answer = None
        response = yield self.alice.send(self.to_bob, b"for bob only")
        self.assertEqual(response.code, 200)
        got = yield self.bob.received.get()
        forged = b"MSRP %s 415 Unsupported\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------%s$\r\n" % (
            got.request.tid.encode(), str(self.ub).encode(), str(self.bob.uri).encode(), got.request.tid.encode())
        mallory.write(forged)
        yield self.log.wait_for(r"dropped response %s 415 from %s" % (got.request.tid, re.escape(mallory.local)))
        self.assertEqual(self.service.statistics()["transactions_pending"], 1)
        self.bob.transactions.send_reply(got.conn, got.request, 200)
        self.bob.answer = 200
        # bob's next SEND follows his answer on his connection: once alice
        # has it, the relay has taken the answer.
        yield self.bob.send(self.to_alice, b"answered", headers=[("Failure-Report", "no")])
        self.assertEqual((yield self.alice.received.get()).body, b"answered")
        self.assertEqual(self.service.statistics()["transactions_pending"], 0)
        self.assertEqual(self.service.relay.stats["reports_generated"], 0)
        mallory.transport.loseConnection()
        yield self.recovered()

    @inlineCallbacks
    def test_report_storm(self):
        """2000 REPORTs to unknown sessions and 500 through a real session:
        none is answered, none opens a transaction, the ones with a valid
        path reach bob."""
        mallory = yield self.connect()
        um = (yield mallory.auth(self.relay_uri, "mallory", USERS["mallory"])).use_path[0]
        status = [("Message-ID", "m"), ("Byte-Range", "1-1/1"), ("Status", "000 200 OK")]
        storm = []
        for _ in range(2000):
            bogus = self.relay_uri.with_session(new_session_id())
            storm.append(mallory.frame("REPORT", [bogus, self.bob.uri], status)[1])
        for _ in range(500):
            storm.append(mallory.frame("REPORT", [um, self.ub, self.bob.uri], status)[1])
        answered = len(mallory.responses)
        mallory.write(b"".join(storm))
        response = yield mallory.send([um, self.ub, self.bob.uri], b"after the storm")
        self.assertEqual(response.code, 200)
        self.assertEqual(len(mallory.responses), answered + 1)  # nothing answered a REPORT
        for _ in range(500):
            got = yield self.bob.received.get()
            self.assertEqual(got.request.method, "REPORT")
        got = yield self.bob.received.get()
        self.assertEqual(got.body, b"after the storm")
        mallory.transport.loseConnection()
        yield self.recovered()


# -- authentication and sessions --------------------------------------------------


class AuthAttackTests(HostileTestCase):
    @inlineCallbacks
    def test_auth_brute_force_blocks_the_address(self):
        """Three wrong passwords (auth_max_failures=3) block 127.0.0.2: then
        even the right password is refused 403 without a challenge, on any
        connection from there, while 127.0.0.1 is not affected."""
        client = yield self.connect()
        codes = []
        for i in range(3):
            codes.append((yield client.auth(self.relay_uri, "alice", "guess%d" % i)).code)
        self.assertEqual(codes, [403, 403, 403])
        yield self.log.wait_for(r"AUTH: blocking %s for 300s after 3 failures" % re.escape(ATTACKER))
        blocked = yield client.request("AUTH", [self.relay_uri])
        self.assertEqual((blocked.code, blocked.comment), (403, "Too many failed AUTH attempts"))
        self.assertNotIn("WWW-Authenticate", blocked.headers)
        other = yield self.connect()
        blocked = yield other.request("AUTH", [self.relay_uri])
        self.assertEqual(blocked.code, 403)
        yield self.log.wait_for(r"AUTH from %s refused: address blocked" % re.escape(other.local))
        stats = self.service.statistics()
        self.assertEqual(stats["relay_addresses_blocked"], 1)
        self.assertEqual(stats["relay_sessions"], self.baseline["relay_sessions"])
        client.transport.loseConnection()
        other.transport.loseConnection()
        yield self.recovered()  # includes a new AUTH from 127.0.0.1

    @inlineCallbacks
    def test_challenges_alone_never_block(self):
        client = yield self.connect()
        for _ in range(20):
            self.assertEqual((yield client.request("AUTH", [self.relay_uri])).code, 401)
        self.assertEqual((yield client.auth(self.relay_uri, "mallory", USERS["mallory"])).code, 200)
        client.transport.loseConnection()
        yield self.recovered()

    @inlineCallbacks
    def test_digest_replay(self):
        """alice's Authorization, replayed from another address, is stale
        (its nonce-count was used); with a raised nonce-count the digest no
        longer matches (403). Neither opens a session."""
        alice = yield self.connect(source="127.0.0.1")
        challenge = yield alice.request("AUTH", [self.relay_uri])
        creds = digest.make_authorization(challenge.www_authenticate, "alice", USERS["alice"], "AUTH",
                                          str(self.relay_uri))
        authorization = digest.format_credentials(creds)
        self.assertEqual((yield alice.request("AUTH", [self.relay_uri], [("Authorization", authorization)])).code,
                         200)
        sessions = len(self.service.relay.sessions)
        thief = yield self.connect()
        replay = yield thief.request("AUTH", [self.relay_uri], [("Authorization", authorization)])
        self.assertEqual(replay.code, 401)
        self.assertEqual(replay.www_authenticate.get("stale"), "true")
        bumped = authorization.replace("nc=00000001", "nc=00000002")
        self.assertNotEqual(bumped, authorization)
        forged = yield thief.request("AUTH", [self.relay_uri], [("Authorization", bumped)])
        self.assertEqual(forged.code, 403)
        self.assertEqual(len(self.service.relay.sessions), sessions)
        alice.transport.loseConnection()
        thief.transport.loseConnection()
        yield self.recovered()

    @inlineCallbacks
    def test_session_flood_by_one_user(self):
        """One set of credentials cannot fill the session table: past
        max_sessions_per_user (3) a valid AUTH for yet another client URI is
        refused 403 (one for the same URI would refresh its session).
        Closing the connection ends the sessions and frees the quota."""
        mallory = yield self.connect()
        codes = []
        for _ in range(5):
            mallory.uri = mallory.uri.with_session(new_session_id())
            response = yield mallory.auth(self.relay_uri, "mallory", USERS["mallory"])
            codes.append(response.code)
        self.assertEqual(codes, [200, 200, 200, 403, 403])
        self.assertEqual(response.comment, "Too many sessions for this user")
        yield self.log.wait_for(r"AUTH from %s: mallory already holds 3 sessions \(max_sessions_per_user\)"
                                % re.escape(mallory.local))
        self.assertEqual(len(self.service.relay.sessions), self.baseline["relay_sessions"] + 3)
        mallory.transport.loseConnection()
        yield self.settled()
        again = yield self.connect()
        self.assertEqual((yield again.auth(self.relay_uri, "mallory", USERS["mallory"])).code, 200)
        again.transport.loseConnection()
        yield self.recovered()

    @inlineCallbacks
    def test_known_session_uri_reaches_its_client_only(self):
        """What a session URI is worth to someone without credentials (RFC
        4976: it is handed out in SDP): frames toward its client get
        through, anything else through it is refused."""
        stranger = yield self.connect()
        self.assertEqual((yield stranger.send([self.ub, self.bob.uri], b"hi bob")).code, 200)
        yield self.expect_body(self.bob, b"hi bob")
        for to_path in ([self.ub, self.alice.uri], [self.ub, self.ua, self.alice.uri]):
            self.assertEqual((yield stranger.send(to_path, b"via bob")).code, 403)
        stranger.transport.loseConnection()
        yield self.recovered()

    @inlineCallbacks
    def test_send_with_forged_session_id(self):
        """Invented session ids, with or without an AUTH of one's own: 481."""
        stranger = yield self.connect()
        mallory = yield self.connect()
        um = (yield mallory.auth(self.relay_uri, "mallory", USERS["mallory"])).use_path[0]
        for client, path in (
            (stranger, [self.relay_uri.with_session(new_session_id()), self.bob.uri]),
            # One character off a real session id (never the same character:
            # a random id ends in "x" once in 64).
            (stranger, [self.ub.with_session(self.ub.session_id[:-1] + ("y" if self.ub.session_id.endswith("x")
                                                                         else "x")), self.bob.uri]),
            (stranger, [self.relay_uri, self.bob.uri]),
            (mallory, [um, self.relay_uri.with_session(new_session_id()), self.bob.uri]),
        ):
            response = yield client.send(path, b"let me through")
            self.assertEqual(response.code, 481, path)
        self.assertEqual(len(self.bob.received.pending), 0)
        stranger.transport.loseConnection()
        mallory.transport.loseConnection()
        yield self.recovered()

    @inlineCallbacks
    def test_session_of_another_user_from_another_connection(self):
        """mallory knows alice's session URI (and alice's own URI): the relay
        still refuses to send anything outward through it (403)."""
        mallory = yield self.connect()
        um = (yield mallory.auth(self.relay_uri, "mallory", USERS["mallory"])).use_path[0]
        attempts = [
            ([self.ua, self.ub, self.bob.uri], [mallory.uri]),
            ([self.ua, self.ub, self.bob.uri], [self.alice.uri]),  # alice's own URI as From-Path
            ([um, self.ua, self.ub, self.bob.uri], [mallory.uri]),  # via her own session first
        ]
        for to_path, from_path in attempts:
            tid, data = mallory.frame("SEND", to_path, [
                ("Message-ID", "m"), ("Byte-Range", "1-1/1"), ("Content-Type", "text/plain")], b"x",
                from_path=from_path)
            answered = mallory.expect(tid)
            mallory.write(data)
            self.assertEqual((yield answered).code, 403, to_path)
        # An AUTH routed through alice's session to some further relay too.
        response = yield mallory.request("AUTH", [self.ua, self.relay_uri])
        self.assertEqual(response.code, 403)
        self.assertEqual(len(self.bob.received.pending) + len(self.alice.received.pending), 0)
        mallory.transport.loseConnection()
        yield self.recovered()


# -- slow clients and connection floods --------------------------------------------


class SlowClientTests(HostileTestCase):
    @inlineCallbacks
    def test_slow_drip(self):
        """A head dribbled one byte per read is cut off at the 4th read
        (max_msg_chunks=4). Each byte is written only once the relay has
        read the one before, so every byte is one read."""
        client = yield self.connect()
        server = yield self.state.server_side(client.port)
        reads = DeferredQueue()
        original = server.dataReceived

        def counting(data):
            original(data)
            reads.put(data)

        server.dataReceived = counting
        for byte in b"MSRP drip":
            client.write(bytes([byte]))
            yield reads.get()
            if server.closed or server._closing:
                break
        reason = yield self.closed_by_relay(client, r"message still incomplete after \d+ small reads.*")
        self.assertEqual(reason, "message still incomplete after 4 small reads (max_msg_chunks=4)")
        yield self.recovered()

    @inlineCallbacks
    def test_slowloris_head(self):
        """Half a head, then nothing: closed after msg_read_timeout."""
        clients = []
        for _ in range(3):
            client = yield self.connect()
            client.write(b"MSRP slow1234 SEND\r\nTo-Path: msrp://")
            clients.append(client)
        for client in clients:
            yield self.closed_by_relay(client, r"message head not complete within 0.3s \(msg_read_timeout\)")
        yield self.recovered()

    @inlineCallbacks
    def test_slowloris_body(self):
        """A head, a little body, then nothing: closed when the body makes
        no progress for msg_read_timeout."""
        client = yield self.connect()
        bogus = self.relay_uri.with_session(new_session_id())
        tid, data = client.frame("SEND", [bogus, self.bob.uri], [
            ("Message-ID", "m"), ("Content-Type", "text/plain")], b"x" * 2000)
        answered = client.expect(tid)
        client.write(data[:data.index(b"\r\n\r\n") + 1500])
        self.assertEqual((yield answered).code, 481)
        yield self.closed_by_relay(client, r"body made no progress within 0.3s \(msg_read_timeout\)")
        yield self.recovered()

    @inlineCallbacks
    def test_responses_never_read(self):
        """A client that pipelines requests and never reads the answers:
        once the relay's buffer toward it is full and nothing drains for
        send_timeout (100 ms) the connection is closed; what it buffered
        is released with it."""
        client = yield self.connect()
        client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.transport.pauseProducing()
        frames = b"".join(client.frame("SEND", self.nowhere, [("Message-ID", "m%d" % i)])[1]
                          for i in range(4000))
        closed = self.closed_by_relay(client, r"write blocked for more than 100 ms \(send_timeout\)")
        for _ in range(10):
            if closed.called:
                break
            client.write(frames)
        yield closed
        self.assertGreater(self.service.relay.stats["frames_refused"], 1000)
        yield self.recovered()

    @inlineCallbacks
    def test_idle_connections(self):
        """Connections that say nothing are closed after idle_timeout;
        authenticated ones are kept for their session's lifetime."""
        clients = []
        for _ in range(3):
            clients.append((yield self.connect()))
        for client in clients:
            yield self.closed_by_relay(client, r"idle for [\d.]+s")
        # alice and bob were idle as long: their sessions keep them.
        self.assertEqual(len(self.service.connections.connections), self.baseline["connections_open"])
        yield self.recovered()

    @inlineCallbacks
    def test_many_connections_from_one_address(self):
        """max_connections_per_ip=4: the 5th and later connections from
        127.0.0.2 are closed at once; 127.0.0.1 is not affected; closing
        one makes room for one."""
        clients = []
        for _ in range(10):
            clients.append((yield self.connect()))
        refused = clients[4:]
        for client in refused:
            yield self.closed_by_relay(
                client, r"too many connections from 127\.0\.0\.2 \(max_connections_per_ip=4\)")
        cap = self.service.connections.connection_cap
        self.assertEqual(cap.count(ATTACKER), 4)
        self.assertEqual(self.service.statistics()["connections_refused"], 6)
        # The admitted ones are real connections: one of them authenticates.
        self.assertEqual((yield clients[0].auth(self.relay_uri, "mallory", USERS["mallory"])).code, 200)
        clients[1].transport.loseConnection()
        yield self.state.wait(lambda: cap.count(ATTACKER) == 3)
        again = yield self.connect()
        self.assertEqual((yield again.request("AUTH", [self.relay_uri])).code, 401)
        for client in clients[:4] + [again]:
            client.transport.loseConnection()
        yield self.state.wait(lambda: cap.count(ATTACKER) == 0)
        yield self.recovered()


class SecuritySettingsTests(RelayFixture, TestCase):
    def setUp(self):
        self.make_fixture()

    @inlineCallbacks
    def test_insecure_switch_warns_at_startup(self):
        yield self.start_relay(tls_insecure=1)
        self.assertFalse(self.service.tls.verify_server)
        yield self.log.wait_for(r"--tls-insecure is on: the certificates of msrps servers this relay "
                                r"connects to are NOT verified")

    @inlineCallbacks
    def test_outbound_verification_is_the_default(self):
        """Without TLS options the relay has no TLS settings of its own and
        outbound msrps uses TLSSettings(): verify_server, TLS 1.2 minimum."""
        yield self.start_relay()
        self.assertIsNone(self.service.tls)
        self.assertNotIn("--tls-insecure", self.log.text())
        yield self.start_relay(tls_ca=get_test_pki().ca_bundle)
        self.assertTrue(self.service.tls.verify_server)
        self.assertEqual(self.service.tls.min_version, TLSVersion.TLSv1_2)


# -- the relay process's memory ------------------------------------------------------


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))


class ProcessMemoryTests(TestCase):
    """Attacks against `twistd -n msrp`: its statistics (over the MI) and its
    resident memory return to their baseline once the attackers are gone."""

    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="msrp-hostile-proc-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        users_file = write_users(self.directory, USERS)
        self.relay = TwistdProcess.spawn(reactor, [
            "msrp", "--listen", "msrp:127.0.0.1:0", "--users", users_file,
            "--mi", "tcp:0:interface=127.0.0.1", "--max-chunk-size", str(64 * KIB),
            "--msg-read-timeout", "0.3", "--max-connections-per-ip", "100"], path=self.directory)
        self.addCleanup(self.relay.stop)
        ready = yield self.relay.wait_for(r"MSRP relay ready; URIs: (\S+)")
        self.relay_uri = parse_uri(ready.group(1))
        mi_line = yield self.relay.wait_for(r"MSRP management \(AMP\) on \S+ \(127\.0\.0\.1:(\d+)\)")
        self.mi = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", int(mi_line.group(1))),
                                        amp.AMP())
        self.addCleanup(self.mi.transport.loseConnection)
        self.peers = []
        self.addCleanup(lambda: defer.gatherResults([p.close() for p in self.peers]))
        self.alice, self.bob = Peer("alice"), Peer("bob")
        self.peers += [self.alice, self.bob]
        self.ua = (yield self.alice.auth(self.relay_uri, "alice", USERS["alice"])).use_path[0]
        self.ub = (yield self.bob.auth(self.relay_uri, "bob", USERS["bob"])).use_path[0]
        self.to_bob = [self.ua, self.ub, self.bob.uri]

    @inlineCallbacks
    def statistics(self):
        answer = yield self.mi.callRemote(mi.Statistics)
        return {c["name"]: c["value"] for c in answer["counters"]}

    @inlineCallbacks
    def settled(self, connections, sessions):
        """The relay's own view (over the MI) back at the baseline. Each
        MI call is a round trip through its reactor, so a few suffice once
        every attacker's connection has been seen closed on our side."""
        for _ in range(200):
            stats = yield self.statistics()
            if stats["connections_open"] == connections and stats["relay_sessions"] == sessions:
                return stats
        self.fail("the relay never returned to %d connections / %d sessions: %r"
                  % (connections, sessions, stats))

    @inlineCallbacks
    def check_traffic(self, n=3):
        for i in range(n):
            body = b"legit %d" % i
            self.assertEqual((yield self.alice.send(self.to_bob, body)).code, 200)
            self.assertEqual((yield self.bob.received.get()).body, body)

    @inlineCallbacks
    def flood(self, rounds):
        """Connections that each try a different framing attack, 40 at a time."""
        port = self.relay_uri.port
        bogus = self.relay_uri.with_session(new_session_id())
        head = b"MSRP flood123 SEND\r\nTo-Path: %s\r\nFrom-Path: msrp://x.invalid:2855/s;tcp\r\n" % (
            str(bogus).encode())
        payloads = [
            bytes(range(256)) * 64,  # garbage
            b"MSRP abcd1234 SEND " + b"x" * 8000,  # start line too long
            head + b"X-Pad: " + b"p" * (70 * KIB),  # header block too long
            head + b"Message-ID: m\r\nContent-Type: text/plain\r\n\r\n" + b"b" * (80 * KIB),  # body too long
            head + b"X: y\r\n" * 12000,  # never-ending header block
        ]
        for r in range(rounds):
            clients = yield defer.gatherResults([connect_raw(port) for _ in range(40)])
            for i, client in enumerate(clients):
                client.write(payloads[(i + r) % len(payloads)])
            yield defer.gatherResults([c.lost for c in clients])

    @inlineCallbacks
    def test_framing_floods_leave_no_memory_behind(self):
        baseline = yield self.statistics()
        yield self.flood(2)  # warm-up: the allocator's pools reach their working size
        yield self.check_traffic()
        yield self.settled(baseline["connections_open"], baseline["relay_sessions"])
        before = rss_kib(self.relay.pid)
        yield self.flood(10)
        yield self.check_traffic()
        stats = yield self.settled(baseline["connections_open"], baseline["relay_sessions"])
        after = rss_kib(self.relay.pid)
        self.assertEqual(stats["transactions_pending"], 0)
        self.assertGreaterEqual(stats["connections_accepted"] - baseline["connections_accepted"], 480)
        self.assertLess(after - before, 4 * KIB, "RSS %d KiB -> %d KiB after 400 hostile connections"
                        % (before, after))
        assert_no_tracebacks(self, self.relay.output())

    @inlineCallbacks
    def test_distinct_long_paths_leave_no_memory_behind(self):
        """1000 requests, each with its own 2 KB To-Path of ~95 URIs (each
        refused 481): parsed paths are cached only when they name a few
        hops, so this no longer pins ~50 MiB of parsed URIs."""
        baseline = yield self.statistics()
        client = yield connect_raw(self.relay_uri.port)
        self.addCleanup(client.transport.abortConnection)

        def long_path(n):
            uris = [str(self.relay_uri.with_session(new_session_id()))]
            while sum(len(u) + 1 for u in uris) < 1950:
                uris.append("msrp://h%d.invalid:1/%x;tcp" % (len(uris), n))
            return " ".join(uris)

        @inlineCallbacks
        def flood(first, count):
            frames = []
            for n in range(first, first + count):
                tid = "path%08d" % n
                frames.append(b"MSRP %s SEND\r\nTo-Path: %s\r\nFrom-Path: %s\r\nMessage-ID: m\r\n-------%s$\r\n"
                              % (tid.encode(), long_path(n).encode(), str(client.uri).encode(), tid.encode()))
            answered = client.expect("path%08d" % (first + count - 1))
            client.write(b"".join(frames))
            self.assertEqual((yield answered).code, 481)

        yield flood(0, 200)  # warm-up
        before = rss_kib(self.relay.pid)
        yield flood(200, 1000)
        yield self.check_traffic()
        after = rss_kib(self.relay.pid)
        self.assertEqual(len(client.responses), 1200)
        client.transport.loseConnection()
        yield client.lost
        yield self.settled(baseline["connections_open"], baseline["relay_sessions"])
        self.assertLess(after - before, 8 * KIB, "RSS %d KiB -> %d KiB after 1000 distinct long paths"
                        % (before, after))
        assert_no_tracebacks(self, self.relay.output())

    @inlineCallbacks
    def test_report_storm_leaves_no_memory_behind(self):
        baseline = yield self.statistics()
        mallory = yield connect_raw(self.relay_uri.port)
        self.addCleanup(mallory.transport.abortConnection)
        um = (yield mallory.auth(self.relay_uri, "mallory", USERS["mallory"])).use_path[0]
        status = [("Message-ID", "m"), ("Byte-Range", "1-1/1"), ("Status", "000 200 OK")]

        @inlineCallbacks
        def storm(n):
            frames = []
            for i in range(n):
                if i % 4:
                    to_path = [self.relay_uri.with_session(new_session_id()), self.bob.uri]
                else:
                    to_path = [um, self.ub, self.bob.uri]
                frames.append(mallory.frame("REPORT", to_path, status)[1])
            mallory.write(b"".join(frames))
            response = yield mallory.send([um, self.ub, self.bob.uri], b"barrier")
            self.assertEqual(response.code, 200)
            for _ in range((n + 3) // 4):
                self.assertEqual((yield self.bob.received.get()).request.method, "REPORT")
            self.assertEqual((yield self.bob.received.get()).body, b"barrier")

        for _ in range(2):  # warm-up: the allocator's pools reach their working size
            yield storm(4000)
        before = rss_kib(self.relay.pid)
        for _ in range(5):
            yield storm(4000)
        yield self.check_traffic()
        after = rss_kib(self.relay.pid)
        self.assertEqual(len(mallory.responses), 2 + 7)  # the AUTH exchange, then one per barrier
        mallory.transport.loseConnection()
        yield mallory.lost
        stats = yield self.settled(baseline["connections_open"], baseline["relay_sessions"])
        self.assertEqual(stats["transactions_pending"], 0)
        self.assertLess(after - before, 4 * KIB, "RSS %d KiB -> %d KiB after 20000 more REPORTs" % (before, after))
        assert_no_tracebacks(self, self.relay.output())
