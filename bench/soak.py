"""Soak: mixed traffic through a `twistd -n msrp` relay with random peer
disconnects, checking that no acknowledged message is lost (issue 9).

Several sender/receiver pairs (A_i -> B_i, users a<i> and b<i>) authenticate
at one relay process and A_i sends messages to B_i for ``--seconds``: short
texts, single chunks up to 64 KiB and files of up to 2 MiB sent as several
chunks (Byte-Range, '+' flags), every one with Success-Report: yes and
Failure-Report: yes. B_i reassembles each message, checks its sha256
against what A_i sent (matched by Message-ID) and answers with a success
REPORT for the whole message. Every ``--disconnect-every`` seconds (on
average) a random peer loses its connection, by RST (abortConnection) or by
a clean close; it then authenticates again (new relay session, new
Use-Path) and its pair carries on. A chunked message belongs to one session
of each side: when either side re-authenticates in the middle of it, A sends
no more of its chunks and B drops what it had (so an early version of this
soak, which went on sending the rest to B's new session, counted messages
whose every chunk B had acknowledged as lost).

What is counted, per message:

sent          its first chunk was handed to the stack;
acknowledged  every chunk got 200 from the relay (hop by hop), or a success
              REPORT came back from B;
delivered     B received all of it and the sha256 matched;
failure-reported  a REPORT with an error status reached A;
sender gone   A's own connection was dropped (by injection) before an
              outcome was known: nobody can tell A any more.

acknowledged-but-lost counts (1) messages with a success REPORT that B never
delivered, plus (2) messages acknowledged (200 for every chunk) that were
neither delivered nor failure-reported, A's connection having stayed up.
Both must be 0: that is the relay's promise (RFC 4976 section 6.2 / RFC 4975
section 7.1.2: once it said 200 upstream, a later failure downstream must
come back as a REPORT).

The relay's RSS (/proc/PID/status) is sampled when the relay is up, after
the warm-up, at the end of the traffic and after every client has gone, and
its statistics are read over the MI (AMP) at the end; the relay's log is
searched for tracebacks. Loopback only; every wait is bounded.

    python bench/soak.py                 # 10 minutes
    python bench/soak.py --seconds 30 --pairs 2
"""

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from twisted.internet import defer, reactor  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol  # noqa: E402
from twisted.protocols import amp  # noqa: E402

from msrp_twisted import mi  # noqa: E402
from msrp_twisted.core.errors import HeaderError  # noqa: E402
from msrp_twisted.core.ids import new_message_id  # noqa: E402
from msrp_twisted.core.uri import parse_uri  # noqa: E402
from tests.relay_helpers import AuthFailed, Peer, TwistdProcess, write_users  # noqa: E402

KIB = 1024
MIB = 1024 * 1024


