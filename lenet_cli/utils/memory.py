"""Let this process reuse the memory it frees, where it makes and drops many large arrays.

glibc's malloc hands every block of 128 KiB or more straight back to the operating system when
it is freed, and trims the heap's free top soon after, so each such array comes back as fresh
pages, a page fault each. Preprocessing a photo makes and drops tens of them (a 200x200 float32
image is 156 KiB): on 500 photos in `lenet predict` the system time fell from 0.30 s to 0.11 s
and the wall time by 15% (docs/performance.md). A CPU training step frees dozens of 1-10 MB
tensors: batch 512 on 2 cores ran about 25% more images/s. Called by lenet's own processes (the
CLI, its workers and serving processes) and by the training setup on the CPU; a process-wide
setting that lasts the life of the process.
"""

from __future__ import annotations

import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts on 64-bit: blocks under it come from the heap
TRIM_THRESHOLD = 64 << 20  # keep up to this much freed memory at the heap's top for the next image
TRAINING_TRIM_THRESHOLD = 512 << 20  # a training step's tensors: keep up to 512 MiB
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def reuse_freed_memory(trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True if they were set.

    Nothing happens off Linux, under another C library, or when the user tuned malloc through
    its environment variables (MALLOC_*_ or GLIBC_TUNABLES): theirs win.
    """
    if not sys.platform.startswith("linux") or any(name in os.environ for name in USER_SETTINGS):
        return False
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):  # the other way users tune it
        return False
    import ctypes  # here, not at import: `lenet --help` loads this module and needs none of it

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl, or no libc.so.6
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
