"""Memory of our relay: one huge message streamed through, and idle sessions.

Two measurements, each on a fresh relay (``twistd -n msrp``, started as in
bench/compare.py) on a free loopback port:

big      Peak RSS while relaying one 1 GiB message (bench/loadgen.py --bulk,
         chunks streamed through the relay). After a warm-up transfer the
         kernel's peak counter is reset (``echo 5 > /proc/PID/clear_refs``);
         VmRSS is also sampled every 20 ms. Reported: RSS before, peak
         during, growth. A relay that streams must not grow with the size
         of the message.

sessions RSS per idle authenticated session with 10,000 sessions open.
         Raw blocking sockets do the AUTH exchange (one 401 challenge per
         connection, then Digest credentials with nonce-counts 1..S for
         the S sessions of that connection, computed up front and written
         in one go). The relay binds each session to the connection its
         AUTH came on and allows several per connection, so the layout
         CONNECTIONSxSESSIONS separates the cost of a connection from that
         of a session: 10000x1 is the real case (one client, one
         connection, one session), 100x100 the session table alone. The
         file-descriptor limit is raised here (resource.setrlimit) and for
         the relay (in its preexec_fn).

    python bench/memory.py                          # both, default sizes
    python bench/memory.py --what big --total 1GiB --chunks 1MiB,1GiB
    python bench/memory.py --what sessions --layouts 10000x1,100x100

Run on demand; loopback only; every wait is bounded.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import compare  # noqa: E402
import loadgen  # noqa: E402

from msrp_twisted.core import digest  # noqa: E402
from msrp_twisted.core.headers import Headers  # noqa: E402
from msrp_twisted.core.ids import new_session_id  # noqa: E402
from msrp_twisted.core.message import Request  # noqa: E402
from msrp_twisted.core.serializer import serialize  # noqa: E402

KIB = 1024
SAMPLE_EVERY = 0.02


def status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0])
    return out


def reset_peak(pid):
    """Reset VmHWM to the current RSS; False if the kernel cannot."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
    except OSError:
        return False
    s = status(pid)
    return s["VmHWM"] <= s["VmRSS"] + 64


