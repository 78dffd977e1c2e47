"""Imported at start-up by every Python process of the multi-node tests (this folder is put first on
PYTHONPATH, so the launchers' children get it too): DeepSpeed's CPU shared-memory comm op is not
JIT-compiled on the first distributed start (35-45 s with g++ on a 2-core box; environment.md §2).
The op only speeds up collectives between ranks of one node; gloo does the same work without it.

SIGUSR1 makes any of these processes print every thread's Python stack to its stderr: a test whose
nodes did not end in time sends it to each of their processes before killing them, so a hang shows
where each rank waits."""
import faulthandler
import importlib.abc
import importlib.util
import os
import signal
import sys
import time


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Runs ``patch(module)`` right after the module named ``name`` is first imported."""

    def __init__(self, name, patch):
        self.name, self.patch = name, patch

    def find_spec(self, name, path, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            self.patch(module)

        spec.loader.exec_module = exec_module
        return spec


def _skip_shm_op(module):
    module.build_shm_op = lambda: None


def _slow_log_window(module):
    """VLMTEST_SLOW_SAVE_RANK=k: rank k writes its logging window 2 s late (a slow disk, a busy node), so
    a test can see whether rank 0 marks a checkpoint complete before every rank's files are there."""
    save = module.save_log_window

    def slow(window, checkpoint, rank):
        time.sleep(2.0)
        save(window, checkpoint, rank)

    module.save_log_window = slow


sys.meta_path.insert(0, _PatchOnImport("deepspeed.comm.torch", _skip_shm_op))
if os.environ.get("VLMTEST_SLOW_SAVE_RANK") is not None and os.environ.get("RANK") == os.environ["VLMTEST_SLOW_SAVE_RANK"]:
    sys.meta_path.insert(0, _PatchOnImport("vlmtrain.train.rundir", _slow_log_window))

faulthandler.register(signal.SIGUSR1, all_threads=True)
