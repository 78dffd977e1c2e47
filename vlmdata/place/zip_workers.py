"""Writing a zip's members: each one a slice of one read-only map of the archive, inflated in one
call and created by name relative to its open folder; on several cores, in forked processes.

The members reach here already checked (vlmdata.place.extract: names, links, modes, duplicates,
the declared sizes against the bomb limit) and sorted by offset. ``write_members`` cuts the list
into one contiguous share per worker; the first share is written by this process, each other one
by a child made with ``fork`` (the map, the list and the open folder are inherited, nothing is
pickled): the per-member Python work holds the GIL, so threads could not halve it and processes
do. Each child reports its byte count, or its exception (pickled), through a pipe; a failure in
any worker raises that error here after every child has stopped, and the caller removes the
temporary folder, so nothing half-written is ever placed. Workers watch a shared stop flag and
stop at the next member when another one failed or the caller was interrupted; a child whose
parent dies stops as well.

Small members are inflated by libdeflate (the ``deflate`` package: about twice zlib's speed on
this data, and it releases the GIL); its output buffer is the size the header declares, so a lying
header cannot make it write more. When it refuses a stream (damaged, or longer than declared) the
member is inflated again by zlib, whose errors say which. Large members go through zlib in chunks
with output bounded per call. Every member's size and CRC are checked. Writing a member never
produces more than its declared size, and the sum of the declared sizes was checked against the
bomb limit before any worker started, so the per-process byte counts can be added up afterwards.
"""
from __future__ import annotations

import mmap
import os
import pickle
import signal
import struct
import threading
import zlib
from pathlib import Path
from typing import Callable, NamedTuple

import deflate

from vlmdata.atomic import write_all
from vlmdata.errors import OperationError, UserError
from vlmdata.place.safety import BombGuard, refuse

CHUNK = 1 << 20  # bytes of input per inflate call for large members
SMALL_MEMBER = 8 << 20  # members up to this size (packed and unpacked) are inflated in one call
MIN_PER_PROCESS = 256  # fewer members than this per worker: not worth a fork
STORED, DEFLATED = 0, 8

_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


class Member(NamedTuple):
    name: str  # in the archive (for messages)
    dest: str  # relative to the output folder
    offset: int  # of the local header
    csize: int
    usize: int
    crc: int
    method: int


