"""A small MSRP endpoint and fixtures for the relay tests.

Peer is an endpoint built from the real stack (ConnectionManager and
TransactionManager): it authenticates to relays with Digest, sends SENDs
and REPORTs, answers what it receives with a chosen status (or not at all)
and queues what it received.  Bodies can be taken whole or hashed as they
stream in, so a large transfer is checked without being held in memory.
"""

import hashlib
import os
import re
import sys

from twisted.internet import defer, protocol
from twisted.internet.defer import Deferred, DeferredQueue
from zope.interface import implementer

from msrp_twisted.connections import ConnectionManager
from msrp_twisted.core import digest
from msrp_twisted.core.ids import new_message_id, new_session_id
from msrp_twisted.core.parser import BodyData, InvalidMessage, MessageEnd, MessageStart, Parser
from msrp_twisted.core.uri import MSRPURI
from msrp_twisted.protocol import IBodySink, TransportSettings
from msrp_twisted.transactions import IRequestHandler, TransactionManager

__all__ = [
    "AuthFailed",
    "ClosingWatcher",
    "PatternProducer",
    "Received",
    "Peer",
    "TwistdProcess",
    "parse_frames",
    "write_users",
]


def write_users(directory, users, realm="msrp"):
    """An htdigest file for {user: password}; returns its path."""
    path = os.path.join(directory, "users")
    with open(path, "w") as f:
        for user, password in users.items():
            f.write("%s:%s:%s\n" % (user, realm, digest.compute_ha1(user, realm, password)))
    return path


class AuthFailed(Exception):
    """An AUTH was not answered 200; carries the response."""

    def __init__(self, response):
        super().__init__("AUTH answered %s %s" % (response.code, response.comment))
        self.response = response


class Received:
    """A request a Peer received; for a streamed body, its size and hash."""

    def __init__(self, conn, request, length=None, sha256=None):
        self.conn = conn
        self.request = request
        self.length = length
        self.sha256 = sha256

    @property
    def body(self):
        return self.request.body


class ClosingWatcher:
    """Closes the connections of a transaction layer and fires once each of
    them is really gone: after every upper layer saw connection_lost."""

    def __init__(self, transactions):
        self.manager = transactions.connections
        self._waiting = {}
        # Registered last, so it hears of a lost connection after the relay.
        transactions.add_handler(self, match=lambda uri: False)

    def head_received(self, conn, request):
        raise AssertionError("ClosingWatcher routes no requests")

    request_received = head_received

    def connection_lost(self, conn, reason):
        d = self._waiting.pop(conn.conn_id, None)
        if d is not None:
            d.callback(None)

    def wait_closed(self, conn):
        """A Deferred that fires when conn has closed (conn must be ready)."""
        if conn.closed:
            return defer.succeed(None)
        return self._waiting.setdefault(conn.conn_id, Deferred())

    def close_all(self):
        waits = []
        for conn in list(self.manager.connections.values()):
            if conn.closed:
                continue
            if conn.ready:
                waits.append(self.wait_closed(conn))
            conn.close("test finished")
        return defer.gatherResults(waits)


