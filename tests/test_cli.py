"""msrp-send and msrp-listen as child processes over loopback: text and
files direct and through our relay, and every error exit (clear message,
right code, never a traceback)."""

import hashlib
import os
import pty
import re
import shutil
import sys
import tempfile

from twisted.internet import defer, protocol, reactor
from twisted.internet.defer import Deferred, DeferredQueue, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from msrp_twisted.config import MSRPConfig
from msrp_twisted.core import digest
from msrp_twisted.core.uri import parse_path
from msrp_twisted.endpoint import Endpoint
from msrp_twisted.protocol import TransportSettings
from msrp_twisted.service import MSRPService
from msrp_twisted.tls import TLSSettings
from tests.certs import get_test_pki

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USERS = {"alice": "wonderland", "bob": "builder"}
SEND = [sys.executable, "-m", "msrp_twisted.cli.send"]
LISTEN = [sys.executable, "-m", "msrp_twisted.cli.listen"]


def child_env():
    """Our environment (PATH, the venv) with the repository importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(command, *args):
    """Fires with (stdout, stderr, exit code) as text."""
    d = getProcessOutputAndValue(command[0], command[1:] + list(args), env=child_env(), path=REPO)
    return d.addCallback(lambda r: (r[0].decode(), r[1].decode(), r[2]))


class _Collect(protocol.ProcessProtocol):
    def __init__(self, data):
        self.data = data
        self.out, self.err = [], []
        self.ended = Deferred()

    def connectionMade(self):
        if self.data is not None:
            self.transport.write(self.data)
            self.transport.closeStdin()

    def outReceived(self, data):
        self.out.append(data)

    def errReceived(self, data):
        self.err.append(data)

    def processEnded(self, reason):
        self.ended.callback((b"".join(self.out).decode(), b"".join(self.err).decode(),
                             reason.value.exitCode))


def send_stdin(path, stdin):
    """msrp-send PATH - with stdin bytes written to a pipe, or an open
    file given as its standard input. Fires like run()."""
    if isinstance(stdin, bytes):
        collect, fds = _Collect(stdin), {0: "w", 1: "r", 2: "r"}
    else:
        collect, fds = _Collect(None), {0: stdin.fileno(), 1: "r", 2: "r"}
    reactor.spawnProcess(collect, SEND[0], SEND + [path, "-"], env=child_env(), path=REPO, childFDs=fds)
    return collect.ended


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Listener(protocol.ProcessProtocol):
    """msrp-listen as a child: ``path`` fires with the MSRP path from its
    first line, ``ended`` with its exit code."""

    def __init__(self):
        self.path = Deferred()
        self.paths = DeferredQueue()  # every path line, the first included
        self.ended = Deferred()
        self.out = b""
        self.err = b""
        self.running = True

    def outReceived(self, data):
        seen = self.out.count(b"\n")
        self.out += data
        if not self.path.called and b"\n" in self.out:
            first = self.out.split(b"\n", 1)[0].decode()
            if first.startswith("path: "):
                self.path.callback(first[len("path: "):])
            else:
                self.path.errback(AssertionError("first line is not the path: %r" % first))
        for line in self.out.split(b"\n")[seen:-1]:
            if line.startswith(b"path: "):
                self.paths.put(line[len(b"path: "):].decode())

    def errReceived(self, data):
        self.err += data

    def processEnded(self, reason):
        self.running = False
        if not self.path.called:
            self.path.errback(AssertionError("msrp-listen ended before printing its path: %s"
                                             % self.err.decode(errors="replace")))
        self.ended.callback(reason.value.exitCode)

    @property
    def stdout(self):
        return self.out.decode()

    def stop(self):
        if self.running:
            self.transport.signalProcess("KILL")
        return self.ended


class CLITestCase(TestCase):
    def setUp(self):
        self.relays = []
        self.directory = tempfile.mkdtemp(prefix="msrp-cli-test-")
        self.addCleanup(shutil.rmtree, self.directory, True)

    def write_file(self, name, data):
        """A file of data in the test's directory; returns its path."""
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def listen(self, *args):
        listener = Listener()
        reactor.spawnProcess(listener, LISTEN[0], LISTEN + list(args), env=child_env(), path=REPO)
        # Always reaped: killed if it is still running when the test ends.
        self.addCleanup(lambda: listener.stop().addErrback(lambda f: None))
        return listener

    def assertCleanError(self, err, *phrases):
        self.assertNotIn("Traceback", err)
        for phrase in phrases:
            self.assertIn(phrase, err)

    @inlineCallbacks
    def start_relay(self, **options):
        users = os.path.join(self.directory, "users")
        with open(users, "w") as f:
            for user, password in USERS.items():
                f.write("%s:msrp:%s\n" % (user, digest.compute_ha1(user, "msrp", password)))
        settings = {"listen": ["msrp:127.0.0.1:0"], "users": users, "mi": "none"}
        settings.update(options)
        service = MSRPService(MSRPConfig.from_mapping(settings))
        yield service.start()
        self.addCleanup(self.stop_relay, service)
        self.relays.append(service)
        return str(service.relay.uris[0])

    @inlineCallbacks
    def stop_relay(self, service):
        """Stop listening, then wait until every connection is gone."""
        closed = {}

        class Watcher:
            def connection_event(self, conn, event, success, message):
                if event == "CLOSED" and conn.conn_id in closed:
                    closed.pop(conn.conn_id).callback(None)

        manager = service.connections
        closed.update((c.conn_id, Deferred()) for c in manager.connections.values() if not c.closed)
        waits = list(closed.values())
        manager.observers.append(Watcher())
        yield service.stopService()
        yield defer.gatherResults(waits)

    @inlineCallbacks
    def free_port(self):
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(protocol.Factory())
        number = port.getHost().port
        yield port.stopListening()
        return number


