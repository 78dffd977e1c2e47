"""Values the streaming reader cannot take, and a fault early in a large file: each an error naming
the file and line (exit 2 from the CLI), said without holding the rest of the file in memory (found
in review: nesting deeper than Python reads and integers over 4,300 digits ended in a traceback; a
syntax error grew the text decoded at once, four times each try, to the end of the file)."""
from __future__ import annotations

import json

import pytest

from blend_helpers import turns
import vlmdata.jsonstream as js
from vlmdata.errors import UserError
from vlmdata.jsonstream import iter_json_records


def record(i: int, **extra) -> dict:
    return {"id": i, "image": f"a/{i}.jpg", "conversations": turns(f"<image>\nq{i}", f"a{i}"), **extra}


def write_array(path, recs: list, bad_at: int, bad_value: str) -> int:
    """``recs`` one per line, with ``bad_value`` (raw JSON text) as record ``bad_at``'s "meta"; the line it is on."""
    lines = ["["]
    for i, r in enumerate(recs):
        text = json.dumps(r)
        if i == bad_at:
            text = text[:-1] + f', "meta": {bad_value}}}'
        lines.append(text + ("," if i < len(recs) - 1 else ""))
    lines.append("]")
    path.write_text("\n".join(lines))
    return bad_at + 2


@pytest.mark.parametrize("value, words", [
    ("[" * 5000 + "]" * 5000, "nested deeper than Python can read"),
    ("1" * 5000, "Exceeds the limit (4300 digits)"),
])
def test_a_value_python_cannot_read_is_an_error_at_its_line(tmp_path, value, words):
    p = tmp_path / "a.json"
    line = write_array(p, [record(i) for i in range(40)], 17, value)
    with pytest.raises(UserError) as e:
        list(iter_json_records(p))
    assert words in str(e.value) and f"{p}: line {line}" in str(e.value) and "record 17" in str(e.value)
    q = tmp_path / "a.jsonl"
    q.write_text("\n".join(json.dumps(record(i)) if i != 5 else json.dumps(record(i))[:-1] + f', "m": {value}}}'
                           for i in range(9)))
    with pytest.raises(UserError) as e:
        list(iter_json_records(q))
    assert words in str(e.value) and f"{q}: line 6" in str(e.value)


def test_a_syntax_error_early_in_a_large_file_is_said_without_reading_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(js, "_SLOW_START", 1024)
    asked: list[int] = []
    new_piece = js.RecordReader._new_piece

    def spy(self, want):
        asked.append(want)
        return new_piece(self, want)

    monkeypatch.setattr(js.RecordReader, "_new_piece", spy)
    p = tmp_path / "a.json"
    line = write_array(p, [record(i, pad="x" * 200) for i in range(2000)], 3, '{"a": 1,, "b": 2}')
    assert p.stat().st_size > 400 * 1024
    with pytest.raises(UserError) as e:
        list(iter_json_records(p))
    assert f"{p}: line {line}" in str(e.value) and "invalid JSON in record 3" in str(e.value)
    assert max(asked) == 1024  # the first piece said it: none grown towards the file's end


def test_a_record_longer_than_a_piece_still_grows_it(tmp_path, monkeypatch):
    """The other side: a value that runs past the piece (a long string) is read whole, as before."""
    monkeypatch.setattr(js, "_SLOW_START", 1024)
    recs = [record(0), record(1, note="y" * 50_000, num=float("nan")), record(2)]  # (NaN: the slow way)
    p = tmp_path / "a.json"
    p.write_text(json.dumps(recs))
    got = [r for _, r in iter_json_records(p)]
    assert [r["id"] for r in got] == [0, 1, 2] and got[1]["note"] == "y" * 50_000
