"""Hashing bytes already in a file (vlmdata.fetch.hashing): read a piece at a time into one buffer
of the hasher's, so every boundary of those pieces must come out as one stream's digest."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from vlmdata.fetch.hashing import READ, Hashes, StreamHasher, hash_file

SIZES = [0, 1, 4095, READ - 1, READ, READ + 1, 3 * READ + 17]


@pytest.mark.parametrize("size", SIZES)
def test_a_file_hashes_as_its_bytes_whole_and_in_part(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    whole = hash_file(path, md5=True)
    assert (whole.size, whole.sha256, whole.md5) == (size, hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest())
    half = hash_file(path, limit=size // 2)
    assert (half.size, half.sha256) == (size // 2, hashlib.sha256(data[:size // 2]).hexdigest())


def test_a_growing_file_hashed_in_slices_of_any_size_is_one_stream(tmp_path: Path) -> None:
    """As a spliced download is: the file grows and each new slice is hashed from it (the first slices
    small, so the buffer made for them must grow for the later ones)."""
    data = os.urandom(4 * READ + 123)
    path = tmp_path / "g.bin"
    path.write_bytes(data)
    h = Hashes(md5=False)
    fd = os.open(path, os.O_RDONLY)
    try:
        for end in (10, 11, 5000, READ + 3, 2 * READ, len(data)):
            h.update_from(fd, h.size, end)
    finally:
        os.close(fd)
    assert (h.size, h.digests().sha256) == (len(data), hashlib.sha256(data).hexdigest())


def test_stream_hasher_follows_a_file_after_its_prefix(tmp_path: Path) -> None:
    data = os.urandom(2 * READ + 999)
    path = tmp_path / "p.bin"
    path.write_bytes(data[:READ + 5])
    hasher = StreamHasher(prefix=(path, 100))  # an earlier run's first 100 bytes, then the file's growth
    with open(path, "ab") as fh:
        fh.write(data[READ + 5:])
    hasher.file_grew(READ)
    hasher.file_grew(len(data))
    assert hasher.finish().sha256 == hashlib.sha256(data).hexdigest()


def test_a_file_cut_short_while_hashed_is_an_error_not_a_wrong_digest(tmp_path: Path) -> None:
    path = tmp_path / "short.bin"
    path.write_bytes(b"x" * 1000)
    h = Hashes(md5=False)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError, match="cut short"):
            h.update_from(fd, 0, 2000)
    finally:
        os.close(fd)
