"""The download's writing thread (vlmdata.fetch.write_behind): every byte put is in the file, in
order, and hashed; bytes reach the file without waiting for a buffer to fill (what a kill can
lose); a failed write reaches the receiving thread, which is never left waiting for a buffer."""
from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

import pytest

from vlmdata.fetch.hashing import SLOTS, StreamHasher
from vlmdata.fetch.write_behind import WriteBehind


def _receive(chunks: list[bytes], fd: int, hasher: StreamHasher) -> WriteBehind:
    """What HttpEngine._pump does with a body read in ``chunks``."""
    sink = WriteBehind(fd, hasher)
    slot, view = hasher.slot()
    filled = 0
    for data in chunks:
        while data:
            n = min(len(data), len(view) - filled)
            view[filled:filled + n] = data[:n]
            data = data[n:]
            filled += n
            sink.put(slot, filled - n, filled, full=filled == len(view))
            if filled == len(view):
                slot, view = hasher.slot()
                filled = 0
    sink.put(slot, filled, filled, full=True)
    return sink


@pytest.mark.parametrize("seed", range(4))
def test_every_byte_is_written_in_order_and_hashed(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    chunks = [rng.randbytes(rng.choice([1, 100, 65536, 300_000, 1 << 20])) for _ in range(40)]
    body = b"".join(chunks)
    hasher = StreamHasher(md5=True)
    fd = os.open(tmp_path / "f.part", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        _receive(chunks, fd, hasher).close()
    finally:
        os.close(fd)
    d = hasher.finish()
    assert (tmp_path / "f.part").read_bytes() == body
    assert (d.size, d.sha256, d.md5) == (len(body), hashlib.sha256(body).hexdigest(), hashlib.md5(body).hexdigest())


def test_a_read_reaches_the_file_before_its_buffer_is_full(tmp_path: Path) -> None:
    hasher = StreamHasher()
    fd = os.open(tmp_path / "f.part", os.O_WRONLY | os.O_CREAT, 0o644)
    sink = WriteBehind(fd, hasher)
    slot, view = hasher.slot()
    view[:5000] = b"x" * 5000
    sink.put(slot, 0, 5000)  # 5000 bytes of a 1 MiB buffer: not full, not hashed yet
    deadline = time.monotonic() + 30
    while os.fstat(fd).st_size < 5000 and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert os.fstat(fd).st_size == 5000  # (a kill now would keep them: the .part resumes from 5000)
    finally:
        sink.put(slot, 5000, 5000, full=True)
        sink.close()
        os.close(fd)
        hasher.finish()


def test_a_failed_write_is_raised_and_no_buffer_is_kept(tmp_path: Path) -> None:
    (tmp_path / "f.part").write_bytes(b"")
    fd = os.open(tmp_path / "f.part", os.O_RDONLY)  # every write fails: EBADF
    hasher = StreamHasher()
    try:
        with pytest.raises(OSError):
            # more full buffers than the hasher has: the receiver would wait forever for a free one
            # if a failed write kept its buffer
            _receive([b"y" * (1 << 20)] * (SLOTS * 3), fd, hasher).close()
        quiet = _receive([b"z" * 10], fd, hasher)  # (the error was raised by a put, or by close)
        quiet.close(quiet=True)  # the receiving thread raising an error of its own: no second one
    finally:
        os.close(fd)
        hasher.abandon()
