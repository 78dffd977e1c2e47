"""The streaming reader: whole files, byte ranges read in parallel, errors with file and line."""
from __future__ import annotations

import json

import pytest

from blend_helpers import turns, write_json
from vlmdata.errors import UserError
from vlmdata.jsonstream import RecordReader, SegmentMismatch, iter_json_records, split_points


def records(n):
    # strings holding ", {" and escaped quotes, nested objects: none of them is a record boundary
    return [{"id": i, "image": f"a/{i}.jpg", "meta": {"note": 'x, {"conversations": 1}'},
             "conversations": turns(f"<image>\nq{i}, {{a}}", "é ü 中文 " * (i % 7))} for i in range(n)]


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("parts", [2, 3, 7])
def test_ranges_give_the_same_records(tmp_path, indent, parts):
    recs = records(300)
    p = write_json(tmp_path / "a.json", recs, indent=indent)
    cuts = split_points(p, parts)
    assert cuts[0] == 0 and cuts[-1] == p.stat().st_size and len(cuts) == parts + 1
    got, lines = [], 0
    for a, b in zip(cuts, cuts[1:]):
        r = RecordReader(p, a, b)
        got += [rec for _, rec in r]
        lines += r.newlines
    assert got == recs
    assert lines == p.read_text().count("\n")


def test_jsonl_ranges(tmp_path):
    recs = records(50)
    p = write_json(tmp_path / "a.jsonl", recs, jsonl=True)
    cuts = split_points(p, 4)
    got = [rec for a, b in zip(cuts, cuts[1:]) for _, rec in RecordReader(p, a, b)]
    assert got == recs


def test_a_wrong_start_is_detected(tmp_path):
    p = write_json(tmp_path / "a.json", records(20))
    text = p.read_bytes()
    turn = text.index(b'{"from": "gpt"', 200)  # a turn: an object after ", " but not a record
    with pytest.raises(SegmentMismatch):
        list(RecordReader(p, turn, len(text)))
    with pytest.raises(SegmentMismatch):  # the range before it does not end on a record either
        list(RecordReader(p, 0, turn))


def test_line_of_each_record(tmp_path):
    p = write_json(tmp_path / "a.json", records(5), indent=2)
    text = p.read_text()
    r = RecordReader(p)
    lines = []
    for i, rec in r:
        lines.append(r.line())
    starts = [n + 1 for n, line in enumerate(text.splitlines()) if line == "  {"]
    assert lines == starts


def test_bom_and_empty_array(tmp_path):
    p = tmp_path / "bom.json"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"a": 1}]).encode())
    assert list(iter_json_records(p)) == [(0, {"a": 1})]
    (tmp_path / "e.json").write_text(" [ ] \n")
    assert list(iter_json_records(tmp_path / "e.json")) == []


@pytest.mark.parametrize("data, msg", [
    (b"", "the file is empty (0 bytes): an interrupted download or an empty export?"),
    (b" \n\n", "the file holds no JSON (3 bytes of blanks)"),
])
def test_an_empty_file_is_said_to_be_empty_not_a_missing_array(tmp_path, data, msg):
    p = tmp_path / "e.json"
    p.write_bytes(data)
    with pytest.raises(UserError) as e:
        list(iter_json_records(p))
    assert msg in e.value.what and "expected a JSON array" not in str(e.value)
    assert e.value.where.startswith(str(p)) and "again" in e.value.hint


@pytest.mark.parametrize("text, msg, line", [
    ('[\n{"a": 1},\n{"a": }\n]', "invalid JSON in record 1: Expecting value (column 7)", 3),
    ('[\n{"a": 1},\n {"a": "b\x01"}\n]', "invalid JSON in record 1: Invalid control character (column 10)", 3),
    ('{"a": 1}', "expected a JSON array", 1),
    ('[\n{"a": 1}\n{"a": 2}]', "expected ',' or ']' after record 0", 3),
    ('[{"a": 1}] x', "unexpected data after the end of the JSON array", 1),
])
def test_errors_name_file_and_line(tmp_path, text, msg, line):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(UserError) as e:
        list(iter_json_records(p))
    assert msg in str(e.value) and f"{p}: line {line}" in str(e.value)


def test_jsonl_error_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(UserError) as e:
        list(iter_json_records(p))
    assert f"{p}: line 3" in str(e.value) and "invalid JSON: Expecting value (column 7)" in str(e.value)
    assert e.value.hint and "fix the line" in e.value.hint


def test_long_record_across_windows(tmp_path, monkeypatch):
    import vlmdata.jsonstream as js

    monkeypatch.setattr(js, "_CHUNK", 64)  # records longer than the window
    recs = records(40)
    p = write_json(tmp_path / "a.json", recs)
    assert [r for _, r in iter_json_records(p)] == recs
    cuts = split_points(p, 3, window=64)
    assert [rec for a, b in zip(cuts, cuts[1:]) for _, rec in RecordReader(p, a, b)] == recs


def test_invalid_utf8_names_its_line(tmp_path):
    p = tmp_path / "bad.json"
    p.write_bytes(b'[\n{"a": 1},\n{"a": "\xff"}\n]')
    with pytest.raises(UserError) as e:
        list(iter_json_records(p))
    assert "not valid UTF-8" in str(e.value) and f"{p}: line 3" in str(e.value)


@pytest.mark.parametrize("encoding, name", [("utf-16", "UTF-16"), ("utf-16-le", "UTF-16"), ("utf-16-be", "UTF-16"),
                                            ("utf-32", "UTF-32")])
@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_a_utf16_file_is_named_as_such(tmp_path, encoding, name, suffix):
    """A JSON saved by a Windows tool is often UTF-16: the array reader said "expected a JSON array
    ('[' at the start)" and hinted at .jsonl, which sends the user to the wrong fix."""
    recs = [{"id": "a", "conversations": turns("q", "a")}]
    p = tmp_path / f"wide{suffix}"
    text = json.dumps(recs, indent=1) if suffix == ".json" else json.dumps(recs[0]) + "\n"
    p.write_bytes(text.encode(encoding))
    with pytest.raises(UserError) as e:
        list(iter_json_records(p))
    msg = f"{e.value} {e.value.hint}"
    assert f"not valid UTF-8: the file is {name} text" in msg and f"iconv -f {name} -t UTF-8" in msg
    assert "JSON array" not in msg


@pytest.mark.parametrize("probe", [64, 300, 1 << 16])
def test_cuts_before_records_longer_than_the_first_probe(tmp_path, monkeypatch, probe):
    """A possible cut is checked by decoding the record after it from a short read, four times
    longer while the record does not fit: records of ~0.2-3 kB give the same cuts whatever the
    first read's length, and the ranges the same records."""
    from vlmdata import jsonstream

    recs = [dict(r, conversations=turns("<image>\nq", "long " * (40 * (i % 13)))) for i, r in enumerate(records(200))]
    p = write_json(tmp_path / "a.json", recs, indent=1)
    want = split_points(p, 6)
    monkeypatch.setattr(jsonstream, "_PROBE", probe)
    cuts = split_points(p, 6)
    assert cuts == want and len(cuts) == 7
    assert [rec for a, b in zip(cuts, cuts[1:]) for _, rec in RecordReader(p, a, b)] == recs
