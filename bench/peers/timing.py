"""One timed run of a whole command, as a user runs it: `sync` and the VM's page reporting settled
first (not timed), the load average when it starts, the wall time of the process, its exit code,
its CPU time and its largest RSS."""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable


MANY = 1000  # files in a folder above which rm() sets it aside instead of deleting it
_aside: list[Path] = []


def rm(*paths: Path) -> None:
    """Remove files and folders (outputs of an earlier run); missing ones are fine.

    A folder of more than MANY files on a disk file system is renamed aside, and deleted by
    ``empty_trash()`` once every case has run. Deleting it would slow the next run down: ext4's
    inode allocator (here, without a journal) steps over every inode freed in the last 1-6
    minutes, one buffer-cache lookup each, so after the last run's 20,000 files were deleted,
    creating 20,000 files took 4-15 s of kernel time instead of 0.7-0.8 s (perf: ~65% of it in
    ``recently_deleted``), for whichever tool ran next. That is the benchmark's own clean-up,
    not the tools': no user has just deleted 20,000 files before a fetch.
    """
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            if _many_files(p) and not _on_tmpfs(p):
                aside = p.with_name(f".aside-{p.name}-{time.time_ns()}")
                p.rename(aside)
                _aside.append(aside)
            else:
                shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def empty_trash(*folders: Path) -> None:
    """Delete what rm() set aside (and any ``.aside-*`` left in ``folders`` by an interrupted run)."""
    left = [q for f in folders if f.is_dir() for q in f.glob(".aside-*")]
    for p in dict.fromkeys([*_aside, *left]):
        shutil.rmtree(p, ignore_errors=True)
    _aside.clear()


def warm(*paths: Path) -> int:
    """Read each file once, so the runs start with its pages in the page cache; returns the bytes read.

    Without it the first tool of an alternation (always vlmdata) is the one that reads an input
    from the disk: nginx serving a 1 GiB file evicted since the last run made the first vlmdata
    fetch 4.1-4.4 s against 1.8-2.1 s for the next ones.
    """
    n = 0
    buf = bytearray(8 << 20)
    for p in paths:
        with open(p, "rb", buffering=0) as fh:
            while got := fh.readinto(buf):
                n += got
    return n


def _many_files(folder: Path) -> bool:
    n = 0
    for _, _, files in os.walk(folder):
        n += len(files)
        if n > MANY:
            return True
    return False


def _on_tmpfs(path: Path) -> bool:
    """Whether ``path`` is on a tmpfs (no inode allocator to step over freed inodes; RAM to give back)."""
    best, kind = "", ""
    with open("/proc/self/mounts") as fh:
        for line in fh:
            mnt, fstype = line.split()[1:3]
            if (str(path) + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) > len(best):
                best, kind = mnt, fstype
    return kind == "tmpfs"


# Free page reporting (virtio-balloon) on these VMs: how much freed memory the guest has handed
# back to its host so far. A standard kernel has no such counter; there settle() does nothing.
REPORTED_KIB = Path("/sys/module/page_reporting/parameters/reported_kib")


def _reported_kib() -> int | None:
    try:
        return int(REPORTED_KIB.read_text())
    except (OSError, ValueError):
        return None


def _mib_between(before: int | None, after: int | None) -> float | None:
    """MiB reported to the host between two reads of ``reported_kib`` (None without the counter)."""
    return None if before is None or after is None else round((after - before) / 1024, 1)