def settle(pid, seconds=1.0):
    """RSS after a short quiet time (median of a few samples)."""
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(status(pid)["VmRSS"])
        time.sleep(0.1)
    samples.sort()
    return samples[len(samples) // 2]


# -- one huge message ------------------------------------------------------------


def big_message(procs, args, chunk):
    config = {"max_chunk_size": 0} if chunk > 16 << 20 else {}
    relay = compare.start_ours(procs, label="big-%d" % chunk, config=config)
    pid = relay.pid
    base = relay.loadgen_args()
    try:
        rss_start = settle(pid, 0.5)
        # Warm-up: the code paths and buffers of a transfer of this shape.
        warm = subprocess.run([sys.executable, loadgen.__file__] + base + [
            "--bulk", "--chunk", str(min(chunk, args.warmup_total)), "--total", str(args.warmup_total)],
            capture_output=True, timeout=args.timeout)
        if warm.returncode:
            raise compare.BenchError("warm-up failed: %s" % warm.stderr.decode(errors="replace")[-2000:])
        rss_base = settle(pid)
        exact = reset_peak(pid)
        argv = [sys.executable, loadgen.__file__] + base + [
            "--bulk", "--chunk", str(chunk), "--total", str(args.total), "--json", "--timeout", str(args.timeout)]
        gen = procs.spawn(argv, "memory-loadgen.log", stdout=subprocess.PIPE)
        peak_sampled = rss_base
        deadline = time.monotonic() + args.timeout + 30
        while gen.poll() is None:
            if time.monotonic() > deadline:
                procs.stop(gen)
                raise compare.BenchError("the 1 GiB transfer did not finish in time")
            peak_sampled = max(peak_sampled, status(pid)["VmRSS"])
            time.sleep(SAMPLE_EVERY)
        out = gen.stdout.read().decode("utf-8", "replace")
        procs.started.remove(gen)
        result = next((json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")), None)
        if result is None or "error" in result:
            raise compare.BenchError("loadgen failed: %s" % (result or compare.log_tail(gen)))
        hwm = status(pid)["VmHWM"]
        rss_after = settle(pid, 0.5)
        peak = max(hwm, peak_sampled) if exact else peak_sampled
        return {
            "chunk": chunk, "total": args.total, "mbps": result["mbps"],
            "rss_start_kib": rss_start, "rss_base_kib": rss_base, "peak_kib": peak,
            "peak_sampled_kib": peak_sampled, "hwm_kib": hwm, "hwm_exact": exact,
            "growth_kib": peak - rss_base, "rss_after_kib": rss_after,
        }
    finally:
        procs.stop(relay.proc)


# -- idle sessions -----------------------------------------------------------------


def _auth_frame(relay_uri, from_uri, credentials=None, tid=None):
    headers = [("To-Path", relay_uri), ("From-Path", from_uri)]
    if credentials is not None:
        headers.append(("Authorization", digest.format_credentials(credentials)))
    return serialize(Request(tid or loadgen.setup_tid(), "AUTH", Headers(headers)))


def open_sessions(port, conns, per_conn, user, password, timeout, wave=32):
    """conns connections with per_conn authenticated sessions each; returns
    the sockets (the sessions live as long as they stay open)."""
    relay_uri = "msrp://127.0.0.1:%d;tcp" % port
    socks = []
    for start in range(0, conns, wave):
        batch = []
        for _ in range(min(wave, conns - start)):
            s = loadgen.connect("127.0.0.1", port, timeout)
            batch.append((s, loadgen.new_assembler()))
        for s, _ in batch:
            s.sendall(_auth_frame(relay_uri, loadgen.local_uri(s)))
        challenges = []
        for s, asm in batch:
            resp = loadgen.read_message(s, asm, timeout)
            if resp.code != 401:
                raise compare.BenchError("AUTH without credentials got %s, not 401" % resp.code)
            challenges.append(resp.headers["WWW-Authenticate"])
        for (s, _), challenge in zip(batch, challenges):
            host, lport = s.getsockname()[:2]
            frames = []
            for k in range(per_conn):
                cred = digest.make_authorization(challenge, user, password, "AUTH", relay_uri, nc=k + 1)
                frames.append(_auth_frame(relay_uri, "msrp://%s:%d/%s;tcp" % (host, lport, new_session_id()), cred))
            s.sendall(b"".join(frames))
        for s, asm in batch:
            for _ in range(per_conn):
                resp = loadgen.read_message(s, asm, timeout)
                if resp.code != 200 or not resp.headers.get("Use-Path"):
                    raise compare.BenchError("AUTH with credentials got %s %s" % (resp.code, resp.comment))
        socks.extend(s for s, _ in batch)
    return socks


def idle_sessions(procs, args, conns, per_conn):
    need = conns + 200
    compare.raise_nofile(need)
    relay = compare.start_ours(procs, label="sessions-%dx%d" % (conns, per_conn),
                               users={"idle": "idle-secret"}, nofile=need + 1000)
    pid = relay.pid
    socks = []
    try:
        rss_start = settle(pid, 0.5)
        warm = open_sessions(relay.port, 4, 4, "idle", "idle-secret", args.setup_timeout)
        for s in warm:
            s.close()
        rss_base = settle(pid)
        n = conns * per_conn
        cycles = []
        for _ in range(args.cycles):
            t0 = time.monotonic()
            socks = open_sessions(relay.port, conns, per_conn, "idle", "idle-secret", args.setup_timeout)
            setup_s = time.monotonic() - t0
            rss_open = settle(pid, args.idle_seconds)
            for s in socks:
                s.close()
            socks = []
            rss_closed = settle(pid, 2.0)
            cycles.append({"setup_s": setup_s, "rss_open_kib": rss_open, "rss_after_close_kib": rss_closed})
        first = cycles[0]
        return {
            "connections": conns, "sessions_per_connection": per_conn, "sessions": n,
            "setup_s": first["setup_s"], "rss_start_kib": rss_start, "rss_base_kib": rss_base,
            "rss_open_kib": first["rss_open_kib"], "per_session_kib": (first["rss_open_kib"] - rss_base) / n,
            "per_connection_kib": (first["rss_open_kib"] - rss_base) / conns,
            "rss_after_close_kib": first["rss_after_close_kib"], "cycles": cycles,
        }
    finally:
        for s in socks:
            s.close()
        procs.stop(relay.proc)


# -- main --------------------------------------------------------------------------


def _layout(text):
    c, sep, s = text.lower().partition("x")
    try:
        c, s = int(c), int(s)
        if not sep or c < 1 or s < 1:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError("expected CONNECTIONSxSESSIONS, e.g. 10000x1, got %r" % text) from None
    return c, s


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--what", choices=("big", "sessions", "both"), default="both")
    p.add_argument("--total", type=loadgen._size, default=1 << 30, help="big: message bytes [1GiB]")
    p.add_argument("--chunks", default="1MiB", help="big: chunk sizes, comma-separated [1MiB]; 1GiB = one chunk")
    p.add_argument("--warmup-total", type=loadgen._size, default=32 << 20, help="big: warm-up transfer [32MiB]")
    p.add_argument("--layouts", default="10000x1,100x100",
                   help="sessions: CONNECTIONSxSESSIONS, comma-separated [10000x1,100x100]")
    p.add_argument("--cycles", type=int, default=2,
                   help="sessions: open and close the sessions this many times (RSS after each) [2]")
    p.add_argument("--idle-seconds", type=float, default=3.0, help="sessions: quiet time before measuring [3]")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per transfer [300]")
    p.add_argument("--setup-timeout", type=float, default=10.0, help="seconds per AUTH exchange [10]")
    p.add_argument("--json-out", help="write the results here")
    args = p.parse_args(argv)
    try:
        args.chunk_sizes = [loadgen._size(c) for c in args.chunks.split(",") if c.strip()]
        args.layout_list = [_layout(x) for x in args.layouts.split(",") if x.strip()]
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    return args


def main(argv=None):
    args = parse_args(argv)
    return compare.run_guarded("memory", lambda procs: _run(procs, args), (compare.BenchError, loadgen.LoadError, OSError))


def _run(procs, args):
    results = {"machine": compare.machine_description(), "big": [], "sessions": []}
    print("machine: " + results["machine"], flush=True)
    if args.what in ("big", "both"):
        for chunk in args.chunk_sizes:
            r = big_message(procs, args, chunk)
            results["big"].append(r)
            print("one %.0f MiB message in %s chunks: RSS %.1f MiB before, peak %.1f MiB during "
                  "(%s), growth %.1f MiB; %.0f MB/s; RSS afterwards %.1f MiB" % (
                      r["total"] / 2 ** 20, "%d-byte" % chunk, r["rss_base_kib"] / KIB, r["peak_kib"] / KIB,
                      "VmHWM after reset" if r["hwm_exact"] else "sampled every 20 ms",
                      r["growth_kib"] / KIB, r["mbps"], r["rss_after_kib"] / KIB), flush=True)
    if args.what in ("sessions", "both"):
        for conns, per_conn in args.layout_list:
            r = idle_sessions(procs, args, conns, per_conn)
            results["sessions"].append(r)
            print("%d idle sessions on %d connections (%d each): RSS %.1f MiB before, %.1f MiB open "
                  "-> %.2f KiB per session (%.2f KiB per connection); set up in %.1f s; "
                  "RSS %.1f MiB after closing" % (
                      r["sessions"], conns, per_conn, r["rss_base_kib"] / KIB, r["rss_open_kib"] / KIB,
                      r["per_session_kib"], r["per_connection_kib"], r["setup_s"],
                      r["rss_after_close_kib"] / KIB), flush=True)
            for i, c in enumerate(r["cycles"][1:], 2):
                print("    cycle %d: RSS %.1f MiB with the sessions open, %.1f MiB after closing" % (
                    i, c["rss_open_kib"] / KIB, c["rss_after_close_kib"] / KIB), flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
