"""The HTTP engine against a loopback server with injected faults; every test checks the bytes on disk."""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
from fetch_helpers import Fault, sent_settled

from vlmdata.fetch.http import HttpEngine
from vlmdata.net.errors import Cancelled, SourceFailed
from vlmdata.state.partial import part_path, state_path
from vlmdata.net.retry import RetryPolicy

FAST = RetryPolicy(attempts=5, base=0.02, cap=0.2)


pytestmark = pytest.mark.usefixtures("body_path")  # (each test spliced and received)


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
    assert sent_settled(files_server, "f.bin") == len(blob)


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
    assert sent_settled(files_server, "f.bin") == len(blob)  # no byte sent twice
    assert got.transferred == len(blob)


def test_a_server_without_ranges_is_said_to_have_sent_the_file_again(files_server, blob, tmp_path):
    """python -m http.server ignores Range: the resume gets the whole file (200), which is taken from
    byte 0 and said, rather than looking like a resume that downloads everything."""
    files_server.fault("f.bin", Fault("drop", times=1, after=1 << 20))
    files_server.fault("f.bin", Fault("norange", times=-1))
    dest = tmp_path / "f.bin"
    got = engine().download(f"{files_server.url}/f.bin", dest)
    assert dest.read_bytes() == blob and got.resumed_from == 0
    assert [r for m, p, r in files_server.requests if p == "f.bin"] == [None, f"bytes={1 << 20}-"]
    assert len(got.notes) == 1 and f"resume after {1 << 20:,} bytes with the whole file" in got.notes[0]


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
    assert sent_settled(files_server, "f.bin") == (1 << 20) + len(blob)  # the restart fetched everything again


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
    part = part_path(dest)
    cancel = _cancel_when(lambda: part.exists() and part.stat().st_size >= 256 << 10)
    with pytest.raises(Cancelled):
        engine(cancel=cancel).download(f"{files_server.url}/f.bin", dest)
    kept = part_path(dest).stat().st_size
    assert 0 < kept < len(blob)
    files_server.default_throttle = 0
    files_server.reset()
    got = engine().download(f"{files_server.url}/f.bin", dest)
    assert dest.read_bytes() == blob
    assert got.resumed_from == kept and got.transferred == len(blob) - kept
    # (the server may still flush a last slice of the cancelled connection after the reset)
    assert sent_settled(files_server, "f.bin") <= len(blob) - kept + (64 << 10)


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


def test_segmented_downloads_over_several_connections_at_once(files_server, tmp_path):
    # (how much faster that is belongs in bench/, not in a test: a clock in a test fails under load)
    data = os.urandom(6 << 20)
    (files_server.folder / "big.bin").write_bytes(data)
    files_server.default_throttle = 4 << 20  # bytes/s per connection
    engine(connections=4, min_split=1 << 20).download(f"{files_server.url}/big.bin", tmp_path / "a.bin")
    assert (tmp_path / "a.bin").read_bytes() == data
    assert files_server.max_in_flight >= 3


