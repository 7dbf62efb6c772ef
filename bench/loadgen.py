"""MSRP load generator for the relay benchmarks (issue 8).

Two clients in this one process: A sends SENDs, B answers each with 200.
Either both authenticate to a relay (ours or Kamailio, Digest AUTH) and A
sends along ``A's Use-Path, B's Use-Path, B`` (every endpoint lists its own
relay first, the only shape Kamailio routes), or A connects to B directly,
optionally through a plain TCP forwarder (``--via``).

The generator has to stay cheaper than what it measures, so the load phase
does not use the endpoint stack: frames are pre-serialized (checked once
against the core serializer), sockets are non-blocking under one epoll, and
received frames are delimited by a small scanner that only looks for
start lines, blank lines and end-lines and never keeps a body. ``--check``
also feeds every received byte to the core parser and compares. The
generator's own CPU time is printed next to the relay's.

Small mode: N SENDs of --size bytes with at most --window transactions
outstanding at A (a transaction ends when A gets its response, which a
relay sends hop by hop). Bulk mode: one message of --total bytes in chunks
of --chunk bytes, each chunk a SEND with Byte-Range.

Run on demand (not a test), e.g.:

    python bench/loadgen.py --relay msrp://127.0.0.1:2855;tcp \\
        --user-a alice:pa --user-b bob:pb --count 20000 --window 100 \\
        --relay-pid 1234
    python bench/loadgen.py --direct --via 127.0.0.1:9000 --b-port 9001 \\
        --bulk --chunk 65536 --total 209715200

Only loopback addresses are accepted. Every phase is bounded by --timeout
and by --stall (no progress); the exit status is non-zero on a stall,
an error response or a lost connection.
"""

import argparse
import collections
import ipaddress
import itertools
import json
import os
import random
import resource
import select
import socket
import sys
import time

from msrp_twisted.core import digest
from msrp_twisted.core.errors import MSRPError
from msrp_twisted.core.headers import Headers
from msrp_twisted.core.ids import new_session_id
from msrp_twisted.core.message import Request
from msrp_twisted.core.parser import InvalidMessage, MessageAssembler, MessageEnd, Parser
from msrp_twisted.core.serializer import serialize
from msrp_twisted.core.uri import parse_uri

MB = 1e6  # payload rates are in 10^6 bytes per second
_FLAGS = b"$#+"


class LoadError(Exception):
    """The run cannot go on; the message says what happened."""


# -- the relay's CPU time ------------------------------------------------------


def _children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def process_tree(pids, descendants):
    out = list(pids)
    if descendants:
        todo = list(pids)
        while todo:
            kids = _children(todo.pop())
            out.extend(kids)
            todo.extend(kids)
    return out


def cpu_seconds(pids):
    """utime + stime of the processes (from /proc/PID/stat), in seconds."""
    ticks = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        # fields[0] is field 3 (state): utime and stime are fields 14 and 15.
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# -- frame scanning ----------------------------------------------------------


