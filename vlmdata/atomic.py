"""Atomic writes: a temporary name in the same folder, fsync, rename.

A kill at any moment leaves either the old file or the new one under the final name, never a
half-written one. Temporary names start with ``.tmp-`` so ``cleanup_temporaries`` can find
what an earlier crash left behind. ``write_all`` is the one loop every writer of the project
uses around ``os.write`` (which may write only part of what it is given).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

TMP_PREFIX = ".tmp-"


def _tempfile() -> ModuleType:
    """The tempfile module, imported on first use (with random, its import is ~5% of a fetch that
    has nothing to do, which writes nothing)."""
    import tempfile

    return tempfile


# Bytes per write (or splice) of a download into its file. The kernel backs a write of n bytes with
# page-cache folios of up to n; on the project's 2-core VM, whose fresh page cache is faulted in from
# its host, 1 MiB writes took 1.2-2.0 s of system time per GiB where 64-512 KiB ones took 0.7-0.8 s,
# alternated run by run (bench/RESULTS.md); a piece this size costs a system call per 256 KiB.
WRITE_PIECE = 256 << 10


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """``os.write`` until all of ``data`` is written (a write may take only part of it); the
    usual single write makes no memoryview (zip extraction calls this per member)."""
    n = os.write(fd, data)
    if n < len(data):
        view = memoryview(data)[n:]
        while view:
            view = view[os.write(fd, view):]


def current_umask() -> int:
    """The process umask. mkstemp/mkdtemp create private (0600/0700) files; what this module
    renames into place gets the mode a plain ``open``/``mkdir`` would have given it instead, so
    files meant to be shared (the journal, vlmdata.lock, exports) are readable like any other."""
    try:  # Linux: read it without changing it (os.umask would race with other threads)
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary sibling of ``path``; on clean exit fsync it and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = _tempfile().mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    except OSError as e:  # name the file the caller asked for, not our temporary name
        raise OSError(e.errno, e.strerror, str(path)) from e
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# a hard link is refused across filesystems, on filesystems without them, past a file's link limit, or to
# a file one does not own where links are protected: the bytes are copied then
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES}


def link_or_copy(src: Path, dest: Path) -> str:
    """``dest`` becomes ``src``'s bytes at once: a hard link where one can be made, else a copy written as
    ``atomic_open`` writes (fsynced before the rename). "hardlink" or "copy". The link goes through a
    temporary name no other thread or process uses, then a rename over ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{TMP_PREFIX}{dest.name}.{os.getpid()}.{os.urandom(6).hex()}")
    try:
        os.link(src, tmp)
    except OSError as e:
        if e.errno not in _NO_LINK:
            raise
        with open(src, "rb") as fh, atomic_open(dest, "wb") as out:
            shutil.copyfileobj(fh, out, 1 << 20)
        return "copy"
    try:
        os.replace(tmp, dest)
    finally:  # (a rename between two links of one file does nothing and succeeds: tmp is then still there)
        tmp.unlink(missing_ok=True)
    return "hardlink"


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any, *, indent: int | None = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False) + "\n")


def temp_dir_beside(path: Path) -> Path:
    """A fresh temporary folder on the same filesystem as ``path`` (so a rename can move it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _shared(Path(_tempfile().mkdtemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)))


def _shared(folder: Path) -> Path:
    """A folder from mkdtemp (0700) given the mode mkdir would have given it: it is renamed into place."""
    os.chmod(folder, 0o777 & ~current_umask())
    return folder


def owned_temp_dir_beside(path: Path, *, remove: Callable[[Path], None] | None = None) -> Path:
    """A fresh temporary folder beside ``path``, named ``.tmp-<name>.<pid>-<machine>.<random>``
    after the process that owns it. Folders of that kind (and ``replace_dir``'s ``.old.<pid>-<machine>``
    ones) whose process no longer runs are removed first: a killed run's leftovers can hold
    gigabytes, and a live run's folder is never touched. On a root shared by several machines a
    pid means something only on its own machine: another machine's folders are left to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"{TMP_PREFIX}{path.name}."
    for p in path.parent.iterdir():
        if not p.name.startswith(prefix) or not p.is_dir() or p.is_symlink():
            continue
        rest = p.name[len(prefix):]
        owner = rest[len("old."):] if rest.startswith("old.") else rest.split(".", 1)[0]
        pid, _, machine = owner.partition("-")
        if machine and machine != machine_tag():
            continue
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            if rest.startswith("old.") and not (path.exists() or path.is_symlink()):
                # (killed between replace_dir's two renames: this is the complete old tree, put back)
                os.replace(p, path)
                continue
            (remove or (lambda q: shutil.rmtree(q, ignore_errors=True)))(p)
    return _shared(Path(_tempfile().mkdtemp(prefix=f"{prefix}{_owner()}.", dir=path.parent)))


def machine_tag() -> str:
    """A short, file-name-safe tag of this machine (its host name), for names that carry a pid."""
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _owner() -> str:
    return f"{os.getpid()}-{machine_tag()}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temporary folder to ``final``, replacing an older one.

    The old folder is first renamed aside, then the new one renamed in, then the old one removed:
    ``final`` is the complete old tree or the complete new one, but for the instant between the
    two renames; a process killed there leaves the old tree as ``.tmp-<name>.old.<owner>``, which
    the next ``owned_temp_dir_beside(final)`` puts back.
    """
    final = Path(final)
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f"{TMP_PREFIX}{final.name}.old.{_owner()}")
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def cleanup_temporaries(folder: Path, *, older_than: float = 0.0, of: str | None = None) -> int:
    """Remove ``.tmp-*`` leftovers directly inside ``folder``; returns how many were removed.

    ``older_than`` (seconds) spares younger ones: in a folder that other processes (on other
    machines, maybe) are writing into right now, a temporary file that young may be theirs.
    ``of``: only the temporaries of the file of that name (``atomic_open``'s ``.tmp-<name>.*``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n = 0
    cutoff = time.time() - older_than
    prefix = TMP_PREFIX if of is None else f"{TMP_PREFIX}{of}."
    for p in folder.iterdir():
        if p.name.startswith(prefix):
            try:
                if older_than and p.lstat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            n += 1
    return n
