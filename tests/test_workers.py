"""The relay as several worker processes behind one address (workers.py, relay/siblings.py).

Owner-prefixed session ids; two workers in this process on real loopback
sockets, their sessions reached over sibling links; and `twistd -n msrp
--workers 2` as a child process: clients on different workers, a worker
killed and restarted, the parent stopped or killed without leaving workers.
"""

import os
import shutil
import signal
import socket
import tempfile

from twisted.internet import defer, reactor, task
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase, TestCase

from msrp_twisted import mi
from msrp_twisted.config import ConfigError, MSRPConfig
from msrp_twisted.core.ids import (
    SESSION_ID_BITS,
    is_valid_session_id,
    new_owned_session_id,
    new_session_id,
    session_id_owner,
)
from msrp_twisted.core.uri import MSRPURI, parse_uri
from msrp_twisted.relay.sessions import SessionTable
from msrp_twisted.workers import WorkerContext
from msrp_twisted.service import MSRPService, StartupError
from msrp_twisted.tap import make_service
from tests.relay_helpers import ClosingWatcher, Peer, TwistdProcess, write_users

USERS = {"alice": "wonderland", "bob": "builder", "carol": "singer", "mallory": "evil"}


class OwnedSessionIdTests(SynchronousTestCase):
    def test_owner_prefix_and_random_part(self):
        for owner in (0, 1, 7, 63, 9999):
            sid = new_owned_session_id(owner)
            prefix, _, rest = sid.partition(".")
            self.assertEqual(prefix, str(owner))
            # token_urlsafe of 15 bytes: 20 characters of 6 bits each.
            self.assertEqual(len(rest) * 6, SESSION_ID_BITS)
            self.assertEqual(SESSION_ID_BITS, 120)
            self.assertTrue(is_valid_session_id(sid))
            self.assertEqual(session_id_owner(sid), owner)
        self.assertEqual(len({new_owned_session_id(1) for _ in range(1000)}), 1000)

    def test_ids_that_name_no_owner(self):
        self.assertIsNone(session_id_owner(new_session_id()))  # no "." in the alphabet
        for sid in ("01.abc", "10000.abc", "-1.abc", "1abc", ".abc", "x1.abc", "", None, 3):
            self.assertIsNone(session_id_owner(sid), sid)

    def test_bad_owner(self):
        for owner in (-1, 10000, "1", 1.0, True, None):
            self.assertRaises(ValueError, new_owned_session_id, owner)

    def test_session_table_names_its_owner(self):
        class Conn:
            conn_id = 1

            def keep_alive_until(self, when):
                pass

        clock = task.Clock()
        uri = parse_uri("msrp://127.0.0.1:2855;tcp")
        owned = SessionTable(clock, owner=3).create("alice", Conn(), uri, uri, 60)
        self.assertEqual(session_id_owner(owned.session_id), 3)
        self.assertEqual(owned.use_path.session_id, owned.session_id)
        plain = SessionTable(clock).create("alice", Conn(), uri, uri, 60)
        self.assertNotIn(".", plain.session_id)
        clock.advance(60)


class WorkersOptionTests(SynchronousTestCase):
    def test_default_is_one_process(self):
        config = MSRPConfig()
        self.assertEqual(config.workers, 1)
        self.assertIsInstance(make_service(config), MSRPService)

    def test_bounds_and_connection_cap(self):
        self.assertEqual(MSRPConfig.from_mapping({"workers": "4"}).workers, 4)
        for bad in ("0", "65", "two"):
            self.assertRaises(ConfigError, MSRPConfig.from_mapping, {"workers": bad})
        e = self.assertRaises(ConfigError, MSRPConfig.from_mapping,
                              {"workers": 4, "max_connections_per_ip": 2})
        self.assertIn("--max-connections-per-ip: 2 is too small for --workers 4", str(e))
        MSRPConfig.from_mapping({"workers": 4, "max_connections_per_ip": 3})

    def test_single_service_refuses_workers(self):
        service = MSRPService(MSRPConfig.from_mapping({"workers": 2, "mi": "none"}))
        f = self.failureResultOf(service.start(), StartupError)
        self.assertIn("--workers 2: this service is one process", f.getErrorMessage())


def _listening_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(50)
    s.setblocking(False)
    return s


