"""The programs under examples/ run as documented: each is started as a
subprocess (as `python examples/NAME.py` would be) and its output and exit
status are checked, so the tutorials that quote them stay true."""

import os
import re
import sys

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from msrp_twisted.config import MSRPConfig, load_toml
from msrp_twisted.service import MSRPService
from msrp_twisted.tracing import load_filter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")


class ExampleProcess(protocol.ProcessProtocol):
    """An example run as `python examples/NAME.py ARGS`: its output lines,
    a way to wait for one of them, and its exit status."""

    def __init__(self):
        self.out = b""
        self.err = b""
        self.ended = defer.Deferred()
        self._watches = []

    @classmethod
    def start(cls, name, *args):
        proc = cls()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        argv = [sys.executable, os.path.join(EXAMPLES, name)] + list(args)
        proc.transport = reactor.spawnProcess(proc, sys.executable, argv, env=env, path=REPO)
        return proc

    @property
    def lines(self):
        return self.out.decode("utf-8").splitlines()

    def wait_for(self, pattern):
        """Fires with the match of the first stdout line matching pattern."""
        regex = re.compile(pattern)
        for line in self.lines:
            match = regex.search(line)
            if match:
                return defer.succeed(match)
        d = defer.Deferred()
        self._watches.append((regex, d))
        return d

    def outReceived(self, data):
        self.out += data
        for line in self.lines:
            for watch in list(self._watches):
                match = watch[0].search(line)
                if match:
                    self._watches.remove(watch)
                    watch[1].callback(match)

    def errReceived(self, data):
        self.err += data

    def processEnded(self, reason):
        code = reason.value.exitCode
        for _, d in self._watches:
            d.errback(AssertionError("the example ended (%s) before printing the line waited for:\n%s%s"
                                     % (code, self.out.decode("utf-8", "replace"),
                                        self.err.decode("utf-8", "replace"))))
        self._watches = []
        self.ended.callback(code)

    def kill(self):
        if self.transport.pid is not None:
            self.transport.signalProcess("KILL")


class RunExamplesTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def run_example(self, name, *args):
        proc = ExampleProcess.start(name, *args)
        self.addCleanup(proc.kill)
        code = yield proc.ended
        output = "\n".join(proc.lines)
        self.assertEqual(code, 0, "%s exited with %s:\n%s\n%s"
                         % (name, code, output, proc.err.decode("utf-8", "replace")))
        return proc.lines

    @defer.inlineCallbacks
    def test_chat_pair(self):
        lines = yield self.run_example("chat_pair.py")
        self.assertRegex(lines[0], r"^relay listening at msrp://127\.0\.0\.1:\d+;tcp$")
        self.assertEqual(lines[1:], [
            "alice's path: 2 URIs (relay session, then alice)",
            "alice -> bob: Hello Bob! [text/plain, 10 bytes, delivery confirmed]",
            "bob -> alice: Hi Alice, loud and clear. [text/plain, 25 bytes, delivery confirmed]",
            "alice -> bob: Größe: ünïcödé text is UTF-8. [text/plain, 35 bytes, delivery confirmed]",
            "done",
        ])

    @defer.inlineCallbacks
    def test_file_transfer_over_tls(self):
        lines = yield self.run_example("file_transfer.py")
        self.assertRegex(lines[0], r"^receiver listening on msrps, port \d+$")
        self.assertIn("confirmed 262144 of 262144 bytes", lines)
        self.assertIn("delivery confirmed by the receiver's REPORT (200)", lines)
        self.assertIn("received 262144 bytes, application/octet-stream, in memory", lines)
        self.assertTrue(any(re.match(r"^sha256 matches: [0-9a-f]{64}$", line) for line in lines), lines)
        self.assertEqual(lines[-1], "sender confirmed 262144 bytes in 16 chunks")

    @defer.inlineCallbacks
    def test_file_transfer_spools_large_messages(self):
        lines = yield self.run_example("file_transfer.py", str(1024 * 1024 + 1))
        self.assertIn("received 1048577 bytes, application/octet-stream, spooled to disk", lines)
        self.assertEqual(lines[-1], "sender confirmed 1048577 bytes in 65 chunks")

    @defer.inlineCallbacks
    def test_hep_collector_prints_a_relays_connection_events(self):
        """The collector of the admin guide's tracing section, fed by a real
        relay: one connection gives ACCEPTED and CLOSED as 0x59 net events."""
        proc = ExampleProcess.start("hep_collector.py", "--port", "0", "--count", "2")
        self.addCleanup(proc.kill)
        match = yield proc.wait_for(r"^HEP collector listening on udp:127\.0\.0\.1:(\d+)$")
        config = MSRPConfig.from_mapping({
            "listen": ["msrp:127.0.0.1:0"], "mi": "none", "trace_on": 1,
            "trace_destination": "udp:127.0.0.1:%s" % match.group(1)})
        service = MSRPService(config, reactor=reactor)
        yield service.start()
        self.addCleanup(service.stopService)
        port = service.connections.listening[0].getHost().port
        client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol.Protocol())
        client.transport.loseConnection()
        code = yield proc.ended
        self.assertEqual(code, 0, proc.err.decode("utf-8", "replace"))
        events = proc.lines[1:]
        self.assertEqual(len(events), 2, events)
        pattern = (r'^HEP net \(0x59\) 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:%d cid=(\d+) '
                   r'\{"Protocol": "MSRP", "Event": "%s", "Status": "SUCCESS", "Message": ".+"\}$')
        accepted = re.match(pattern % (port, "ACCEPTED"), events[0])
        closed = re.match(pattern % (port, "CLOSED"), events[1])
        self.assertIsNotNone(accepted, events[0])
        self.assertIsNotNone(closed, events[1])
        self.assertEqual(accepted.group(1), closed.group(1))

    @defer.inlineCallbacks
    def test_hep_collector_refuses_a_bad_count(self):
        proc = ExampleProcess.start("hep_collector.py", "--count", "0")
        code = yield proc.ended
        self.assertEqual(code, 2)
        self.assertIn(b"--count must be 1 or more", proc.err)


class ExampleFilesTests(SynchronousTestCase):
    def test_msrp_toml_is_a_valid_configuration(self):
        values = load_toml(os.path.join(EXAMPLES, "msrp.toml"))
        config = MSRPConfig.from_mapping(values, "examples/msrp.toml")
        self.assertEqual(config.listen, ["msrp:127.0.0.1:2855"])
        self.assertEqual((config.send_timeout, config.max_msg_chunks, config.tls_handshake_timeout,
                          config.cert_check_on_conn_reusage, config.trace_on), (100, 4, 100, 0, 0))
        self.assertEqual(config.users, "users.htdigest")

    def test_trace_filters(self):
        sys.path.insert(0, EXAMPLES)
        self.addCleanup(sys.path.remove, EXAMPLES)
        self.addCleanup(sys.modules.pop, "trace_filter", None)
        msrp_filter = load_filter("trace_filter:msrp_filter")
        skip_loopback = load_filter("trace_filter.skip_loopback")
        ours = dict(socket_ip="192.0.2.10", socket_port=2855, proto="msrp", direction="in")
        self.assertTrue(msrp_filter(si="192.0.2.30", sp=8000, **ours))
        self.assertFalse(msrp_filter(si="192.0.2.30", sp=8001, **ours))
        self.assertFalse(msrp_filter(si="192.0.2.31", sp=8000, **ours))
        self.assertFalse(skip_loopback(si="127.0.0.1", sp=40000, **ours))
        self.assertFalse(skip_loopback(si="::1", sp=40000, **ours))
        self.assertTrue(skip_loopback(si="192.0.2.30", sp=40000, **ours))

    def test_every_example_is_tested(self):
        """A new example needs a test here (and its tutorial a real run)."""
        tested = {"chat_pair.py", "file_transfer.py", "hep_collector.py", "msrp.toml", "trace_filter.py"}
        present = {name for name in os.listdir(EXAMPLES) if not name.startswith((".", "__"))}
        self.assertEqual(present, tested)
