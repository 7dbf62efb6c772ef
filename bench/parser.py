"""Throughput of the sans-IO parser and serializer.

Run on demand: ``python bench/parser.py [--repeat N] [--seconds S]``. Prints
the Python version, the CPU model and, for each case, the median of N
repetitions (and their range). Rates are per second of this process's CPU
time, so other load on a shared machine disturbs them less than wall time.
Not part of the test suite.
"""

import argparse
import platform
import statistics
import sys
import time

from msrp_twisted.core.message import Request, Response
from msrp_twisted.core.parser import BodyData, MessageAssembler, Parser
from msrp_twisted.core.serializer import serialize

TO = "msrp://bob.example.com:8888/9di4eae923wzd;tcp"
FROM = "msrp://alicepc.example.com:7777/iau39soe2843z;tcp"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def typical_send(tid="d93kswow", body=b"x" * 100):
    return Request(tid, "SEND", [
        ("To-Path", TO),
        ("From-Path", FROM),
        ("Message-ID", "12339sdqwer"),
        ("Byte-Range", "1-%d/%d" % (len(body), len(body))),
        ("Failure-Report", "yes"),
        ("Content-Type", "text/plain"),
    ], body)


def ok_response(tid="d93kswow"):
    return Response(tid, 200, "OK", [("To-Path", FROM), ("From-Path", TO)])


def rate(run, units_per_call, seconds, clock=time.process_time):
    """Calls run() for about `seconds` of CPU; returns units per second."""
    calls = 0
    start = clock()
    deadline = start + seconds
    while True:
        run()
        calls += 1
        now = clock()
        if now >= deadline:
            return calls * units_per_call / (now - start)


def bench_parse_one_per_feed(data):
    parser = Parser()

    def run():
        for _ in range(100):
            parser.feed(data)
    return run, 100


def bench_parse_pipelined(data, count):
    stream = data * count
    parser = Parser()

    def run():
        parser.feed(stream)
    return run, count


def bench_assemble_one_per_feed(data):
    assembler = MessageAssembler()

    def run():
        for _ in range(100):
            assembler.feed(data)
    return run, 100


def bench_serialize(message):
    def run():
        for _ in range(100):
            serialize(message)
    return run, 100


def bench_large_body(size, piece):
    message = typical_send(body=bytes(range(256)) * (size // 256))
    data = serialize(message)
    pieces = [data[i:i + piece] for i in range(0, len(data), piece)]
    mb = len(data) / 1e6

    def run():
        parser = Parser()
        received = 0
        for p in pieces:
            for ev in parser.feed(p):
                if type(ev) is BodyData:
                    received += len(ev.data)
        assert received == size, received
    return run, mb


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="repetitions per case (median)")
    ap.add_argument("--seconds", type=float, default=0.5, help="duration of one repetition")
    args = ap.parse_args(argv)

    send = serialize(typical_send())
    ok = serialize(ok_response())
    cases = [
        ("parse SEND, 100-byte body, one message per feed", "msg/s",
         bench_parse_one_per_feed(send)),
        ("parse SEND, 100-byte body, 200 pipelined in one feed", "msg/s",
         bench_parse_pipelined(send, 200)),
        ("assemble SEND (MessageAssembler), one per feed", "msg/s",
         bench_assemble_one_per_feed(send)),
        ("serialize SEND, 100-byte body", "msg/s", bench_serialize(typical_send())),
        ("parse 200 OK, one message per feed", "msg/s", bench_parse_one_per_feed(ok)),
        ("parse 200 OK, 200 pipelined in one feed", "msg/s", bench_parse_pipelined(ok, 200)),
        ("serialize 200 OK", "msg/s", bench_serialize(ok_response())),
        ("parse 1 MiB body fed in 64 KiB pieces", "MB/s",
         bench_large_body(1024 * 1024, 64 * 1024)),
    ]

    print("Python %s (%s)" % (platform.python_version(), sys.implementation.name))
    print("CPU: %s" % cpu_model())
    print("SEND on the wire: %d bytes; 200 OK: %d bytes" % (len(send), len(ok)))
    print("median of %d runs of %.1f CPU-seconds each" % (args.repeat, args.seconds))
    print()
    width = max(len(name) for name, _, _ in cases)
    print("| %-*s | %10s | unit  | %-19s |" % (width, "case", "median", "range"))
    print("|-%s-|-%s-|-------|-%s-|" % ("-" * width, "-" * 10, "-" * 19))
    for name, unit, (run, units) in cases:
        run()  # warm up caches and the allocator
        results = [rate(run, units, args.seconds) for _ in range(args.repeat)]
        fmt = "{:,.0f}" if unit == "msg/s" else "{:,.1f}"
        spread = "%s - %s" % (fmt.format(min(results)), fmt.format(max(results)))
        print("| %-*s | %10s | %-5s | %-19s |" % (
            width, name, fmt.format(statistics.median(results)), unit, spread))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