class DirectTests(CLITestCase):
    @inlineCallbacks
    def test_text_then_file(self):
        """msrp-listen prints its path first; msrp-send delivers a text and a
        file to it (exit 0, 'delivered'); the listener prints the text,
        saves the file with the sha256 it prints, and exits after --count."""
        inbox = os.path.join(self.directory, "inbox")
        os.mkdir(inbox)
        listener = self.listen("--listen", "msrp:127.0.0.1:0", "--save-dir", inbox, "--count", "2")
        path = yield listener.path
        (uri,) = parse_path(path)
        self.assertEqual((uri.scheme, uri.host), ("msrp", "127.0.0.1"))
        self.assertNotEqual(uri.port, 0)

        out, err, code = yield run(SEND, path, "--text", "hello from the command line")
        self.assertEqual(code, 0, err)
        self.assertRegex(out, r"^delivered: message \w+ \(27 bytes\), confirmed by success REPORT 200 OK\n$")

        source = self.write_file("report.pdf", os.urandom(3 * 1024 * 1024 + 5))
        expected = sha256_of(source)
        out, err, code = yield run(SEND, path, "--file", source, "--chunk-size", "65536")
        self.assertEqual(code, 0, err)
        self.assertIn("delivered: message", out)
        self.assertIn("(%d bytes)" % (3 * 1024 * 1024 + 5), out)
        self.assertEqual(err, "")  # no progress bar: stderr is not a terminal

        self.assertEqual((yield listener.ended), 0)
        lines = listener.stdout.splitlines()
        self.assertRegex(lines[1], r"^message \w+ \(text/plain, 27 bytes\): hello from the command line$")
        saved = re.match(r"^file (.+) \(application/octet-stream, (\d+) bytes\) sha256 ([0-9a-f]{64})$", lines[2])
        self.assertIsNotNone(saved, lines)
        self.assertEqual(saved.group(1), os.path.join(inbox, "report.pdf"))
        self.assertEqual(saved.group(3), expected)
        self.assertEqual(sha256_of(saved.group(1)), expected)
        self.assertEqual(os.listdir(inbox), ["report.pdf"])


    @inlineCallbacks
    def test_stdin_pipe_and_redirected_file(self):
        """'-' sends standard input: from a pipe (spooled, here past its
        1 MiB in memory) and from a file redirected with '<'."""
        listener = self.listen("--listen", "msrp:127.0.0.1:0", "--save-dir", self.directory, "--count", "2")
        path = yield listener.path
        piped = os.urandom(3 * 1024 * 1024 + 7)
        out, err, code = yield send_stdin(path, piped)
        self.assertEqual(code, 0, err)
        self.assertIn("(%d bytes)" % len(piped), out)

        source = self.write_file("redirected.bin", b"skipped" + os.urandom(70000))
        with open(source, "rb") as f:
            f.seek(len(b"skipped"))  # sent from where the file stands, as cat would
            out, err, code = yield send_stdin(path, f)
        self.assertEqual(code, 0, err)
        self.assertIn("(70000 bytes)", out)

        self.assertEqual((yield listener.ended), 0)
        sums = re.findall(r"\(application/octet-stream, (\d+) bytes\) sha256 ([0-9a-f]{64})", listener.stdout)
        with open(source, "rb") as f:
            redirected = f.read()[len(b"skipped"):]
        self.assertEqual(sums, [(str(len(piped)), hashlib.sha256(piped).hexdigest()),
                                (str(len(redirected)), hashlib.sha256(redirected).hexdigest())])

    @inlineCallbacks
    def test_progress_bar_on_a_terminal(self):
        listener = self.listen("--listen", "msrp:127.0.0.1:0", "--save-dir", self.directory, "--count", "1")
        path = yield listener.path
        source = self.write_file("ten-chunks.bin", os.urandom(10 * 4096))
        master, terminal = pty.openpty()
        self.addCleanup(os.close, master)
        collect = _Collect(None)
        reactor.spawnProcess(collect, SEND[0], SEND + [path, "--file", source, "--chunk-size", "4096"],
                             env=child_env(), path=REPO, childFDs={0: "w", 1: "r", 2: terminal})
        os.close(terminal)
        out, _, code = yield collect.ended
        self.assertEqual(code, 0)
        bar = os.read(master, 65536).decode()
        self.assertIn("[#########################] 100% 40960/40960 bytes", bar)
        self.assertEqual((yield listener.ended), 0)

    @inlineCallbacks
    def test_echo_sends_files_back(self):
        """--echo returns each message to its sender, a saved file included."""
        listener = self.listen("--listen", "msrp:127.0.0.1:0", "--save-dir", self.directory, "--echo")
        path = yield listener.path
        ep = Endpoint()
        self.addCleanup(ep.close)
        session = yield ep.create_session()
        yield session.connect(path)
        yield session.send_message("ping").result
        echoed = yield session.next_message()
        self.assertEqual(echoed.data, b"ping")

        data = os.urandom(200000)
        yield session.send_message(data, "image/png", headers=[
            ("Content-Disposition", 'attachment; filename="cat.png"')]).result
        echoed = yield session.next_message()
        self.assertEqual((echoed.content_type, echoed.size), ("image/png", len(data)))
        with echoed.open() as f:
            self.assertEqual(f.read(), data)
        echoed.discard()
        self.assertIn("file %s (image/png, 200000 bytes) sha256 %s"
                      % (os.path.join(self.directory, "cat.png"), hashlib.sha256(data).hexdigest()),
                      listener.stdout)

    @inlineCallbacks
    def test_file_with_text_content_type(self):
        """--file with a text/* --content-type sends the file, not its name."""
        listener = self.listen("--listen", "msrp:127.0.0.1:0", "--save-dir", self.directory, "--count", "1")
        path = yield listener.path
        notes = self.write_file("notes.txt", b"line one\nline two\n" * 1000)
        out, err, code = yield run(SEND, path, "--file", notes, "--content-type", "text/plain")
        self.assertEqual(code, 0, err)
        self.assertIn("(18000 bytes)", out)
        self.assertEqual((yield listener.ended), 0)
        self.assertIn("file %s.1 (text/plain, 18000 bytes) sha256 %s" % (notes, sha256_of(notes)),
                      listener.stdout)