class Scanner:
    """Delimits MSRP frames in a byte stream read with recv_into.

    on_frame(tid, rest, head, body_len, flag) gets the transaction id, the
    rest of the start line (method, or code and comment), the start line and
    headers as bytes, the number of body bytes and the flag byte. Bodies are
    counted and dropped. The rules are those of RFC 4975 section 7: a body
    ends only at CRLF, seven dashes, its own transaction id, a flag, CRLF.
    """

    def __init__(self, on_frame, size, check=False):
        self.on_frame = on_frame
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.fill = 0
        self.in_body = False
        self.tid = self.rest = self.head = self.needle = None
        self.body_len = 0
        self.frames = 0
        self.bytes = 0
        self.checker = Parser(max_body=0) if check else None
        self.checked = 0

    def recv(self, sock):
        """Read once; return the byte count (0 at end of stream)."""
        if self.fill == len(self.buf):
            # A head larger than the buffer: grow (never in these runs).
            self.view.release()
            self.buf.extend(bytes(len(self.buf)))
            self.view = memoryview(self.buf)
        n = sock.recv_into(self.view[self.fill:])
        if n:
            if self.checker is not None:
                self._check(self.view[self.fill:self.fill + n].tobytes())
            self.bytes += n
            self.fill += n
            self._scan()
        return n

    def _check(self, data):
        for ev in self.checker.feed(data):
            if type(ev) is MessageEnd:
                self.checked += 1
            elif type(ev) is InvalidMessage:
                raise LoadError("core parser refused a frame: %s (tid %s)" % (ev.error.reason, ev.error.tid))

    def _scan(self):
        buf = self.buf
        end = self.fill
        pos = 0
        while pos < end:
            if not self.in_body:
                eol = buf.find(b"\r\n", pos, end)
                if eol < 0:
                    break
                if buf[pos:pos + 5] != b"MSRP ":
                    raise LoadError("stream does not start with 'MSRP ': %r" % (bytes(buf[pos:pos + 40]),))
                sp = buf.find(b" ", pos + 5, eol)
                if sp < 0:
                    raise LoadError("bad start line %r" % (bytes(buf[pos:eol]),))
                tid = bytes(buf[pos + 5:sp])
                needle = b"\r\n-------" + tid
                ln = len(needle)
                j = buf.find(needle, eol, end)
                blank = buf.find(b"\r\n\r\n", eol, end if j < 0 else j + 2)
                if blank >= 0 and blank + 2 != j:
                    self.tid, self.rest, self.head = tid, bytes(buf[sp + 1:eol]), bytes(buf[pos:blank])
                    self.needle = needle
                    self.body_len = 0
                    self.in_body = True
                    pos = blank + 4
                    continue
                if j < 0 or j + ln + 3 > end:
                    break
                self._end(tid, bytes(buf[sp + 1:eol]), bytes(buf[pos:j]), 0, buf[j + ln], j + ln)
                pos = j + ln + 3
            else:
                needle = self.needle
                ln = len(needle)
                j = buf.find(needle, pos, end)
                while j >= 0 and j + ln + 3 <= end and not (
                        buf[j + ln] in _FLAGS and buf[j + ln + 1] == 13 and buf[j + ln + 2] == 10):
                    j = buf.find(needle, j + 1, end)
                if j >= 0 and j + ln + 3 <= end:
                    self.body_len += j - pos
                    self.in_body = False
                    self._end(self.tid, self.rest, self.head, self.body_len, buf[j + ln], j + ln)
                    pos = j + ln + 3
                    continue
                keep = j if j >= 0 else max(pos, end - ln - 2)
                self.body_len += keep - pos
                pos = keep
                break
        if pos:
            rest = end - pos
            if rest:
                buf[:rest] = bytes(self.view[pos:end])
            self.fill = rest

    def _end(self, tid, rest, head, body_len, flag, at):
        if self.buf[at + 1:at + 3] != b"\r\n" or flag not in _FLAGS:
            raise LoadError("bad end-line for %r" % (tid,))
        self.frames += 1
        self.on_frame(tid, rest, head, body_len, flag)


def header(head, name):
    """The value of header `name` (bytes, exact spelling) in a head, or None."""
    key = b"\r\n" + name + b": "
    i = head.find(key)
    if i < 0:
        return None
    i += len(key)
    j = head.find(b"\r\n", i)
    return head[i:] if j < 0 else head[i:j]


# -- setup: connections and AUTH (blocking, off the clock) ---------------------


def loopback(host):
    try:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError
    except ValueError:
        raise LoadError("%s is not a loopback address (benchmarks only talk to this machine)" % host) from None
    return host


