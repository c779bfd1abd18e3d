"""Give freed heap memory back to the operating system after bursts of large images.

glibc keeps freed blocks of large numpy arrays inside its heaps (its mmap threshold grows with
the largest block freed), so after a burst of 5 MP uploads the process stayed ~500 MB above its
idle size indefinitely (bench/bench_overload.py). ``malloc_trim(0)`` returns those pages. It
runs when a work gate goes idle, in a worker thread, so it never delays a response or a
request under load.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import lru_cache


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_heap() -> None:
    """Return free heap pages to the OS where the C library supports it; otherwise no-op."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
