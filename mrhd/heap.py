"""glibc's heap kept for reuse in long CPU runs that free and allocate the same large tensors.

Why: a training step frees tens of tensors of 1-30 MB and allocates them again in the next step.
glibc serves blocks above its mmap threshold with fresh ``mmap`` calls (returned with ``munmap``
when freed) and trims the heap's top once it is 128 KB free, so every step faults its activations'
pages in again. ``mrhd train`` on a CPU therefore raises both thresholds at start (allocations up
to 32 MB come from the heap, and freed memory stays there): QD-DETR at batch 32 (2 threads, idle
2-core CPU) went from ~6,000 to 180-980 minor page faults per step and from 1,187 / 1,234 ms to
1,110 / 1,126 ms per step; CG-DETR from 2,130 / 2,061 to 2,086 / 1,998 ms (two runs each,
docs/training-speed.md). Peak memory is unchanged: the heap is reused, not grown. Numbers are
unchanged.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1   # glibc malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20   # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 1 << 30
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (Linux with glibc only; a
    ``MALLOC_*_`` or ``GLIBC_TUNABLES`` setting in the environment wins). Returns whether both
    were set."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):   # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
