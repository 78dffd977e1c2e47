"""A record whose text holds a lone surrogate (JSON's "\\ud800" without its low half, e.g. an emoji
cut in scraped chat text) is dropped with its reason, in a JSON array and in JSONL, and --strict
names it: the blend used to stop with a UnicodeEncodeError traceback from Arrow (or from writing
dropped.jsonl, for a surrogate in an id)."""
from __future__ import annotations

import json

import pytest

from blend_helpers import rows, touch_images, turns
from vlmdata.blend import validate
from vlmdata.errors import UserError

_IMG = "coco/train2017/a.jpg"
_RECORDS = [
    {"id": "ok", "image": _IMG, "conversations": turns("<image>\nhi", "yo")},
    {"id": "cut", "image": _IMG, "conversations": turns("<image>\nhi", "yo \ud83d")},
    {"id": "pair", "image": _IMG, "conversations": turns("<image>\nhi", "yo \ud83d\ude00")},  # a whole emoji: kept
    {"id": "bad-id \udc00", "conversations": turns("hi", "yo")},
    {"id": "extra", "model": "\ud800", "conversations": turns("hi", "yo")},
]


def _recipe(tree, tmp_path, jsonl: bool):
    name = "in.jsonl" if jsonl else "in.json"
    text = "".join(json.dumps(r) + "\n" for r in _RECORDS) if jsonl else json.dumps(_RECORDS, indent=1)
    tree.root.path.mkdir(parents=True, exist_ok=True)
    (tree.root.path / name).write_text(text, encoding="ascii")  # (json.dumps writes the surrogates as escapes)
    touch_images(tree.view("llava"), [_IMG])
    recipe = tmp_path / "u.toml"
    recipe.write_text(f'name = "u"\ntitle = "t"\nlayout = "llava"\n[[entries]]\nname = "e"\npath = "{name}"\n')
    return recipe


@pytest.mark.parametrize("jsonl", [False, True], ids=["json", "jsonl"])
def test_a_lone_surrogate_drops_its_record(tree, tmp_path, jsonl):
    res = tree.blend(str(_recipe(tree, tmp_path, jsonl)), out=tmp_path / "out")
    assert [(r["id"], r["conversations"][1]["value"]) for r in rows(res.out)] == [("ok", "yo"), ("pair", "yo \U0001F600")]
    dropped = [json.loads(line) for line in (res.out / "dropped.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(d["index"], d["reason"]) for d in dropped] == [(i, validate.NOT_UNICODE) for i in (1, 3, 4)]
    assert dropped[0]["id"] == "cut" and "'value'" in dropped[0]["detail"] and "\\ud83d" in dropped[0]["detail"]
    assert dropped[1]["id"] == "bad-id \\udc00"
    if jsonl:
        assert [d["line"] for d in dropped] == [2, 4, 5]


def test_strict_names_the_record(tree, tmp_path):
    with pytest.raises(UserError) as e:
        tree.blend(str(_recipe(tree, tmp_path, True)), out=tmp_path / "out", strict=True)
    assert "record 1 (line 2), id 'cut'" in str(e.value) and validate.NOT_UNICODE in str(e.value)
