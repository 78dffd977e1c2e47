"""Records decoded into blend.records.Record (msgspec Structs) give exactly the rows, bad records,
lines and record_extra that the same records give decoded as plain JSON objects."""
from __future__ import annotations

import json
import random

import pyarrow as pa
import pytest

from blend_helpers import turns
from vlmdata import jsonstream
from vlmdata.blend import records as records_mod
from vlmdata.blend import scan as scan_mod


def _shapes(i: int) -> list[dict]:
    """One record of every shape the checks tell apart (kept, fixed, dropped, kept as extra)."""
    q, a = f"<image>\nQuestion {i}?", f"Answer {i}."
    img = f"coco/{i}.jpg"
    return [
        {"id": f"plain{i}", "image": img, "conversations": turns(q, a)},
        {"id": i, "image": img, "conversations": turns(q, a, "More?", "Yes.")},
        {"id": "", "image": img, "conversations": turns(q, a)},
        {"idx": f"x{i}", "image": img, "conversations": turns(q, a)},
        {"id": 1.0 * i, "image": img, "conversations": turns(q, a)},
        {"id": 2 ** 70 + i, "image": img, "conversations": turns(q, a)},
        {"id": f"t{i}", "conversations": turns(f"Plain {i}", a), "model": ""},
        # (an int id after "model": both ways write {"id", "model"} in that order; found in review)
        {"model": "m", "id": 3000 + i, "conversations": turns(f"Plain {i}", a)},
        {"id": f"tk{i}", "image": img, "conversations": turns(q, a), "task_name": "vqa"},
        {"id": f"n{i}", "image": None, "conversations": turns(f"Plain {i}", a)},
        {"id": f"l{i}", "image": [img, f"gqa/{i}.jpg"], "conversations": turns("<image>\n<image>\nq", a)},
        {"id": f"l1{i}", "image": [img], "conversations": turns(q, a)},
        {"id": f"e{i}", "image": [], "conversations": turns(f"Plain {i}", a)},
        {"id": f"end{i}", "image": img, "conversations": turns(f"Question {i}?\n<image>", a)},
        {"id": f"fix{i}", "image": img, "conversations": turns(f"Question {i}?", a)},
        {"id": f"two{i}", "image": img, "conversations": turns("<image>\n<image>\nq", a)},
        {"id": f"gpt{i}", "image": img, "conversations": turns(q, "<image> " + a)},
        {"id": f"tt{i}", "conversations": turns("<image>\nq", a)},
        {"id": f"lead{i}", "image": img, "conversations": [{"from": "gpt", "value": "hi"}] + turns(q, a)},
        {"id": f"odd{i}", "image": img, "conversations": turns(q, a, "and?")},
        {"id": f"empty{i}", "image": img, "conversations": turns(q, "")},
        {"id": f"blank{i}", "image": img, "conversations": turns(q, " \n ")},
        {"id": f"turnkey{i}", "image": img, "conversations": [dict(t, weight=1) for t in turns(q, a)]},
        {"id": f"noval{i}", "image": img, "conversations": [{"from": "human"}, {"from": "gpt", "value": a}]},
        {"id": f"role{i}", "image": img, "conversations": [{"from": "user", "value": q}, {"from": "gpt", "value": a}]},
        {"id": f"dot{i}", "image": f"./coco//{i}.jpg", "conversations": turns(q, a)},
        {"id": f"abs{i}", "image": f"/coco/{i}.jpg", "conversations": turns(q, a)},
        {"id": f"up{i}", "image": f"../{i}.jpg", "conversations": turns(q, a)},
        {"id": f"vid{i}", "video": "v.mp4", "conversations": turns(q, a)},
        {"id": f"conv{i}", "image": img, "conversations": "not a list"},
        {"id": f"noconv{i}", "image": img, "conversations": []},
        {"id": f"uni{i}", "image": img, "conversations": turns(q, "é 中文 \u2028 " + a)},
        ["not", "an", "object"],
    ]


def _write(path, seed: int, jsonl: bool = False) -> None:
    rng = random.Random(seed)
    recs: list = []
    for i in range(40):
        # runs of plain records, so some batches fit the type and others do not
        recs += [{"id": f"run{i}_{k}", "image": f"coco/r{i}_{k}.jpg", "conversations": turns("<image>\nq", "a")}
                 for k in range(rng.randint(0, 30))]
        recs.append(rng.choice(_shapes(i)))
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs) if jsonl else \
        json.dumps(recs, indent=1, ensure_ascii=False)
    path.write_text(text, encoding="utf-8")


