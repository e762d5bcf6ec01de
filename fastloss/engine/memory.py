"""Keeping freed memory for reuse (glibc): what makes a batched step fast on the CPU.

glibc's malloc serves blocks above 32 MB with fresh ``mmap`` pages and returns them to the
system on ``free``, so every step of a batched pass (activations ``[K, B, ...]`` of tens of
MB, each allocated and freed per step) faults its pages in again and zeroes them: on the
2-core development CPU a ReLU over a 52 MB activation took 29 ms this way, against ~10 ms on
reused memory, and one MPO step of an MLP over 100 cells went from 0.42 s to 0.26 s once
freed memory was kept (bench/bench_mpo.py). `keep_freed_memory` tells malloc to take every
block from its heap and never give the heap back, so the process keeps its peak footprint
and reuses it. The command line turns it on; library users call it once if they want the
same.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse (no ``mmap`` for large blocks, no
    trimming of the heap) for the rest of the process; returns whether it applied (False
    on other C libraries, where nothing changes)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc, or no C library found
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
