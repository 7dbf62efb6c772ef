"""glibc malloc settings for a relay process.

Relaying large chunks allocates and frees buffers of a few hundred KiB many
times a second (socket reads, frames joined per read, Twisted's write
buffer). With glibc's defaults such buffers are mapped fresh (above the
mmap threshold) or the top of the heap is handed back and taken again (the
trim threshold), and every cycle pays page faults to map and zero new
pages (docs/performance.md has the measurements: up to 30,000 faults and
a fifth more CPU per GB relayed). Fixed thresholds keep those buffers on
the heap and their pages reused; the price is that up to the trim
threshold of freed memory may stay resident.

Applied by the twistd plugin and msrp.tac, never on import: an application
embedding the stack owns its process's allocator.
"""

import ctypes
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

DEFAULT_MMAP_THRESHOLD = 1 << 20  # allocations below 1 MiB come from the heap
DEFAULT_TRIM_THRESHOLD = 32 << 20  # keep up to 32 MiB free at the heap's top


def tune_malloc(mmap_threshold=DEFAULT_MMAP_THRESHOLD, trim_threshold=DEFAULT_TRIM_THRESHOLD):
    """Set glibc's thresholds; returns False (doing nothing) elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: musl's mallopt does nothing
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) and
                mallopt(M_TRIM_THRESHOLD, int(trim_threshold)))
