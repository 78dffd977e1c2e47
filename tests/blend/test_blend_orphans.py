"""A blend killed outright (kill -9, the OOM killer) takes its reader processes with it: they used
to sleep on the pool's queue for good, each holding a forked copy of the blend's memory."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The blend's own scan_inputs, with each range's work replaced by "print my pid, then wait": the
# blend process kills itself with SIGKILL once its two workers wait.
_SCRIPT = """
import os, signal, sys, threading, time
from pathlib import Path
from vlmdata.blend import scan

def waiting(task):
    os.write(1, f"{os.getpid()}\\n".encode())  # (one write: two workers' prints could interleave)
    (task.path.parent / f"started-{os.getpid()}").touch()
    time.sleep(120)

scan.scan_range = waiting
tmp = Path(sys.argv[1])
tasks = []
for name in ("a", "b"):
    (tmp / f"{name}.json").write_text("[]")
    tasks.append(scan.Task(name, tmp / f"{name}.json", "", tmp / f"{name}.arrow"))
def kill_when_both_wait():
    deadline = time.monotonic() + 30
    while len(list(tmp.glob("started-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)

threading.Thread(target=kill_when_both_wait, daemon=True).start()
scan.scan_inputs(tasks, jobs=2)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in state  # (a zombie is dead, waiting for init to reap it)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_the_readers_of_a_killed_blend_end_with_it(tmp_path):
    out, err = tmp_path / "pids", tmp_path / "err"
    with open(out, "w") as fo, open(err, "w") as fe:  # (files, not pipes: a live orphan would hold a pipe open)
        code = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], stdout=fo, stderr=fe, timeout=60).returncode
    assert code == -9, err.read_text()
    pids = [int(p) for p in out.read_text().split()]
    assert len(pids) == 2
    try:
        deadline = time.monotonic() + 10
        while any(map(_alive, pids)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, pids)), "a reader process outlived the blend that forked it"
    finally:
        for pid in pids:  # (without the fix: end them here, not leave them to the test machine)
            if _alive(pid):
                os.kill(pid, 9)
