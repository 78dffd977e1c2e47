"""The ramp: fetch's default opens the second and later connections of a file only when the first
one, alone, would need more than RAMP_GAIN seconds for the rest (vlmdata.fetch.http). The slow cases
are slow by the server's throttle, never by the machine; the fast ones give the first connection
RAMP_AFTER = 30 s alone, so a loaded machine's stall is never taken for a slow link."""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import pytest
from fetch_helpers import Fault, file_toml, http, sent_settled, sha256

from vlmdata.fetch import http as http_engine
from vlmdata.fetch.http import RAMP_AFTER, RAMP_GAIN, HttpEngine, more_connections_pay
from vlmdata.fetch.segments import ALIGN, Scheduler
from vlmdata.net.errors import Cancelled
from vlmdata.net.retry import RetryPolicy
from vlmdata.state.partial import part_path, state_path

MIB = 1 << 20
DOWNLOADS = pytest.mark.usefixtures("body_path")  # (each download spliced and received)


def ramped(**kw) -> HttpEngine:
    return HttpEngine(retry=RetryPolicy(attempts=5, base=0.02, cap=0.2), timeout=5.0, connections=4, ramp=True,
                      min_split=MIB, **kw)


def _ranges(server, name: str) -> list[str]:
    return [r for m, p, r in server.requests if p == name]


def test_the_rule():
    assert not more_connections_pay(0, 100 * MIB, RAMP_AFTER / 2)  # too early to tell, even with no byte yet
    assert more_connections_pay(0, 100 * MIB, RAMP_AFTER)  # nothing arrived in that time: a far or slow server
    rate = 10 * MIB / RAMP_AFTER
    assert not more_connections_pay(10 * MIB, int(rate * RAMP_GAIN * 0.9), RAMP_AFTER)  # done within the gain
    assert more_connections_pay(10 * MIB, int(rate * RAMP_GAIN * 1.1), RAMP_AFTER)


def test_hand_back_tails_returns_all_but_one_piece_to_be_handed_out_in_file_order():
    size = 64 * MIB
    sched = Scheduler(size, [], 4, min_split=MIB)
    first = sched.claim(0, size)  # (the first connection asked for the whole file)
    sched.advance(first, 3 * MIB + 123)
    sched.hand_back_tails()
    assert first.pos < first.end <= first.pos + sched.piece and first.end % ALIGN == 0
    nxt = sched.take()
    assert nxt.start == first.end  # right behind it, not half the file away as a steal would be
    assert sched.take().start == nxt.end
    # every byte still belongs to exactly one piece or to what is left to hand out
    pieces = sorted((p.start, p.end) for p in sched.pieces)
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:])) and pieces[0][0] == 0


