"""Claims: which process, on which machine, is working on what, in a root many of them share.

A root on a shared filesystem (NFS, Lustre, a mounted bucket) is filled by many processes on many
machines at once; a lock that lives in one kernel (flock) cannot keep them apart. A claim is a
small JSON file (host, machine boot id, pid, start time, heartbeat time) that appears under its
final name in one atomic step (a hard link of a finished temporary file, which fails when the
name exists; ``O_CREAT|O_EXCL`` where links are not supported). Whoever made it holds it;
everyone else waits.

The holder's process rewrites it every few seconds (a heartbeat, one thread for all its claims).
A claim is stale when its holder cannot still be working: on the same machine, its process is
gone (a pid, checked with the process's start time so a reused pid does not count); on another
machine, the file has not been rewritten for ``timeout`` seconds, measured with the file server's
own clock (the mtime of a probe file it stamps now), so the machines' clocks need not agree. A
stale claim is taken over by renaming a fresh claim over it, waiting ``SETTLE`` seconds and
reading it back: of several processes that take over at once, the one whose claim is there then
holds it, the others wait again.

What this cannot do: a holder whose whole machine stalls for longer than ``timeout`` (and then
resumes) has lost its claim without knowing it until its next heartbeat (``Claim.lost``); the
timeout must be generous (60 s by default). Filesystems that cannot make a name appear
atomically (some object-store mounts) cannot host claims at all: docs/distributed.md says which.
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

DEFAULT_TIMEOUT = 60.0  # seconds without a heartbeat before another machine's claim is stale
SETTLE = 1.0  # seconds a taker waits before reading back the claim it renamed over a stale one
SUFFIX = ".claim"


@dataclass
class Holder:
    """What a claim file says about the process that holds it."""

    host: str
    boot: str  # this boot of the machine (with host: which pids are comparable)
    pid: int
    pid_start: str  # the process's start time in clock ticks since boot ("" where unknown)
    nonce: str  # this one claim
    what: str  # what the holder is doing, for messages
    started: float
    heartbeat: float

    def same_machine(self) -> bool:
        return self.host == _HOST and self.boot == _BOOT

    def ours(self) -> bool:
        """Held by this very process (another of its threads, maybe)."""
        return self.same_machine() and self.pid == os.getpid()

    def describe(self) -> str:
        where = "this machine" if self.same_machine() else self.host
        return f"pid {self.pid} on {where}" + (f" ({self.what})" if self.what else "")


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


_HOST = socket.gethostname()
_BOOT = _boot_id()


def process_start(pid: int) -> str:
    """The start time of process ``pid`` (field 22 of /proc/PID/stat), "" where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def process_alive(pid: int, start: str) -> bool:
    """Process ``pid`` of this machine runs and is the one that started at ``start``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    now = process_start(pid)
    return not (start and now and now != start)


def server_now(folder: Path) -> float:
    """The time on the clock of the filesystem that holds ``folder`` (the mtime it gives a new file)."""
    fd, name = tempfile.mkstemp(prefix=".now-", dir=folder)
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        os.unlink(name)


def read_holder(path: Path) -> Holder | None:
    """The claim at ``path``; None when there is none (or it vanished while being read)."""
    try:
        data = json.loads(path.read_text("utf-8"))
        return Holder(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        # unreadable: a claim from an O_EXCL create caught before its content was written, or damaged;
        # it counts as held by nobody known, so only its age can make it stale
        return Holder("?", "?", -1, "", "", "", 0.0, 0.0)


def is_stale(path: Path, holder: Holder, timeout: float) -> bool:
    if holder.same_machine():
        return not process_alive(holder.pid, holder.pid_start)
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return True
    return server_now(path.parent) - mtime > timeout


def live_holder(path: Path, timeout: float = DEFAULT_TIMEOUT) -> Holder | None:
    """Who holds the claim at ``path`` now, or None when nobody does (no claim, or a stale one)."""
    holder = read_holder(path)
    if holder is None or is_stale(path, holder, timeout):
        return None
    return holder


class Claim:
    """One claim file. ``acquire`` (waiting while a live process holds it), ``release``; a context manager."""

    def __init__(self, path: Path, what: str = "", *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = Path(path)
        self.what = what
        self.timeout = timeout
        self.holder: Holder | None = None  # ours, once acquired
        self.lost = False  # another process took it over (ours had gone quiet for `timeout`)
        self._last_beat = 0.0
        self._lock = threading.Lock()  # a heartbeat never rewrites a claim that release() removed

    # ------------------------------------------------------------------ taking it
    def try_acquire(self) -> Holder | None:
        """Take the claim if nobody live holds it: None when taken, else who holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mine = self._new_holder()
        for _ in range(3):
            if self._create(mine):
                return self._taken(mine)
            other = read_holder(self.path)
            if other is not None:
                break  # (else it was released between our try and our read: try again)
        else:
            return Holder("?", "?", -1, "", "", "", 0.0, 0.0)  # coming and going: held, for now
        if not is_stale(self.path, other, self.timeout):
            return other
        if self._take_over(other, mine):
            return self._taken(mine)
        return read_holder(self.path) or other

    def acquire(self, *, wait: bool = True, on_wait: Callable[[Holder], None] | None = None,
                poll: float = 1.0, deadline: float | None = None,
                cancel: threading.Event | None = None) -> Holder | None:
        """Take the claim; with ``wait``, poll (up to every ``poll`` seconds) until it is ours, calling
        ``on_wait(holder)`` once. Returns None when taken, else (no wait, past ``deadline``, or
        ``cancel`` set) the holder."""
        delay, told = 0.005, False
        while True:
            other = self.try_acquire()
            if other is None:
                return None
            if not wait or (deadline is not None and time.monotonic() > deadline) or (cancel and cancel.is_set()):
                return other
            if on_wait is not None and not told and other.pid != -1:
                on_wait(other)
                told = True
            time.sleep(delay)
            delay = min(poll, delay * 2)

    def _new_holder(self) -> Holder:
        now = time.time()
        return Holder(_HOST, _BOOT, os.getpid(), process_start(os.getpid()), uuid.uuid4().hex, self.what, now, now)

    def _create(self, mine: Holder) -> bool:
        """Make the claim file appear, complete, under its name unless one is there: True when ours."""
        tmp = self._write_temporary(mine)
        try:
            try:
                os.link(tmp, self.path)
                return True
            except FileExistsError:
                return False
            except OSError:
                if os.stat(tmp).st_nlink == 2:  # NFS: the link was made, only its answer was lost
                    return True
            return self._create_exclusive(mine)  # a filesystem without hard links
        finally:
            os.unlink(tmp)

    def _create_exclusive(self, mine: Holder) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(mine)))
        return True

    def _write_temporary(self, mine: Holder) -> str:
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(mine)))
        os.chmod(tmp, 0o666 & ~_umask())
        return tmp

    def _take_over(self, stale: Holder, mine: Holder) -> bool:
        """Rename a fresh claim over ``stale``; ours if it is still there after SETTLE seconds."""
        again = read_holder(self.path)  # the stale one still there (not taken over meanwhile)?
        if again is None or again.nonce != stale.nonce:
            return False
        os.replace(self._write_temporary(mine), self.path)
        time.sleep(SETTLE)  # another taker that read the stale claim before our rename renames after it
        now = read_holder(self.path)
        return now is not None and now.nonce == mine.nonce

    def _taken(self, mine: Holder) -> None:
        self.holder, self.lost, self._last_beat = mine, False, time.monotonic()
        _BEATER.add(self)

    # ------------------------------------------------------------------ holding it
    def beat(self) -> None:
        """Rewrite the heartbeat (the heartbeat thread calls this); notice when the claim was taken over."""
        with self._lock:
            if self.holder is None:
                return
            now = read_holder(self.path)
            if now is None or now.nonce != self.holder.nonce:
                self.lost = True
                _BEATER.discard(self)
                return
            self.holder.heartbeat = time.time()
            os.replace(self._write_temporary(self.holder), self.path)
            self._last_beat = time.monotonic()

    def release(self) -> None:
        """Remove the claim, if it is still ours."""
        _BEATER.discard(self)
        with self._lock:
            if self.holder is None:
                return
            now = read_holder(self.path)
            if now is not None and now.nonce == self.holder.nonce:
                self.path.unlink(missing_ok=True)
            self.holder = None

    def __enter__(self) -> "Claim":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def mutex(path: Path, what: str = "") -> Iterator[None]:
    """A short critical section that processes on every machine sharing ``path``'s folder respect
    (the journal's and vlmdata.lock's read-modify-write)."""
    claim = Claim(path, what)
    claim.acquire(poll=0.05)
    try:
        yield
    finally:
        claim.release()