def default_jobs() -> int:
    """One worker per core this process may run on (more only fight over the cores)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def _damaged(label: str, what: str) -> OperationError:
    return OperationError(f"{label}: {what}", hint="the zip is damaged; fetch it again")


def _too_big(label: str, name: str, usize: int) -> UserError:
    return refuse(label, name, f"member unpacks past the {usize} bytes its header declares (an archive bomb?)")


# ----------------------------------------------------------------- one member


class DirFds:
    """Open folders of the output tree, so members are created by name relative to their folder
    (the kernel walks one path component per file instead of the whole path)."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.fds: dict[str, int] = {}

    def fd(self, rel_dir: str) -> int:
        fd = self.fds.get(rel_dir)
        if fd is None:
            fd = os.open(os.path.join(self.out, rel_dir) if rel_dir else self.out,
                         os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
            self.fds[rel_dir] = fd
        return fd

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def data_start(src: memoryview, m: Member, label: str) -> int:
    """Where the member's packed bytes start (after its local header), checked against the archive's end."""
    off = m.offset
    if off + _LOCAL.size > len(src) or src[off:off + 4] != b"PK\x03\x04":
        raise _damaged(label, f"member {m.name!r} has no local header at offset {off}")
    fields = _LOCAL.unpack_from(src, off)
    pos = off + _LOCAL.size + fields[9] + fields[10]
    if pos + m.csize > len(src):
        raise _damaged(label, f"member {m.name!r} is cut short")
    return pos


def member_bytes(src: memoryview, m: Member, label: str) -> bytes:
    """A small member's content in memory (a symlink's target), checked like a written one."""
    pos = data_start(src, m, label)
    data = bytes(src[pos:pos + m.csize]) if m.method == STORED else _inflate(src[pos:pos + m.csize], m, label)
    if len(data) != m.usize:
        raise _damaged(label, f"member {m.name!r} unpacked to {len(data)} bytes, its header says {m.usize}")
    if zlib.crc32(data) != m.crc:
        raise _damaged(label, f"member {m.name!r} fails its CRC check")
    return data


def extract_member(src: memoryview, m: Member, dirs: DirFds, label: str) -> int:
    """One stored or deflated member into its file (size and CRC checked); returns its size."""
    pos = data_start(src, m, label)
    csize, usize = m.csize, m.usize
    parent, _, base = m.dest.rpartition("/")
    if m.method == DEFLATED and csize <= SMALL_MEMBER and usize <= SMALL_MEMBER:
        data = _inflate(src[pos:pos + csize], m, label)  # before the file exists: a bad member creates nothing
        fd = os.open(base, _CREATE, 0o644, dir_fd=dirs.fd(parent))
        try:
            if data:
                write_all(fd, data)
        finally:
            os.close(fd)
        produced, crc = len(data), deflate.crc32(data)
    else:
        fd = os.open(base, _CREATE, 0o644, dir_fd=dirs.fd(parent))
        try:
            if m.method == STORED:
                produced, crc = _stored(fd, src[pos:pos + csize], m, label)
            else:
                produced, crc = _inflate_chunks(fd, src, pos, m, label)
        finally:
            os.close(fd)
    if produced != usize:
        raise _damaged(label, f"member {m.name!r} unpacked to {produced} bytes, its header says {usize}")
    if crc != m.crc:
        raise _damaged(label, f"member {m.name!r} fails its CRC check")
    return produced


def _inflate(data: memoryview, m: Member, label: str) -> bytes | bytearray:
    """A small member in one call; never more than its declared size is produced."""
    if m.usize:
        try:
            return deflate.deflate_decompress(data, m.usize)
        except deflate.DeflateError:
            pass  # damaged or longer than declared: zlib says which
    inflater = zlib.decompressobj(-15)
    try:
        out = inflater.decompress(data, m.usize + 1)
    except zlib.error as e:
        raise _damaged(label, f"member {m.name!r} does not inflate: {e}") from e
    if len(out) > m.usize:
        raise _too_big(label, m.name, m.usize)
    if not inflater.eof:
        raise _damaged(label, f"member {m.name!r} unpacked to {len(out)} bytes, its header says {m.usize}")
    return out


def _stored(fd: int, data: memoryview, m: Member, label: str) -> tuple[int, int]:
    if len(data) > m.usize:
        raise _too_big(label, m.name, m.usize)
    crc = 0
    for a in range(0, len(data), CHUNK):
        piece = data[a:a + CHUNK]
        crc = zlib.crc32(piece, crc)
        write_all(fd, piece)
    return len(data), crc


def _inflate_chunks(fd: int, src: memoryview, pos: int, m: Member, label: str) -> tuple[int, int]:
    """A large member: CHUNK bytes of input at a time, output bounded by what the header declares."""
    inflater = zlib.decompressobj(-15)
    usize = m.usize
    crc = produced = 0
    end = pos + m.csize
    tail = b""
    while not inflater.eof:
        if tail:
            buf, tail = tail, b""
        elif pos < end:
            buf = src[pos:min(end, pos + CHUNK)]
            pos += len(buf)
        else:
            buf = b""  # all input given: what zlib still holds back
        try:  # (output per call bounded too: a few input bytes can inflate to a thousand times more)
            data = inflater.decompress(buf, min(usize - produced + 1, 4 * CHUNK))
        except zlib.error as e:
            raise _damaged(label, f"member {m.name!r} does not inflate: {e}") from e
        tail = inflater.unconsumed_tail
        if not data and not buf:
            break  # no input left and nothing more comes out: the stream is cut short
        if data:
            produced += len(data)
            if produced > usize:
                raise _too_big(label, m.name, usize)
            crc = zlib.crc32(data, crc)
            write_all(fd, data)
    if not inflater.eof:
        raise _damaged(label, f"member {m.name!r} unpacked to {produced} bytes, its header says {usize}")
    return produced, crc


# ----------------------------------------------------------------- workers


def _share(src: memoryview, members: list[Member], out: str, label: str, flag: mmap.mmap,
           alive: Callable[[], bool]) -> int:
    """Write ``members`` in order; stop early when ``flag`` is raised. Returns the bytes written."""
    dirs = DirFds(out)
    written = 0
    try:
        for i, m in enumerate(members):
            if flag[0] or ((i & 63) == 0 and not alive()):  # (a parent that died: stop)
                break
            written += extract_member(src, m, dirs, label)
    except BaseException:
        flag[0] = 1
        raise
    finally:
        dirs.close()
    return written


def _cut(members: list[Member], n: int) -> list[list[Member]]:
    """``n`` contiguous shares of about equal cost (a fixed cost per member plus its packed bytes)."""
    per_member = 16 << 10  # a file's create/write/close costs about as much as inflating 16 KiB
    total = sum(m.csize for m in members) + per_member * len(members)
    shares, start, acc, k = [], 0, 0, 1
    for i, m in enumerate(members):
        acc += m.csize + per_member
        if acc >= total * k / n and len(shares) < n - 1:
            shares.append(members[start:i + 1])
            start, k = i + 1, k + 1
    shares.append(members[start:])
    return [s for s in shares if s]


def write_members(path: Path, out: Path, label: str, members: list[Member], guard: BombGuard, jobs: int,
                  stop: threading.Event | None = None) -> None:
    """Write every member of the zip at ``path`` under ``out`` (folders made), on up to ``jobs`` processes."""
    if not members:
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    flag = mmap.mmap(-1, 1)  # shared with the children: raised by the first worker that fails
    src = memoryview(mapped)
    n = min(jobs, len(members) // MIN_PER_PROCESS) if hasattr(os, "fork") else 1
    shares = _cut(members, max(1, n))
    children: list[tuple[int, int]] = []
    try:
        for share in shares[1:]:
            children.append(_fork(src, share, str(out), label, flag))
        if stop is not None and stop.is_set():
            flag[0] = 1
        written = _share(src, shares[0], str(out), label, flag, lambda: True)
        while children:
            pid, rfd = children.pop(0)
            written += _collect(pid, rfd, label)
        guard.add(written, label)  # (within the limit: every member was bounded by its declared size)
    finally:
        flag[0] = 1
        for pid, rfd in children:  # this process failed or was interrupted: stop the others first
            _reap(pid, rfd)
        src.release()
        try:
            mapped.close()
        except BufferError:  # a slice still held by a traceback: the map goes when it does
            pass
        flag.close()


def _fork(src: memoryview, share: list[Member], out: str, label: str, flag: mmap.mmap) -> tuple[int, int]:
    rfd, wfd = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: write its share, report, and leave without running any exit handler
        code = 0
        try:
            os.close(rfd)
            report: tuple = ("ok", _share(src, share, out, label, flag, lambda: os.getppid() == parent))
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent
            code = 1
            try:
                report = ("error", pickle.dumps(e))
            except Exception:  # noqa: BLE001 - an exception that does not pickle: its text
                report = ("error", pickle.dumps(OperationError(f"{label}: {type(e).__name__}: {e}")))
        try:
            with os.fdopen(wfd, "wb") as fh:
                fh.write(pickle.dumps(report))
        finally:
            os._exit(code)
    os.close(wfd)
    return pid, rfd


def _collect(pid: int, rfd: int, label: str) -> int:
    """A child's byte count; its exception raised here; a child that died says so."""
    with os.fdopen(rfd, "rb") as fh:
        raw = fh.read()
    _, status = os.waitpid(pid, 0)
    if not raw:
        raise OperationError(f"{label}: an extraction worker died ({_how(status)})",
                             hint="out of memory, or killed? run the same command again")
    kind, value = pickle.loads(raw)
    if kind == "error":
        raise pickle.loads(value)
    return value


def _reap(pid: int, rfd: int) -> None:
    """Stop a child at once (what it wrote is in the temporary folder the caller removes)."""
    for step in (lambda: os.close(rfd), lambda: os.kill(pid, signal.SIGKILL), lambda: os.waitpid(pid, 0)):
        try:
            step()
        except (OSError, ChildProcessError):
            pass


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
