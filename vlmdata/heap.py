"""Keep a busy process's freed memory for its own reuse instead of handing it back to the kernel.

glibc serves large blocks (from 128 KiB, a threshold it raises as they are freed, up to 32 MiB)
with their own mmap, returned with munmap when freed, and gives back the top of its heap past
128 KiB of free space. A blend's readers make and drop a few MB of strings, lists and buffers per
batch, so the same memory went back and forth: every page came back as a fresh one, a page fault
and 4 KiB zeroed by the kernel each time (200 MB of the 665k mix: ~39,000 minor faults, ~16,000
with this). ``keep_freed_memory()`` raises both thresholds for the rest of the process: for
short-lived worker processes, whose memory all goes back when they exit.
"""
from __future__ import annotations

import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_FROM = 32 << 20  # blocks below this come from the heap (glibc refuses more than 32 MiB)
TRIM_FROM = 1 << 30  # free space at the heap's top kept up to this


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (see the module docstring); False where this is not
    glibc (nothing changes then)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_FROM)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_FROM))