class _Beater:
    """One daemon thread per process that rewrites the heartbeat of every claim it holds."""

    def __init__(self) -> None:
        self.claims: set[Claim] = set()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, claim: Claim) -> None:
        with self.lock:
            self.claims.add(claim)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="vlmdata-heartbeat", daemon=True)
                self.thread.start()

    def discard(self, claim: Claim) -> None:
        with self.lock:
            self.claims.discard(claim)

    def _run(self) -> None:
        while True:
            time.sleep(0.25)
            with self.lock:
                held = list(self.claims)
            now = time.monotonic()
            for c in held:
                if now - c._last_beat >= beat_interval(c.timeout):
                    try:
                        c.beat()
                    except OSError:
                        pass  # the filesystem hiccuped: the next beat tries again, well within the timeout


def beat_interval(timeout: float) -> float:
    """Seconds between heartbeats: several per timeout, so a few missed ones do not make a claim stale."""
    return max(0.25, min(10.0, timeout / 6))


_BEATER = _Beater()


def _umask() -> int:
    from vlmdata.atomic import current_umask

    return current_umask()


def claim_name(key: str) -> str:
    """A file name for ``key`` (``coco:train2017.zip``, ``ocr_vqa:images#000003``): readable, one folder level."""
    from urllib.parse import quote

    name = quote(key, safe="")
    if len(name) > 200:  # long Hub paths: a digest keeps the name within every filesystem's limit
        import hashlib

        name = name[:120] + "-" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return name + SUFFIX


