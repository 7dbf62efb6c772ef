"""A short fuzz run of the parser in the test suite (issue 9).

The harness is bench/fuzz.py. With atheris installed it runs coverage-guided
under libFuzzer, in a child process (libFuzzer exits the process it runs
in), for ATHERIS_RUNS inputs from a fixed libFuzzer seed. Without atheris the
same harness body runs in process on RANDOM_RUNS inputs made by mutating the
seed corpus with random.Random(SEED). Either way the test runs; never skipped.
"""

from twisted.trial.unittest import SynchronousTestCase

from .test_fuzz_regressions import load_fuzz_harness

ATHERIS_RUNS = 8000
RANDOM_RUNS = 5000
SEED = 4975

fuzz = load_fuzz_harness()
ATHERIS = fuzz.atheris_available()
if ATHERIS:
    MODE = "atheris: %d coverage-guided inputs under libFuzzer (-seed=%d)" % (ATHERIS_RUNS, SEED)
else:
    MODE = "random: atheris is not installed, %d inputs from random.Random(%d)" % (RANDOM_RUNS, SEED)


class ParserFuzzSmokeTests(SynchronousTestCase):
    def run_parser_harness(self):
        if ATHERIS:
            return fuzz.run_atheris("parser", seconds=None, quiet=True, workdir=self.mktemp(),
                                    libfuzzer_args=["-runs=%d" % ATHERIS_RUNS, "-seed=%d" % SEED])
        return fuzz.run_random("parser", runs=RANDOM_RUNS, seed=SEED, crash_dir=self.mktemp())

    def test_parser_harness(self):
        result = self.run_parser_harness()
        print(result.summary())
        self.assertEqual(result.failures, [], result.summary())
        self.assertEqual(result.status, 0, result.summary())
        self.assertGreaterEqual(result.inputs, ATHERIS_RUNS if ATHERIS else RANDOM_RUNS, result.summary())
        if ATHERIS:
            # The core was instrumented: a plain run would show a handful of
            # edges (those of the harness's own modules).
            self.assertGreater(result.coverage, 300, result.summary())

    test_parser_harness.__doc__ = "Parser fuzz smoke run; mode: %s." % MODE

    def test_random_engine_always_runs(self):
        """The fallback engine stays working even where atheris is installed."""
        result = fuzz.run_random("parser", runs=500, seed=SEED + 1, crash_dir=self.mktemp())
        self.assertEqual((result.inputs, result.failures), (500, []), result.summary())


class HarnessCanFailTests(SynchronousTestCase):
    """The harness reports what it is there to catch."""

    def setUp(self):
        fuzz.load_core()
        with open(fuzz.os.path.join(fuzz.SEEDS, "parser", "rfc4975-send.msrp"), "rb") as f:
            self.send = f.read()

    def test_round_trip_change_is_a_failure(self):
        serialize = fuzz.core.serializer.serialize
        self.patch(fuzz.core.serializer, "serialize",
                   lambda message: serialize(message).replace(b"text/plain", b"text/html"))
        with self.assertRaises(fuzz.Violation) as caught:
            fuzz.check_parser(self.send)
        self.assertIn("round trip changed the message", str(caught.exception))

    def test_unexpected_exception_is_recorded_and_saved(self):
        feed = fuzz.core.parser.Parser.feed

        def broken(parser, data):
            if b"REPORT" in parser._buf + data:
                raise KeyError("planted")
            return feed(parser, data)

        self.patch(fuzz.core.parser.Parser, "feed", broken)
        crash_dir = self.mktemp()
        result = fuzz.run_random("parser", runs=50, seed=SEED, crash_dir=crash_dir,
                                 out=_Discard())
        self.assertEqual(len(result.failures), 1, result.failures)
        self.assertTrue(result.failures[0].startswith("KeyError at test_fuzz_smoke.py:"), result.failures)
        [saved] = fuzz.os.listdir(crash_dir)
        with open(fuzz.os.path.join(crash_dir, saved), "rb") as f:
            self.assertIn(b"REPORT", f.read())
        self.assertFalse(result.ok)


class _Discard:
    def write(self, text):
        pass

    def flush(self):
        pass
