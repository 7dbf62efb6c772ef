"""Our relay side by side with Kamailio's C relay and a plain TCP forwarder.

Starts, on free loopback ports:
  * our relay: ``twistd -n msrp`` with a generated TOML config and users file
    (``--mi none``);
  * Debian's kamailio with its msrp module (bench/kamailio.cfg);
  * bench/forwarder.py, a Twisted TCP forwarder that does no MSRP work.
Then runs bench/loadgen.py (a separate process) against each in turn, the
order alternating from round to round, and prints medians and ratios:

  small-w100  100-byte SENDs, window 100   ours vs kamailio   transactions/s
  small-w1    100-byte SENDs, window 1     ours vs kamailio   transactions/s
  bulk-64k    64 KiB chunks, --total       ours vs forwarder  MB/s
  bulk-1m     1 MiB chunks, --total        ours vs forwarder  MB/s
  small10k-w100  10,000-byte SENDs, window 100, ours vs kamailio (only when named)

Kamailio cannot relay frames of about 11 KB or more, hence the forwarder
for the bulk cases. Everything started here is stopped on exit, Ctrl-C or
SIGTERM (each process runs in its own process group, which is what is
signalled). Run on demand, from the repository root:

    python bench/compare.py                      # all cases, 3 rounds
    python bench/compare.py --cases small-w100 --rounds 5 --count 50000
    python bench/compare.py --cases none --profile cprofile --profile-out /tmp/relay.prof
"""

import argparse
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LOADGEN = os.path.join(HERE, "loadgen.py")
FORWARDER = os.path.join(HERE, "forwarder.py")
KAMAILIO_CFG = os.path.join(HERE, "kamailio.cfg")

OUR_REALM = "msrp"
KAMAILIO_USERS = {"alice": "alice-secret", "bob": "bob-secret"}  # bench/kamailio.cfg
OUR_USERS = {"alice": "alice-secret", "bob": "bob-secret"}

CASES = {
    "small-w100": {"title": "100-byte SENDs, window 100", "bulk": False, "size": 100, "window": 100,
                   "other": "kamailio", "metric": "tps", "target": 0.5},
    "small-w1": {"title": "100-byte SENDs, window 1", "bulk": False, "size": 100, "window": 1,
                 "other": "kamailio", "metric": "tps", "target": 0.7},
    "bulk-64k": {"title": "64 KiB chunks", "bulk": True, "chunk": 64 << 10,
                 "other": "forwarder", "metric": "mbps", "target": 0.7},
    "bulk-1m": {"title": "1 MiB chunks", "bulk": True, "chunk": 1 << 20,
                "other": "forwarder", "metric": "mbps", "target": None},
    # Not in "all": the largest SENDs Kamailio can relay (frames < 11,238 bytes).
    "small10k-w100": {"title": "10,000-byte SENDs, window 100", "bulk": False, "size": 10000, "window": 100,
                      "other": "kamailio", "metric": "tps", "target": None, "optional": True},
    # Not in "all": the ceiling of any relay on Twisted at window 1. The
    # forwarder does no MSRP work at all (B's 200 travels back through it).
    "small-w1-fwd": {"title": "100-byte SENDs, window 1 (vs forwarder)", "bulk": False, "size": 100, "window": 1,
                     "other": "forwarder", "metric": "tps", "target": None, "optional": True},
}


class BenchError(Exception):
    pass


def free_loopback_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def raise_nofile(limit):
    """Raise this process's RLIMIT_NOFILE soft limit (up to the hard limit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def find_executable(name, extra=("/usr/sbin", "/sbin", "/usr/local/sbin")):
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")] + list(extra))
    exe = shutil.which(name, path=path)
    if exe is None:
        raise BenchError("%s not found (PATH and %s)" % (name, ", ".join(extra)))
    return exe


class Processes:
    """What this run started; stop_all() ends all of it, by process group."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="msrp-bench-")
        self.started = []

    def path(self, *names):
        return os.path.join(self.tmp, *names)

    def spawn(self, argv, log_name, cwd=None, preexec_fn=None, stdout=None):
        log = open(self.path(log_name), "ab")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout or log, stderr=log,
                                cwd=cwd or self.tmp, start_new_session=True, preexec_fn=preexec_fn)
        proc.log_path = self.path(log_name)
        log.close()
        self.started.append(proc)
        return proc

    def stop(self, proc, timeout=10.0):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # The group may still hold children (Kamailio's workers).
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if proc in self.started:
            self.started.remove(proc)

    def stop_all(self):
        for proc in reversed(list(self.started)):
            self.stop(proc)
        shutil.rmtree(self.tmp, ignore_errors=True)