class RelayTests(CLITestCase):
    @inlineCallbacks
    def test_text_through_relay(self):
        """Both tools AUTH at our in-process relay with --relay/--user/--password."""
        relay = yield self.start_relay()
        listener = self.listen("--relay", relay, "--user", "bob", "--password", USERS["bob"],
                               "--count", "1", "--save-dir", self.directory)
        path = yield listener.path
        relay_session, bob = parse_path(path)
        self.assertEqual((relay_session.hostport, relay_session.session_id is not None),
                         (parse_path(relay)[0].hostport, True))
        out, err, code = yield run(SEND, path, "--text", "via the relay", "--relay", relay,
                                   "--user", "alice", "--password", USERS["alice"])
        self.assertEqual(code, 0, err)
        self.assertIn("delivered: message", out)
        self.assertEqual((yield listener.ended), 0)
        self.assertIn("(text/plain, 13 bytes): via the relay", listener.stdout)


class ReadStdinTests(TestCase):
    @inlineCallbacks
    def test_pipe_is_spooled_with_its_size(self):
        from msrp_twisted.cli.send import read_stdin
        data = os.urandom(300000)
        r, w = os.pipe()
        # More than a pipe holds: the writer needs the reader going.
        reactor.callInThread(lambda: (os.write(w, data), os.close(w)))
        with os.fdopen(r, "rb") as pipe:
            spooled, size = yield read_stdin(reactor, pipe)
        self.addCleanup(spooled.close)
        self.assertEqual((size, spooled.read()), (len(data), data))

    @inlineCallbacks
    def test_regular_file_is_sent_from_where_it_stands(self):
        from msrp_twisted.cli.send import read_stdin
        with tempfile.TemporaryFile() as f:
            f.write(b"x" * 1000)
            f.seek(100)
            same, size = yield read_stdin(reactor, f)
            self.assertIs(same, f)
            self.assertEqual(size, 900)


