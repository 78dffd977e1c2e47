"""What the engine may continue, judged before every try, and the order of its writes where a kill
between two of them would leave bytes under the wrong sidecar (found in review, each against the
engine as it was: a resume inside one call skipped the check a new call makes; a new validator was
saved before the old bytes were dropped; a .part was stretched to full length before the sidecar
said which of its bytes were real)."""
from __future__ import annotations

import copy
import os

import pytest
from fetch_helpers import Fault

from vlmdata.fetch.http import HttpEngine
from vlmdata.net.errors import SourceFailed
from vlmdata.net.retry import RetryPolicy
from vlmdata.state.partial import PartState, part_path

FAST = RetryPolicy(attempts=5, base=0.02, cap=0.2)
ONCE = RetryPolicy(attempts=1, base=0.01)

pytestmark = pytest.mark.usefixtures("body_path")  # (each test spliced and received)


@pytest.fixture
def blob(files_server):
    data = os.urandom(3 << 20)
    (files_server.folder / "f.bin").write_bytes(data)
    return data


def ranges(server, name: str) -> list[str | None]:
    return [r for m, p, r in server.requests if p == name]


def test_without_validators_or_a_hash_a_cut_try_starts_over_inside_the_call_too(files_server, blob, tmp_path):
    files_server.validators = False
    files_server.fault("f.bin", Fault("drop", times=1, after=1 << 20))
    dest = tmp_path / "f.bin"
    got = HttpEngine(retry=FAST).download(f"{files_server.url}/f.bin", dest, weak_resume=False)
    assert dest.read_bytes() == blob
    assert ranges(files_server, "f.bin") == [None, None]  # the second try from byte 0, as a new call would
    assert got.resumed_from == 0 and got.notes == []


def test_a_resume_answered_with_an_unknown_total_is_not_trusted_on_size_alone(files_server, blob, tmp_path):
    files_server.validators = False
    files_server.fault("f.bin", Fault("drop", times=1, after=1 << 20))

    def star_total(h, method, path):  # a 206 whose Content-Range says "/*": no size to compare
        rng = h.headers.get("Range")
        if path != "f.bin" or not rng:
            return False
        start = int(rng.split("=")[1].rstrip("-"))
        h.send_plain(206, blob[start:], {"Content-Range": f"bytes {start}-{len(blob) - 1}/*"})
        return True

    files_server.routes.append(star_total)
    got = HttpEngine(retry=FAST).download(f"{files_server.url}/f.bin", tmp_path / "f.bin")
    assert (tmp_path / "f.bin").read_bytes() == blob
    assert ranges(files_server, "f.bin") == [None, f"bytes={1 << 20}-", None]  # refused, then from byte 0
    assert got.resumed_from == 0


def _saves(monkeypatch, part) -> list[tuple[int, PartState]]:
    """(the .part's size, the state) at each save of the sidecar."""
    seen: list[tuple[int, PartState]] = []
    save = PartState.save

    def spy(self, path):
        seen.append((part.stat().st_size if part.exists() else -1, copy.deepcopy(self)))  # (as it was then)
        save(self, path)

    monkeypatch.setattr(PartState, "save", spy)
    return seen


def test_a_changed_file_gets_its_new_validator_only_once_the_old_bytes_are_gone(files_server, blob, tmp_path,
                                                                                 monkeypatch):
    dest = tmp_path / "f.bin"
    files_server.fault("f.bin", Fault("drop", times=1, after=1 << 20))
    with pytest.raises(SourceFailed):
        HttpEngine(retry=ONCE).download(f"{files_server.url}/f.bin", dest)
    assert part_path(dest).stat().st_size == 1 << 20
    new = os.urandom(len(blob))  # same size, new ETag: the If-Range resume is answered 200, whole
    (files_server.folder / "f.bin").write_bytes(new)
    files_server.reset()
    seen = _saves(monkeypatch, part_path(dest))
    HttpEngine(retry=FAST).download(f"{files_server.url}/f.bin", dest)
    assert dest.read_bytes() == new
    # a kill right after this save must find no old bytes under the new ETag (the next If-Range matches it)
    assert seen and seen[0][0] == 0


def test_a_single_part_continued_on_several_connections_says_its_ranges_before_it_is_stretched(
        files_server, tmp_path, monkeypatch):
    data = os.urandom(9 << 20)
    (files_server.folder / "big.bin").write_bytes(data)
    dest = tmp_path / "big.bin"
    files_server.fault("big.bin", Fault("drop", times=1, after=3 << 20))
    with pytest.raises(SourceFailed):
        HttpEngine(retry=ONCE).download(f"{files_server.url}/big.bin", dest)
    files_server.reset()
    seen = _saves(monkeypatch, part_path(dest))
    HttpEngine(retry=FAST, connections=4, min_split=1 << 20).download(f"{files_server.url}/big.bin", dest)
    assert dest.read_bytes() == data
    size, first = seen[0]
    # a kill after this save finds the 3 MiB said done; a full-length .part with the old sidecar would
    # have passed for a finished single download, its zeros and all
    assert first.done == [[0, 3 << 20]] and size == 3 << 20
