"""Hashing that runs beside the download instead of after it.

``StreamHasher`` takes the bytes the receiving thread has just written and hashes them in a
thread of its own (hashlib releases the GIL for large buffers), so receiving, writing and hashing
overlap on separate cores. ``hash_file`` hashes what is already on disk (the start of a resumed
``.part``, a kept archive, a file copied from a local mirror).
"""
from __future__ import annotations

import hashlib
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

BLOCK = 4 << 20


@dataclass
class Digests:
    size: int
    sha256: str
    md5: str | None = None


class _Hashes:
    def __init__(self, md5: bool) -> None:
        self.sha = hashlib.sha256()
        self.md5 = hashlib.md5() if md5 else None
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self.sha.update(data)
        if self.md5 is not None:
            self.md5.update(data)
        self.size += len(data)

    def digests(self) -> Digests:
        return Digests(self.size, self.sha.hexdigest(), self.md5.hexdigest() if self.md5 is not None else None)


def hash_file(path: Path, *, md5: bool = False, limit: int | None = None, into: _Hashes | None = None) -> Digests:
    """Hash the first ``limit`` bytes of ``path`` (all of it by default)."""
    h = into or _Hashes(md5)
    left = limit
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(BLOCK)
        view = memoryview(buf)
        while left is None or left > 0:
            n = fh.readinto(view if left is None or left >= BLOCK else view[:left])
            if not n:
                break
            h.update(view[:n])
            if left is not None:
                left -= n
    return h.digests()


class StreamHasher:
    """Hash a byte stream in a background thread: ``feed`` what was written, ``finish`` at the end.

    ``prefix`` (a path and a length) is hashed first: the part of a resumed download that an
    earlier run wrote.
    """

    def __init__(self, *, md5: bool = False, prefix: tuple[Path, int] | None = None) -> None:
        self._h = _Hashes(md5)
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=64)
        self._error: BaseException | None = None
        self._prefix = prefix
        self._thread = threading.Thread(target=self._run, name="vlmdata-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            if self._prefix is not None and self._prefix[1] > 0:
                hash_file(self._prefix[0], limit=self._prefix[1], into=self._h)
            while True:
                data = self._q.get()
                if data is None:
                    return
                self._h.update(data)
        except BaseException as e:  # surfaced by finish()
            self._error = e
            while self._q.get() is not None:  # drain so feeders never block
                pass

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