def _scan(tmp_path, path, name: str, typed: bool, monkeypatch) -> tuple[pa.Table, list, list]:
    monkeypatch.setattr(scan_mod, "Record", records_mod.Record if typed else None)
    out = tmp_path / name
    res = scan_mod.scan_range(scan_mod.Task("src", path, "pre", out))
    tables = [pa.ipc.open_stream(f.path.read_bytes()).read_all() for f in res.rows]
    per_row = [(i, f) for rows in res.rows for i, f in zip(rows.index.tolist(), rows.fixes.tolist())]
    return pa.concat_tables(tables), [(b.index, b.line, b.id, b.reason, b.detail) for b in res.bad], per_row


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batch", [600, 4000, "jsonl"])
def test_typed_records_equal_plain_ones(tmp_path, monkeypatch, seed, batch):
    if batch != "jsonl":
        monkeypatch.setattr(jsonstream, "_BATCH", batch)
    path = tmp_path / ("mix.jsonl" if batch == "jsonl" else "mix.json")
    _write(path, seed, jsonl=batch == "jsonl")
    typed_calls = []
    real = records_mod._Checked.__init__

    def counted(self, recs, prefix, keep_text):
        real(self, recs, prefix, keep_text)
        typed_calls.extend(self.good.tolist())

    monkeypatch.setattr(records_mod._Checked, "__init__", counted)
    typed = _scan(tmp_path, path, "typed", True, monkeypatch)
    assert any(typed_calls) and not all(typed_calls)  # both the batch checks and the fallback ran
    typed_calls.clear()
    plain = _scan(tmp_path, path, "plain", False, monkeypatch)
    assert not typed_calls
    assert typed[0].equals(plain[0])
    assert typed[1] == plain[1] and len(plain[1]) > 0
    assert typed[2] == plain[2] and any(f for _, f in plain[2])  # input index and fixes of each row


@pytest.mark.parametrize("keep_text", [True, False])
def test_strict_stops_at_the_same_record_in_a_typed_batch(tmp_path, monkeypatch, keep_text):
    """--strict: records before the first bad one are kept, none after it, whether the batch was
    decoded into Records (checked as a whole, then in runs) or as plain objects."""
    recs = [{"id": f"a{i}", "image": f"coco/{i}.jpg", "conversations": turns("<image>\nq", "a")} for i in range(30)]
    recs[12]["conversations"] = turns("<image>\nq", " ")  # a blank answer
    recs[20]["conversations"] = turns("q", "<image> a")  # a token in a gpt turn
    path = tmp_path / "strict.json"
    path.write_text(json.dumps(recs), encoding="utf-8")
    got = []
    for typed in (True, False):
        monkeypatch.setattr(scan_mod, "Record", records_mod.Record if typed else None)
        res = scan_mod.scan_range(scan_mod.Task("src", path, "", tmp_path / f"s{typed}", keep_text=keep_text,
                                                stop_on_bad=True))
        rows = [i for f in res.rows for i in f.index.tolist()]
        got.append((rows, [(b.index, b.reason) for b in res.bad], res.n_read))
    assert got[0] == got[1]
    assert got[0][0] == list(range(12)) and got[0][1][0][0] == 12 and got[0][2] == 13


def _random_record(rng: random.Random, i: int) -> dict:
    """A record that fits the Record type, with random turn counts, roles, values (blank, tokens
    anywhere, split tokens), ids (empty, repeated, numbers), image paths (odd ones too) and models."""
    bits = ["", " ", "\n", "<image>", "<image>\nq", "q <image>", "a", "é中", "\u2028", "\x1c", "<im", "age>"]
    conv = []
    for k in range(rng.choice([0, 1, 2, 2, 2, 3, 4, 6])):
        role = rng.choice(["human", "gpt"]) if rng.random() < 0.1 else ("human" if k % 2 == 0 else "gpt")
        value = rng.choice(bits) + rng.choice(["", "a", "<image>", " "]) if rng.random() < 0.5 else \
            ("<image>\nQ" if k == 0 else "A")
        conv.append({"from": role, "value": value})
    rec: dict = {"id": i if rng.random() < 0.1 else rng.choice([f"id{i}", f"id{i}", "", "dup"]), "conversations": conv}
    if rng.random() < 0.8:
        rec["image"] = rng.choice([f"c/{i}.jpg", f"c/{i}.jpg", "./c/x.jpg", "/abs.jpg", "a//b.jpg", "c:x", "", "a\n/b"])
    if rng.random() < 0.1:
        rec["model"] = rng.choice(["", "m", 'q"'])
    return rec


@pytest.mark.parametrize("seed", range(30))
def test_random_typed_batches_equal_plain_records(tmp_path, monkeypatch, seed):
    rng = random.Random(seed)
    path = tmp_path / "r.json"
    path.write_text(json.dumps([_random_record(rng, i) for i in range(rng.randint(1, 300))], ensure_ascii=False),
                    encoding="utf-8")
    typed = _scan(tmp_path, path, "typed", True, monkeypatch)
    plain = _scan(tmp_path, path, "plain", False, monkeypatch)
    assert typed[0].equals(plain[0]) and typed[1] == plain[1] and typed[2] == plain[2]
