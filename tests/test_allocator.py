"""tune_malloc against the allocation pattern of relaying large chunks.

Measured in fresh processes through glibc's own accounting (mallinfo2):
whether the heap's top is handed back to the kernel and whether a buffer is
mapped afresh, the two things that make every cycle fault and zero new
pages. Untuned, how often that happens depends on the process's history,
because glibc moves its thresholds after each freed mapping: the same
workload counted 492 trims in most runs and 7 in one CI run, and page
faults (the first version of this test) from 1,406 to tens of thousands.
Tuned, it never happens, and that is what is asserted.
"""

import json
import subprocess
import sys
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from msrp_twisted.allocator import tune_malloc

WORKLOAD = textwrap.dedent("""
    import ctypes, json, sys
    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
            "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "tuned":
        from msrp_twisted.allocator import tune_malloc
        assert tune_malloc()
    baseline_mapped = libc.mallinfo2().hblkhd
    heap = libc.mallinfo2().arena
    trims = mapped = 0
    def sample():
        global heap, trims, mapped
        info = libc.mallinfo2()
        trims += info.arena < heap  # the heap's top handed back to the kernel
        mapped += info.hblkhd > baseline_mapped  # a buffer mmapped afresh
        heap = info.arena
    keep = []
    for i in range(500):
        joined = b"x" * (200 * 1024)  # frames joined for one write
        sample()
        read = b"y" * (64 * 1024)  # one socket read
        keep.append(b"z" * 100)  # small objects made meanwhile
        sample()
        del joined
        buffered = b"w" * (250 * 1024)  # Twisted's write buffer
        sample()
        del read, buffered
        sample()
        if len(keep) > 50:
            keep.pop(0)
    print(json.dumps({"trims": trims, "mapped": mapped}))
""")


def heap_churn(mode):
    out = subprocess.run([sys.executable, "-c", WORKLOAD, mode], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


class TuneMallocTests(SynchronousTestCase):
    def test_applies_on_this_glibc_system(self):
        self.assertTrue(tune_malloc())

    def test_relay_buffers_stay_on_the_heap(self):
        plain, tuned = heap_churn("plain"), heap_churn("tuned")
        # Untuned, the first 200 KiB buffer is above glibc's initial 128 KiB
        # mmap threshold, so the workload does provoke the churn.
        self.assertGreater(plain["mapped"], 0, plain)
        # Tuned, the buffers come from the heap and its pages are kept.
        self.assertEqual(tuned, {"trims": 0, "mapped": 0})
