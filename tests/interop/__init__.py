"""Runs Debian's Kamailio as an MSRP relay for the interoperability tests.

Kamailio is started in the foreground (-DD -E) on a free loopback port with
the config beside this file and its runtime files (pid file, working
directory) in a temporary directory, so it needs no system service, no
/run/kamailio and nothing outside the test. README.md explains the config.
"""

import os
import shutil
import signal
import socket
import tempfile

from twisted.internet import defer, error, protocol, task
from twisted.internet.endpoints import TCP4ClientEndpoint

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, "kamailio.cfg")
INSTALL_SCRIPT = os.path.join(HERE, "install-kamailio.sh")

# The users in kamailio.cfg (stored there as HA1 for this realm).
REALM = "kamailio-interop"
USERS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}

# Frames from this size on get no fake SIP message in Kamailio 5.6, so its
# script cannot read them (the config answers 413); from 16384 on
# (tcp_rd_buf_size) Kamailio closes the connection.
MAX_SCRIPTABLE_FRAME = 11238
READ_BUFFER_SIZE = 16384

_LOG_KEEP = 256 * 1024
_SEARCH_PATH = ("/usr/sbin", "/sbin", "/usr/local/sbin")


class KamailioError(Exception):
    """Kamailio is missing, would not start, or would not stop."""


def find_kamailio():
    """The kamailio executable, or KamailioError saying how to install it."""
    path = os.pathsep.join([os.environ.get("PATH", "")] + list(_SEARCH_PATH))
    exe = shutil.which("kamailio", path=path)
    if exe is None:
        raise KamailioError(
            "kamailio is not installed (not found in PATH or %s); the Kamailio interop tests need "
            "Debian's kamailio package: run `sh %s` as root"
            % (", ".join(_SEARCH_PATH), os.path.relpath(INSTALL_SCRIPT)))
    return exe


def free_loopback_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


class _Output(protocol.ProcessProtocol):
    """Keeps the tail of Kamailio's log and tells when every process is gone.

    Every Kamailio process inherits the pipes, so processEnded comes only
    after the children have exited too.
    """

    def __init__(self):
        self.chunks = []
        self.size = 0
        self.ended = defer.Deferred()
        self.status = None

    def childDataReceived(self, fd, data):
        self.chunks.append(data)
        self.size += len(data)
        while self.size > _LOG_KEEP and len(self.chunks) > 1:
            self.size -= len(self.chunks.pop(0))

    def processEnded(self, reason):
        self.status = reason.value
        self.ended.callback(reason.value)

    @property
    def text(self):
        return b"".join(self.chunks).decode("utf-8", "replace")


class _Probe(protocol.Protocol):
    def connectionMade(self):
        self.transport.loseConnection()


class KamailioRelay:
    """One Kamailio process acting as an MSRP relay on 127.0.0.1.

    start() fires once it accepts TCP connections; stop() once all its
    processes have exited. ``uri`` is the relay's URI for AUTH.
    """

    def __init__(self, reactor=None, config=CONFIG, executable=None,
                 startup_timeout=15.0, stop_timeout=10.0, extra_args=()):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.config = config
        self.executable = executable
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = list(extra_args)
        self.port = None
        self.rundir = None
        self._process = None
        self._output = None

    @property
    def uri(self):
        from msrp_twisted.core.uri import parse_uri

        return parse_uri("msrp://127.0.0.1:%d;tcp" % self.port, require_transport=False)

    @property
    def log(self):
        return self._output.text if self._output is not None else ""

    @property
    def running(self):
        return self._output is not None and not self._output.ended.called

    def command(self):
        return [self.executable, "-f", self.config,
                "-DD",          # do not daemonize: we are its parent
                "-E",           # log to stderr (collected here)
                "-l", "tcp:127.0.0.1:%d" % self.port,
                "-Y", self.rundir,
                "-P", os.path.join(self.rundir, "kamailio.pid"),
                "-w", self.rundir,
                "-m", "64", "-M", "8"] + self.extra_args

    @defer.inlineCallbacks
    def start(self):
        if self.executable is None:
            self.executable = find_kamailio()
        self.rundir = tempfile.mkdtemp(prefix="kamailio-interop-")
        # The port can be taken between our probe and Kamailio's bind: try
        # a few ports before giving up.
        for attempt in range(3):
            self.port = free_loopback_port()
            self._output = _Output()
            self._process = self.reactor.spawnProcess(
                self._output, self.executable, self.command(), env=dict(os.environ), path=self.rundir)
            started = yield self._wait_listening()
            if started:
                return self
            yield self._output.ended
            if "Address already in use" not in self.log:
                break
        log = self.log
        self._cleanup()
        raise KamailioError("kamailio exited during startup (%s):\n%s"
                            % (self._output.status, log[-4000:]))

    @defer.inlineCallbacks
    def _wait_listening(self):
        """True once a TCP connect succeeds, False if Kamailio exited first."""
        deadline = self.reactor.seconds() + self.startup_timeout
        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.port, timeout=2)
        factory = protocol.Factory.forProtocol(_Probe)
        while True:
            if not self.running:
                return False
            try:
                yield endpoint.connect(factory)
            except (error.ConnectError, error.ConnectionRefusedError, error.TimeoutError):
                pass
            else:
                if self.running:
                    return True
                return False
            if self.reactor.seconds() >= deadline:
                yield self.stop()
                raise KamailioError("kamailio did not listen on 127.0.0.1:%d within %.0f s:\n%s"
                                    % (self.port, self.startup_timeout, self.log[-4000:]))
            yield task.deferLater(self.reactor, 0.05, lambda: None)

    @defer.inlineCallbacks
    def stop(self):
        """SIGTERM (Kamailio's clean shutdown), SIGKILL to every one of its
        processes if that has not finished within stop_timeout."""
        if self.running:
            self._process.signalProcess("TERM")
            timer = self.reactor.callLater(self.stop_timeout, self._kill)
            yield self._output.ended
            if timer.active():
                timer.cancel()
        self._cleanup()

    def _kill(self):
        pid = self._process.pid
        if pid is None:
            return
        for child in _children(pid):
            try:
                os.kill(child, signal.SIGKILL)
            except OSError:
                pass
        try:
            self._process.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass

    def _cleanup(self):
        if self.rundir is not None:
            shutil.rmtree(self.rundir, ignore_errors=True)
            self.rundir = None


def _children(pid):
    """Pids whose parent is pid (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry))
    return found