def test_a_short_tail_stays_with_its_piece():
    sched = Scheduler(8 * MIB, [], 4, min_split=MIB)
    first = sched.claim(0, 8 * MIB)
    sched.advance(first, 8 * MIB - MIB // 2)
    sched.hand_back_tails()
    assert first.end == 8 * MIB and sched.take() is None


@DOWNLOADS
def test_a_file_one_connection_carries_takes_one_request(files_server, tmp_path, monkeypatch):
    monkeypatch.setattr(http_engine, "RAMP_AFTER", 30.0)  # (see the module's docstring)
    data = os.urandom(6 * MIB)
    (files_server.folder / "big.bin").write_bytes(data)
    got = ramped().download(f"{files_server.url}/big.bin", tmp_path / "big.bin", size_hint=len(data))
    assert (tmp_path / "big.bin").read_bytes() == data and got.digests.sha256 == hashlib.sha256(data).hexdigest()
    assert got.connections == 1
    assert _ranges(files_server, "big.bin") == ["bytes=0-"]  # the whole file in the first answer, no probe


@DOWNLOADS
def test_a_small_file_of_unknown_size_takes_one_request(files_server, tmp_path):
    # (no size from the manifest: the whole-file probe finds a file too small to split, and streams it)
    data = os.urandom(MIB + 17)
    (files_server.folder / "small.bin").write_bytes(data)
    got = ramped().download(f"{files_server.url}/small.bin", tmp_path / "small.bin")
    assert (tmp_path / "small.bin").read_bytes() == data and got.digests.sha256 == hashlib.sha256(data).hexdigest()
    assert got.connections == 1 and _ranges(files_server, "small.bin") == ["bytes=0-"]


@DOWNLOADS
def test_a_server_without_ranges_is_streamed_from_its_first_answer(files_server, tmp_path):
    data = os.urandom(9 * MIB)
    (files_server.folder / "big.bin").write_bytes(data)
    files_server.ranges = False  # (a 200 with the whole file, whatever the Range asked)
    files_server.default_throttle = 4 * MIB  # (slow enough that the ramp would open more, were there ranges)
    got = ramped().download(f"{files_server.url}/big.bin", tmp_path / "big.bin", size_hint=len(data))
    assert (tmp_path / "big.bin").read_bytes() == data and got.connections == 1
    assert files_server.count("big.bin") == 1 and sent_settled(files_server, "big.bin") == len(data)


@DOWNLOADS
def test_a_slow_first_connection_brings_the_others_in_file_order(files_server, tmp_path):
    # 2 MiB/s per connection: after RAMP_AFTER the first one alone would need ~4 s for the rest
    data = os.urandom(8 * MIB)
    (files_server.folder / "big.bin").write_bytes(data)
    files_server.default_throttle = 2 * MIB
    got = ramped().download(f"{files_server.url}/big.bin", tmp_path / "big.bin", size_hint=len(data))
    assert (tmp_path / "big.bin").read_bytes() == data and got.digests.sha256 == hashlib.sha256(data).hexdigest()
    assert got.connections == 4 and files_server.max_in_flight >= 3
    ranges = _ranges(files_server, "big.bin")
    assert ranges[0] == "bytes=0-"
    starts = [int(r[6:].split("-")[0]) for r in ranges[1:]]
    # the first connection's range was cut back to one piece; the new ones start right behind it
    assert min(starts) < len(data) // 4, ranges


@DOWNLOADS
def test_a_stopped_ramped_download_resumes_where_it_was(files_server, tmp_path):
    data = os.urandom(8 * MIB)
    (files_server.folder / "big.bin").write_bytes(data)
    files_server.default_throttle = MIB
    dest = tmp_path / "big.bin"
    side = state_path(part_path(dest))
    cancel = threading.Event()

    def stop_after_2mib() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _done_in(side) < 2 * MIB:
            time.sleep(0.01)
        cancel.set()

    threading.Thread(target=stop_after_2mib, daemon=True).start()
    with pytest.raises(Cancelled):
        ramped(cancel=cancel).download(f"{files_server.url}/big.bin", dest, size_hint=len(data))
    done = _done_in(side)
    assert 2 * MIB <= done < len(data)
    files_server.default_throttle = 0
    files_server.reset()
    got = ramped().download(f"{files_server.url}/big.bin", dest, size_hint=len(data))
    assert dest.read_bytes() == data and got.resumed_from == done
    assert sent_settled(files_server, "big.bin") <= len(data) - done + (256 << 10)


@DOWNLOADS
def test_a_cut_first_connection_resumes_where_it_was_cut(files_server, tmp_path, monkeypatch):
    # The whole-file answer dropped twice: each try asks for the rest, no byte is sent twice.
    monkeypatch.setattr(http_engine, "RAMP_AFTER", 30.0)  # (alone throughout, however slow the machine)
    data = os.urandom(6 * MIB)
    (files_server.folder / "big.bin").write_bytes(data)
    files_server.fault("big.bin", Fault("drop", times=2, after=MIB))
    got = ramped().download(f"{files_server.url}/big.bin", tmp_path / "big.bin", size_hint=len(data))
    assert (tmp_path / "big.bin").read_bytes() == data and got.digests.sha256 == hashlib.sha256(data).hexdigest()
    starts = [int(r[6:].split("-")[0]) for r in _ranges(files_server, "big.bin")]
    assert starts[:3] == [0, MIB, 2 * MIB], starts
    assert sent_settled(files_server, "big.bin") == len(data)


def _done_in(side) -> int:
    try:
        return sum(b - a for a, b in json.loads(side.read_text())["done"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


@DOWNLOADS
@pytest.mark.parametrize("given, connections", [([], 1), (["--connections", "4"], 4)])
def test_fetch_ramps_unless_told_how_many(given, connections, cli, manifests, files_server, root, monkeypatch):
    monkeypatch.setattr(http_engine, "RAMP_AFTER", 30.0)  # (see the module's docstring)
    data = os.urandom(10 * MIB)  # (over 2 x the 4 MiB split: four connections would cut it)
    (files_server.folder / "x.bin").write_bytes(data)
    manifests.dataset("d", file_toml("x.bin", size=len(data), sha=sha256(data), sources=[http(f"{files_server.url}/x.bin")],
                                     place='{ kind = "file", to = "d/x.bin" }'))
    r = cli("fetch", "d", "--manifests", str(manifests.folder), "--root", str(root), "--json", *given)
    assert r.code == 0, r.err
    assert (root / "d" / "x.bin").read_bytes() == data
    assert [f["connections"] for f in json.loads(r.out)["files"]] == [connections]