@implementer(IRequestHandler)
class Peer:
    """An MSRP endpoint at msrp://NAME.invalid:2855/<random>;tcp.

    ``answer`` decides the response to a received SEND: a status code, None
    for no response, or a callable(request) returning either.  With
    ``stream_bodies`` bodies are hashed as they arrive instead of kept.
    """

    def __init__(self, name, reactor=None, tls=None, settings=None, timeout=30.0,
                 scheme="msrp"):
        self.name = name
        self.connections = ConnectionManager(settings=settings or TransportSettings(),
                                             reactor=reactor, tls=tls)
        self.transactions = TransactionManager(self.connections, reactor, timeout)
        self.uri = MSRPURI("%s.invalid" % name, 2855, new_session_id(), "tcp", scheme)
        self.transactions.add_handler(self, match=lambda uri: uri == self.uri)
        self.closer = ClosingWatcher(self.transactions)
        self.received = DeferredQueue()
        self.answer = 200
        self.stream_bodies = False
        # Send everything on this connection (in-memory tests) instead of
        # looking one up or connecting.
        self.conn = None

    # -- sending -------------------------------------------------------
    def request(self, to_path, method, headers=(), body=None, **kw):
        if self.conn is not None:
            kw.setdefault("conn", self.conn)
        return self.transactions.send_request(list(to_path), [self.uri], method,
                                              list(headers), body, **kw)

    @defer.inlineCallbacks
    def auth(self, relay_uri, user, password, expires=None, via=(), nc=1):
        """Challenge-response AUTH to relay_uri (reached through the relay
        sessions in via); fires with the 200 response, fails with AuthFailed."""
        to_path = list(via) + [relay_uri]
        challenge = yield self.request(to_path, "AUTH")
        if challenge.code != 401:
            raise AuthFailed(challenge)
        headers = [("Authorization", self.credentials(challenge, relay_uri, user, password, nc))]
        if expires is not None:
            headers.append(("Expires", str(expires)))
        response = yield self.request(to_path, "AUTH", headers)
        if response.code != 200:
            raise AuthFailed(response)
        return response

    @staticmethod
    def credentials(challenge, relay_uri, user, password, nc=1):
        creds = digest.make_authorization(challenge.www_authenticate, user, password,
                                          "AUTH", str(relay_uri), nc=nc)
        return digest.format_credentials(creds)

    def send(self, to_path, body=b"", content_type="text/plain", message_id=None,
             byte_range=None, headers=(), flag="$", **kw):
        """A SEND; Byte-Range defaults to the whole body in one chunk
        (pass byte_range=False to leave it out)."""
        items = [("Message-ID", message_id or new_message_id())]
        if byte_range is None and isinstance(body, bytes):
            byte_range = "1-%d/%d" % (len(body), len(body))
        if byte_range:
            items.append(("Byte-Range", byte_range))
        items.extend(headers)
        if body is not None and body != b"":
            items.append(("Content-Type", content_type))
        else:
            body = None
        return self.request(to_path, "SEND", items, body, flag=flag, **kw)

    def report(self, request, code=200, **kw):
        """The REPORT an endpoint sends for request (to its From-Path)."""
        n = len(request.body or b"")
        items = [("Message-ID", request.message_id),
                 ("Byte-Range", request.headers.get("Byte-Range") or "1-%d/%d" % (n, n)),
                 ("Status", "000 %03d %s" % (code, "OK" if code == 200 else "failed"))]
        return self.request(request.from_path, "REPORT", items, **kw)

    def close(self):
        return self.closer.close_all()

    # -- IRequestHandler ---------------------------------------------
    def head_received(self, conn, request):
        if not self.stream_bodies:
            return None
        return _HashingSink(self, conn, request)

    def request_received(self, conn, request):
        self._deliver(conn, request, Received(conn, request))

    def _deliver(self, conn, request, received):
        if request.method == "SEND":
            code = self.answer(request) if callable(self.answer) else self.answer
            if code is not None:
                self.transactions.send_reply(conn, request, code)
        self.received.put(received)


@implementer(IBodySink)
class _HashingSink:
    def __init__(self, peer, conn, request):
        self.peer = peer
        self.conn = conn
        self.request = request
        self.hash = hashlib.sha256()
        self.length = 0

    def body_data(self, data):
        self.hash.update(data)
        self.length += len(data)

    def body_end(self, flag):
        self.request.flag = flag
        self.peer._deliver(self.conn, self.request,
                           Received(self.conn, self.request, self.length, self.hash.hexdigest()))

    def body_aborted(self, reason):
        pass


