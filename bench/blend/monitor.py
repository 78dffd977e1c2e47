"""Run a command and sample the memory of its whole process tree (RSS, and PSS/USS where readable)."""
from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil


@dataclass
class Sample:
    t: float  # seconds since start
    procs: int
    rss: int  # bytes, summed over the tree (shared pages counted once per process)
    pss: int | None = None  # proportional set size, summed (shared pages split between processes)
    uss: int | None = None  # unique set size, summed (pages no other process shares)
    pss_anon: int | None = None  # the part of pss in anonymous memory (heap: Python objects)
    pss_file: int | None = None  # the part of pss in mapped files (page cache, e.g. memory-mapped Arrow)


@dataclass
class Run:
    cmd: list[str]
    rc: int = 0
    wall: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    stopped: str | None = None  # why the run was killed, if it was
    stdout: str = ""
    stderr: str = ""

    @property
    def peak_rss(self) -> int:
        return max((s.rss for s in self.samples), default=0)

    @property
    def peak_pss(self) -> int | None:
        vals = [s.pss for s in self.samples if s.pss is not None]
        return max(vals) if vals else None

    def summary(self) -> dict[str, Any]:
        return {"rc": self.rc, "wall_s": round(self.wall, 2), "peak_rss_mb": round(self.peak_rss / 2**20),
                "peak_pss_mb": None if self.peak_pss is None else round(self.peak_pss / 2**20),
                "stopped": self.stopped}


def _rollup(pid: int) -> dict[str, int] | None:
    """Pss, Pss_Anon, Pss_File and the private pages of a process, in bytes (Linux >= 4.14)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            fields = {}
            for line in fh:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    except OSError:
        return None
    return {"pss": fields.get("Pss", 0), "pss_anon": fields.get("Pss_Anon", 0), "pss_file": fields.get("Pss_File", 0),
            "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)}


def _tree(p: psutil.Process) -> list[psutil.Process]:
    try:
        return [p] + p.children(recursive=True)
    except psutil.Error:
        return []


def measure(cmd: list[str], *, env: dict[str, str] | None = None, interval: float = 0.05, full_every: float = 0.5,
            min_available: int = 2 << 30, timeout: float | None = None, cwd: str | None = None) -> Run:
    """Run ``cmd``; sample RSS of the tree every ``interval`` s and PSS/USS every ``full_every`` s.

    The tree is killed when the machine's available memory drops under ``min_available`` (the
    machine is shared) or after ``timeout`` seconds; ``Run.stopped`` says so.
    """
    run = Run(cmd)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    out: dict[str, str] = {}

    def drain(name: str, stream: Any) -> None:
        out[name] = stream.read()

    threads = [threading.Thread(target=drain, args=(n, s), daemon=True) for n, s in
               (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for t in threads:
        t.start()
    last_full = -1e9
    while proc.poll() is None:
        now = time.perf_counter() - t0
        procs = _tree(ps)
        rss = 0
        full = now - last_full >= full_every
        tot = {"pss": 0, "uss": 0, "pss_anon": 0, "pss_file": 0}
        for p in procs:
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                continue
            if full:
                r = _rollup(p.pid)
                if r is None:
                    try:
                        m = p.memory_full_info()
                        r = {"pss": getattr(m, "pss", 0), "uss": m.uss, "pss_anon": 0, "pss_file": 0}
                    except psutil.Error:
                        continue
                for k in tot:
                    tot[k] += r[k]
        if full:
            last_full = now
        if procs:
            run.samples.append(Sample(round(now, 3), len(procs), rss, *(
                (tot["pss"], tot["uss"], tot["pss_anon"], tot["pss_file"]) if full else (None, None, None, None))))
        if psutil.virtual_memory().available < min_available:
            run.stopped = f"killed at {now:.0f} s: the machine's available memory fell under {min_available >> 20} MB"
        elif timeout is not None and now > timeout:
            run.stopped = f"killed after {timeout:.0f} s (time limit)"
        if run.stopped:
            for p in reversed(_tree(ps)):
                try:
                    p.kill()
                except psutil.Error:
                    pass
            break
        time.sleep(interval)
    run.rc = proc.wait()
    run.wall = time.perf_counter() - t0
    for t in threads:
        t.join()
    run.stdout, run.stderr = out.get("stdout", ""), out.get("stderr", "")
    return run
