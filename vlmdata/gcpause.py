"""Cyclic garbage collection paused around loops that make many short-lived objects and no cycles.

CPython runs its cycle collector after every ~700 container allocations, and the older
generations' passes walk every object the process holds (all imported modules' included): in a
loop over 20,000 zip members or a blend's records that is work for nothing. Reference counting
still frees everything at once; only cycles wait for the collector, which runs again after the block.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic collection inside the block (as it was after it; nesting is fine)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
