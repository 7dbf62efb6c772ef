"""tune_malloc against the allocation pattern of relaying large chunks,
measured in fresh processes (page faults from getrusage)."""

import subprocess
import sys
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from msrp_twisted.allocator import tune_malloc

WORKLOAD = textwrap.dedent("""
    import resource, sys
    if sys.argv[1] == "tuned":
        from msrp_twisted.allocator import tune_malloc
        assert tune_malloc()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    keep = []
    for i in range(500):
        joined = b"x" * (200 * 1024)  # frames joined for one write
        read = b"y" * (64 * 1024)  # one socket read
        keep.append(b"z" * 100)  # small objects made meanwhile
        del joined
        buffered = b"w" * (250 * 1024)  # Twisted's write buffer
        del read, buffered
        if len(keep) > 50:
            keep.pop(0)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def page_faults(mode):
    out = subprocess.run([sys.executable, "-c", WORKLOAD, mode], check=True,
                         capture_output=True, text=True).stdout
    return int(out.strip())


class TuneMallocTests(SynchronousTestCase):
    def test_applies_on_this_glibc_system(self):
        self.assertTrue(tune_malloc())

    def test_relay_buffers_stop_faulting_fresh_pages(self):
        plain, tuned = page_faults("plain"), page_faults("tuned")
        # Untuned, nearly every cycle maps and zeroes fresh pages (tens of
        # thousands of faults); tuned, the pages are reused.
        self.assertGreater(plain, 10000)
        self.assertLess(tuned, plain / 20)
