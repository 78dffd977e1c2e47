"""A launched rank (WORLD_SIZE > 1) that was in a process group ends through vlmtrain.cli's
_exit_launched_rank, not the interpreter's teardown, where one finished ZeRO-3 rank aborted once
('terminate called without an active exception'). Stood for here by an object whose destructor aborts
the process when the teardown collects it; checked: the exit code is the command's, what the teardown
would have done still happens (atexit handlers, buffered stdout, a non-daemon thread's work), and a
single process (WORLD_SIZE 1) is left to exit as usual."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import atexit, os, sys, threading, time
import torch.distributed as dist

dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{port}", rank=0, world_size=1)

class AbortsAtTeardown:  # a C++ destructor that aborts, as the rank's did
    def __del__(self, abort=os.abort):  # (bound now: the module's globals are gone by then)
        abort()

keep = AbortsAtTeardown()
atexit.register(lambda: print("atexit handler ran", flush=True))
threading.Thread(target=lambda: (time.sleep(0.3), print("thread finished", flush=True))).start()
sys.stdout.write("buffered line\\n")  # stdout is a pipe here: held in the buffer until flushed
{ending}
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(ending: str, world_size: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "WORLD_SIZE": world_size, "CUDA_VISIBLE_DEVICES": "",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", SCRIPT.format(port=_port(), ending=ending)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_stand_in_aborts_a_plain_exit():
    """The control: without the rank's own exit, the teardown aborts (else the next tests prove nothing)."""
    p = _run("sys.exit(0)", world_size="2")
    assert p.returncode == -6, (p.returncode, p.stderr[-2000:])  # SIGABRT


@pytest.mark.parametrize("code", [0, 143])  # a finished run; one stopped by SIGTERM after its checkpoint
def test_a_launched_rank_exits_with_its_code_and_what_the_teardown_does(code):
    p = _run(f"from vlmtrain.cli import _leave_process_group, _exit_launched_rank\n"
             f"if {code} == 0:\n    _leave_process_group()\n"
             f"_exit_launched_rank({code})\nprint('not reached')", world_size="2")
    assert p.returncode == code, (p.returncode, p.stderr[-2000:])
    lines = p.stdout.splitlines()
    assert set(lines) == {"buffered line", "thread finished", "atexit handler ran"}, p.stdout
    assert lines.index("thread finished") < lines.index("atexit handler ran")  # as the interpreter orders them


def test_a_single_process_is_left_to_the_usual_exit():
    p = _run("from vlmtrain.cli import _exit_launched_rank\n_exit_launched_rank(0)\nprint('returned')",
             world_size="1")
    assert "returned" in p.stdout and p.returncode == -6, (p.returncode, p.stdout)  # the teardown ran (and aborted)