def log_tail(proc, n=3000):
    try:
        with open(proc.log_path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def wait_listening(proc, port, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise BenchError("%s exited during startup (status %s):\n%s" % (what, proc.returncode, log_tail(proc)))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError("%s did not listen on 127.0.0.1:%d within %.0f s:\n%s" % (what, port, timeout, log_tail(proc)))
        time.sleep(0.05)


# -- the three things under test ----------------------------------------------


class Server:
    name = "?"
    pids_descendants = False

    def __init__(self, proc, port):
        self.proc = proc
        self.port = port

    @property
    def pid(self):
        return self.proc.pid

    def loadgen_args(self):
        raise NotImplementedError


class OurRelay(Server):
    name = "ours"

    def loadgen_args(self):
        return ["--relay", "msrp://127.0.0.1:%d;tcp" % self.port, "--user-a", "alice:%s" % OUR_USERS["alice"],
                "--user-b", "bob:%s" % OUR_USERS["bob"], "--relay-pid", str(self.pid)]


def write_users(path, users, realm=OUR_REALM):
    from msrp_twisted.core import digest

    with open(path, "w") as f:
        for user, password in users.items():
            f.write("%s:%s:%s\n" % (user, realm, digest.compute_ha1(user, realm, password)))


def start_ours(procs, label="ours", config=None, users=None, twistd_options=(), nofile=None, twistd=None):
    """Our relay (twistd -n msrp) on a free loopback port; twistd: another
    interpreter's twistd (PyPy's), which must find msrp_twisted itself."""
    twistd = twistd or find_executable("twistd")
    users_file = procs.path(label + ".users")
    write_users(users_file, users or OUR_USERS)
    preexec = None
    if nofile:
        def preexec():
            import resource

            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))
    for _ in range(5):
        port = free_loopback_port()
        settings = {"listen": ["msrp:127.0.0.1:%d" % port], "users": users_file, "mi": "none"}
        settings.update(config or {})
        cfg = procs.path(label + ".toml")
        with open(cfg, "w") as f:
            for key, value in settings.items():
                f.write("%s = %s\n" % (key, json.dumps(value)))
        argv = [twistd] + list(twistd_options) + ["-n", "--pidfile=", "--logfile=" + procs.path(label + ".log"),
                                                  "msrp", "--config", cfg]
        proc = procs.spawn(argv, label + ".out", preexec_fn=preexec)
        try:
            wait_listening(proc, port, "our relay")
        except BenchError as e:
            procs.stop(proc)
            if "Address already in use" in str(e) or "in use" in log_tail(proc):
                continue
            raise BenchError("%s\n(relay log: %s)" % (e, procs.path(label + ".log")))
        return OurRelay(proc, port)
    raise BenchError("could not find a free port for our relay")


class Kamailio(Server):
    name = "kamailio"
    pids_descendants = True

    def loadgen_args(self):
        return ["--relay", "msrp://127.0.0.1:%d;tcp" % self.port, "--user-a", "alice:%s" % KAMAILIO_USERS["alice"],
                "--user-b", "bob:%s" % KAMAILIO_USERS["bob"], "--relay-pid", str(self.pid), "--relay-tree"]


def start_kamailio(procs, workers=1):
    exe = find_executable("kamailio")
    rundir = procs.path("kamailio-run")
    os.makedirs(rundir, exist_ok=True)
    for _ in range(5):
        port = free_loopback_port()
        argv = [exe, "-f", KAMAILIO_CFG, "-DD", "-E", "-l", "tcp:127.0.0.1:%d" % port,
                "-Y", rundir, "-P", os.path.join(rundir, "kamailio.pid"), "-w", rundir,
                "-m", "64", "-M", "8", "-A", "TCP_WORKERS=%d" % workers]
        proc = procs.spawn(argv, "kamailio.log", cwd=rundir)
        try:
            wait_listening(proc, port, "kamailio")
        except BenchError:
            procs.stop(proc)
            if "Address already in use" in log_tail(proc):
                continue
            raise
        return Kamailio(proc, port)
    raise BenchError("could not find a free port for kamailio")


