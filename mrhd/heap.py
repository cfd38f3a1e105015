"""glibc's heap kept for reuse in long CPU runs that free and allocate the same large tensors.

Why: a training step frees tens of 1-30 MB tensors and allocates them again in the next step. glibc
returns blocks above its mmap threshold to the kernel and trims the heap's top once 128 KB are free,
so every step faults its activations' pages in again. ``mrhd train`` and ``mrhd serve`` (whose every
batch of queries does the same) on a CPU raise both thresholds at start: allocations up to 32 MB come
from the heap and freed memory stays there, for the same peak memory and unchanged numbers (figures
in docs/training-speed.md and docs/serve.md).
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
