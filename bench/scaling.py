"""Our relay with 1 worker and with N workers under the same load.

Starts ``twistd -n msrp`` (via bench/compare.py's start_ours) once with
``workers = 1`` and once with ``workers = N``, and runs the same load
against each: --pairs bench/loadgen.py processes at once, each with its own
A and B client sending --count SENDs of --size bytes at --window. Pairs
whose A and B land on different workers cross a sibling link (see
docs/scaling.md); the relay's statistics say how many frames did.

Reported per run: the sum of the pairs' transactions/s (each measured by
its loadgen over its own measured phase, which overlap), the relay's CPU
(parent and workers, from /proc) over the whole run, the share of SENDs
that crossed a sibling link and the load generators' CPU. The machine's cores are shared by the relay and the load
generators. Run on demand, from the repository root:

    python bench/scaling.py                      # 1 vs 2 workers, 4 pairs, 3 rounds
    python bench/scaling.py --workers 2 --pairs 4 --count 20000 --rounds 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import compare  # noqa: E402  (bench/compare.py: relay start-up, process handling)
from loadgen import cpu_seconds, process_tree  # noqa: E402


def wait_workers(procs, server, workers, timeout=20.0):
    """Until the parent logs that every worker is ready."""
    if workers < 2:
        return
    log_path = procs.path("ours-w%d.log" % workers)
    want = "MSRP relay ready (%d workers)" % workers
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                if want in f.read():
                    return
        except OSError:
            pass
        if server.proc.poll() is not None or time.monotonic() > deadline:
            raise compare.BenchError("relay with %d workers not ready:\n%s" % (workers, compare.log_tail(server.proc)))
        time.sleep(0.05)


def relay_statistics(mi_port):
    """The relay's MI counters (msrp-mi statistics), or {} if unavailable."""
    out = subprocess.run([sys.executable, "-m", "msrp_twisted.mi_client", "--connect",
                          "tcp:127.0.0.1:%d" % mi_port, "statistics"],
                         capture_output=True, text=True, timeout=30)
    if out.returncode:
        return {}
    data = json.loads(out.stdout)
    counters = data.get("counters", data)
    if isinstance(counters, list):
        return {c["name"]: c["value"] for c in counters}
    return counters


