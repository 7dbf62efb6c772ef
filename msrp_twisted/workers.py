"""The relay as N worker processes behind one address (docs/scaling.md).

The parent (``twistd -n msrp --workers N``) relays nothing. It binds every
listener once to learn (or check) its port, then gives each worker its own
listening socket on that port with SO_REUSEPORT, so the kernel spreads new
connections over the workers. It starts the workers, restarts one that dies
(with backoff), forwards their logs into its own with the worker number,
answers the management interface for all of them and stops them on
shutdown. A worker stops by itself when its control pipe from the parent
closes, so a parent that dies, even by SIGKILL, leaves no worker behind.

Each worker is a whole relay (service.MSRPService) whose session-ids start
with its index. It also listens on a private loopback port; the parent
tells every worker the others' ports, and relay.siblings links the workers
so that each reaches the sessions the others own.

Wire format between parent and worker: the parent writes JSON lines to the
worker's stdin (the first one describes the worker); the worker writes
lines to its stdout that start with the word ``msg`` (then JSON) or
``log`` (then a twisted.logger event as JSON). Its stderr is logged as text.
"""

import json
import os
import signal
import socket
import sys

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.logger import Logger, eventAsJSON, eventFromJSON, globalLogBeginner, globalLogPublisher
from zope.interface import implementer

from .core.ids import session_id_owner
from .mi import IManagement

log = Logger()

__all__ = ["WorkerContext", "WorkerPool", "adopt_listener", "worker_main"]

_COMMANDS = ("statistics", "list_sessions", "list_connections", "end_session",
             "get_trace", "set_trace", "reload_users", "reload_tls")


# -- the parent and its workers --------------------------------------------------


class WorkerContext:
    """What a worker process is given by the parent: its index, the
    number of workers and one listening socket per configured listener."""

    def __init__(self, index, count, listener_fds, reactor=None):
        self.index = index
        self.count = count
        self.listener_fds = list(listener_fds)
        self.reactor = reactor

    def adopt(self, connections, position, spec):
        return adopt_listener(connections, spec, self.listener_fds[position],
                              self.reactor or connections.reactor)


def adopt_listener(connections, spec, fd, reactor):
    """Serve spec on an inherited listening socket, as ConnectionManager.listen
    would on one it bound itself (the fd is closed: the port holds a dup)."""
    factory = connections.server_factory(spec)
    family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
    try:
        port = reactor.adoptStreamPort(fd, family, factory)
    finally:
        os.close(fd)
    connections.add_listening_port(port, spec, factory)
    log.info("MSRP listening on {spec} (shared)", spec=str(spec))
    return port


class _ParentLink(protocol.Protocol):
    """The worker's end of the control pipe: reads the parent's JSON lines
    from stdin and writes to the (blocking) control fd."""

    def __init__(self, worker, out_fd):
        self.worker = worker
        self.out_fd = out_fd
        self.buffer = b""
        self.broken = False

    def dataReceived(self, data):
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.strip():
                self.worker.command(json.loads(line))

    def connectionLost(self, reason):
        self.worker.parent_gone()

    def _write(self, data):
        if self.broken:
            return
        try:
            while data:
                data = data[os.write(self.out_fd, data):]
        except OSError:
            self.broken = True

    def send(self, **message):
        self._write(b"msg " + json.dumps(message).encode("utf-8") + b"\n")

    def log_event(self, event):
        try:
            text = eventAsJSON(event)
        except Exception:
            return
        self._write(b"log " + text.encode("utf-8") + b"\n")


