"""The local disk's side of a download: its space set aside before the bytes come, and what a
failure of the disk (not of the network) is.

Setting space aside: when a download's length is known, the blocks it still needs are allocated
at once with ``fallocate(2)`` (``FALLOC_FL_KEEP_SIZE``: the file's length still says how many
bytes arrived, which is what a one-connection resume reads). A disk that cannot hold the file
says so before the first byte instead of after hours, and each later write finds its blocks
allocated: on ext4 a write into a hole reserves, looks up and accounts for every 4 KiB block one
by one, 0.07 CPU-seconds per GiB of the ~0.5 of system time a 1 GiB download costs (measured:
1 GiB written in 1 MiB pieces, 0.22-0.26 s of system time into a new file, 0.155-0.175 s into a
reserved one). aria2c does the same by default (``--file-allocation=prealloc``). Nothing is ever
written to set space aside: a file system without ``fallocate`` (ZFS, some network and FUSE
file systems) simply allocates as it writes, as before. (glibc's ``posix_fallocate`` would write
zeros there, a second pass over the disk: not used.) A reservation that fails half way gives
back what it took.

A failure of the disk: a full disk or quota, a file over the file system's or the process's size
limit, a file system gone read-only, an I/O error. Another try cannot fix any of them, and the
advice is about the disk, not the network, so ``DiskError`` is never retried; the bytes already
written are kept and the next run resumes them.
"""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

from vlmdata.errors import DISK_ERRNOS, OperationError, os_error_advice
RESERVE_FROM = 1 << 20  # bytes: below this, a reservation saves nothing worth a system call
_KEEP_SIZE = 0x01  # FALLOC_FL_KEEP_SIZE
_PUNCH_HOLE = 0x02  # FALLOC_FL_PUNCH_HOLE (always with KEEP_SIZE)
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV, errno.EPERM, errno.ESPIPE})

_fallocate = None  # libc's fallocate, looked up once (None: not looked up yet; False: not there)


class DiskError(OperationError):
    """The disk, not the network, stopped a download: not worth another try."""


def _libc_fallocate():  # -> a ctypes function, or False
    global _fallocate
    if _fallocate is None:
        _fallocate = False
        if sys.platform.startswith("linux"):
            import ctypes  # (only when a large download starts: 2 ms)

            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fn = getattr(libc, "fallocate64", None) or libc.fallocate
            except (OSError, AttributeError):
                return _fallocate
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            fn.restype = ctypes.c_int
            _fallocate = fn
    return _fallocate


def _call(fn, fd: int, mode: int, start: int, length: int) -> int:
    """0, or the errno of a failed fallocate (retried while a signal interrupts it)."""
    import ctypes

    while True:
        if fn(fd, mode, start, length) == 0:
            return 0
        err = ctypes.get_errno()
        if err != errno.EINTR:
            return err


def reserve(fd: int, gaps: list[tuple[int, int]]) -> bool:
    """Allocate the byte ranges ``gaps`` (``[start, end)``, the parts of the file still to come) of
    the open file ``fd`` without changing its length. False where the file system cannot (nothing
    done); an OSError (ENOSPC, EDQUOT, EFBIG) when the disk cannot hold them, after giving back
    what was taken. The gaps must hold no byte that counts: a failure punches them out again."""
    gaps = [(a, b) for a, b in gaps if b > a]
    need = sum(b - a for a, b in gaps)
    if need < RESERVE_FROM:
        return False
    room = _room_for(fd, still_needed(fd, gaps))
    fn = _libc_fallocate()
    if not fn or not room:
        return False
    for i, (a, b) in enumerate(gaps):
        err = _call(fn, fd, _KEEP_SIZE, a, b - a)
        if err == 0:
            continue
        _give_back(fn, fd, gaps[:i + 1])
        if err in _UNSUPPORTED:
            return False
        raise OSError(err, os.strerror(err))
    return True


def still_needed(fd: int, gaps: list[tuple[int, int]]) -> int:
    """Bytes of disk the gaps of ``fd`` still need: their length less the blocks the file already
    holds beyond its bytes that count (an earlier run's reservation: a resume on a nearly full disk
    must not be refused the space it has set aside itself)."""
    need = sum(b - a for a, b in gaps if b > a)
    st = os.fstat(fd)
    counted = max([st.st_size] + [b for _, b in gaps]) - need
    held = max(0, getattr(st, "st_blocks", 0) * 512 - counted)
    return max(0, need - held)


def _room_for(fd: int, need: int) -> bool:
    """Whether the disk has ``need`` bytes for anyone (True), only for root's reserve (False: no
    reservation, the writes decide); an OSError (ENOSPC) when it has not. A reservation that fails
    keeps what it took until it is given back: checked first, it never fills a disk for a moment
    (a server that announces more than the disk holds, a race aside)."""
    try:
        st = os.fstatvfs(fd)
    except OSError:
        return True
    if need > st.f_bfree * st.f_frsize:
        from vlmdata.units import human_bytes

        raise OSError(errno.ENOSPC, f"{human_bytes(need)} more to come, {human_bytes(st.f_bavail * st.f_frsize)} free")
    return need <= st.f_bavail * st.f_frsize


def _give_back(fn, fd: int, gaps: list[tuple[int, int]]) -> None:
    """Free what a failed reservation took: holes punched inside the file's length, and a
    truncation to its own length for the blocks past it (best effort: a failure here changes no byte)."""
    for a, b in gaps:
        _call(fn, fd, _PUNCH_HOLE | _KEEP_SIZE, a, b - a)
    try:
        os.ftruncate(fd, os.fstat(fd).st_size)
    except OSError:
        pass


def disk_error(e: BaseException, part: Path, have: int | None = None) -> DiskError | None:
    """The DiskError that ``e`` is when the disk under ``part`` (a download's .part file) failed, else None."""
    if not isinstance(e, OSError) or e.errno not in DISK_ERRNOS:
        return None
    what, hint = os_error_advice(e.errno, path=str(part.parent), option="--root") or ("the disk failed", "check the disk")  # (it knows every DISK_ERRNOS)
    if e.strerror and e.strerror != os.strerror(e.errno):  # (reserve's own words: how much is missing)
        what += f" ({e.strerror})"
    kept = f"; the {have:,} bytes already downloaded are kept" if have else ""
    again = "; then run the same command again: it resumes" if have else ""
    return DiskError(f"{what} while downloading{kept}", where=str(part), hint=hint + again)


__all__ = ["DiskError", "disk_error", "reserve", "still_needed"]
