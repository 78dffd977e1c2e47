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
import signal
import sys


class _SkipShmOp(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "deepspeed.comm.torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.build_shm_op = lambda: None

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _SkipShmOp())

faulthandler.register(signal.SIGUSR1, all_threads=True)
