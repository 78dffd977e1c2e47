"""Hashing that runs beside the download instead of after it.

``StreamHasher`` hashes in a thread of its own (hashlib releases the GIL), so receiving, writing
and hashing overlap on separate cores. The receiving thread gets its buffers from the hasher
(``slot()``): it reads the socket straight into a slot, the slot is written to the file (by
vlmdata.fetch.write_behind's thread) and handed over (``commit``); the hasher hashes the same
memory and gives the slot back. Nothing is
copied in user space besides the one copy out of the socket, and no buffer is allocated per read
(a fresh megabyte per read costs a page fault per 4 KiB, which showed as most of the system
time of a 1 GiB download). ``feed(bytes)`` is for callers that already hold bytes. A download
spliced into its file (vlmdata.net.splice) never passes through a buffer of ours: its caller
says how far the file has grown (``file_grew``) and the hasher reads the new bytes from the page
cache, as it reads a resumed download's first part.

``hash_file`` hashes what is on disk (the start of a resumed ``.part``, a kept archive, the
finished prefix of a segmented download). Bytes already in a file are read into one small buffer
of the hasher's, reused, and hashed there while it sits in the core's cache: on the 2-core VM
this was 0.71 s per GiB of CPU against 1.22-1.34 s for hashing the same page cache through a
memory map (every 4 KiB page a TLB miss, walked through the host's tables too, and a map, a
fault per 64 KiB and an unmap for each slice of a growing file), though the read costs a copy.
"""
from __future__ import annotations

import hashlib
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

BLOCK = 4 << 20  # bytes hashed per call when hashing a file (git_blob_id)
READ = 256 << 10  # bytes read from a file per call: small enough to stay in the core's L2 until hashed
SLOT = 1 << 20  # bytes per receive buffer
SLOTS = 8  # receive buffers in flight between the receiving thread and the hasher


@dataclass
class Digests:
    size: int
    sha256: str
    md5: str | None = None


class Hashes:
    """sha256 (and md5 when asked) of a byte stream fed in order."""

    def __init__(self, md5: bool) -> None:
        self.sha = hashlib.sha256()
        self.md5 = hashlib.md5() if md5 else None
        self.size = 0
        self._buf: memoryview | None = None  # (update_from's, made on its first use)

    def update(self, data: bytes | memoryview) -> None:
        self.sha.update(data)
        if self.md5 is not None:
            self.md5.update(data)
        self.size += len(data)

    def update_from(self, fd: int, start: int, end: int) -> None:
        """Hash bytes ``[start, end)`` of the open file ``fd``, which must hold them (and not shrink meanwhile)."""
        want = min(READ, end - start)
        if self._buf is None or len(self._buf) < want:  # (a small file gets a buffer its size, not 256 KiB)
            self._buf = memoryview(bytearray(want))
        buf, pos = self._buf, start
        while pos < end:
            n = os.preadv(fd, [buf[:min(len(buf), end - pos)]], pos)
            if n <= 0:
                raise OSError(f"the file ended at byte {pos:,}, before {end:,}: it was cut short while being hashed")
            self.update(buf[:n])
            pos += n

    def digests(self) -> Digests:
        return Digests(self.size, self.sha.hexdigest(), self.md5.hexdigest() if self.md5 is not None else None)


def hash_file(path: Path, *, md5: bool = False, limit: int | None = None, into: Hashes | None = None) -> Digests:
    """Hash the first ``limit`` bytes of ``path`` (all of it by default)."""
    h = into or Hashes(md5)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        h.update_from(fd, 0, size if limit is None else min(limit, size))
    finally:
        os.close(fd)
    return h.digests()


def git_blob_id(path: Path) -> str:
    """The id git gives ``path``'s bytes as a blob (sha1 of ``blob <size>\\0`` and the bytes): what the hub's
    ETag says for a file kept in git, so a download can be checked to be the blob the hub named."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        h.update(b"blob %d\0" % os.fstat(fh.fileno()).st_size)
        while data := fh.read(BLOCK):
            h.update(data)
    return h.hexdigest()


class StreamHasher:
    """Hash a byte stream in a background thread.

    Either ``i, view = slot()``, fill and write ``view[:n]``, ``commit(i, n)``; or ``feed(bytes)``.
    Or ``file_grew(end)`` each time the file named by ``prefix`` holds more bytes.
    ``finish()`` returns the digests. ``prefix`` (a path and a length) is hashed first: the part of
    a resumed download that an earlier run wrote.
    """

    def __init__(self, *, md5: bool = False, prefix: tuple[Path, int] | None = None) -> None:
        self._h = Hashes(md5)
        self._q: queue.Queue[tuple[int, int] | bytes | int | None] = queue.Queue(maxsize=64)
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._views: list[memoryview] = []
        self._error: BaseException | None = None
        self._prefix = prefix
        self._thread = threading.Thread(target=self._run, name="vlmdata-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tail = -1  # the prefix's file, open while file_grew is used
        try:
            if self._prefix is not None and self._prefix[1] > 0:
                hash_file(self._prefix[0], limit=self._prefix[1], into=self._h)
            while True:
                item = self._q.get()
                if item is None:
                    return
                if isinstance(item, int):
                    if tail < 0:
                        assert self._prefix is not None, "file_grew needs the file: StreamHasher(prefix=(path, n))"
                        tail = os.open(self._prefix[0], os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                    self._h.update_from(tail, self._h.size, item)
                elif isinstance(item, tuple):
                    i, n = item
                    self._h.update(self._views[i][:n])
                    self._free.put(i)
                else:
                    self._h.update(item)
        except BaseException as e:  # surfaced by finish()
            self._error = e
            while True:  # drain so the receiving thread never blocks
                item = self._q.get()
                if item is None:
                    return
                if isinstance(item, tuple):
                    self._free.put(item[0])
        finally:
            if tail >= 0:
                os.close(tail)

    def slot(self) -> tuple[int, memoryview]:
        """A free receive buffer (waits while the hasher holds them all)."""
        if len(self._views) < SLOTS and self._free.empty():
            self._views.append(memoryview(bytearray(SLOT)))
            return len(self._views) - 1, self._views[-1]
        i = self._free.get()
        return i, self._views[i]

    def view(self, i: int) -> memoryview:
        """Slot ``i``'s buffer (for the thread that writes it: vlmdata.fetch.write_behind)."""
        return self._views[i]

    def commit(self, i: int, n: int) -> None:
        """The first ``n`` bytes of slot ``i`` are the next bytes of the stream."""
        if n:
            self._q.put((i, n))
        else:
            self._free.put(i)

    def file_grew(self, end: int) -> None:
        """The file named by ``prefix`` now holds the stream's bytes up to ``end`` (they are hashed from it)."""
        self._q.put(end)

    def feed(self, data: bytes) -> None:
        self._q.put(data)

    def finish(self) -> Digests:
        self._q.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._h.digests()

    def abandon(self) -> None:
        """Stop the thread without a result (the download is being restarted or dropped)."""
        self._q.put(None)
