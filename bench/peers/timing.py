"""One timed run of a whole command, as a user runs it: `sync` first (not timed), the load average
when it starts, the wall time of the process, its exit code, and its largest RSS."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable


def rm(*paths: Path) -> None:
    """Remove files and folders (outputs of an earlier run); missing ones are fine."""
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


@dataclass
class Run:
    tool: str
    seconds: float
    rc: int
    load1: float  # 1-minute load average when the run started
    max_rss_mb: float  # the largest resident set of one process of the command (getrusage of the children)
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


class Busy:
    """One process spinning on a core for the duration of a run ("under load")."""

    def __enter__(self) -> "Busy":
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


def user_env(extra: dict | None = None) -> dict:
    """The environment a user's shell gives a command: this one's, less PYTHONDONTWRITEBYTECODE (set on
    these machines, rare on a user's: with it every run compiles every module it imports again,
    ~0.03-0.05 s of each start-up), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, **(extra or {})}


def timed(tool: str, argv: list[str], *, prepare: Callable[[], None] | None = None, env: dict | None = None,
          busy: bool = False, check: Callable[[], dict] | None = None) -> Run:
    """Run ``argv`` once after ``prepare()`` and ``sync``; ``check()`` (after it) returns extra facts
    for the record and raises if the command did not do its job."""
    if prepare is not None:
        prepare()
    os.sync()
    time.sleep(0.5)  # let the writeback sync started settle
    load = os.getloadavg()[0]
    ctx = Busy() if busy else None
    if ctx:
        ctx.__enter__()
    try:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, env=user_env(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stderr = p.stderr.read() if p.stderr else b""
        _, status, usage = os.wait4(p.pid, 0)  # this command's own usage, its descendants included
        dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if ctx:
            ctx.__exit__()
    run = Run(tool, round(dt, 3), p.returncode, round(load, 2), round(usage.ru_maxrss / 1024, 1))
    if p.returncode != 0:
        tail = stderr.decode(errors="replace")[-1500:]
        print(f"  {tool}: exit {p.returncode}\n{tail}", flush=True)
    elif check is not None:
        run.extra = check()
    print(f"  {tool:<34} {dt:8.3f} s  load {load:5.2f}  rc {p.returncode}", flush=True)
    return run
