"""The HTTP engine against a loopback server with injected faults; every test checks the bytes on disk."""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import pytest
from fetch_helpers import Fault

from vlmdata.fetch.http import HttpEngine
from vlmdata.net.errors import Cancelled, SourceFailed
from vlmdata.state.partial import part_path, state_path
from vlmdata.net.retry import RetryPolicy

FAST = RetryPolicy(attempts=5, base=0.02, cap=0.2)


@pytest.fixture
def blob(files_server):
    data = os.urandom(3 << 20) + b"tail"
    (files_server.folder / "f.bin").write_bytes(data)
    return data


def engine(**kw) -> HttpEngine:
    kw.setdefault("retry", FAST)
    kw.setdefault("timeout", 5.0)
    return HttpEngine(**kw)


def test_plain_download_is_hashed_and_exact(files_server, blob, tmp_path):
    dest = tmp_path / "out" / "f.bin"
    got = engine().download(f"{files_server.url}/f.bin", dest)
    assert dest.read_bytes() == blob
    assert got.digests.sha256 == hashlib.sha256(blob).hexdigest() and got.digests.size == len(blob)
    assert not part_path(dest).exists() and not state_path(part_path(dest)).exists()
    assert files_server.sent("f.bin") == len(blob)


def test_md5_too_when_asked(files_server, blob, tmp_path):
    got = engine().download(f"{files_server.url}/f.bin", tmp_path / "f.bin", md5=True)
    assert got.digests.md5 == hashlib.md5(blob).hexdigest()


def test_dropped_connection_resumes_with_range(files_server, blob, tmp_path):
    files_server.fault("f.bin", Fault("drop", times=2, after=1 << 20))
    dest = tmp_path / "f.bin"
    got = engine().download(f"{files_server.url}/f.bin", dest)
    assert dest.read_bytes() == blob
    ranges = [r for m, p, r in files_server.requests if p == "f.bin"]
    assert ranges == [None, f"bytes={1 << 20}-", f"bytes={2 << 20}-"]
    assert files_server.sent("f.bin") == len(blob)  # no byte sent twice
    assert got.transferred == len(blob)


def test_500_then_200(files_server, blob, tmp_path):
    files_server.fault("f.bin", Fault("status", times=2, status=500))
    dest = tmp_path / "f.bin"
    engine().download(f"{files_server.url}/f.bin", dest)
    assert dest.read_bytes() == blob
    assert files_server.count("f.bin") == 3


def test_429_honours_retry_after(files_server, blob, tmp_path):
    files_server.fault("f.bin", Fault("status", times=1, status=429, retry_after="1"))
    t0 = time.monotonic()
    engine().download(f"{files_server.url}/f.bin", tmp_path / "f.bin")
    assert time.monotonic() - t0 >= 0.9  # waited what the server asked, not the 20 ms backoff
    assert (tmp_path / "f.bin").read_bytes() == blob


def test_404_is_not_retried(files_server, tmp_path):
    with pytest.raises(SourceFailed, match="HTTP 404"):
        engine().download(f"{files_server.url}/nope.bin", tmp_path / "nope.bin")
    assert files_server.count("nope.bin") == 1
    assert not (tmp_path / "nope.bin").exists()


def test_retries_run_out(files_server, blob, tmp_path):
    files_server.fault("f.bin", Fault("status", times=-1, status=503))
    with pytest.raises(SourceFailed, match="gave up after 5 tries"):
        engine().download(f"{files_server.url}/f.bin", tmp_path / "f.bin")
    assert not (tmp_path / "f.bin").exists()


def test_slow_response_times_out_and_retries(files_server, blob, tmp_path):
    files_server.fault("f.bin", Fault("slow", times=1, delay=1.5))
    dest = tmp_path / "f.bin"
    engine(timeout=0.4).download(f"{files_server.url}/f.bin", dest)
    assert dest.read_bytes() == blob
    assert files_server.count("f.bin") >= 2


def test_no_range_support_restarts_cleanly(files_server, blob, tmp_path):
    files_server.fault("f.bin", Fault("norange", times=-1))
    files_server.fault("f.bin", Fault("drop", times=1, after=1 << 20))
    dest = tmp_path / "f.bin"
    engine().download(f"{files_server.url}/f.bin", dest)
    assert dest.read_bytes() == blob
    assert files_server.sent("f.bin") == (1 << 20) + len(blob)  # the restart fetched everything again


def test_changed_file_is_not_stitched(files_server, blob, tmp_path):
    dest = tmp_path / "f.bin"
    files_server.fault("f.bin", Fault("drop", times=1, after=1 << 20))
    eng = engine(retry=RetryPolicy(attempts=1, base=0.01))
    with pytest.raises(SourceFailed):
        eng.download(f"{files_server.url}/f.bin", dest)
    assert part_path(dest).stat().st_size == 1 << 20
    new = os.urandom(len(blob))  # the publisher replaced the file (new ETag)
    (files_server.folder / "f.bin").write_bytes(new)
    os.utime(files_server.folder / "f.bin", (time.time() + 5, time.time() + 5))
    engine().download(f"{files_server.url}/f.bin", dest)
    assert dest.read_bytes() == new