def rss_kib(pid):
    """VmRSS and VmHWM of a process, in KiB."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def later(seconds, value=None):
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, value)
    return d


def with_timeout(d, seconds):
    return d.addTimeout(seconds, reactor)


class Message:
    __slots__ = ("mid", "size", "sha256", "chunks", "acked_chunks", "acked", "success", "failure",
                 "refused", "sender_gone", "delivered", "corrupted", "sent_at", "b_sessions")

    def __init__(self, mid, body, nchunks):
        self.mid = mid
        self.size = len(body)
        self.sha256 = hashlib.sha256(body).hexdigest()
        self.chunks = nchunks
        self.acked_chunks = 0
        self.acked = False  # every chunk answered 200
        self.success = False  # success REPORT received
        self.failure = None  # status of a failure REPORT
        self.refused = None  # a chunk was not answered 200 (code or error)
        self.sender_gone = False
        self.delivered = False
        self.corrupted = False
        self.sent_at = time.monotonic()
        self.b_sessions = set()  # B's sessions (generations) its chunks were sent to

    @property
    def final(self):
        return self.success or self.failure is not None or self.refused is not None or self.sender_gone


class Assembly:
    """A message being received in chunks at B."""

    __slots__ = ("data", "got")

    def __init__(self, total):
        self.data = bytearray(total)
        self.got = 0


class Side:
    """One endpoint of a pair: its Peer, its state and its current Use-Path."""

    def __init__(self, soak, name, user, password):
        self.soak = soak
        self.name = name
        self.user = user
        self.password = password
        self.peer = Peer(name, timeout=soak.args.peer_timeout)
        self.peer.transactions.add_handler(self, match=lambda uri: False)
        self.use_path = None
        self.up = False
        self.generation = 0
        self.up_waiters = []

    # the transaction layer tells us when a connection went away
    def head_received(self, conn, request):
        raise AssertionError("routes nothing")

    request_received = head_received

    def connection_lost(self, conn, reason):
        if conn.conn_id not in self.soak.injected:
            self.soak.count("lost_not_injected")
            self.soak.note("%s lost its connection without an injection: %s" % (self.name, reason))
        self.going_down(reason)

    def going_down(self, reason):
        """The connection is lost or being closed: its relay session is gone
        (or about to be), so nothing may be sent through it any more. A
        client that closes its own connection knows it at once; for one
        reset under it, its stack says so a reactor turn later."""
        if self.up:
            self.up = False
            self.use_path = None
            self.generation += 1
            self.soak.side_lost(self, reason)

    @defer.inlineCallbacks
    def authenticate(self):
        """AUTH until it works (bounded)."""
        for attempt in range(20):
            try:
                response = yield with_timeout(
                    self.peer.auth(self.soak.relay_uri, self.user, self.password), 10)
            except (AuthFailed, Exception) as e:
                self.soak.count("auth_retries")
                self.soak.note("AUTH of %s failed (%s), retrying" % (self.user, e))
                yield later(0.2 * (attempt + 1))
                continue
            self.use_path = response.use_path[0]
            self.up = True
            self.soak.count("auths")
            waiters, self.up_waiters = self.up_waiters, []
            for d in waiters:
                d.callback(None)
            return
        raise RuntimeError("%s could not authenticate again" % self.user)

    def wait_up(self):
        if self.up:
            return defer.succeed(None)
        d = defer.Deferred()
        self.up_waiters.append(d)
        return d

    def connection(self):
        conns = [c for c in self.peer.connections.connections.values() if c.ready and not c.closed]
        return conns[0] if conns else None


class Pair:
    def __init__(self, soak, index):
        self.soak = soak
        self.index = index
        self.a = Side(soak, "a%d" % index, "a%d" % index, "pa%d" % index)
        self.b = Side(soak, "b%d" % index, "b%d" % index, "pb%d" % index)
        self.outstanding = {}  # Message-ID -> Message, at A
        self.assembling = {}  # Message-ID -> Assembly, at B
        self.a.peer.answer = 200
        self.b.peer.answer = 200

    @property
    def up(self):
        return self.a.up and self.b.up

    @defer.inlineCallbacks
    def wait_up(self):
        while not self.up:
            yield defer.DeferredList([self.a.wait_up(), self.b.wait_up()])


class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.messages = {}
        self.counters = {}
        self.notes = []
        self.stopping = False
        self.relay = None
        self.relay_uri = None
        self.mi_port = None
        self.pairs = []
        self.rss = {}
        self.injected = set()

    def count(self, name, n=1):
        self.counters[name] = self.counters.get(name, 0) + n

    def note(self, text):
        if len(self.notes) < 50:
            self.notes.append(text)

    # -- relay --------------------------------------------------------------
    @defer.inlineCallbacks
    def start_relay(self, directory):
        users = {}
        for i in range(self.args.pairs):
            users["a%d" % i] = "pa%d" % i
            users["b%d" % i] = "pb%d" % i
        users_file = write_users(directory, users)
        self.relay = TwistdProcess.spawn(reactor, [
            "msrp", "--listen", "msrp:127.0.0.1:0", "--users", users_file,
            "--mi", "tcp:0:interface=127.0.0.1",
            "--transaction-timeout", str(self.args.relay_transaction_timeout),
            "--auth-max-failures", "0"], path=directory)
        ready = yield with_timeout(self.relay.wait_for(r"MSRP relay ready; URIs: (\S+)"), 30)
        self.relay_uri = parse_uri(ready.group(1))
        mi_line = yield with_timeout(self.relay.wait_for(r"MSRP management \(AMP\) on \S+ \(\S*?:(\d+)\)"), 5)
        self.mi_port = int(mi_line.group(1))

    @defer.inlineCallbacks
    def statistics(self):
        proto = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.mi_port), amp.AMP())
        try:
            answer = yield with_timeout(proto.callRemote(mi.Statistics), 10)
        finally:
            proto.transport.loseConnection()
        return {c["name"]: c["value"] for c in answer["counters"]}

    # -- events ---------------------------------------------------------------
    def side_lost(self, side, reason):
        self.count("connections_lost")
        pair = self.pairs[int(side.name[1:])]
        if side is pair.a:
            # Nobody can tell A about what it had in flight any more.
            for m in list(pair.outstanding.values()):
                if not m.final:
                    m.sender_gone = True
                    self.count("sender_gone_marked")
            pair.outstanding.clear()
        else:
            pair.assembling.clear()
        delay = self.rng.uniform(0.0, self.args.reconnect_delay)
        reactor.callLater(delay, self._reconnect, side)

    def _reconnect(self, side):
        if side.up:
            return
        side.authenticate().addErrback(self._fatal)

    def _fatal(self, f):
        self.note("fatal: %s" % f.getErrorMessage())
        self.count("fatal_errors")
        return None

    # -- A: sending -------------------------------------------------------------
    def make_body(self):
        r = self.rng.random()
        if r < 0.6:
            size = self.rng.randint(1, 1000)
            kind = "text"
        elif r < 0.85:
            size = self.rng.randint(1 * KIB, 64 * KIB)
            kind = "chunk"
        else:
            size = self.rng.randint(100 * KIB, self.args.max_file)
            kind = "file"
        self.count("kind_" + kind)
        return self.rng.randbytes(size), kind

    @defer.inlineCallbacks
    def sender(self, pair):
        while not self.stopping:
            yield pair.wait_up()
            if self.stopping:
                break
            body, kind = self.make_body()
            chunk_size = self.rng.choice((16 * KIB, 64 * KIB, 256 * KIB)) if kind == "file" else len(body)
            starts = list(range(0, len(body), chunk_size))
            mid = new_message_id()
            m = Message(mid, body, len(starts))
            self.messages[mid] = m
            pair.outstanding[mid] = m
            self.count("sent")
            # A chunked message belongs to one session of each side: when
            # either re-authenticates (new Use-Path) the rest of it is not
            # sent; B drops what it had of it, as a client would.
            generation = (pair.a.generation, pair.b.generation)
            for start in starts:
                end = min(start + chunk_size, len(body))
                if not pair.up or (pair.a.generation, pair.b.generation) != generation:
                    m.refused = m.refused or "pair down before chunk %d" % (start + 1)
                    break
                to_path = [pair.a.use_path, pair.b.use_path, pair.b.peer.uri]
                m.b_sessions.add(pair.b.generation)
                try:
                    response = yield pair.a.peer.send(
                        to_path, body[start:end], content_type="application/octet-stream",
                        message_id=mid, byte_range="%d-%d/%d" % (start + 1, end, len(body)),
                        flag="$" if end == len(body) else "+",
                        headers=[("Success-Report", "yes"), ("Failure-Report", "yes")])
                except Exception as e:
                    m.refused = m.refused or type(e).__name__
                    self.count("chunk_errors")
                    break
                self.count("chunks_sent")
                if response.code != 200:
                    m.refused = m.refused or response.code
                    self.count("chunk_refused_%d" % response.code)
                    break
                m.acked_chunks += 1
            if m.refused is None and m.acked_chunks == m.chunks:
                m.acked = True
                self.count("acknowledged_200")
            self.maybe_forget(pair, m)

    def maybe_forget(self, pair, m):
        if m.success or m.failure is not None or m.refused is not None:
            pair.outstanding.pop(m.mid, None)

    @defer.inlineCallbacks
    def report_reader(self, pair):
        while True:
            got = yield pair.a.peer.received.get()
            if got is None:
                return
            request = got.request
            if request.method != "REPORT":
                self.count("unexpected_at_a")
                continue
            m = self.messages.get(request.message_id)
            if m is None:
                self.count("report_for_unknown")
                continue
            try:
                code = request.status.code
            except HeaderError:
                self.count("bad_report")
                continue
            if code == 200:
                self.count("success_reports")
                m.success = True
            else:
                self.count("failure_reports")
                self.count("failure_report_%d" % code)
                if m.failure is None:
                    m.failure = code
            self.maybe_forget(pair, m)

    # -- B: receiving -----------------------------------------------------------
    @defer.inlineCallbacks
    def receiver(self, pair):
        while True:
            got = yield pair.b.peer.received.get()
            if got is None:
                return
            request = got.request
            if request.method != "SEND":
                self.count("unexpected_at_b")
                continue
            self.count("chunks_received")
            mid = request.message_id
            m = self.messages.get(mid)
            br = request.byte_range
            body = request.body or b""
            if m is None or br.total != m.size:
                self.count("unknown_at_b")
                continue
            asm = pair.assembling.get(mid)
            if asm is None:
                asm = pair.assembling[mid] = Assembly(br.total)
            asm.data[br.start - 1:br.start - 1 + len(body)] = body
            asm.got += len(body)
            if asm.got < br.total:
                continue
            del pair.assembling[mid]
            if hashlib.sha256(asm.data).hexdigest() != m.sha256 or asm.got != br.total:
                m.corrupted = True
                self.count("corrupted")
                continue
            if m.delivered:
                self.count("duplicates")
                continue
            m.delivered = True
            self.count("delivered")
            headers = [("Message-ID", mid), ("Byte-Range", "1-%d/%d" % (m.size, m.size)),
                       ("Status", "000 200 OK")]
            pair.b.peer.request(list(request.from_path), "REPORT", headers).addErrback(
                lambda f: self.count("report_not_sent"))

    # -- disconnects ---------------------------------------------------------------
    @defer.inlineCallbacks
    def injector(self):
        while not self.stopping:
            yield later(self.rng.expovariate(1.0 / self.args.disconnect_every))
            if self.stopping:
                break
            pair = self.rng.choice(self.pairs)
            side = self.rng.choice((pair.a, pair.b))
            conn = side.connection()
            if conn is None or not side.up:
                continue
            self.injected.add(conn.conn_id)
            if self.rng.random() < 0.5:
                self.count("injected_rst")
                conn.transport.abortConnection()
            else:
                self.count("injected_close")
                conn.close("soak: injected disconnect", abort=False)
            side.going_down("injected")
            self.count("disconnects_injected")

    # -- the run -----------------------------------------------------------------
    @defer.inlineCallbacks
    def run(self):
        args = self.args
        directory = tempfile.mkdtemp(prefix="msrp-soak-")
        try:
            yield self.start_relay(directory)
            pid = self.relay.pid
            self.rss["start"] = rss_kib(pid)
            self.pairs = [Pair(self, i) for i in range(args.pairs)]
            yield defer.gatherResults([s.authenticate() for p in self.pairs for s in (p.a, p.b)])
            readers = []
            for p in self.pairs:
                readers.append(self.report_reader(p))
                readers.append(self.receiver(p))
            senders = [self.sender(p) for p in self.pairs for _ in range(args.window)]
            started = time.monotonic()
            yield later(min(args.warmup, args.seconds))
            self.rss["warm"] = rss_kib(pid)
            injector = self.injector()
            sampler = self.sample_rss(pid, args.sample_every)
            yield later(max(0.0, args.seconds - (time.monotonic() - started)))
            self.stopping = True
            self.rss["traffic_end"] = rss_kib(pid)
            traffic_seconds = time.monotonic() - started
            yield with_timeout(injector, 60)
            yield sampler
            yield with_timeout(defer.gatherResults(senders), args.peer_timeout * 4 + 30)
            # Whoever is down reconnects, so that REPORTs can arrive.
            for p in self.pairs:
                yield with_timeout(p.wait_up(), 60)
            yield self.drain(args.drain)
            stats_open = yield self.statistics()
            for p in self.pairs:
                for s in (p.a, p.b):
                    s.up = False  # a deliberate close is not a fault
                    self.injected.update(s.peer.connections.connections)
                    yield s.peer.close()
                p.a.peer.received.put(None)
                p.b.peer.received.put(None)
            yield defer.gatherResults(readers)
            yield self.relay_settled()
            stats_closed = yield self.statistics()
            self.rss["clients_gone"] = rss_kib(pid)
            yield self.relay.stop()
            return self.figures(traffic_seconds, stats_open, stats_closed)
        finally:
            if self.relay is not None and self.relay.status is None:
                yield self.relay.stop()
            shutil.rmtree(directory, True)

    @defer.inlineCallbacks
    def sample_rss(self, pid, every):
        """The relay's VmRSS (KiB) every ``every`` seconds of traffic."""
        self.rss["series"] = series = []
        while not self.stopping:
            series.append(rss_kib(pid)["VmRSS"])
            yield later(every)

    @defer.inlineCallbacks
    def drain(self, seconds):
        """Wait (bounded) until every acknowledged message has an outcome."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            waiting = [m for m in self.messages.values()
                       if m.acked and not (m.delivered or m.success or m.failure is not None or m.sender_gone)]
            if not waiting:
                return
            yield later(0.1)

    @defer.inlineCallbacks
    def relay_settled(self):
        for _ in range(100):
            stats = yield self.statistics()
            if not stats["connections_open"] and not stats["relay_sessions"]:
                return
            yield later(0.1)

    def figures(self, traffic_seconds, stats_open, stats_closed):
        msgs = list(self.messages.values())
        acked = [m for m in msgs if m.acked or m.success]
        success_not_delivered = [m for m in msgs if m.success and not m.delivered]
        silent_loss = [m for m in msgs if m.acked and not m.delivered and m.failure is None
                       and not m.sender_gone]
        log = self.relay.output()
        result = {
            "seconds": round(traffic_seconds, 1),
            "pairs": self.args.pairs,
            "messages_sent": len(msgs),
            "messages_acknowledged": len(acked),
            "acknowledged_by_200": sum(1 for m in msgs if m.acked),
            "success_reports": sum(1 for m in msgs if m.success),
            "messages_delivered": sum(1 for m in msgs if m.delivered),
            "bytes_delivered": sum(m.size for m in msgs if m.delivered),
            "acknowledged_but_lost": len(success_not_delivered) + len(silent_loss),
            "success_report_but_not_delivered": len(success_not_delivered),
            "acked_not_delivered_no_failure_report": len(silent_loss),
            "acked_then_failure_report": sum(1 for m in msgs if m.acked and m.failure is not None),
            "failure_reported_but_delivered": sum(1 for m in msgs if m.failure is not None and m.delivered),
            "refused_or_failed_hop": sum(1 for m in msgs if m.refused is not None),
            "sender_gone": sum(1 for m in msgs if m.sender_gone),
            "acked_sender_gone_not_delivered": sum(1 for m in msgs if m.acked and m.sender_gone
                                                   and not m.delivered and m.failure is None),
            "corrupted": sum(1 for m in msgs if m.corrupted),
            "lost_details": [{"mid": m.mid, "size": m.size, "chunks": m.chunks, "acked_chunks": m.acked_chunks,
                              "b_sessions": len(m.b_sessions), "failure": m.failure, "success": m.success}
                             for m in success_not_delivered + silent_loss][:20],
            "disconnects_injected": self.counters.get("disconnects_injected", 0),
            "counters": dict(sorted(self.counters.items())),
            "rss_kib": self.rss,
            "relay_statistics_before_close": {k: stats_open[k] for k in sorted(stats_open)},
            "relay_statistics_after_close": {k: stats_closed[k] for k in sorted(stats_closed)},
            "relay_log_lines": len(self.relay.lines),
            "relay_tracebacks": len(re.findall(r"Traceback|Unhandled", log)),
            "relay_refusals": [line for line in self.relay.lines if " 403 " in line][:20],
            "notes": self.notes,
        }
        return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=600.0, help="traffic time [600]")
    p.add_argument("--pairs", type=int, default=4, help="sender/receiver pairs [4]")
    p.add_argument("--window", type=int, default=2, help="messages in flight per pair [2]")
    p.add_argument("--disconnect-every", type=float, default=3.0,
                   help="mean seconds between injected disconnects [3]")
    p.add_argument("--reconnect-delay", type=float, default=0.5,
                   help="a dropped peer re-authenticates after up to this many seconds [0.5]")
    p.add_argument("--max-file", type=int, default=2 * MIB, help="largest chunked message, bytes [2 MiB]")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds before the 'warm' RSS sample [10]")
    p.add_argument("--drain", type=float, default=30.0, help="seconds to wait for outcomes at the end [30]")
    p.add_argument("--relay-transaction-timeout", type=float, default=5.0,
                   help="the relay's transaction_timeout [5]")
    p.add_argument("--peer-timeout", type=float, default=10.0, help="the clients' transaction timeout [10]")
    p.add_argument("--sample-every", type=float, default=60.0, help="seconds between RSS samples [60]")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("--json-out", help="also write the figures here")
    p.add_argument("--relay-log", help="write the relay's log here")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.pairs < 1 or args.window < 1:
        p.error("--seconds, --pairs and --window must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(2 ** 32)
    soak = Soak(args)
    outcome = {}

    def done(result):
        outcome["result"] = result
        reactor.stop()

    def failed(f):
        outcome["error"] = f
        reactor.stop()

    reactor.callWhenRunning(lambda: soak.run().addCallbacks(done, failed))
    reactor.run()
    if "error" in outcome:
        print("soak failed: %s" % outcome["error"].getTraceback(), file=sys.stderr)
        if soak.relay is not None:
            print("relay log (last lines):\n" + "\n".join(soak.relay.lines[-30:]), file=sys.stderr)
        return 1
    r = outcome["result"]
    rss = r["rss_kib"]
    print("soak: %.0f s, %d pairs, seed %d" % (r["seconds"], r["pairs"], args.seed))
    print("messages sent %d, acknowledged %d (200 for every chunk: %d, success REPORT: %d), "
          "delivered %d (%.1f MiB)" % (
              r["messages_sent"], r["messages_acknowledged"], r["acknowledged_by_200"],
              r["success_reports"], r["messages_delivered"], r["bytes_delivered"] / MIB))
    print("acknowledged-but-lost %d (success REPORT not delivered %d; 200 but neither delivered "
          "nor failure-REPORTed %d)" % (r["acknowledged_but_lost"], r["success_report_but_not_delivered"],
                                        r["acked_not_delivered_no_failure_report"]))
    print("acknowledged then failure REPORT %d; failure-reported but delivered %d; refused at a hop %d; "
          "sender disconnected before the outcome %d (acknowledged and undelivered among them %d); "
          "corrupted %d" % (r["acked_then_failure_report"], r["failure_reported_but_delivered"],
                            r["refused_or_failed_hop"], r["sender_gone"],
                            r["acked_sender_gone_not_delivered"], r["corrupted"]))
    print("disconnects injected %d (RST %d, close %d), re-AUTHs %d" % (
        r["disconnects_injected"], r["counters"].get("injected_rst", 0),
        r["counters"].get("injected_close", 0), r["counters"].get("auths", 0) - 2 * r["pairs"]))
    print("relay RSS: start %.1f MiB, after warm-up %.1f MiB, end of traffic %.1f MiB, "
          "clients gone %.1f MiB; peak %.1f MiB" % (
              rss["start"]["VmRSS"] / KIB, rss["warm"]["VmRSS"] / KIB, rss["traffic_end"]["VmRSS"] / KIB,
              rss["clients_gone"]["VmRSS"] / KIB, rss["clients_gone"]["VmHWM"] / KIB))
    print("relay RSS every %g s (MiB): %s" % (args.sample_every, " ".join(
        "%.1f" % (v / KIB) for v in rss.get("series", []))))
    closed = r["relay_statistics_after_close"]
    print("relay after the clients left: %d connections, %d sessions, %d pending "
          "transactions; tracebacks in its log: %d" % (
              closed["connections_open"], closed["relay_sessions"], closed["transactions_pending"],
              r["relay_tracebacks"]))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(r, f, indent=1)
    if args.relay_log:
        with open(args.relay_log, "w") as f:
            f.write(soak.relay.output() + "\n")
    bad = r["acknowledged_but_lost"] or r["corrupted"] or r["relay_tracebacks"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