def connect(host, port, timeout):
    try:
        sock = socket.create_connection((loopback(host), port), timeout=timeout)
    except OSError as e:
        raise LoadError("cannot connect to %s:%d: %s" % (host, port, e.strerror or e)) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_message(sock, assembler, timeout):
    """The next complete message on a blocking socket."""
    deadline = time.monotonic() + timeout
    while True:
        if assembler.pending:
            return assembler.pending.popleft()
        left = deadline - time.monotonic()
        if left <= 0:
            raise LoadError("no response within %.0f s during setup" % timeout)
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if not data:
            raise LoadError("connection closed by the relay during setup")
        for msg in assembler.feed(data):
            if isinstance(msg, InvalidMessage):
                raise LoadError("invalid frame during setup: %s" % msg.error.reason)
            assembler.pending.append(msg)


def new_assembler():
    a = MessageAssembler(max_body=0)
    a.pending = collections.deque()
    return a


_tids = iter(range(1, 1 << 62))


def setup_tid():
    return "setup%08d" % next(_tids)


def auth(sock, relay_uri, local_uri, username, password, timeout):
    """Digest AUTH (RFC 4976 section 5); returns the Use-Path URI text."""
    assembler = new_assembler()

    def exchange(extra):
        req = Request(setup_tid(), "AUTH", Headers([("To-Path", relay_uri), ("From-Path", local_uri)] + extra))
        sock.sendall(serialize(req))
        return read_message(sock, assembler, timeout)

    resp = exchange([])
    if resp.code == 401:
        challenge = resp.headers.get("WWW-Authenticate")
        if not challenge:
            raise LoadError("401 without WWW-Authenticate from %s" % relay_uri)
        cred = digest.make_authorization(challenge, username, password, "AUTH", relay_uri)
        resp = exchange([("Authorization", digest.format_credentials(cred))])
    if resp.code != 200:
        raise LoadError("AUTH of %s to %s failed: %s %s" % (username, relay_uri, resp.code, resp.comment or ""))
    use_path = resp.headers.get("Use-Path")
    if not use_path:
        raise LoadError("200 to AUTH without Use-Path from %s" % relay_uri)
    return use_path.split()[0]


def local_uri(sock):
    host, port = sock.getsockname()[:2]
    return "msrp://%s:%d/%s;tcp" % (host, port, new_session_id())


class Setup:
    """Connected, authenticated A and B and the paths A sends along."""

    def __init__(self, args):
        timeout = args.setup_timeout
        if args.direct:
            host, port = args.b_listen
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((loopback(host), port))
            listener.listen(1)
            bport = listener.getsockname()[1]
            self.b_uri = "msrp://%s:%d/%s;tcp" % (host, bport, new_session_id())
            via = args.via or (host, bport)
            self.a = connect(via[0], via[1], timeout)
            listener.settimeout(timeout)
            try:
                self.b, _ = listener.accept()
            except socket.timeout:
                raise LoadError("nothing connected to B on %s:%d (is the forwarder pointed there?)" % (host, bport)) from None
            finally:
                listener.close()
            self.b.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.a_uri = local_uri(self.a)
            self.to_path = self.b_uri
            self.description = "direct to B" + (" via %s:%d" % via if args.via else "")
        else:
            relay = parse_uri(args.relay, require_transport=False)
            relay_text = args.relay
            self.a = connect(relay.host, relay.effective_port, timeout)
            self.b = connect(relay.host, relay.effective_port, timeout)
            self.a_uri, self.b_uri = local_uri(self.a), local_uri(self.b)
            use_a = auth(self.a, relay_text, self.a_uri, *args.user_a, timeout)
            use_b = auth(self.b, relay_text, self.b_uri, *args.user_b, timeout)
            self.to_path = "%s %s %s" % (use_a, use_b, self.b_uri)
            self.description = "through relay %s" % relay_text
        self.from_path = self.a_uri
        for s in (self.a, self.b):
            s.setblocking(False)


# -- the load ----------------------------------------------------------------


class Writer:
    """Non-blocking writes of queued buffers (scatter-gather, no joins)."""

    def __init__(self, sock):
        self.sock = sock
        self.queue = collections.deque()
        self.queued = 0

    def push(self, data):
        self.queue.append(data)
        self.queued += len(data)

    def flush(self):
        q = self.queue
        sock = self.sock
        while q:
            try:
                n = sock.sendmsg(itertools.islice(q, 512))
            except BlockingIOError:
                return False
            self.queued -= n
            while n:
                first = q[0]
                if n >= len(first):
                    n -= len(first)
                    q.popleft()
                else:
                    q[0] = memoryview(first)[n:]
                    n = 0
        return True