class PathChangeTests(CLITestCase):
    @inlineCallbacks
    def test_listener_prints_a_new_path(self):
        """The relay drops msrp-listen's session; the AUTH refresh (at 2/3 of
        a 3 s Expires) gets a new one, and the new path is printed for the
        senders."""
        relay = yield self.start_relay(auth_min_expires=1, auth_expires=3)
        service = self.relays[-1]
        listener = self.listen("--relay", relay, "--user", "bob", "--password", USERS["bob"])
        first = yield listener.paths.get()
        relay_session = parse_path(first)[0].session_id
        self.assertTrue(service.relay.sessions.end(relay_session))
        second = yield listener.paths.get()
        self.assertNotEqual(second, first)
        self.assertEqual(parse_path(second)[1:], parse_path(first)[1:])  # the same listener behind it
        out, err, code = yield run(SEND, second, "--text", "to the new path", "--relay", relay,
                                   "--user", "alice", "--password", USERS["alice"])
        self.assertEqual(code, 0, err)
        self.assertIn("delivered: message", out)


class ErrorTests(CLITestCase):
    @inlineCallbacks
    def test_unreachable_peer(self):
        port = yield self.free_port()
        peer = "msrp://127.0.0.1:%d/gone;tcp" % port
        out, err, code = yield run(SEND, peer, "--text", "anyone?")
        self.assertEqual(code, 1)
        self.assertEqual(out, "")
        self.assertCleanError(err, "msrp-send: cannot reach %s" % peer, "refused")

    @inlineCallbacks
    def test_refused_auth(self):
        relay = yield self.start_relay()
        port = yield self.free_port()
        sent, listened = yield defer.gatherResults([
            run(SEND, "msrp://127.0.0.1:%d/x;tcp" % port, "--text", "hi", "--relay", relay,
                "--user", "alice", "--password", "guess"),
            run(LISTEN, "--relay", relay, "--user", "bob", "--password", "guess",
                "--save-dir", self.directory),
        ])
        out, err, code = sent
        self.assertEqual(code, 1)
        self.assertCleanError(err, "msrp-send: relay %s refused AUTH of alice: 403" % relay)
        out, err, code = listened
        self.assertEqual(code, 1)
        self.assertCleanError(err, "msrp-listen: relay %s refused AUTH of bob: 403" % relay)

    @inlineCallbacks
    def test_tls_unknown_ca(self):
        """A server whose certificate comes from a CA the sender does not
        trust: exit 1 with the verification failure."""
        pki = get_test_pki()
        server = Endpoint(tls=TLSSettings(cert_file=pki.unknown_server.cert, key_file=pki.unknown_server.key),
                          settings=TransportSettings(tls_handshake_timeout=10000))
        self.addCleanup(server.close)
        yield server.listen("msrps:127.0.0.1:0")
        session = yield server.create_session()
        out, err, code = yield run(SEND, session.path_text, "--text", "secret", "--tls-ca", pki.ca_bundle)
        self.assertEqual(code, 1)
        self.assertCleanError(err, "msrp-send: cannot reach %s" % session.path_text,
                              "TLS handshake failed", "certificate verify failed")

    @inlineCallbacks
    def test_usage_errors(self):
        """Bad URI, no content, a relay without credentials, a bad listener: exit 2."""
        results = yield defer.gatherResults([
            run(SEND, "msrp:/missing-slashes", "--text", "x"),
            run(SEND, "msrp://127.0.0.1:2855/abc;tcp"),
            run(SEND, "msrp://127.0.0.1:2855/abc;tcp", "--text", "x", "--file", __file__),
            run(SEND, "msrp://127.0.0.1:2855/abc;tcp", "--text", "x", "--relay", "msrp://127.0.0.1:2855"),
            run(LISTEN, "--listen", "msrp:localhost:0"),
            run(LISTEN),
        ])
        expected = [
            "msrp-send: bad URI 'msrp:/missing-slashes'",
            "msrp-send: give exactly one of --text, --file or '-'",
            "msrp-send: give exactly one of --text, --file or '-'",
            "msrp-send: --relay needs --user",
            "msrp-listen: --listen: bad listener 'msrp:localhost:0'",
            "msrp-listen: give --listen (direct) and/or --relay (through a relay)",
        ]
        for (out, err, code), phrase in zip(results, expected):
            self.assertEqual(code, 2, (phrase, err))
            self.assertCleanError(err, phrase)