class Forwarder(Server):
    name = "forwarder"

    def __init__(self, proc, port, b_port):
        super().__init__(proc, port)
        self.b_port = b_port

    def loadgen_args(self):
        return ["--direct", "--via", "127.0.0.1:%d" % self.port, "--b-listen", "127.0.0.1:%d" % self.b_port,
                "--relay-pid", str(self.pid)]


def start_forwarder(procs):
    b_port = free_loopback_port()
    proc = procs.spawn([sys.executable, FORWARDER, "--listen", "127.0.0.1:0", "--target", "127.0.0.1:%d" % b_port],
                       "forwarder.log", stdout=subprocess.PIPE)
    deadline = time.monotonic() + 15
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise BenchError("forwarder did not start:\n%s" % log_tail(proc))
        if select.select([proc.stdout], [], [], left)[0]:
            data = os.read(proc.stdout.fileno(), 4096)
            if not data:
                raise BenchError("forwarder exited:\n%s" % log_tail(proc))
            line += data
    text = line.decode().strip()
    if not text.startswith("listening on "):
        raise BenchError("forwarder said %r" % text)
    return Forwarder(proc, int(text.rsplit(":", 1)[1]), b_port)


# -- running the load ----------------------------------------------------------


def run_loadgen(procs, server, case, args, count=None, timeout=None):
    """One loadgen run against server; returns its result dict."""
    argv = [sys.executable, LOADGEN] + server.loadgen_args() + ["--json"]
    if case["bulk"]:
        argv += ["--bulk", "--chunk", str(case["chunk"]), "--total", str(args.total)]
    else:
        n = count or (args.count if case["window"] > 1 else args.count_w1)
        argv += ["--count", str(n), "--size", str(case["size"]), "--window", str(case["window"])]
    if args.check:
        argv.append("--check")
    proc = procs.spawn(argv, "loadgen.log", stdout=subprocess.PIPE)
    try:
        out, _ = proc.communicate(timeout=timeout or args.run_timeout)
    except subprocess.TimeoutExpired:
        procs.stop(proc)
        raise BenchError("loadgen against %s did not finish within %.0f s" % (server.name, timeout or args.run_timeout))
    procs.started.remove(proc)
    result = None
    for line in out.decode("utf-8", "replace").splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
    if result is None:
        raise BenchError("loadgen printed no result (status %s):\n%s" % (proc.returncode, log_tail(proc)))
    if "error" in result:
        raise BenchError("loadgen against %s: %s" % (server.name, result["error"]))
    if result.get("errors"):
        raise BenchError("loadgen against %s: %d error responses: %s" % (server.name, result["errors"], result["codes"]))
    return result


def median(values):
    return statistics.median(values) if values else float("nan")


def summarize(name, case, runs):
    ours = [r["ours"][case["metric"]] for r in runs if "ours" in r]
    other = [r["other"][case["metric"]] for r in runs if "other" in r]
    paired = [r["ours"][case["metric"]] / r["other"][case["metric"]] for r in runs if "ours" in r and "other" in r]
    row = {"case": name, "title": case["title"], "metric": case["metric"], "other": case["other"],
           "rounds": len(runs), "ours": median(ours), "other_value": median(other),
           "ratio": median(ours) / median(other) if ours and other else float("nan"),
           "paired_ratio_min": min(paired) if paired else float("nan"),
           "paired_ratio_max": max(paired) if paired else float("nan"),
           "target": case["target"]}
    for side in ("ours", "other"):
        vals = [r[side] for r in runs if side in r]
        for key in ("latency_p50_ms", "latency_p99_ms", "relay_cpu_us_per_tx", "relay_cpu_s_per_gb",
                    "loadgen_cpu_share"):
            got = [v[key] for v in vals if v.get(key) is not None]
            row["%s_%s" % (side, key)] = median(got) if got else None
    return row