def _percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * (len(sorted_values) - 1)))))
    return sorted_values[k]


class Load:
    """The event loop for one phase: A writes, B answers, both read."""

    def __init__(self, setup, args):
        self.s = setup
        self.args = args
        self.a_out = Writer(setup.a)
        self.b_out = Writer(setup.b)
        self.b_uri = setup.b_uri.encode("ascii")
        size = 1 << 20 if args.bulk else 256 << 10
        self.a_scan = Scanner(self._a_frame, size, args.check)
        self.b_scan = Scanner(self._b_frame, size, args.check)
        self.codes = collections.Counter()
        self.unexpected = []
        self.ep = select.epoll()
        self.masks = {}
        for sock in (setup.a, setup.b):
            self.ep.register(sock.fileno(), select.EPOLLIN)
            self.masks[sock.fileno()] = select.EPOLLIN
        self.b_frames = 0
        self.b_bytes = 0
        self.b_last_flag = None

    # A: responses (and any REPORT a relay sends about a failure)
    def _a_frame(self, tid, rest, head, body_len, flag):
        if rest[:1].isdigit():
            code = int(rest[:3])
            self.codes[code] += 1
            if code != 200 and len(self.unexpected) < 5:
                self.unexpected.append("A got %s for %s" % (rest.decode("ascii", "replace"), tid.decode()))
            self.response(tid, code)
        else:
            self.codes[rest.decode("ascii", "replace")] += 1
            if len(self.unexpected) < 5:
                self.unexpected.append("A got a %s request: %r" % (rest.decode("ascii", "replace"), head[:300]))

    # B: SENDs, each answered with 200 along its From-Path's first hop
    def _b_frame(self, tid, rest, head, body_len, flag):
        if rest != b"SEND":
            self.codes["B:" + rest.decode("ascii", "replace")] += 1
            if len(self.unexpected) < 5:
                self.unexpected.append("B got %r" % (head[:300],))
            return
        self.b_frames += 1
        self.b_bytes += body_len
        self.b_last_flag = flag
        hop = header(head, b"From-Path")
        sp = hop.find(b" ")
        if sp >= 0:
            hop = hop[:sp]
        self.b_out.push(b"MSRP %s 200 OK\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------%s$\r\n" % (tid, hop, self.b_uri, tid))
        self.delivered(head)

    def delivered(self, head):
        pass

    def _want(self, sock, writer):
        fd = sock.fileno()
        mask = select.EPOLLIN | (select.EPOLLOUT if writer.queue else 0)
        if self.masks[fd] != mask:
            self.ep.modify(fd, mask)
            self.masks[fd] = mask

    def loop(self, done, what):
        """Run until done() or a limit; raise LoadError on a stall, a
        timeout or a connection error."""
        try:
            self._loop(done, what)
        except OSError as e:
            raise LoadError("%s: %s (%s)" % (what, e.strerror or e, self.state())) from None

    def _loop(self, done, what):
        a, b = self.s.a, self.s.b
        afd, bfd = a.fileno(), b.fileno()
        start = last = time.monotonic()
        progress = (-1, -1)
        self.refill()
        self.a_out.flush()
        while not done():
            self._want(a, self.a_out)
            self._want(b, self.b_out)
            events = self.ep.poll(0.5)
            now = time.monotonic()
            for fd, ev in events:
                if fd == afd:
                    if ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                        if not self.a_scan.recv(a):
                            raise LoadError("A's connection was closed by the other side (%s)" % self.state())
                    if ev & select.EPOLLOUT:
                        self.a_out.flush()
                else:
                    if ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                        if not self.b_scan.recv(b):
                            raise LoadError("B's connection was closed by the other side (%s)" % self.state())
                    if ev & select.EPOLLOUT:
                        self.b_out.flush()
            if self.b_out.queue:
                self.b_out.flush()
            if self.refill():
                self.a_out.flush()
            if self.unexpected and self.args.stop_on_error:
                raise LoadError("; ".join(self.unexpected))
            mark = (self.a_scan.bytes, self.b_scan.bytes)
            if mark != progress:
                progress, last = mark, now
            elif now - last > self.args.stall:
                raise LoadError("stalled %s: nothing received for %.0f s (%s)" % (what, self.args.stall, self.state()))
            if now - start > self.args.timeout:
                raise LoadError("%s did not finish within --timeout %.0f s (%s)" % (what, self.args.timeout, self.state()))