class SiblingRoutingTests(TestCase):
    """Two workers of one relay in this process, each on its own listening
    socket (so a client picks its worker), sharing one relay URI."""

    @inlineCallbacks
    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="msrp-workers-test-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        users = write_users(self.directory, USERS)
        sockets = [_listening_socket() for _ in range(2)]
        self.ports = [s.getsockname()[1] for s in sockets]
        self.relay_uri = parse_uri("msrp://127.0.0.1:%d;tcp" % self.ports[0])
        self.workers = []
        self.peers = []
        self.addCleanup(self._shutdown)
        for index, s in enumerate(sockets):
            config = MSRPConfig.from_mapping({
                "listen": ["msrp:127.0.0.1:%d" % self.ports[index]], "relay_uri": [str(self.relay_uri)],
                "users": users, "mi": "none", "workers": 2})
            service = MSRPService(config, worker=WorkerContext(index, 2, [s.detach()]))
            yield service.start()
            service.watcher = ClosingWatcher(service.transactions)
            self.workers.append(service)
        ports = {i: w.siblings.private_port for i, w in enumerate(self.workers)}
        for w in self.workers:
            w.siblings.set_ports(ports)
        yield defer.gatherResults([w.siblings.wait_linked() for w in self.workers])

    @inlineCallbacks
    def _shutdown(self):
        for w in self.workers:
            w.siblings.stop()
        yield defer.gatherResults([p.close() for p in self.peers] +
                                  [w.watcher.close_all() for w in self.workers])
        for w in self.workers:
            yield w.stopService()

    @inlineCallbacks
    def peer_on(self, index, name):
        """A Peer whose every frame goes to worker index."""
        p = Peer(name)
        self.peers.append(p)
        p.conn = yield p.connections.connection_for(MSRPURI("127.0.0.1", self.ports[index], None, "tcp"))
        return p

    @inlineCallbacks
    def client_on(self, index, name):
        p = yield self.peer_on(index, name)
        response = yield p.auth(self.relay_uri, name, USERS[name])
        use = response.use_path[0]
        self.assertEqual(session_id_owner(use.session_id), index)
        return p, use

    @inlineCallbacks
    def test_clients_on_different_workers(self):
        """The frame crosses the link as a hop from one relay session to
        the next; B sees the same paths as with one process."""
        a, ua = yield self.client_on(0, "alice")
        b, ub = yield self.client_on(1, "bob")
        response = yield a.send([ua, ub, b.uri], b"hello bob")
        self.assertEqual(response.code, 200)
        got = yield b.received.get()
        self.assertEqual((got.body, got.request.to_path, got.request.from_path),
                         (b"hello bob", (b.uri,), (ub, ua, a.uri)))
        response = yield b.send([ub, ua, a.uri], b"hi alice")
        self.assertEqual(response.code, 200)
        got = yield a.received.get()
        self.assertEqual((got.body, got.request.from_path), (b"hi alice", (ua, ub, b.uri)))
        self.assertEqual([w.siblings.stats["sibling_frames_out"] for w in self.workers], [1, 1])
        # The guards against slow clients are off on links (a stalled
        # worker must not drop every frame in flight).
        link = self.workers[0].siblings.link(1)
        self.assertEqual((link.settings.send_timeout, link.settings.max_msg_chunks), (0, 0))
        self.assertEqual(self.workers[0].connections.settings.send_timeout, 100)
        self.assertEqual([w.relay.stats["frames_relayed"] for w in self.workers], [2, 2])
        # Success REPORTs travel back across the link too.
        yield a.send([ua, ub, b.uri], b"confirm", headers=[("Success-Report", "yes")])
        got = yield b.received.get()
        yield b.report(got.request, 200)
        report = (yield a.received.get()).request
        self.assertEqual((report.method, report.status.code, report.from_path),
                         ("REPORT", 200, (ua, ub, b.uri)))

    @inlineCallbacks
    def test_frame_for_another_workers_session_is_passed_on(self):
        """A sender without a session here (another relay, an endpoint)
        reached worker 0 with a frame for bob's session on worker 1: it is
        passed on unchanged, and the owner's failure REPORT comes back."""
        b, ub = yield self.client_on(1, "bob")
        c = yield self.peer_on(0, "carol")
        response = yield c.send([ub, b.uri], b"via worker 0")
        self.assertEqual(response.code, 200)
        got = yield b.received.get()
        self.assertEqual((got.body, got.request.to_path, got.request.from_path),
                         (b"via worker 0", (b.uri,), (ub, c.uri)))
        self.assertEqual(self.workers[1].siblings.stats["sibling_marks_removed"], 1)

        b.answer = 415
        response = yield c.send([ub, b.uri], b"<b>no</b>", content_type="text/html")
        self.assertEqual(response.code, 200)
        report = (yield c.received.get()).request
        self.assertEqual((report.method, report.status.code), ("REPORT", 415))
        self.assertEqual((report.to_path, report.from_path), ((c.uri,), (ub,)))
        self.assertEqual(self.workers[0].siblings.stats["sibling_reports_returned"], 1)

    @inlineCallbacks
    def test_sibling_hop_keeps_the_direction_rules(self):
        """Over a link a frame can only go toward a session's client: not
        to another address (403), and a stranger on the private port who
        claims to be bob's client gets nowhere either."""
        b, ub = yield self.client_on(1, "bob")
        m, um = yield self.client_on(0, "mallory")
        elsewhere = MSRPURI("127.0.0.1", 9, new_session_id(), "tcp")
        response = yield m.send([um, ub, elsewhere], b"redirect me")
        if response.code == 200:  # answered at once; the refusal comes as a REPORT
            report = (yield m.received.get()).request
            self.assertEqual(report.status.code, 403)
        else:
            self.assertEqual(response.code, 403)

        stranger = Peer("bob")
        self.peers.append(stranger)
        stranger.uri = b.uri  # pretends to be bob's client
        private = self.workers[1].siblings.private_port
        stranger.conn = yield stranger.connections.connection_for(MSRPURI("127.0.0.1", private, None, "tcp"))
        response = yield stranger.send([ub, elsewhere], b"outward, please")
        self.assertEqual(response.code, 403)

        # Nothing reached bob: the next thing he gets is this.
        a, ua = yield self.client_on(0, "alice")
        yield a.send([ua, ub, b.uri], b"barrier")
        self.assertEqual((yield b.received.get()).body, b"barrier")

    @inlineCallbacks
    def test_unknown_owner_and_unreachable_owner(self):
        a, ua = yield self.client_on(0, "alice")
        nobody = self.relay_uri.with_session(new_owned_session_id(7))  # no worker 7
        response = yield a.send([ua, nobody, a.uri], b"x")
        self.assertEqual(response.code, 481)
        b, ub = yield self.client_on(1, "bob")
        self.workers[0].siblings.set_ports({})  # worker 1 gone
        response = yield a.send([ua, ub, b.uri], b"x")
        self.assertEqual(response.code, 408)
        self.assertEqual(self.workers[0].siblings.stats["sibling_unreachable"], 1)