def format_table(rows):
    out = []
    out.append("| case | unit | ours (median) | other (median) | ours/other | per-round ratios | target | met |")
    out.append("|---|---|---:|---:|---:|---|---|---|")
    for r in rows:
        unit = "transactions/s" if r["metric"] == "tps" else "MB/s"
        target = r["target"]
        met = "" if target is None else ("yes" if r["ratio"] >= target else "no")
        out.append("| %s | %s | %.1f | %.1f (%s) | %.2f | %.2f-%.2f | %s | %s |" % (
            r["title"], unit, r["ours"], r["other_value"], r["other"], r["ratio"],
            r["paired_ratio_min"], r["paired_ratio_max"], ">= %.1fx" % target if target else "-", met))
    out.append("")
    out.append("| case | side | latency p50 / p99 (ms) | relay CPU | loadgen CPU |")
    out.append("|---|---|---|---|---|")
    for r in rows:
        for side, label in (("ours", "ours"), ("other", r["other"])):
            if r["metric"] == "tps":
                lat = "%.3f / %.3f" % (r[side + "_latency_p50_ms"] or 0, r[side + "_latency_p99_ms"] or 0)
                cpu = "%.1f us/transaction" % (r[side + "_relay_cpu_us_per_tx"] or 0)
            else:
                lat = "-"
                cpu = "%.2f s/GB" % (r[side + "_relay_cpu_s_per_gb"] or 0)
            out.append("| %s | %s | %s | %s | %.0f%% of a core |" % (
                r["title"], label, lat, cpu, 100 * (r[side + "_loadgen_cpu_share"] or 0)))
    return "\n".join(out)


# -- profiling -------------------------------------------------------------------


def profile_ours(procs, args):
    """Our relay under one case's load (--profile-case) with cProfile or
    py-spy; prints the top functions by own time."""
    case = CASES[args.profile_case]
    what = "%s%s" % (case["title"], "" if case["bulk"] else ", %d SENDs" % args.profile_count)
    config = {"max_chunk_size": 0} if case["bulk"] and case["chunk"] > 16 << 20 else None
    out = args.profile_out or procs.path("relay.prof")
    if args.profile == "cprofile":
        relay = start_ours(procs, label="profiled", config=config, twistd_options=[
            "--profile=" + out, "--profiler=cprofile", "--savestats"])
        result = run_loadgen(procs, relay, case, args, count=args.profile_count)
        procs.stop(relay.proc, timeout=60)
        import pstats

        stats = pstats.Stats(out)
        stats.sort_stats("tottime")
        print("cProfile of our relay, %s (%s under the profiler):" % (what, _rate(case, result)))
        stats.print_stats(args.profile_top)
        print("profile saved to %s" % out)
    else:
        relay = start_ours(procs, label="profiled", config=config)
        spy = procs.spawn([find_executable("py-spy"), "record", "--pid", str(relay.pid), "--format", "raw",
                           "--rate", "500", "--output", out, "--nonblocking"], "py-spy.log")
        time.sleep(1.0)
        result = run_loadgen(procs, relay, case, args, count=args.profile_count)
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            pass
        procs.stop(spy)
        procs.stop(relay.proc)
        print("py-spy of our relay, %s (%s while sampled):" % (what, _rate(case, result)))
        print(collapsed_top(out, args.profile_top))
        print("samples saved to %s (collapsed stacks)" % out)


def _rate(case, result):
    if case["metric"] == "tps":
        return "%.0f transactions/s" % result["tps"]
    return "%.0f MB/s" % result["mbps"]


def _function(frame):
    """'name (file:line)' -> 'name (file)': one row per function."""
    name, sep, where = frame.rpartition(" (")
    if not sep:
        return frame
    return "%s (%s)" % (name, where.rstrip(")").rsplit(":", 1)[0])


def collapsed_top(path, top):
    """Own and inclusive time per function from py-spy's collapsed stacks
    (one line per distinct stack: frames joined by ';', then a count). The
    leaf frame of a sample is where the time was spent; every function on
    the stack gets it inclusively (once per sample)."""
    own, incl, total = {}, {}, 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            frames = [_function(fr) for fr in stack.split(";")]
            own[frames[-1]] = own.get(frames[-1], 0) + n
            for fn in set(frames):
                incl[fn] = incl.get(fn, 0) + n
    if not total:
        return "(no samples)"
    rows = sorted(own.items(), key=lambda kv: -kv[1])[:top]
    lines = ["%6s %6s  %s" % ("own%", "incl%", "function (file)")]
    for fn, n in rows:
        lines.append("%6.1f %6.1f  %s" % (100.0 * n / total, 100.0 * incl[fn] / total, fn))
    lines.append("(%d samples)" % total)
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------


