"""The reader's msgspec batches give exactly what the standard library gives: records, errors, lines.

Batches are made small here (a few records) so every file of these tests is cut into
many of them, at every kind of place a cut could be tried: between turns, inside strings that
look like record boundaries, before records with another first key.
"""
from __future__ import annotations

import json
import random

import pytest

from blend_helpers import turns, write_json
from vlmdata import jsonstream
from vlmdata.errors import UserError
from vlmdata.jsonstream import RecordReader, split_points


@pytest.fixture(params=[1500, 6000])
def small_batches(request, monkeypatch):
    monkeypatch.setattr(jsonstream, "_BATCH", request.param)
    return request.param


def tricky(n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = rng.choice(['}, {"id": 7, "image": "x"}', '"}, {"from": "gpt"', "\\u00e9 \\\" }, {", "plain",
                           "中文 }\n, {", "é" * rng.randint(0, 30)])
        rec = {"id": i if i % 3 else f"s{i}", "image": f"a/{i}.jpg", "conversations": turns(f"<image>\n{text}", text)}
        if i % 11 == 0:
            rec = {"image": rec["image"], **{k: v for k, v in rec.items() if k != "image"}}  # another first key
        if i % 13 == 0:
            rec["meta"] = {"nested": [{"a": 1}, {"a": 2}], "x": None, "f": 1.5e-7, "t": True}
        out.append(rec)
    return out


@pytest.mark.parametrize("indent", [None, 1, 4])
def test_batches_equal_the_standard_library(tmp_path, small_batches, indent):
    recs = tricky(400)
    p = write_json(tmp_path / "a.json", recs, indent=indent)
    assert [rec for _, rec in RecordReader(p)] == json.loads(p.read_text()) == recs


def test_batches_are_used(tmp_path, small_batches, monkeypatch):
    calls = []
    real = jsonstream._fast_loads
    monkeypatch.setattr(jsonstream, "_fast_loads", lambda text: calls.append(len(text)) or real(text))
    recs = tricky(400)
    p = write_json(tmp_path / "a.json", recs, indent=2)
    assert [rec for _, rec in RecordReader(p)] == recs
    assert len(calls) > 5 and sum(calls) > p.stat().st_size // 2  # most of the file went through msgspec


def test_lines_of_records_in_batches(tmp_path, small_batches):
    recs = tricky(200)
    p = write_json(tmp_path / "a.json", recs, indent=2)
    text = p.read_text()
    reader = RecordReader(p)
    starts = [i for i, line in enumerate(text.splitlines(), 1) if line == "  {"]
    got = []
    for i, _ in reader:
        if i % 7 == 0 or i == len(recs) - 1:
            got.append((i, reader.line()))
    assert got == [(i, starts[i]) for i, _ in got]


def test_what_msgspec_refuses_comes_from_the_standard_library(tmp_path, small_batches):
    # NaN, a number past a double, an escaped lone surrogate: valid for json.loads, refused by msgspec
    recs = tricky(120)
    raw = json.dumps(recs, indent=1)
    raw = raw.replace('"s3"', "NaN", 1).replace('"s6"', "1e400", 1).replace('"plain"', '"\\ud800"', 1)
    p = tmp_path / "odd.json"
    p.write_text(raw)
    got = [rec for _, rec in RecordReader(p)]
    want = json.loads(raw)
    assert json.dumps(got) == json.dumps(want)  # (NaN != NaN: compared as text)


def test_integers_past_64_bits_stay_exact(tmp_path, small_batches):
    """json.loads keeps 2**70 an int; so must the batches (orjson 3.13 made it a float, silently:
    an id 1180591620717411303424 would have become "1.1805916207174113e+21")."""
    recs = tricky(120)
    for i in (5, 60, 119):
        recs[i]["id"] = 2 ** 70 + i
    p = write_json(tmp_path / "big.json", recs, indent=1)
    got = [rec for _, rec in RecordReader(p)]
    assert got == json.loads(p.read_text()) == recs
    assert [type(got[i]["id"]) for i in (5, 60, 119)] == [int] * 3


def test_an_error_is_reported_at_its_line(tmp_path, small_batches):
    recs = tricky(150)
    raw = json.dumps(recs, indent=2)
    lines = raw.splitlines()
    bad = 1000
    lines[bad] = lines[bad] + " oops"
    p = tmp_path / "bad.json"
    p.write_text("\n".join(lines))
    with pytest.raises(UserError) as e:
        for _ in RecordReader(p):
            pass
    with pytest.raises(UserError) as slow:
        real = jsonstream._fast_loads
        jsonstream._fast_loads = None
        try:
            for _ in RecordReader(p):
                pass
        finally:
            jsonstream._fast_loads = real
    assert str(e.value) == str(slow.value) and f"line {bad + 1}" in str(e.value)


@pytest.mark.parametrize("chunk", [4096, 20000])
def test_batches_after_the_window_moves(tmp_path, monkeypatch, small_batches, chunk):
    """The window drops what was decoded but the byte before the next record, which a batch that
    starts there borrows for its opening bracket: records, their lines and ranges are still
    json.loads's, with the window moved many times and the batches decoded by msgspec."""
    monkeypatch.setattr(jsonstream, "_CHUNK", chunk)
    drops, decoded = [], []
    real_drop, real_loads = RecordReader._drop, jsonstream._fast_loads
    monkeypatch.setattr(RecordReader, "_drop", lambda self: drops.append(self.pos) or real_drop(self))
    monkeypatch.setattr(jsonstream, "_fast_loads", lambda text: decoded.append(len(text)) or real_loads(text))
    recs = tricky(600, seed=3)
    p = write_json(tmp_path / "a.json", recs, indent=2)
    starts = [i for i, line in enumerate(p.read_text().splitlines(), 1) if line == "  {"]
    reader = RecordReader(p)
    got = []
    for batch in reader.batches():
        got += [(rec, reader.line(k)) for k, rec in enumerate(batch)]
    assert got == list(zip(recs, starts))
    assert len(drops) > 5 and sum(decoded) > p.stat().st_size // 2
    cuts = split_points(p, 3)
    assert [rec for a, b in zip(cuts, cuts[1:]) for _, rec in RecordReader(p, a, b)] == recs


@pytest.mark.parametrize("parts", [2, 5])
def test_ranges_with_batches(tmp_path, small_batches, parts):
    recs = tricky(300)
    p = write_json(tmp_path / "a.json", recs, indent=2)
    cuts = split_points(p, parts)
    got, lines = [], 0
    for a, b in zip(cuts, cuts[1:]):
        r = RecordReader(p, a, b)
        got += [rec for _, rec in r]
        lines += r.newlines
    assert got == recs and lines == p.read_text().count("\n")


def test_jsonl_lines_go_through_msgspec_and_keep_their_errors(tmp_path):
    recs = tricky(30)
    p = write_json(tmp_path / "a.jsonl", recs, jsonl=True)
    assert [rec for _, rec in RecordReader(p)] == recs
    p.write_text(p.read_text().replace('"s3"', "NaN", 1) + "{broken\n")
    reader = iter(RecordReader(p))
    got = [next(reader)[1] for _ in range(30)]
    assert json.dumps(got) == json.dumps([json.loads(x) for x in p.read_text().splitlines()[:30]])
    with pytest.raises(UserError, match="line 31"):
        next(reader)


@pytest.mark.parametrize("chunk", [7, 64, 4096])
def test_slow_records_across_windows_split_inside_characters(tmp_path, monkeypatch, chunk):
    """The window holds bytes: a record decoded the slow way (NaN makes msgspec refuse its batch)
    may start, end or be cut by a refill inside a multi-byte character, and be longer than the
    text first made for it; the records, lines and errors are still json.loads's."""
    monkeypatch.setattr(jsonstream, "_CHUNK", chunk)
    monkeypatch.setattr(jsonstream, "_SLOW_START", 16)
    recs = tricky(60)
    for i in range(0, 60, 9):
        recs[i]["conversations"][1]["value"] = "日本語 ü " * (i + 1)
    raw = json.dumps(recs, indent=1, ensure_ascii=False).replace('"s3"', "NaN", 1)
    p = tmp_path / "wide.json"
    p.write_bytes(raw.encode("utf-8"))
    reader = RecordReader(p)
    got, lines = [], []
    for i, rec in reader:
        got.append(rec)
        lines.append(reader.line())
    assert json.dumps(got, ensure_ascii=False) == json.dumps(json.loads(raw), ensure_ascii=False)
    assert lines == [n + 1 for n, line in enumerate(raw.splitlines()) if line == " {"]
    bad = raw.encode("utf-8").replace("日本語".encode("utf-8"), b'\xe6\x97', 1)  # a character cut short
    p.write_bytes(bad)
    with pytest.raises(UserError, match="not valid UTF-8") as e:
        list(RecordReader(p))
    want_line = bad[:bad.index(b'\xe6\x97 ')].count(b"\n") + 1
    assert f"{p}: line {want_line}" in str(e.value)


@pytest.mark.parametrize("chunk, slow_start", [(5, 8), (64, 32), (4096, 1 << 16)])
def test_members_of_an_object_with_wide_characters(tmp_path, monkeypatch, chunk, slow_start):
    """A JSON object's members all go the slow way, out of one piece of text kept from value to
    value: keys and values with multi-byte characters, split by refills, come out as json.loads's."""
    monkeypatch.setattr(jsonstream, "_CHUNK", chunk)
    monkeypatch.setattr(jsonstream, "_SLOW_START", slow_start)
    obj = {f"k{i}-ü日": {"q": ["Wér?", "題名"] * (i % 4), "n": i, "f": 1.5, "x": None} for i in range(300)}
    p = tmp_path / "members.json"
    p.write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")
    assert dict(jsonstream.iter_json_object(p)) == obj


def _read(p, *, fast: bool, **kw):
    """(records, lines of each record) or the error's text, with msgspec's batches or without."""
    real = jsonstream._fast_loads
    jsonstream._fast_loads = real if fast else None
    try:
        reader, got = RecordReader(p, **kw), []
        for batch in reader.batches():
            got += [(rec, reader.line(k)) for k, rec in enumerate(batch)]
        return got
    except UserError as e:
        return str(e)
    finally:
        jsonstream._fast_loads = real


@pytest.mark.parametrize("end", ["\n]\n", "]", ",\n]", "\n", "", "\n] x", '\n]\n{"id": 1}', ', {"id": "}"'])
def test_the_last_records_come_in_one_batch(tmp_path, monkeypatch, end):
    """The records after the last full-size batch (all of a small file) are decoded in one call,
    and whatever follows the last one (a trailing comma, no ']', data after it) is reported as
    the standard library's path reports it, at the same line."""
    recs = tricky(60)
    recs[41]["conversations"] = "not a list"  # (a record the blend would drop: its line is asked for)
    body = json.dumps(recs, indent=2)
    p = tmp_path / "a.json"
    p.write_text(body[:body.rindex("]")].rstrip() + end)
    calls = []
    real = jsonstream._fast_loads
    monkeypatch.setattr(jsonstream, "_fast_loads", lambda text: calls.append(len(text)) or real(text))
    fast = _read(p, fast=True)
    assert fast == _read(p, fast=False)
    if end.strip() == "]":
        assert [rec for rec, _ in fast] == recs and len(calls) == 1


def test_the_last_records_of_each_range_come_in_one_batch(tmp_path):
    recs = tricky(300)
    p = write_json(tmp_path / "a.json", recs, indent=1)
    cuts = split_points(p, 4)
    got = []
    for a, b in zip(cuts, cuts[1:]):
        assert len(list(RecordReader(p, a, b).batches())) == 1  # (each range is far below a batch's size)
        fast = _read(p, fast=True, start=a, end=b)
        assert fast == _read(p, fast=False, start=a, end=b)
        got += fast
    assert [rec for rec, _ in got] == recs