def meminfo_kib(name: str) -> int | None:
    """A field of /proc/meminfo ("MemTotal", "MemFree", ...) in KiB; None where there is none."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def settle(quiet: float = 3.0, limit: float = 30.0) -> float:
    """Wait until the guest has stopped handing freed memory back to the host (no change of
    ``reported_kib`` for ``quiet`` seconds, ``limit`` at most); returns the seconds waited.

    Each run frees the last run's output (1 GiB for the download rows, GBs for the blend's peer).
    This VM reports freed memory to its host, which discards it, in passes ~2-2.5 s apart of up
    to ~128 MiB each, the first ~2 s after the free (6 GB freed: 956 MiB reported in the next
    25 s); a discarded page costs a host fault when it is next used. With 8 GB of fresh page cache
    on the machine, ~0.5 GB was reported during most 1 GiB download runs, and those spent 2.0-2.7 s
    of system time against 0.75-1.0 s for runs with nothing reported (perf: the copy into the page
    cache, 1.13 s against 0.25 s). Which tool a pass hit was chance; waiting for the passes of the
    last run's free, as ``sync`` waits for writeback, gives each tool the same start. It does not
    make that state fast: there any write into new page cache is slow, for every tool (``dd`` of
    1 GiB from /dev/zero 1.6-2.3 s against 1.1-1.4 s), and ``reported_mib`` of each run says
    whether a pass still overlapped it (after a multi-GB free the passes go on for minutes).
    """
    last, still, t0 = _reported_kib(), 0.0, time.monotonic()
    if last is None:
        return 0.0
    while still < quiet and time.monotonic() - t0 < limit:
        time.sleep(0.25)
        now = _reported_kib()
        still = still + 0.25 if now == last else 0.0
        last = now
    return round(time.monotonic() - t0, 2)


@dataclass
class Run:
    tool: str
    seconds: float
    rc: int
    load1: float  # 1-minute load average when the run started
    max_rss_mb: float  # the largest resident set of one process of the command (getrusage of the children)
    cpu_user: float = 0.0  # CPU seconds of the command and every process it waited for (not the server's)
    cpu_sys: float = 0.0
    settle_s: float = 0.0  # seconds settle() waited before the run (not timed)
    settle_mib: float | None = None  # memory the guest reported to its host while settle() waited
    reported_mib: float | None = None  # memory the guest reported to its host during the run (None: no counter)
    free_mib: int | None = None  # MemFree when the run started (a page cache grown by earlier work shows here)
    # This process's own peak RSS when the command started. Linux starts a spawned command's peak at
    # its parent's (exec keeps the high-water mark of the memory it replaces), so a max_rss_mb at or
    # below this floor is the harness's peak, not the command's.
    rss_floor_mb: float = 0.0
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
    """Run ``argv`` once after ``prepare()``, ``sync`` and ``settle()``; ``check()`` (after it)
    returns extra facts for the record and raises if the command did not do its job."""
    if prepare is not None:
        prepare()
    os.sync()
    time.sleep(0.5)  # let the writeback sync started settle
    before = _reported_kib()
    waited = settle()
    reported, free = _reported_kib(), meminfo_kib("MemFree")
    load = os.getloadavg()[0]
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ctx = Busy() if busy else None
    if ctx:
        ctx.__enter__()
    try:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, env=user_env(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stderr = p.stderr.read() if p.stderr else b""
        _, status, usage = os.wait4(p.pid, 0)  # this command's own usage, its descendants included
        dt = time.perf_counter() - t0
        after = _reported_kib()
        p.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if ctx:
            ctx.__exit__()
    run = Run(tool, round(dt, 3), p.returncode, round(load, 2), round(usage.ru_maxrss / 1024, 1),
              round(usage.ru_utime, 2), round(usage.ru_stime, 2), settle_s=waited,
              settle_mib=_mib_between(before, reported), reported_mib=_mib_between(reported, after),
              free_mib=None if free is None else free // 1024, rss_floor_mb=round(floor, 1))
    if p.returncode != 0:
        tail = stderr.decode(errors="replace")[-1500:]
        print(f"  {tool}: exit {p.returncode}\n{tail}", flush=True)
    elif check is not None:
        run.extra = check()
    print(f"  {tool:<34} {dt:8.3f} s  load {load:5.2f}  cpu {run.cpu_user:5.2f} u {run.cpu_sys:5.2f} s  rc {p.returncode}"
          + ("" if not run.reported_mib else f"  reported {run.reported_mib:,.0f} MiB"),
          flush=True)
    return run