def test_cancel_keeps_part_and_resume_finishes(files_server, blob, tmp_path):
    files_server.default_throttle = 2 << 20
    dest = tmp_path / "f.bin"
    cancel = threading.Event()
    eng = engine(cancel=cancel)
    threading.Timer(0.6, cancel.set).start()
    with pytest.raises(Cancelled):
        eng.download(f"{files_server.url}/f.bin", dest)
    kept = part_path(dest).stat().st_size
    assert 0 < kept < len(blob)
    files_server.default_throttle = 0
    files_server.reset()
    got = engine().download(f"{files_server.url}/f.bin", dest)
    assert dest.read_bytes() == blob
    assert got.resumed_from == kept and got.transferred == len(blob) - kept
    # (the server may still flush a last slice of the cancelled connection after the reset)
    assert files_server.sent("f.bin") <= len(blob) - kept + (64 << 10)


def test_segmented_download_equals_file(files_server, tmp_path):
    data = os.urandom(9 << 20)
    (files_server.folder / "big.bin").write_bytes(data)
    dest = tmp_path / "big.bin"
    got = engine(connections=4, min_split=1 << 20).download(f"{files_server.url}/big.bin", dest)
    assert dest.read_bytes() == data
    assert got.digests.sha256 == hashlib.sha256(data).hexdigest()
    assert got.connections == 4
    ranged = [r for m, p, r in files_server.requests if p == "big.bin" and r and r != "bytes=0-0"]
    assert len(ranged) >= 4


def test_segmented_is_faster_than_one_throttled_connection(files_server, tmp_path):
    data = os.urandom(6 << 20)
    (files_server.folder / "big.bin").write_bytes(data)
    files_server.default_throttle = 4 << 20  # bytes/s per connection
    t0 = time.monotonic()
    engine(connections=4, min_split=1 << 20).download(f"{files_server.url}/big.bin", tmp_path / "a.bin")
    seg = time.monotonic() - t0
    assert (tmp_path / "a.bin").read_bytes() == data
    assert seg < 1.2  # one connection needs 1.5 s at this rate


def test_segmented_resume_after_cancel(files_server, tmp_path):
    data = os.urandom(8 << 20)
    (files_server.folder / "big.bin").write_bytes(data)
    files_server.default_throttle = 2 << 20
    dest = tmp_path / "big.bin"
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    with pytest.raises(Cancelled):
        engine(connections=4, min_split=1 << 20, cancel=cancel).download(f"{files_server.url}/big.bin", dest)
    st = json.loads(state_path(part_path(dest)).read_text())
    done = sum(b - a for a, b in st["done"])
    assert done >= 2 << 20
    files_server.default_throttle = 0
    files_server.reset()
    got = engine(connections=4, min_split=1 << 20).download(f"{files_server.url}/big.bin", dest)
    assert dest.read_bytes() == data
    # (+ the probe's byte 0, and whatever the cancelled connections still flushed after the reset)
    assert files_server.sent("big.bin") <= len(data) - done + (256 << 10)
    assert got.transferred <= len(data) - done + 1
    assert got.resumed_from == done


def test_segmented_falls_back_without_ranges(files_server, tmp_path):
    data = os.urandom(9 << 20)
    (files_server.folder / "big.bin").write_bytes(data)
    files_server.ranges = False
    got = engine(connections=4, min_split=1 << 20).download(f"{files_server.url}/big.bin", tmp_path / "b.bin")
    assert (tmp_path / "b.bin").read_bytes() == data
    assert got.connections == 1
    assert files_server.sent("big.bin") == len(data)  # the probe's full answer was streamed, not thrown away


def test_single_part_continues_with_several_connections(files_server, tmp_path):
    data = os.urandom(9 << 20)
    (files_server.folder / "big.bin").write_bytes(data)
    dest = tmp_path / "big.bin"
    files_server.fault("big.bin", Fault("drop", times=1, after=3 << 20))
    with pytest.raises(SourceFailed):
        engine(retry=RetryPolicy(attempts=1, base=0.01)).download(f"{files_server.url}/big.bin", dest)
    assert part_path(dest).stat().st_size == 3 << 20
    files_server.reset()
    got = engine(connections=4, min_split=1 << 20).download(f"{files_server.url}/big.bin", dest)
    assert dest.read_bytes() == data
    assert got.resumed_from == 3 << 20 and got.transferred == len(data) - (3 << 20)


def test_empty_file_with_several_connections(files_server, tmp_path):
    (files_server.folder / "empty.bin").write_bytes(b"")
    got = engine(connections=4).download(f"{files_server.url}/empty.bin", tmp_path / "empty.bin")
    assert (tmp_path / "empty.bin").read_bytes() == b""
    assert got.digests.sha256 == hashlib.sha256(b"").hexdigest()
