"""Plain-HTTP bodies moved into their file by the kernel (vlmdata.net.splice), against the loopback
server: the bytes on disk, the hash, and that the splice path (or the recv path) was the one taken.

``os.splice`` is wrapped to count its calls (and, in one test, to refuse the file side as a file
system without splice support would); every call still goes to the real one.
"""
from __future__ import annotations

import errno
import hashlib
import os
import threading
import time

import pytest
from fetch_helpers import Fault, wait_for

from vlmdata.fetch.http import HttpEngine
from vlmdata.net import splice
from vlmdata.net.errors import Cancelled
from vlmdata.net.retry import RetryPolicy
from vlmdata.state.partial import part_path

pytestmark = pytest.mark.skipif(not hasattr(os, "splice"), reason="splice is Linux-only")

FAST = RetryPolicy(attempts=5, base=0.02, cap=0.2)


@pytest.fixture
def calls(monkeypatch):
    """os.splice, counted: 'socket' for socket -> pipe, 'file' for pipe -> file."""
    real = os.splice
    seen = {"socket": 0, "file": 0}

    def counted(src, dst, count, offset_src=None, offset_dst=None, flags=0):
        seen["file" if offset_dst is not None else "socket"] += 1
        return real(src, dst, count, offset_src, offset_dst, flags)

    monkeypatch.setattr(os, "splice", counted)
    monkeypatch.delenv("VLMDATA_NO_SPLICE", raising=False)
    return seen


def _serve(files_server, name: str, size: int) -> bytes:
    data = os.urandom(size)
    (files_server.folder / name).write_bytes(data)
    return data


def _get(files_server, name, dest, **kw):
    kw.setdefault("retry", FAST)
    kw.setdefault("timeout", 5.0)
    return HttpEngine(**kw).download(f"{files_server.url}/{name}", dest)


def test_a_plain_http_body_is_spliced_into_its_file(files_server, calls, tmp_path):
    data = _serve(files_server, "f.bin", (3 << 20) + 77)
    got = _get(files_server, "f.bin", tmp_path / "f.bin")
    assert (tmp_path / "f.bin").read_bytes() == data
    assert got.digests.sha256 == hashlib.sha256(data).hexdigest() and got.digests.size == len(data)
    assert calls["socket"] >= 3 and calls["file"] >= 3  # 1 MiB a move at most


def test_the_pieces_of_a_segmented_download_are_spliced_too(files_server, calls, tmp_path):
    data = _serve(files_server, "big.bin", (9 << 20) + 11)
    got = _get(files_server, "big.bin", tmp_path / "big.bin", connections=4, min_split=1 << 20)
    assert (tmp_path / "big.bin").read_bytes() == data
    assert got.digests.sha256 == hashlib.sha256(data).hexdigest() and got.connections == 4
    assert calls["socket"] >= 9 and calls["file"] >= 9


def test_a_segmented_piece_that_stalls_is_taken_up_again(files_server, calls, tmp_path):
    data = _serve(files_server, "big.bin", 8 << 20)
    files_server.fault("big.bin", Fault("stall", times=1, after=1 << 19, delay=2.0))
    dest = tmp_path / "big.bin"
    got = _get(files_server, "big.bin", dest, connections=4, min_split=1 << 20, timeout=0.4)
    assert dest.read_bytes() == data
    assert got.digests.sha256 == hashlib.sha256(data).hexdigest()


def test_turned_off_the_body_is_received_instead(files_server, calls, tmp_path, monkeypatch):
    monkeypatch.setenv("VLMDATA_NO_SPLICE", "1")
    data = _serve(files_server, "f.bin", (2 << 20) + 5)
    got = HttpEngine(retry=FAST, timeout=5.0).download(f"{files_server.url}/f.bin", tmp_path / "f.bin", md5=True)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert got.digests.md5 == hashlib.md5(data).hexdigest()
    assert calls == {"socket": 0, "file": 0}