class SmallLoad(Load):
    """N SENDs of one size, a window of W outstanding at A."""

    def __init__(self, setup, args):
        super().__init__(setup, args)
        body = (b"0123456789abcdefghijklmnopqrstuvwxyz" * (args.size // 36 + 1))[:args.size]
        # One frame checked by the core serializer, then the same bytes by template.
        req = Request("a00000000", "SEND", Headers([
            ("To-Path", setup.to_path), ("From-Path", setup.from_path),
            ("Message-ID", "m00000000"), ("Byte-Range", "1-%d/%d" % (len(body), len(body))),
            ("Content-Type", "text/plain")]), body)
        reference = serialize(req)
        template = reference.replace(b"a00000000", b"a%08d").replace(b"m00000000", b"m%08d")
        if template % (0, 0, 0) != reference:
            raise LoadError("frame template does not reproduce the serializer's frame")
        self.template = template
        self.frame_size = len(reference)
        total = args.count + args.warmup
        self.sent_at = [0.0] * total
        self.answered_at = [0.0] * total
        self.delivered_at = [0.0] * total
        self.next = 0
        self.limit = 0
        self.outstanding = 0
        self.answered = 0
        self.window = args.window

    def refill(self):
        room = min(self.window - self.outstanding, self.limit - self.next)
        if room <= 0:
            return False
        template = self.template
        i = self.next
        now = time.perf_counter()
        sent_at = self.sent_at
        frames = []
        for k in range(i, i + room):
            frames.append(template % (k, k, k))
            sent_at[k] = now
        self.a_out.push(b"".join(frames))
        self.next = i + room
        self.outstanding += room
        return True

    def response(self, tid, code):
        k = int(tid[1:])
        self.answered_at[k] = time.perf_counter()
        self.outstanding -= 1
        self.answered += 1

    def delivered(self, head):
        mid = header(head, b"Message-ID")
        self.delivered_at[int(mid[1:])] = time.perf_counter()

    def state(self):
        return "sent %d, answered %d, outstanding %d, B received %d" % (
            self.next, self.answered, self.outstanding, self.b_frames)

    def phase(self, upto, what):
        self.limit = upto
        self.loop(lambda: self.answered >= upto and self.b_frames >= upto, what)

    def run(self, pids):
        args = self.args
        if args.warmup:
            self.phase(args.warmup, "warm-up")
        cpu0, gen0, t0 = cpu_seconds(pids), own_cpu(), time.perf_counter()
        self.phase(args.warmup + args.count, "load")
        t1, gen1, cpu1 = time.perf_counter(), own_cpu(), cpu_seconds(pids)
        lo, hi = args.warmup, args.warmup + args.count
        lat = sorted(self.answered_at[k] - self.sent_at[k] for k in range(lo, hi))
        dlv = sorted(self.delivered_at[k] - self.sent_at[k] for k in range(lo, hi))
        elapsed = t1 - t0
        n = args.count
        return {
            "mode": "small", "target": self.s.description, "count": n, "size": args.size,
            "window": args.window, "frame_bytes": self.frame_size, "elapsed_s": elapsed,
            "tps": n / elapsed, "mbps": n * args.size / elapsed / MB,
            "latency_p50_ms": _percentile(lat, 50) * 1e3, "latency_p99_ms": _percentile(lat, 99) * 1e3,
            "delivery_p50_ms": _percentile(dlv, 50) * 1e3, "delivery_p99_ms": _percentile(dlv, 99) * 1e3,
            "relay_cpu_s": cpu1 - cpu0 if pids else None,
            "relay_cpu_us_per_tx": (cpu1 - cpu0) / n * 1e6 if pids else None,
            "loadgen_cpu_s": gen1 - gen0, "loadgen_cpu_share": (gen1 - gen0) / elapsed,
            "codes": {str(k): v for k, v in self.codes.items()},
            "checked_frames": self.a_scan.checked + self.b_scan.checked if args.check else None,
        }


class BulkLoad(Load):
    """One message of --total bytes in --chunk byte chunks."""

    BLOCK = 1 << 20

    def __init__(self, setup, args):
        super().__init__(setup, args)
        rng = random.Random(8)
        while True:
            block = rng.randbytes(min(self.BLOCK, args.chunk))
            if b"-------" not in block:
                break
        self.block = memoryview(block)
        self.total = args.total
        self.chunk = args.chunk
        self.nchunks = (args.total + args.chunk - 1) // args.chunk
        self.window = args.window
        self.message_id = "bulk%08d" % random.Random().randrange(10 ** 8)
        self.next = 0
        self.outstanding = 0
        self.answered = 0
        self.limit = self.nchunks
        head = Request("c00000000", "SEND", Headers([
            ("To-Path", setup.to_path), ("From-Path", setup.from_path),
            ("Message-ID", self.message_id), ("Byte-Range", "1-%d/%d" % (args.chunk, args.total)),
            ("Content-Type", "application/octet-stream")]), b"")
        reference = serialize(head)
        cut = reference.index(b"\r\n\r\n") + 4
        self.head_template = reference[:cut].replace(b"c00000000", b"c%08d").replace(
            b"1-%d/%d" % (args.chunk, args.total), b"%d-%d/%d")

    def _body(self, n):
        block = self.block
        parts = []
        while n > 0:
            k = min(n, len(block))
            parts.append(block[:k])
            n -= k
        return parts

    def refill(self):
        room = min(self.window - self.outstanding, self.limit - self.next)
        if room <= 0:
            return False
        for k in range(self.next, self.next + room):
            start = k * self.chunk
            n = min(self.chunk, self.total - start)
            flag = b"$" if k == self.nchunks - 1 else b"+"
            self.a_out.push(self.head_template % (k, start + 1, start + n, self.total))
            for part in self._body(n):
                self.a_out.push(part)
            self.a_out.push(b"\r\n-------c%08d%s\r\n" % (k, flag))
        self.next += room
        self.outstanding += room
        return True

    def response(self, tid, code):
        self.outstanding -= 1
        self.answered += 1

    def state(self):
        return "chunks sent %d of %d, answered %d, B received %d chunks, %d bytes" % (
            self.next, self.nchunks, self.answered, self.b_frames, self.b_bytes)

    def run(self, pids):
        args = self.args
        cpu0, gen0, t0 = cpu_seconds(pids), own_cpu(), time.perf_counter()
        self.loop(lambda: self.answered >= self.nchunks and self.b_frames >= self.nchunks, "bulk transfer")
        t1, gen1, cpu1 = time.perf_counter(), own_cpu(), cpu_seconds(pids)
        if self.b_bytes != self.total or self.b_last_flag != ord("$"):
            raise LoadError("B received %d of %d bytes (last flag %r)" % (self.b_bytes, self.total, self.b_last_flag))
        elapsed = t1 - t0
        return {
            "mode": "bulk", "target": self.s.description, "total": self.total, "chunk": self.chunk,
            "chunks": self.nchunks, "window": self.window, "elapsed_s": elapsed,
            "mbps": self.total / elapsed / MB, "tps": self.nchunks / elapsed,
            "relay_cpu_s": cpu1 - cpu0 if pids else None,
            "relay_cpu_s_per_gb": (cpu1 - cpu0) / (self.total / 1e9) if pids else None,
            "loadgen_cpu_s": gen1 - gen0, "loadgen_cpu_share": (gen1 - gen0) / elapsed,
            "codes": {str(k): v for k, v in self.codes.items()},
            "checked_frames": self.a_scan.checked + self.b_scan.checked if args.check else None,
        }


# -- command line --------------------------------------------------------------


def _size(text):
    t = text.strip().lower()
    for suffix, mult in (("gib", 1 << 30), ("mib", 1 << 20), ("kib", 1 << 10), ("g", 1 << 30),
                         ("m", 1 << 20), ("k", 1 << 10), ("", 1)):
        if t.endswith(suffix):
            number = t[:len(t) - len(suffix)] if suffix else t
            try:
                value = int(number) * mult
            except ValueError:
                break
            if value < 0:
                break
            return value
    raise argparse.ArgumentTypeError("%r is not a size (e.g. 100, 64KiB, 1MiB, 200MiB)" % text)


def _user(text):
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise argparse.ArgumentTypeError("expected USER:PASSWORD, got %r" % text)
    return user, password


def _hostport(text):
    host, sep, port = text.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError("expected HOST:PORT, got %r" % text)
    try:
        return loopback(host), int(port)
    except (LoadError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_argument_group("where")
    where.add_argument("--relay", metavar="URI", help="the relay's URI, e.g. 'msrp://127.0.0.1:2855;tcp'")
    where.add_argument("--user-a", type=_user, default=("alice", "alice-secret"), metavar="USER:PASSWORD")
    where.add_argument("--user-b", type=_user, default=("bob", "bob-secret"), metavar="USER:PASSWORD")
    where.add_argument("--direct", action="store_true", help="no relay: A connects to B (or to --via)")
    where.add_argument("--b-listen", type=_hostport, default=("127.0.0.1", 0), metavar="HOST:PORT",
                       help="direct mode: where B listens (default 127.0.0.1, any port)")
    where.add_argument("--via", type=_hostport, metavar="HOST:PORT",
                       help="direct mode: A connects here (a TCP forwarder to B) instead of to B")
    load = p.add_argument_group("load")
    load.add_argument("--bulk", action="store_true", help="one large message in chunks instead of small SENDs")
    load.add_argument("--count", type=int, default=20000, help="small: measured SENDs [20000]")
    load.add_argument("--warmup", type=int, default=None, help="small: SENDs before measuring [count/10, max 2000]")
    load.add_argument("--size", type=_size, default=100, help="small: body bytes [100]")
    load.add_argument("--window", type=int, default=None,
                      help="transactions outstanding at A [small: 100; bulk: 8 MiB worth of chunks, at least 2]")
    load.add_argument("--chunk", type=_size, default=64 << 10, help="bulk: chunk body bytes [64KiB]")
    load.add_argument("--total", type=_size, default=200 << 20, help="bulk: message bytes [200MiB]")
    meas = p.add_argument_group("measuring")
    meas.add_argument("--relay-pid", type=int, action="append", default=[],
                      help="process whose CPU time is measured (repeatable)")
    meas.add_argument("--relay-tree", action="store_true",
                      help="also count the descendants of --relay-pid (Kamailio's workers)")
    meas.add_argument("--check", action="store_true", help="also run the core parser over everything received")
    meas.add_argument("--json", action="store_true", help="print one line 'RESULT {json}' at the end")
    limits = p.add_argument_group("limits")
    limits.add_argument("--timeout", type=float, default=300.0, help="seconds per phase [300]")
    limits.add_argument("--stall", type=float, default=10.0, help="seconds without any byte received [10]")
    limits.add_argument("--setup-timeout", type=float, default=10.0, help="seconds per setup step [10]")
    limits.add_argument("--stop-on-error", action="store_true", help="abort at the first non-200")
    args = p.parse_args(argv)
    if bool(args.relay) == bool(args.direct):
        p.error("give either --relay URI or --direct")
    if args.via and not args.direct:
        p.error("--via needs --direct")
    if args.relay:
        try:
            uri = parse_uri(args.relay, require_transport=False)
            loopback(uri.host)
        except (MSRPError, ValueError, LoadError) as e:
            p.error("--relay: %s" % e)
        if uri.scheme != "msrp":
            p.error("--relay: only msrp: (plain TCP) is supported")
    if args.bulk:
        if args.chunk < 1 or args.total < 1:
            p.error("--chunk and --total must be positive")
        if args.window is None:
            args.window = max(2, (8 << 20) // args.chunk)
        args.warmup = 0
    else:
        if args.count < 1 or args.count >= 10 ** 8:
            p.error("--count must be 1..99999999")
        if args.window is None:
            args.window = 100
        if args.warmup is None:
            args.warmup = min(2000, args.count // 10)
        if args.count + args.warmup >= 10 ** 8:
            p.error("--count + --warmup must be below 10^8")
    if args.window < 1:
        p.error("--window must be at least 1")
    return args


def report(result):
    lines = []
    if result["mode"] == "small":
        lines.append("%d SENDs of %d bytes (%d-byte frames), window %d, %s" % (
            result["count"], result["size"], result["frame_bytes"], result["window"], result["target"]))
        lines.append("  transactions/s   %12.1f" % result["tps"])
        lines.append("  payload MB/s     %12.3f" % result["mbps"])
        lines.append("  latency p50/p99  %9.3f / %.3f ms (A's SEND to A's 200)" % (
            result["latency_p50_ms"], result["latency_p99_ms"]))
        lines.append("  delivery p50/p99 %9.3f / %.3f ms (A's SEND to B's receipt)" % (
            result["delivery_p50_ms"], result["delivery_p99_ms"]))
        if result["relay_cpu_s"] is not None:
            lines.append("  relay CPU        %12.3f s, %.1f us per transaction" % (
                result["relay_cpu_s"], result["relay_cpu_us_per_tx"]))
    else:
        lines.append("one %d-byte message in %d chunks of %d bytes, window %d, %s" % (
            result["total"], result["chunks"], result["chunk"], result["window"], result["target"]))
        lines.append("  payload MB/s     %12.1f" % result["mbps"])
        lines.append("  chunks/s         %12.1f" % result["tps"])
        if result["relay_cpu_s"] is not None:
            lines.append("  relay CPU        %12.3f s, %.2f s per GB" % (result["relay_cpu_s"], result["relay_cpu_s_per_gb"]))
    lines.append("  elapsed          %12.3f s" % result["elapsed_s"])
    lines.append("  loadgen CPU      %12.3f s (%.0f%% of one core)" % (
        result["loadgen_cpu_s"], 100 * result["loadgen_cpu_share"]))
    lines.append("  responses        %s" % ", ".join("%s: %d" % kv for kv in sorted(result["codes"].items())))
    if result.get("checked_frames") is not None:
        lines.append("  core parser check: %d frames, all valid" % result["checked_frames"])
    if result["loadgen_cpu_share"] > 0.85:
        lines.append("  WARNING: the load generator used %.0f%% of a core; it may be the bottleneck"
                     % (100 * result["loadgen_cpu_share"]))
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    pids = process_tree(args.relay_pid, args.relay_tree)
    try:
        setup = Setup(args)
        load = BulkLoad(setup, args) if args.bulk else SmallLoad(setup, args)
        result = load.run(pids)
    except (LoadError, OSError, MSRPError) as e:
        print("loadgen: %s" % e, file=sys.stderr)
        if args.json:
            print("RESULT " + json.dumps({"error": str(e)}))
        return 1
    errors = sum(v for k, v in result["codes"].items() if k != "200")
    result["errors"] = errors
    print(report(result))
    if load.unexpected:
        print("  first problems: " + "; ".join(load.unexpected))
    if args.json:
        print("RESULT " + json.dumps(result))
    sys.stdout.flush()
    setup.a.close()
    setup.b.close()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