class _Worker:
    """One worker process: an MSRPService plus its control pipe."""

    def __init__(self, boot, reactor):
        from .config import MSRPConfig
        from .service import MSRPService

        self.reactor = reactor
        self.index = boot["index"]
        self.count = boot["count"]
        self.link = None
        self.exit_status = 0
        self.stopping = False
        # Also when a signal stops the reactor: one reactor.stop() only.
        reactor.addSystemEventTrigger("before", "shutdown", setattr, self, "stopping", True)
        config = MSRPConfig.from_mapping(boot["config"], "worker configuration")
        context = WorkerContext(self.index, self.count, boot["listener_fds"], reactor)
        self.service = MSRPService(config, reactor, worker=context)

    def start(self):
        d = self.service.start()

        def started(_):
            self.reactor.addSystemEventTrigger("before", "shutdown", self.service.stopService)
            self.link.send(op="ready", port=self.service.siblings.private_port, pid=os.getpid())

        def failed(f):
            reason = f.getErrorMessage()
            log.critical("worker {index} cannot start: {reason}", index=self.index, reason=reason)
            self.link.send(op="failed", reason=reason)
            self.exit_status = 1
            self._stop()

        d.addCallbacks(started, failed)

    def command(self, message):
        op = message.get("op")
        if op == "siblings":
            if self.service.siblings is not None:
                self.service.siblings.set_ports(message["ports"])
        elif op == "call":
            self._call(message)
        elif op == "stop":
            self._stop()
        else:
            log.warn("unknown command from the parent: {op!r}", op=op)

    def _call(self, message):
        call_id, method = message.get("id"), message.get("method")
        if method not in _COMMANDS:
            self.link.send(op="result", id=call_id, ok=False, error="unknown method %r" % (method,))
            return
        d = defer.maybeDeferred(getattr(self.service, method), *message.get("args", ()))
        d.addCallbacks(
            lambda value: self.link.send(op="result", id=call_id, ok=True, value=value),
            lambda f: self.link.send(op="result", id=call_id, ok=False,
                                     error=f.getErrorMessage() or f.type.__name__))

    def parent_gone(self):
        log.info("control pipe closed: worker {index} stops", index=self.index)
        self._stop()

    def _stop(self):
        if self.reactor.running and not self.stopping:
            self.stopping = True
            self.reactor.stop()


def _read_boot(fd):
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 65536)
        if not chunk:
            raise SystemExit("msrp worker: the control pipe closed before the start message")
        data += chunk
    line, _, rest = data.partition(b"\n")
    return json.loads(line), rest


def _die_with_parent(parent_pid):
    """SIGTERM when the parent dies (Linux); the closed control pipe does
    the same everywhere, this only makes it independent of the reactor."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        os._exit(1)


def worker_main():
    """Entry point of a worker process (started by WorkerPool)."""
    # Ctrl-C reaches the whole process group; the parent decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints must not corrupt the control stream
    boot, rest = _read_boot(0)
    _die_with_parent(boot["parent"])

    from twisted.internet import reactor, stdio

    from .allocator import tune_malloc

    tune_malloc()  # as the twistd plugin does for a single process
    worker = _Worker(boot, reactor)
    link = worker.link = _ParentLink(worker, control_fd)
    globalLogBeginner.beginLoggingTo([link.log_event], redirectStandardIO=False)
    devnull = os.open(os.devnull, os.O_WRONLY)
    stdio.StandardIO(link, stdin=0, stdout=devnull, reactor=reactor)
    if rest:
        link.dataReceived(rest)
    reactor.callWhenRunning(worker.start)
    reactor.callWhenRunning(signal.signal, signal.SIGINT, signal.SIG_IGN)
    reactor.run()
    sys.exit(worker.exit_status)


# -- the parent ------------------------------------------------------------------


class _WorkerProcess(protocol.ProcessProtocol):
    """The parent's view of one worker process."""

    def __init__(self, pool, index, start_number):
        self.pool = pool
        self.index = index
        self.start_number = start_number
        self.ready = False
        self.private_port = None
        self.pid = None
        self.started_at = pool.reactor.seconds()
        self.ended = defer.Deferred()
        self.exited = False
        self._out = b""
        self._err = b""
        self._calls = {}
        self._next_call = 0
        self._kill_timer = None

    # -- talking to the worker -------------------------------------------
    def send(self, **message):
        if not self.exited:
            self.transport.write(json.dumps(message).encode("utf-8") + b"\n")

    def call(self, method, *args, timeout=10.0):
        if self.exited or not self.ready:
            return defer.fail(RuntimeError("worker %d is not running" % self.index))
        self._next_call += 1
        call_id = self._next_call
        d = defer.Deferred()
        timer = self.pool.reactor.callLater(timeout, self._call_timed_out, call_id)
        self._calls[call_id] = (d, timer)
        self.send(op="call", id=call_id, method=method, args=list(args))
        return d

    def _call_timed_out(self, call_id):
        d, _ = self._calls.pop(call_id, (None, None))
        if d is not None:
            d.errback(RuntimeError("worker %d did not answer" % self.index))

    # -- what the worker says --------------------------------------------
    def childDataReceived(self, fd, data):
        if fd == 1:
            self._out += data
            while b"\n" in self._out:
                line, self._out = self._out.split(b"\n", 1)
                self._line(line)
        else:
            self._err += data
            while b"\n" in self._err:
                line, self._err = self._err.split(b"\n", 1)
                self._text(line)

    def _text(self, line):
        log.info("[worker {worker}] {line}", worker=self.index, line=line.decode("utf-8", "replace"))

    def _line(self, line):
        kind, _, payload = line.partition(b" ")
        try:
            if kind == b"log":
                self._log(payload.decode("utf-8"))
            elif kind == b"msg":
                self._message(json.loads(payload))
            else:
                self._text(line)
        except (ValueError, KeyError, TypeError) as e:
            log.warn("worker {worker}: unreadable control line ({err}): {line!r}",
                     worker=self.index, err=e, line=line[:200])

    def _log(self, text):
        event = eventFromJSON(text)
        event["msrp_worker"] = self.index
        # Literal text: the event's fields were flattened in the worker, so
        # the format may name no field that was not there.
        fmt = event.get("log_format")
        event["log_format"] = "[worker %d] " % self.index + (fmt if fmt is not None else "")
        globalLogPublisher(event)

    def _message(self, message):
        op = message.get("op")
        if op == "ready":
            self.ready = True
            self.private_port = int(message["port"])
            self.pool.worker_ready(self)
        elif op == "result":
            d, timer = self._calls.pop(message.get("id"), (None, None))
            if d is None:
                return
            if timer.active():
                timer.cancel()
            if message.get("ok"):
                d.callback(message.get("value"))
            else:
                d.errback(RuntimeError(message.get("error") or "failed"))
        elif op == "failed":
            log.error("worker {worker} failed to start: {reason}", worker=self.index,
                      reason=message.get("reason"))

    # -- lifecycle -------------------------------------------------------
    def connectionMade(self):
        self.pid = self.transport.pid

    def stop(self, timeout):
        """Close the control pipe (the worker stops); SIGKILL after timeout."""
        if self.exited:
            return self.ended
        try:
            self.transport.closeStdin()
        except Exception:
            pass
        self._kill_timer = self.pool.reactor.callLater(timeout, self.kill)
        return self.ended

    def kill(self):
        if not self.exited:
            try:
                self.transport.signalProcess("KILL")
            except Exception:
                pass

    def processEnded(self, reason):
        for line in (self._out, self._err):
            if line.strip():
                self._text(line)
        self._out = self._err = b""
        self.exited = True
        self.ready = False
        if self._kill_timer is not None and self._kill_timer.active():
            self._kill_timer.cancel()
        calls, self._calls = self._calls, {}
        for d, timer in calls.values():
            if timer.active():
                timer.cancel()
            d.errback(RuntimeError("worker %d ended" % self.index))
        status = reason.value.exitCode
        signal_number = getattr(reason.value, "signal", None)
        self.pool.worker_ended(self, status, signal_number)
        self.ended.callback(None)


