"""Give the C heap's free pages back to the system during a long analysis.

The columnar path allocates and frees NumPy buffers of a few MiB for every batch, between objects
that live for minutes of capture time (open sessions). glibc's malloc keeps freed memory inside its
heap for reuse, and the holes between long-lived blocks are never returned on their own, so a
process's resident size crept up with the length of the capture: a process of a split analysis
grew from 75 to 87 MiB between frames 1.4M and 8.6M of a 10M-frame capture, with a constant number
of live objects; trimmed every 25 batches, from 70 to 79 MiB. `malloc_trim(0)` hands every whole
free page back (glibc 2.8 and later). It costs a walk of the heap, so it is called every few
hundred thousand frames, not per batch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

TRIM_EVERY_BATCHES = 25
"""Batches (of about 2 MiB each) between trims."""


def trimmer() -> Callable[[], None]:
    """A function that trims the heap, or does nothing where the C library has no malloc_trim
    (not glibc)."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def trim_heap() -> None:
        trim(0)

    return trim_heap