# -- `twistd -n msrp --workers 2` ----------------------------------------------


class _MIClient(amp.AMP):
    def connectionMade(self):
        super().connectionMade()
        self.lost = defer.Deferred()

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.lost.callback(None)


def _alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


@inlineCallbacks
def _until(predicate, what, limit=10.0, step=0.02):
    """Poll predicate on the reactor (for a process outside this one)."""
    waited = 0.0
    while not predicate():
        if waited >= limit:
            raise AssertionError("%s: not after %.0f s" % (what, limit))
        yield task.deferLater(reactor, step, lambda: None)
        waited += step


class TwistdWorkersTests(TestCase):
    timeout = 60

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="msrp-workers-twistd-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.users_file = write_users(self.directory, USERS)
        self.peers = []
        self.addCleanup(self._close_peers)

    def _close_peers(self):
        return defer.gatherResults([p.close() for p in self.peers])

    MI_SECRET = b"the pool's management secret"

    @inlineCallbacks
    def start(self):
        secret_file = os.path.join(self.directory, "mi.secret")
        with open(secret_file, "wb") as f:
            f.write(self.MI_SECRET)
        proc = TwistdProcess.spawn(reactor, [
            "msrp", "--listen", "msrp:127.0.0.1:0", "--users", self.users_file,
            "--mi", "tcp:0:interface=127.0.0.1", "--mi-secret-file", secret_file,
            "--workers", "2"], path=self.directory)
        self.addCleanup(proc.stop)
        ready = yield proc.wait_for(r"MSRP relay ready \(2 workers\); URIs: (\S+)")
        self.relay_uri = parse_uri(ready.group(1))
        pids = []
        for index in range(2):
            m = yield proc.wait_for(r"MSRP worker %d ready \(pid (\d+), start 1," % index)
            pids.append(int(m.group(1)))
        return proc, pids

    @inlineCallbacks
    def connect_mi(self, proc):
        m = yield proc.wait_for(r"MSRP management \(AMP\) on \S+ \(127\.0\.0\.1:(\d+)\)")
        client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", int(m.group(1))), _MIClient())

        def close():
            if client.transport is not None:
                client.transport.loseConnection()
            return client.lost

        self.addCleanup(close)
        # The pool's MI (in the parent) holds to the secret too.
        yield self.assertFailure(client.callRemote(mi.Statistics), mi.NotAuthenticated)
        yield defer.Deferred.fromCoroutine(mi.authenticate(client, self.MI_SECRET))
        return client

    @inlineCallbacks
    def client(self, name, not_owner=None, attempts=40):
        """An authenticated client; with not_owner, one whose session is on
        another worker (new connections until the kernel picks one)."""
        for _ in range(attempts):
            p = Peer(name)
            self.peers.append(p)
            response = yield p.auth(self.relay_uri, name, USERS[name])
            use = response.use_path[0]
            if not_owner is None or session_id_owner(use.session_id) != not_owner:
                return p, use
            yield p.close()
        self.fail("%d connections all landed on worker %d" % (attempts, not_owner))

    @inlineCallbacks
    def exchange(self, a, ua, b, ub, text):
        response = yield a.send([ua, ub, b.uri], text.encode())
        self.assertEqual(response.code, 200)
        got = yield b.received.get()
        self.assertEqual((got.body, got.request.from_path), (text.encode(), (ub, ua, a.uri)))
        response = yield b.send([ub, ua, a.uri], b"re: " + text.encode())
        self.assertEqual(response.code, 200)
        got = yield a.received.get()
        self.assertEqual(got.body, b"re: " + text.encode())

    @inlineCallbacks
    def test_two_workers_kill_restart_and_stop(self):
        proc, pids = yield self.start()
        mi_client = yield self.connect_mi(proc)
        a, ua = yield self.client("alice")
        b, ub = yield self.client("bob", not_owner=session_id_owner(ua.session_id))
        owner_a, owner_b = session_id_owner(ua.session_id), session_id_owner(ub.session_id)
        self.assertEqual({owner_a, owner_b}, {0, 1})
        yield self.exchange(a, ua, b, ub, "across workers")

        counters = yield mi_client.callRemote(mi.Statistics)
        stats = {c["name"]: c["value"] for c in counters["counters"]}
        self.assertEqual((stats["workers"], stats["workers_running"], stats["relay_sessions"]), (2, 2, 2))
        self.assertEqual(stats["sibling_frames_out"], 2)
        sessions, _ = yield mi.call_paged(mi_client, mi.ListSessions, "sessions")
        self.assertEqual(sorted(s["session_id"] for s in sessions), sorted([ua.session_id, ub.session_id]))

        # Kill bob's worker: bob's connection and session go, alice's stay.
        b_closed = b.closer.wait_closed(b.conn or next(iter(b.connections.connections.values())))
        os.kill(pids[owner_b], signal.SIGKILL)
        yield b_closed
        restarted = yield proc.wait_for(r"MSRP worker %d ready \(pid (\d+), start 2," % owner_b)
        self.assertNotEqual(int(restarted.group(1)), pids[owner_b])
        self.assertTrue(_alive(pids[owner_a]))
        sessions, _ = yield mi.call_paged(mi_client, mi.ListSessions, "sessions")
        self.assertEqual([s["session_id"] for s in sessions], [ua.session_id])
        counters = yield mi_client.callRemote(mi.Statistics)
        stats = {c["name"]: c["value"] for c in counters["counters"]}
        self.assertEqual((stats["workers_running"], stats["worker_restarts"]), (2, 1))
        self.assertIn("MSRP worker %d (pid %d) died (signal 9)" % (owner_b, pids[owner_b]), proc.output())

        # Bob authenticates again, on the restarted worker, and talks to alice.
        b2, ub2 = yield self.client("bob", not_owner=owner_a)
        yield _until(lambda: "[worker %d] link to worker %d up" % (owner_a, owner_b) in proc.output()
                     and proc.output().count("[worker %d] link to worker %d up" % (owner_a, owner_b)) >= 2,
                     "worker %d linked to the new worker %d" % (owner_a, owner_b))
        yield self.exchange(a, ua, b2, ub2, "after the restart")

        # Worker logs reach the parent's log with their number.
        self.assertRegex(proc.output(), r"\[worker [01]\] AUTH ok: alice")
        yield self._close_peers()
        status = yield proc.stop()
        self.assertEqual(status, -signal.SIGTERM)
        workers = pids + [int(restarted.group(1))]
        self.assertEqual([pid for pid in workers if _alive(pid)], [])
        self.assertIn("Server Shut Down.", proc.output())
        self.assertNotIn("Traceback", proc.output())

    @inlineCallbacks
    def test_killed_parent_leaves_no_worker(self):
        proc, pids = yield self.start()
        self.assertTrue(all(_alive(pid) for pid in pids))
        proc.transport.signalProcess("KILL")
        yield proc.wait_ended()
        yield _until(lambda: not any(_alive(pid) for pid in pids), "workers gone after the parent")

    @inlineCallbacks
    def test_listen_address_in_use_fails_at_start(self):
        busy = _listening_socket()
        self.addCleanup(busy.close)
        port = busy.getsockname()[1]
        proc = TwistdProcess.spawn(reactor, [
            "msrp", "--listen", "msrp:127.0.0.1:%d" % port, "--users", self.users_file,
            "--mi", "none", "--workers", "2"], path=self.directory)
        self.addCleanup(proc.stop)
        self.assertEqual((yield proc.wait_ended()), 1)
        self.assertIn("msrp: cannot start: --listen: cannot listen on msrp:127.0.0.1:%d" % port, proc.output())
        self.assertNotIn("MSRP worker", proc.output())

