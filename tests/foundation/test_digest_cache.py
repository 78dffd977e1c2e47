"""digest_cache: an unchanged file's sha256 is remembered; any write, even one that keeps the size
and puts the mtime back, makes it read again; a file still being written is never remembered."""
from __future__ import annotations

import hashlib
import os
import time

from vlmdata import digest_cache


def _counting(monkeypatch) -> list[str]:
    reads: list[str] = []
    real = digest_cache._hash
    monkeypatch.setattr(digest_cache, "_hash", lambda p: (reads.append(str(p)), real(p))[1])
    return reads


def _settled(tmp_path, monkeypatch, data: bytes):
    """A file whose digest may be remembered at once (SETTLE 0, and a tick past its ctime)."""
    f = tmp_path / "in.json"
    f.write_bytes(data)
    monkeypatch.setattr(digest_cache, "SETTLE", 0.0)
    time.sleep(0.01)
    return f


def test_unchanged_file_is_not_read_again(tmp_path, monkeypatch):
    f = _settled(tmp_path, monkeypatch, b"[1, 2, 3]")
    reads = _counting(monkeypatch)
    want = hashlib.sha256(b"[1, 2, 3]").hexdigest()
    assert digest_cache.sha256_of(f) == (want, 9)
    assert digest_cache.sha256_of(f) == (want, 9)
    assert reads == [str(f.resolve())]


def test_a_write_that_keeps_size_and_mtime_is_seen(tmp_path, monkeypatch):
    f = _settled(tmp_path, monkeypatch, b"[1, 2, 3]")
    digest_cache.sha256_of(f)
    st = os.stat(f)
    time.sleep(0.02)  # past the timestamp tick, so the write's ctime differs
    f.write_bytes(b"[1, 2, 4]")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, mtime put back: only the ctime tells
    assert digest_cache.sha256_of(f) == (hashlib.sha256(b"[1, 2, 4]").hexdigest(), 9)


def test_a_fresh_file_is_not_remembered(tmp_path, monkeypatch):
    f = tmp_path / "in.json"
    f.write_bytes(b"{}")
    reads = _counting(monkeypatch)  # SETTLE as shipped: the file was written just now
    digest_cache.sha256_of(f)
    digest_cache.sha256_of(f)
    assert len(reads) == 2
    assert not digest_cache._entry(f.resolve()).exists()


def test_an_unreadable_cache_is_ignored(tmp_path, monkeypatch):
    f = _settled(tmp_path, monkeypatch, b"[]")
    digest_cache.sha256_of(f)
    entry = digest_cache._entry(f.resolve())
    assert entry.exists()
    entry.write_text("{not json")
    assert digest_cache.sha256_of(f)[0] == hashlib.sha256(b"[]").hexdigest()