def _done_in(side: Path) -> int:
    """Bytes a segmented download's progress file says are on disk (0 before it exists)."""
    try:
        return sum(b - a for a, b in json.loads(side.read_text())["done"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def test_segmented_resume_after_cancel(files_server, tmp_path):
    # 16 MiB over 4 connections at 1 MiB/s each: ~4 s, stopped once 2 MiB are recorded as done
    # (a stop at a fixed time raced a machine fast enough to finish first).
    data = os.urandom(16 << 20)
    (files_server.folder / "big.bin").write_bytes(data)
    files_server.default_throttle = 1 << 20
    dest = tmp_path / "big.bin"
    side = state_path(part_path(dest))
    cancel = _cancel_when(lambda: _done_in(side) >= 2 << 20)
    with pytest.raises(Cancelled):
        engine(connections=4, min_split=1 << 20, cancel=cancel).download(f"{files_server.url}/big.bin", dest)
    done = _done_in(side)
    assert 2 << 20 <= done < len(data)
    files_server.default_throttle = 0
    files_server.reset()
    got = engine(connections=4, min_split=1 << 20).download(f"{files_server.url}/big.bin", dest)
    assert dest.read_bytes() == data
    # (+ the probe's byte 0, and whatever the cancelled connections still flushed after the reset)
    assert sent_settled(files_server, "big.bin") <= len(data) - done + (256 << 10)
    assert got.transferred <= len(data) - done + 1
    assert got.resumed_from == done


def _segmented_16mib(files_server, tmp_path, connections: int) -> list[tuple[int, int]]:
    """16 MiB over ``connections`` connections at 8 MiB/s each, checked whole; the byte ranges
    asked for, in the order the requests came."""
    data = os.urandom(16 << 20)
    (files_server.folder / "big.bin").write_bytes(data)
    files_server.default_throttle = 8 << 20
    got = engine(connections=connections, min_split=1 << 20).download(f"{files_server.url}/big.bin",
                                                                     tmp_path / "big.bin")
    assert (tmp_path / "big.bin").read_bytes() == data and got.connections == connections
    return [tuple(map(int, r[6:].split("-"))) for m, p, r in files_server.requests if p == "big.bin" and r]


def test_segmented_pieces_reuse_their_connections(files_server, tmp_path):
    # A piece read to its end leaves its connection open for the next one (a fresh connection per
    # piece costs a handshake and, over a real network, TCP's slow start again).
    ranges = _segmented_16mib(files_server, tmp_path, 4)
    assert len(ranges) >= 8  # (else there was nothing to reuse)
    # a steal asks for the second half of a range already asked for; its victim stops short of its
    # range's end, and that connection cannot carry another answer
    steals = sum(1 for i, (a, _) in enumerate(ranges) if any(x < a <= y for x, y in ranges[:i]))
    # the probe's connection, one per worker, one more for each piece cut short
    assert len(set(files_server.ports)) <= 1 + 4 + steals < len(ranges)


def test_segmented_falls_back_without_ranges(files_server, tmp_path):
    data = os.urandom(9 << 20)
    (files_server.folder / "big.bin").write_bytes(data)
    files_server.ranges = False
    got = engine(connections=4, min_split=1 << 20).download(f"{files_server.url}/big.bin", tmp_path / "b.bin")
    assert (tmp_path / "b.bin").read_bytes() == data
    assert got.connections == 1
    assert sent_settled(files_server, "big.bin") == len(data)  # the probe's full answer was streamed, not thrown away


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


def _cancel_when(cond) -> threading.Event:
    """An event a watcher thread sets once ``cond()`` holds (or after a minute): the stop of a download."""
    cancel = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not cond():
            time.sleep(0.01)
        cancel.set()

    threading.Thread(target=watch, daemon=True).start()
    return cancel


def test_small_file_resumes_from_the_bytes_that_arrived(files_server, tmp_path):
    # 200 KiB at 64 KiB/s: the bytes that arrived are on disk at once, not held back for a
    # 1 MiB read, so a stop at any moment keeps them and the next call asks for the rest only.
    data = os.urandom(200 << 10)
    (files_server.folder / "small.bin").write_bytes(data)
    files_server.default_throttle = 64 << 10
    dest = tmp_path / "small.bin"
    part = part_path(dest)
    cancel = _cancel_when(lambda: part.exists() and part.stat().st_size >= 64 << 10)
    with pytest.raises(Cancelled):
        engine(cancel=cancel).download(f"{files_server.url}/small.bin", dest)
    kept = part.stat().st_size
    assert 64 << 10 <= kept < len(data)
    files_server.default_throttle = 0
    files_server.reset()
    got = engine().download(f"{files_server.url}/small.bin", dest)
    assert dest.read_bytes() == data
    assert got.resumed_from == kept and got.transferred == len(data) - kept
    assert [r for m, p, r in files_server.requests if p == "small.bin"] == [f"bytes={kept}-"]


def test_no_validator_resumes_when_the_size_matches_and_says_so(files_server, blob, tmp_path):
    files_server.validators = False  # no ETag, no Last-Modified
    files_server.fault("f.bin", Fault("drop", times=1, after=1 << 20))
    dest = tmp_path / "f.bin"
    with pytest.raises(SourceFailed):
        engine(retry=RetryPolicy(attempts=1, base=0.01)).download(f"{files_server.url}/f.bin", dest)
    st = json.loads(state_path(part_path(dest)).read_text())
    assert st["etag"] is None and st["last_modified"] is None and st["size"] == len(blob)
    files_server.reset()
    got = engine().download(f"{files_server.url}/f.bin", dest)
    assert dest.read_bytes() == blob
    assert got.resumed_from == 1 << 20 and sent_settled(files_server, "f.bin") == len(blob) - (1 << 20)
    assert files_server.requests == [("GET", "f.bin", f"bytes={1 << 20}-")]
    assert len(got.notes) == 1 and "no ETag or Last-Modified" in got.notes[0] and "size" in got.notes[0]


def test_a_download_that_starts_over_and_is_cut_each_time_gives_up(files_server, blob, tmp_path):
    """Found by trying: a server without validators that cuts every response after a third of its
    body. Each try's size probe (bytes=0-0) got nothing, so the try fell back to the whole file from
    byte 0 and received a third of it; bytes received restarted the count of tries, for ever (294 MB
    for a 3 MB file in 120 s). Only bytes kept beyond any earlier try's count as progress now."""
    files_server.validators = False
    files_server.fault("f.bin", Fault("drop", times=-1, share=1 / 3))
    with pytest.raises(SourceFailed, match="gave up after 5 tries"):
        engine(connections=4, min_split=4 << 20).download(f"{files_server.url}/f.bin", tmp_path / "f.bin",
                                                          weak_resume=False)
    assert files_server.count("f.bin") == 10  # (a probe and a GET per try)


def test_a_download_that_keeps_more_on_each_try_is_not_given_up(files_server, blob, tmp_path):
    """The other side of the rule: cut eight times (more than the 5 tries), but each try resumes and
    keeps 256 KiB more, so it finishes."""
    files_server.fault("f.bin", Fault("drop", times=8, after=256 << 10))
    dest = tmp_path / "f.bin"
    engine().download(f"{files_server.url}/f.bin", dest)
    assert dest.read_bytes() == blob and files_server.count("f.bin") == 9


def test_no_validator_and_another_size_starts_over(files_server, blob, tmp_path):
    files_server.validators = False
    files_server.fault("f.bin", Fault("drop", times=1, after=1 << 20))
    dest = tmp_path / "f.bin"
    with pytest.raises(SourceFailed):
        engine(retry=RetryPolicy(attempts=1, base=0.01)).download(f"{files_server.url}/f.bin", dest)
    new = os.urandom(len(blob) + 1000)  # replaced by a file of another size: nothing may be stitched
    (files_server.folder / "f.bin").write_bytes(new)
    files_server.reset()
    got = engine().download(f"{files_server.url}/f.bin", dest)
    assert dest.read_bytes() == new and got.resumed_from == 0 and got.notes == []
    # the resume was asked for, its Content-Range showed another size, and the file came whole
    assert [r for m, p, r in files_server.requests] == [f"bytes={1 << 20}-", None]


def test_no_validator_segmented_resume(files_server, tmp_path):
    data = os.urandom(8 << 20)
    (files_server.folder / "big.bin").write_bytes(data)
    files_server.validators = False
    files_server.default_throttle = 2 << 20
    dest = tmp_path / "big.bin"
    side = state_path(part_path(dest))
    cancel = _cancel_when(lambda: _done_in(side) >= 1 << 20)
    with pytest.raises(Cancelled):
        engine(connections=4, min_split=1 << 20, cancel=cancel).download(f"{files_server.url}/big.bin", dest)
    kept = _done_in(side)
    assert kept >= 1 << 20
    files_server.default_throttle = 0
    files_server.reset()
    got = engine(connections=4, min_split=1 << 20).download(f"{files_server.url}/big.bin", dest)
    assert dest.read_bytes() == data
    assert got.resumed_from == kept and any("no ETag or Last-Modified" in n for n in got.notes)
    assert all("If-Range" not in str(r) for r in files_server.requests)
    assert sent_settled(files_server, "big.bin") <= len(data) - kept + (1 << 20)


def test_segmented_pieces_go_out_in_file_order(files_server, tmp_path):
    # The hash follows the finished prefix: handing pieces out in file order keeps it close behind.
    starts = [a for a, b in _segmented_16mib(files_server, tmp_path, 2) if (a, b) != (0, 0)]
    # (the two connections may send their first requests in either order)
    assert len(starts) > 2 and sorted(starts[:2]) == sorted(starts)[:2] and min(starts) == 0
    assert max(starts[:3]) <= (16 << 20) // 2  # the third piece follows the first two, not the middle of the file


def test_the_probe_is_the_first_piece(files_server, tmp_path):
    # A fresh segmented download spends no request on the probe alone: its answer is piece one.
    data = os.urandom(12 << 20)
    (files_server.folder / "big.bin").write_bytes(data)
    files_server.default_throttle = 8 << 20
    got = engine(connections=3, min_split=1 << 20).download(f"{files_server.url}/big.bin", tmp_path / "big.bin",
                                                               size_hint=len(data))
    assert (tmp_path / "big.bin").read_bytes() == data and got.connections == 3
    ranges = [r for m, p, r in files_server.requests if p == "big.bin"]
    assert ranges[0] == f"bytes=0-{(1 << 20) - 1}" and "bytes=0-0" not in ranges
    starts = [int(r[6:].split("-")[0]) for r in ranges]
    assert starts.count(0) == 1  # byte 0 was asked for once
