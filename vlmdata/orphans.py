"""Worker processes that end when the process that forked them dies.

A ProcessPoolExecutor's workers wait on the pool's queue for the next task. When the process that
made the pool is killed outright (kill -9, the OOM killer), nothing tells them: they slept on,
orphaned, for good, each holding a forked copy of the blend's memory (found by killing a blend
with -9 mid-read: its two readers were still there minutes later). On Linux, ``prctl`` can ask
the kernel to kill a process when its parent goes; elsewhere nothing changes. The kernel watches
the *thread* that forked the worker, not its process: the pools here are made, used and shut
down within one call, so that thread outlives them (a pool made in a short-lived thread and
used after it ends would see its workers killed).
"""
from __future__ import annotations

import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> bool:
    """In a worker forked by process ``parent``: be killed when that process dies. False where
    this is not Linux (nothing changes then)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the parent died before the request was made: go now
        os._exit(1)
    return True