class PatternProducer:
    """A push producer of ``total`` pseudo-random bytes, written as fast as
    the consumer allows and hashed on the way out."""

    def __init__(self, total, block_size=64 * 1024, seed=b"msrp"):
        self.total = total
        self.remaining = total
        self.block_size = block_size
        pattern = b"".join(hashlib.sha512(seed + b"%d" % i).digest() for i in range(4096))
        self.pattern = pattern  # 256 KiB of noise
        self.offset = 0
        self.hash = hashlib.sha256()
        self.paused = False
        self.consumer = None
        self.done = None

    def startProducing(self, consumer):
        self.consumer = consumer
        self.done = Deferred()
        self._produce()
        return self.done

    def _produce(self):
        pattern = self.pattern
        while not self.paused and self.remaining > 0:
            start = self.offset % len(pattern)
            n = min(self.block_size, self.remaining, len(pattern) - start)
            data = pattern[start:start + n]
            self.offset += n
            self.remaining -= n
            self.hash.update(data)
            self.consumer.write(data)
        if self.remaining == 0 and self.done is not None:
            done, self.done = self.done, None
            done.callback(None)

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        if self.paused:
            self.paused = False
            self._produce()

    def stopProducing(self):
        self.paused = True


def parse_frames(data):
    """Whole messages (and InvalidMessage events) in data, for unit tests."""
    parser = Parser(max_body=0)
    out = []
    current = None
    parts = []
    for ev in parser.feed(data):
        if isinstance(ev, MessageStart):
            current, parts = ev.message, []
        elif isinstance(ev, BodyData):
            parts.append(ev.data)
        elif isinstance(ev, MessageEnd):
            if current.has_body:
                current.body = b"".join(parts)
            current.flag = ev.flag
            out.append(current)
            current = None
        elif isinstance(ev, InvalidMessage):
            out.append(ev)
    assert current is None and not parser.in_message, "incomplete frame in %r" % data[-200:]
    return out


class TwistdProcess(protocol.ProcessProtocol):
    """`twistd -n ...` as a child process, with its log lines watched.

    wait_for(regex) fires with the match once a line of stdout/stderr
    matches; wait_ended() fires with the exit status.
    """

    def __init__(self):
        self.lines = []
        self._partial = b""
        self._watches = []
        self._end_waiters = []
        self.status = None

    @classmethod
    def spawn(cls, reactor, args, env=None, path=None):
        proc = cls()
        environ = dict(os.environ)
        environ.update(env or {})
        environ["PYTHONUNBUFFERED"] = "1"
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile="] + list(args)
        proc.transport = reactor.spawnProcess(proc, sys.executable, argv, env=environ, path=path)
        return proc

    @property
    def pid(self):
        return self.transport.pid

    def output(self):
        return "\n".join(self.lines)

    def wait_for(self, pattern):
        regex = re.compile(pattern)
        for line in self.lines:
            m = regex.search(line)
            if m:
                return defer.succeed(m)
        d = Deferred()
        if self.status is not None:
            d.errback(AssertionError("twistd ended before logging %r:\n%s" % (pattern, self.output())))
            return d
        self._watches.append((regex, d))
        return d

    def outReceived(self, data):
        self._partial += data
        *complete, self._partial = self._partial.split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            for watch in list(self._watches):
                m = watch[0].search(line)
                if m:
                    self._watches.remove(watch)
                    watch[1].callback(m)

    errReceived = outReceived

    def processEnded(self, reason):
        if self._partial:
            self.outReceived(b"\n")
        self.status = reason.value.exitCode
        if self.status is None:
            self.status = -reason.value.signal
        watches, self._watches = self._watches, []
        for regex, d in watches:
            d.errback(AssertionError("twistd ended (status %s) before logging %r:\n%s"
                                     % (self.status, regex.pattern, self.output())))
        waiters, self._end_waiters = self._end_waiters, []
        for d in waiters:
            d.callback(self.status)

    def wait_ended(self):
        if self.status is not None:
            return defer.succeed(self.status)
        d = Deferred()
        self._end_waiters.append(d)
        return d

    def stop(self):
        """SIGTERM (if still running) and wait for the exit."""
        if self.status is None:
            self.transport.signalProcess("TERM")
        return self.wait_ended()