@pytest.mark.parametrize("size", [0, 1, 8191, 8192, 8193, 70_000, (1 << 20) + 1])
def test_every_size_arrives_exact(files_server, calls, tmp_path, size):
    # http.client reads the headers 8 KiB at a time: the body's first bytes (all of a small one)
    # are in its buffer, not in the socket, and must be written before what is spliced.
    data = _serve(files_server, "s.bin", size)
    got = _get(files_server, "s.bin", tmp_path / "s.bin")
    assert (tmp_path / "s.bin").read_bytes() == data
    assert got.digests.sha256 == hashlib.sha256(data).hexdigest()


def test_a_file_system_that_refuses_splice_gets_the_bytes_copied(files_server, calls, tmp_path, monkeypatch):
    counted = os.splice

    def no_file_side(src, dst, count, offset_src=None, offset_dst=None, flags=0):
        if offset_dst is not None:
            raise OSError(errno.EINVAL, "Invalid argument")
        return counted(src, dst, count, offset_src, offset_dst, flags)

    monkeypatch.setattr(os, "splice", no_file_side)
    data = _serve(files_server, "f.bin", (2 << 20) + 3)
    got = _get(files_server, "f.bin", tmp_path / "f.bin")
    assert (tmp_path / "f.bin").read_bytes() == data
    assert got.digests.sha256 == hashlib.sha256(data).hexdigest()
    assert calls["socket"] >= 2


def test_a_body_that_stalls_times_out_and_resumes_from_what_arrived(files_server, calls, tmp_path):
    data = _serve(files_server, "f.bin", 3 << 20)
    files_server.fault("f.bin", Fault("stall", times=1, after=1 << 20, delay=2.0))
    dest = tmp_path / "f.bin"
    got = _get(files_server, "f.bin", dest, timeout=0.4)
    assert dest.read_bytes() == data and not part_path(dest).exists()
    assert got.digests.sha256 == hashlib.sha256(data).hexdigest()
    ranges = [r for m, p, r in files_server.requests if p == "f.bin"]
    assert ranges[0] is None and len(ranges) == 2 and ranges[1].startswith("bytes=")
    resumed_at = int(ranges[1][len("bytes="):-1])
    assert 0 < resumed_at <= 1 << 20  # what arrived before the stall was kept


def test_a_stop_ends_a_spliced_wait_while_the_server_is_quiet(files_server, calls, tmp_path):
    _serve(files_server, "f.bin", 3 << 20)
    files_server.fault("f.bin", Fault("stall", times=1, after=1 << 20, delay=5.0))
    dest = tmp_path / "f.bin"
    part = part_path(dest)
    cancel = threading.Event()

    def stop_once_the_first_mib_is_in() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (part.exists() and part.stat().st_size >= 1 << 20):
            time.sleep(0.01)
        cancel.set()

    threading.Thread(target=stop_once_the_first_mib_is_in, daemon=True).start()
    with pytest.raises(Cancelled):
        HttpEngine(retry=FAST, timeout=30.0, cancel=cancel).download(f"{files_server.url}/f.bin", dest)
    # the server was still in its 5 s pause: the wait ended on the stop, not on more bytes or the timeout.
    # (its body is still in flight, so sent_settled does not apply; the server counts a block after the
    # socket took it, so its count of the first MiB the client holds may lag: waited for, then checked exact)
    wait_for(lambda: files_server.sent("f.bin") >= 1 << 20, what="the server to count the first MiB")
    assert files_server.sent("f.bin") == 1 << 20
    assert part.stat().st_size == 1 << 20


def test_splice_is_off_when_the_user_says_so(monkeypatch):
    monkeypatch.setenv("VLMDATA_NO_SPLICE", "1")
    assert not splice.available()
    monkeypatch.setenv("VLMDATA_NO_SPLICE", "0")
    assert splice.available()