def new_session_name(kind: str) -> str:
    """A session claim's name: unique, so taking it never waits (``kind``: "fetch")."""
    return f"{kind}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"


def live_sessions(folder: Path, kind: str, timeout: float = DEFAULT_TIMEOUT) -> list[Holder]:
    """The live session claims of ``kind`` in ``folder``; stale ones (their process is gone) are removed."""
    out = []
    for p in sorted(folder.glob(f"{kind}-*{SUFFIX}")):
        holder = read_holder(p)
        if holder is None:
            continue
        if is_stale(p, holder, timeout):
            p.unlink(missing_ok=True)  # a unique name: nobody takes a session over, so this removes only it
        else:
            out.append(holder)
    return out


def live_claims(folder: Path, timeout: float = DEFAULT_TIMEOUT) -> list[tuple[str, Holder]]:
    """Who works on what in ``folder`` right now: (the claimed key, its holder), for `status`.

    Read only: stale claims are skipped, not removed, and a folder that cannot be read (or, for
    another machine's claims, written to ask the file server's clock) shows what it can."""
    from urllib.parse import unquote

    out = []
    try:
        paths = sorted(folder.glob(f"*{SUFFIX}"))
    except OSError:
        return out
    for p in paths:
        holder = read_holder(p)
        if holder is None or holder.pid < 0:
            continue
        try:
            if is_stale(p, holder, timeout):
                continue
        except OSError:
            pass  # the clock of a read-only folder cannot be asked: show it as it says
        out.append((unquote(p.name[: -len(SUFFIX)]), holder))
    return out