def run_pairs(procs, server, args):
    """--pairs loadgen processes at once; their results and the relay's CPU."""
    argv = [sys.executable, compare.LOADGEN] + server.loadgen_args() + [
        "--json", "--count", str(args.count), "--size", str(args.size), "--window", str(args.window)]
    # The CPU of the relay is measured here, over the whole run, for the
    # parent and every worker; each loadgen measures only its own phase.
    pids = process_tree([server.pid], True)
    cpu_before = cpu_seconds(pids)
    started = time.monotonic()
    running = [procs.spawn(argv, "loadgen-%d.log" % i, stdout=subprocess.PIPE) for i in range(args.pairs)]
    results = []
    for proc in running:
        try:
            out, _ = proc.communicate(timeout=args.run_timeout)
        except subprocess.TimeoutExpired:
            for p in running:
                procs.stop(p)
            raise compare.BenchError("loadgen did not finish within %.0f s" % args.run_timeout)
        procs.started.remove(proc)
        result = None
        for line in out.decode("utf-8", "replace").splitlines():
            if line.startswith("RESULT "):
                result = json.loads(line[7:])
        if result is None or "error" in result:
            raise compare.BenchError("loadgen failed: %s\n%s" % (result and result.get("error"), compare.log_tail(proc)))
        if result.get("errors"):
            raise compare.BenchError("loadgen: %d error responses: %s" % (result["errors"], result["codes"]))
        results.append(result)
    wall = time.monotonic() - started
    relay_cpu = cpu_seconds(process_tree([server.pid], True)) - cpu_before
    return {
        "tps": sum(r["tps"] for r in results),
        "tps_each": [round(r["tps"], 1) for r in results],
        "wall_s": wall,
        "sends": args.pairs * args.count,
        "relay_cpu_s": relay_cpu,
        "relay_cores": relay_cpu / wall,
        "loadgen_cpu_s": sum(r["loadgen_cpu_s"] for r in results),
        "latency_p50_ms": statistics.median(r["latency_p50_ms"] for r in results),
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--workers", type=int, default=2, help="workers of the second relay [2]")
    p.add_argument("--pairs", type=int, default=4, help="loadgen processes (A/B pairs) at once [4]")
    p.add_argument("--count", type=int, default=20000, help="measured SENDs per pair [20000]")
    p.add_argument("--size", type=int, default=100, help="body bytes [100]")
    p.add_argument("--window", type=int, default=100, help="transactions outstanding per pair [100]")
    p.add_argument("--rounds", type=int, default=3, help="rounds, each running both relays [3]")
    p.add_argument("--run-timeout", type=float, default=300.0, help="seconds per run [300]")
    p.add_argument("--json-out", help="write every run's numbers here")
    args = p.parse_args(argv)
    if args.workers < 2 or args.pairs < 1 or args.rounds < 1:
        p.error("--workers must be at least 2, --pairs and --rounds at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    return compare.run_guarded("scaling", lambda procs: _run(procs, args), (compare.BenchError,))


def _run(procs, args):
    runs = {1: [], args.workers: []}
    print("machine: " + compare.machine_description(), flush=True)
    print("load: %d loadgen pairs at once, each %d SENDs of %d bytes at window %d"
          % (args.pairs, args.count, args.size, args.window), flush=True)
    servers = {}
    for workers in (1, args.workers):
        mi_port = compare.free_loopback_port()
        server = compare.start_ours(procs, label="ours-w%d" % workers,
                                    config={"workers": workers, "mi": "tcp:%d:interface=127.0.0.1" % mi_port})
        wait_workers(procs, server, workers)
        servers[workers] = (server, mi_port)
    for rnd in range(args.rounds):
        order = [1, args.workers] if rnd % 2 == 0 else [args.workers, 1]
        for workers in order:
            server, mi_port = servers[workers]
            before = relay_statistics(mi_port)
            r = run_pairs(procs, server, args)
            after = relay_statistics(mi_port)
            relayed = after.get("relay_frames_relayed", 0) - before.get("relay_frames_relayed", 0)
            crossed = after.get("sibling_frames_out", 0) - before.get("sibling_frames_out", 0)
            # A SEND that crosses a link is relayed by both workers.
            messages = relayed - crossed
            r["frames_relayed"] = relayed
            r["sibling_share"] = crossed / messages if messages else 0.0
            runs[workers].append(r)
            print("  round %d, %d worker%s: %9.1f transactions/s (pairs: %s), relay CPU %.2f cores, "
                  "%.0f%% of SENDs over a sibling link, loadgen CPU %.1f s, p50 %.2f ms"
                  % (rnd + 1, workers, "" if workers == 1 else "s", r["tps"],
                     " ".join("%.0f" % t for t in r["tps_each"]), r["relay_cores"],
                     100 * r["sibling_share"], r["loadgen_cpu_s"], r["latency_p50_ms"]),
                  flush=True)
    print()
    one = statistics.median(r["tps"] for r in runs[1])
    many = statistics.median(r["tps"] for r in runs[args.workers])
    print("%-12s %14s %14s %18s" % ("workers", "transactions/s", "relay cores", "SENDs over a link"))
    for workers in (1, args.workers):
        rs = runs[workers]
        print("%-12d %14.1f %14.2f %17.0f%%" % (
            workers, statistics.median(r["tps"] for r in rs),
            statistics.median(r["relay_cores"] for r in rs),
            100 * statistics.median(r["sibling_share"] for r in rs)))
    print("ratio %d/1 workers: %.2fx (medians of %d rounds)" % (args.workers, many / one, args.rounds))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"machine": compare.machine_description(), "args": vars(args),
                       "runs": {str(k): v for k, v in runs.items()}}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