def _size(text):
    sys.path.insert(0, HERE)
    from loadgen import _size as parse_size

    return parse_size(text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="cases: " + ", ".join(CASES))
    p.add_argument("--cases", default="all", help="comma-separated cases, 'all' or 'none' [all]")
    p.add_argument("--rounds", type=int, default=3, help="rounds per case, each running both sides [3]")
    p.add_argument("--count", type=int, default=20000, help="SENDs per run with window 100 [20000]")
    p.add_argument("--count-w1", type=int, default=5000, help="SENDs per run with window 1 [5000]")
    p.add_argument("--total", type=_size, default=200 << 20, help="bulk message size [200MiB]")
    p.add_argument("--kamailio-workers", type=int, default=1,
                   help="Kamailio TCP worker processes [1: its fastest for this load on 2 cores]")
    p.add_argument("--check", action="store_true", help="loadgen also checks every frame with the core parser")
    p.add_argument("--json-out", help="write the rows and every run's result here")
    p.add_argument("--twistd", help="run our relay with this twistd (e.g. a PyPy virtualenv's) [this venv's]")
    p.add_argument("--run-timeout", type=float, default=600.0, help="seconds per loadgen run [600]")
    p.add_argument("--profile", choices=("cprofile", "py-spy"), help="afterwards, profile our relay under one case")
    p.add_argument("--profile-case", choices=list(CASES), default="small-w100", help="the case profiled [small-w100]")
    p.add_argument("--profile-out", help="where the profile goes [temporary]")
    p.add_argument("--profile-count", type=int, default=30000, help="SENDs in the profiled run [30000]")
    p.add_argument("--profile-top", type=int, default=25, help="functions listed [25]")
    args = p.parse_args(argv)
    if args.cases == "all":
        args.case_names = [name for name, case in CASES.items() if not case.get("optional")]
    elif args.cases == "none":
        args.case_names = []
    else:
        args.case_names = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = [c for c in args.case_names if c not in CASES]
        if unknown:
            p.error("unknown case(s) %s; known: %s" % (", ".join(unknown), ", ".join(CASES)))
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


def machine_description():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()
    return "%d CPUs (%s), Python %s, load average %.2f %.2f %.2f" % (
        os.cpu_count(), model, sys.version.split()[0], *load)


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def install_signal_handlers():
    """Ctrl-C and SIGTERM unwind through the cleanup, even when this was
    started in the background with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)


def run_guarded(name, body, errors=(BenchError,)):
    """Run body(procs) and stop every process it started, whatever happens:
    errors exit 1 with "name: reason", Ctrl-C or SIGTERM exit 130."""
    install_signal_handlers()
    procs = Processes()
    try:
        return body(procs) or 0
    except errors as e:
        print("%s: %s" % (name, e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("%s: interrupted; stopping what was started" % name, file=sys.stderr)
        return 130
    finally:
        procs.stop_all()


def main(argv=None):
    args = parse_args(argv)
    return run_guarded("compare", lambda procs: _compare(procs, args))


def _compare(procs, args):
    rows, raw = [], {}
    print("machine: " + machine_description(), flush=True)
    servers = {}
    need = {CASES[c]["other"] for c in args.case_names}
    if args.case_names:
        servers["ours"] = start_ours(procs, twistd=args.twistd)
    if "kamailio" in need:
        servers["kamailio"] = start_kamailio(procs, args.kamailio_workers)
    if "forwarder" in need:
        servers["forwarder"] = start_forwarder(procs)
    for name in args.case_names:
        case = CASES[name]
        runs = []
        for rnd in range(args.rounds):
            order = [("ours", servers["ours"]), ("other", servers[case["other"]])]
            if rnd % 2:
                order.reverse()
            got = {}
            for side, server in order:
                try:
                    got[side] = run_loadgen(procs, server, case, args)
                except BenchError as e:
                    print("  %s round %d, %s: FAILED: %s" % (name, rnd + 1, server.name, e), flush=True)
                    continue
                r = got[side]
                print("  %s round %d, %-9s %10.1f %s" % (
                    name, rnd + 1, server.name, r[case["metric"]],
                    "transactions/s" if case["metric"] == "tps" else "MB/s"), flush=True)
            runs.append(got)
        raw[name] = runs
        rows.append(summarize(name, case, runs))
    if rows:
        print()
        print(format_table(rows))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"machine": machine_description(), "rows": rows, "runs": raw}, f, indent=1)
    if args.profile:
        for server in servers.values():
            procs.stop(server.proc)
        print()
        profile_ours(procs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