def _bind(spec, port, listening, backlog=128):
    family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((spec.host, port))
        if listening:
            s.listen(backlog)
            s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def _check_free(spec):
    """Fail if anything is bound to spec's port: a SO_REUSEPORT bind alone
    would join another relay's listeners instead of failing."""
    family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((spec.host, spec.port))
    finally:
        s.close()


def _spec_text(spec, port):
    from .connections import ListenerSpec

    text = str(ListenerSpec(spec.scheme, spec.host, port, {}))
    return text + "".join(";%s=%s" % item for item in spec.params.items())


@implementer(IManagement)
class WorkerPool(service.Service):
    """The parent process: N workers sharing the listeners.

    restart_delay doubles (up to max_restart_delay) each time a worker dies
    within stable_after seconds of its start, and starts over otherwise.
    """

    name = "msrp"

    def __init__(self, config, reactor=None, restart_delay=0.25, max_restart_delay=30.0,
                 stable_after=30.0, stop_timeout=10.0, call_timeout=10.0):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.config = config
        self.count = config.workers
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.stable_after = stable_after
        self.stop_timeout = stop_timeout
        self.call_timeout = call_timeout
        self.workers = {}        # index -> _WorkerProcess (the current one)
        self.starts = {}         # index -> how many times it was started
        self.restarts = 0
        self._delays = {}        # index -> last restart delay
        self._restart_calls = {}
        self._anchors = []       # bound, not listening: hold each port
        self._specs = []         # (ListenerSpec with the real port)
        self.relay_uris = []
        self.mi_port = None
        self.stopping = False
        self.announced = False
        self.trace_on = bool(config.trace_on)

    # -- starting --------------------------------------------------------
    def startService(self):
        service.Service.startService(self)
        try:
            self._prepare()
        except Exception as e:
            self._close_anchors()
            reason = str(e)
            log.critical("MSRP service failed to start: {reason}", reason=reason)
            if not self.reactor.running:
                raise SystemExit("msrp: cannot start: %s" % reason)
            self.reactor.stop()
            return
        self.reactor.callWhenRunning(self._start_all)

    def _prepare(self):
        from .connections import ConnectionManager, ListenerSpecError, parse_listener
        from .relay.auth import CredentialsFileError, HtdigestFile
        from .service import MSRPService, StartupError, listen_management

        c = self.config
        # What would fail in every worker fails here, once, with the reason.
        if c.users:
            try:
                HtdigestFile(c.users, c.auth_realm)
            except (OSError, ValueError, CredentialsFileError) as e:
                raise StartupError("--users: %s" % e) from None
        try:
            tls = MSRPService(c, self.reactor)._tls_settings()
        except ValueError as e:
            raise StartupError("TLS: %s" % e) from None
        for text in c.listen:
            spec = parse_listener(text)
            if spec.secure:
                try:
                    ConnectionManager.server_context(spec, tls)
                except ListenerSpecError as e:
                    raise StartupError("--listen: %s" % e) from None
            try:
                if spec.port:
                    _check_free(spec)
                anchor = _bind(spec, spec.port, listening=False)
            except OSError as e:
                raise StartupError("--listen: cannot listen on %s: %s" % (spec, e.strerror or e)) from None
            self._anchors.append(anchor)
            port = anchor.getsockname()[1]
            self._specs.append(parse_listener(_spec_text(spec, port)))
            if not c.relay_uri:
                host = spec.host if ":" not in spec.host else "[%s]" % spec.host
                self.relay_uris.append("%s://%s:%d;tcp" % (spec.scheme, host, port))
        self.relay_uris.extend(c.relay_uri)
        if c.mi and c.mi.lower() != "none":
            d = listen_management(self.reactor, c, self, note=", answering for %d workers" % self.count)
            failed = []
            d.addCallbacks(lambda port: setattr(self, "mi_port", port), failed.append)
            if failed:
                failed[0].raiseException()

    def _start_all(self):
        for index in range(self.count):
            self._spawn(index)

    def _worker_config(self):
        from dataclasses import asdict

        values = asdict(self.config)
        values.update(listen=[_spec_text(s, s.port) for s in self._specs], relay_uri=self.relay_uris,
                      mi="none", trace_on=int(self.trace_on))
        return values

    def _spawn(self, index):
        if self.stopping:
            return
        self._restart_calls.pop(index, None)
        self.starts[index] = self.starts.get(index, 0) + 1
        try:
            sockets = [_bind(spec, spec.port, listening=True) for spec in self._specs]
        except OSError as e:
            delay = max(1.0, self.restart_delay)
            log.error("worker {index}: cannot open its listening socket: {err}; trying again in {delay:.0f}s",
                      index=index, err=e, delay=delay)
            self._schedule_restart(index, delay)
            return
        child_fds = {0: "w", 1: "r", 2: "r"}
        for position, s in enumerate(sockets):
            child_fds[3 + position] = s.fileno()
        proc = _WorkerProcess(self, index, self.starts[index])
        argv = [sys.executable, "-c", "from msrp_twisted.workers import worker_main; worker_main()",
                "msrp-worker", str(index)]
        try:
            self.reactor.spawnProcess(proc, sys.executable, argv, env=dict(os.environ), childFDs=child_fds)
        finally:
            for s in sockets:
                s.close()
        self.workers[index] = proc
        proc.send(index=index, count=self.count, parent=os.getpid(), config=self._worker_config(),
                  listener_fds=[3 + position for position in range(len(sockets))])
        log.info("MSRP worker {index} started (pid {pid}, start {n})", index=index, pid=proc.pid,
                 n=self.starts[index])

    # -- what the workers report ------------------------------------------
    def worker_ready(self, proc):
        if self.workers.get(proc.index) is not proc:
            return
        log.info("MSRP worker {index} ready (pid {pid}, start {n}, sibling port {port})",
                 index=proc.index, pid=proc.pid, n=proc.start_number, port=proc.private_port)
        self._broadcast_ports()
        if not self.announced and self.running_count() == self.count:
            self.announced = True
            log.info("MSRP relay ready ({n} workers); URIs: {uris}", n=self.count,
                     uris=" ".join(self.relay_uris))

    def worker_ended(self, proc, status, signal_number):
        if self.workers.get(proc.index) is proc:
            del self.workers[proc.index]
        how = "signal %s" % signal_number if signal_number else "status %s" % status
        if self.stopping:
            log.info("MSRP worker {index} (pid {pid}) stopped ({how})", index=proc.index, pid=proc.pid, how=how)
            return
        self._broadcast_ports()
        ran = self.reactor.seconds() - proc.started_at
        last = self._delays.get(proc.index, 0.0)
        if ran >= self.stable_after or not last:
            delay = self.restart_delay
        else:
            delay = min(self.max_restart_delay, last * 2)
        self._delays[proc.index] = delay
        self.restarts += 1
        log.warn("MSRP worker {index} (pid {pid}) died ({how}) after {ran:.1f}s; its sessions are gone; "
                 "restarting it in {delay:.2f}s", index=proc.index, pid=proc.pid, how=how, ran=ran, delay=delay)
        self._schedule_restart(proc.index, delay)

    def _schedule_restart(self, index, delay):
        if not self.stopping:
            self._restart_calls[index] = self.reactor.callLater(delay, self._spawn, index)

    def _broadcast_ports(self):
        ports = {str(i): p.private_port for i, p in self.workers.items() if p.ready}
        for proc in self.workers.values():
            if proc.ready:
                proc.send(op="siblings", ports=ports)

    def running_count(self):
        return sum(1 for p in self.workers.values() if p.ready)

    # -- stopping --------------------------------------------------------
    def stopService(self):
        service.Service.stopService(self)
        return self._stop()

    @defer.inlineCallbacks
    def _stop(self):
        self.stopping = True
        for call in self._restart_calls.values():
            if call.active():
                call.cancel()
        self._restart_calls.clear()
        if self.mi_port is not None:
            port, self.mi_port = self.mi_port, None
            yield port.stopListening()
        yield defer.DeferredList([p.stop(self.stop_timeout) for p in list(self.workers.values())])
        self._close_anchors()

    def _close_anchors(self):
        anchors, self._anchors = self._anchors, []
        for s in anchors:
            s.close()

    # -- IManagement: answered from every running worker -----------------------
    def _running(self):
        return [self.workers[i] for i in sorted(self.workers) if self.workers[i].ready]

    @defer.inlineCallbacks
    def _gather(self, method, *args):
        procs = self._running()
        results = yield defer.DeferredList([p.call(method, *args, timeout=self.call_timeout) for p in procs],
                                           consumeErrors=True)
        out = []
        for proc, (ok, value) in zip(procs, results):
            if ok:
                out.append((proc.index, value))
            else:
                log.warn("MI {method}: worker {index}: {err}", method=method, index=proc.index,
                         err=value.getErrorMessage())
                out.append((proc.index, value))
        return out

    @defer.inlineCallbacks
    def statistics(self):
        totals = {}
        for _, value in (yield self._gather("statistics")):
            if isinstance(value, dict):
                for name, n in value.items():
                    if isinstance(n, int) and not isinstance(n, bool):
                        totals[name] = totals.get(name, 0) + n
        totals["workers"] = self.count
        totals["workers_running"] = self.running_count()
        totals["worker_restarts"] = self.restarts
        return totals

    @defer.inlineCallbacks
    def _concatenated(self, method):
        """Every running worker's list answer to method, one after another."""
        out = []
        for _, value in (yield self._gather(method)):
            if isinstance(value, list):
                out.extend(value)
        return out

    def list_sessions(self):
        return self._concatenated("list_sessions")

    def list_connections(self):
        return self._concatenated("list_connections")

    def end_session(self, session_id):
        owner = session_id_owner(session_id)
        proc = self.workers.get(owner) if owner is not None else None
        if proc is None or not proc.ready:
            return False
        return proc.call("end_session", session_id, timeout=self.call_timeout)

    def get_trace(self):
        procs = self._running()
        if not procs:
            return self.trace_on
        return procs[0].call("get_trace", timeout=self.call_timeout)

    @defer.inlineCallbacks
    def set_trace(self, on):
        results = yield self._gather("set_trace", bool(on))
        self._raise_first(results)
        self.trace_on = bool(on)

    @defer.inlineCallbacks
    def reload_users(self):
        self._raise_first((yield self._gather("reload_users")))

    @defer.inlineCallbacks
    def reload_tls(self):
        self._raise_first((yield self._gather("reload_tls")))

    @staticmethod
    def _raise_first(results):
        from twisted.python.failure import Failure

        for index, value in results:
            if isinstance(value, Failure):
                from .mi import BadArgument

                message = value.getErrorMessage()
                if "needs a trace_destination" in message:
                    raise BadArgument(message)
                raise ValueError("worker %d: %s" % (index, message))
