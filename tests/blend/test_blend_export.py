"""`vlmdata export` is lossless: an unchanged blend exports as its inputs, record for record (key order
aside): unknown keys, the ids' own types, idx-only and id-less records, one-path lists, null images,
and ids the blend renamed to keep them unique."""
from __future__ import annotations

import json

from blend_helpers import touch_images, write_json


def _q(n: int = 1) -> str:
    return "<image>\n" * n + "What is it?"


def _records(tag: str) -> list[dict]:
    a = [{"from": "gpt", "value": "A thing."}]
    return [
        {"id": f"{tag}-1", "image": f"coco/train2017/{tag}1.jpg", "conversations": [{"from": "human", "value": _q()}] + a},
        {"id": 7, "image": f"coco/train2017/{tag}2.jpg", "conversations": [{"from": "human", "value": _q()}] + a,
         "model": ""},
        {"id": "shared", "image": [f"coco/train2017/{tag}3.jpg"], "conversations": [{"from": "human", "value": _q()}] + a,
         "task_name": "VQA-E", "meta": {"nested": [1, 2.5, None], "ü": "ß"}},
        {"idx": f"{tag}heR0vZB", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        {"image": [f"coco/train2017/{tag}4.jpg", f"coco/train2017/{tag}5.jpg"],
         "conversations": [{"from": "human", "value": _q(2)}] + a},
        {"id": None, "image": None, "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]},
        {"id": "", "image": [], "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}],
         "url": "http://x/y.jpg"},
        {"id": 3.0, "conversations": [{"from": "human", "value": "z"}, {"from": "gpt", "value": "w"}]},
    ]


def test_export_of_an_unchanged_blend_equals_its_inputs(tree, cli, tmp_path):
    view = tree.view("llava")
    inputs = {"one": _records("a"), "two": _records("b")}  # "shared" and 7 occur in both: renamed in the blend
    entries = ""
    for name, recs in inputs.items():
        write_json(tree.root.path / f"{name}.json", recs)
        touch_images(view, [p for r in recs for p in ([r["image"]] if isinstance(r.get("image"), str) else
                                                      (r.get("image") or []))])
        entries += f'\n[[entries]]\nname = "{name}"\npath = "{name}.json"\n'
    recipe = tmp_path / "mix.toml"
    recipe.write_text(f'name = "mix"\ntitle = "t"\nlayout = "llava"\n{entries}')
    res = tree.blend(str(recipe), out=tmp_path / "b1")
    assert res.meta["counts"]["two"]["ids_renamed"] >= 2  # the blend's own ids are unique
    out = tmp_path / "e1.json"
    assert cli("export", res.out, out).code == 0
    expected = inputs["one"] + inputs["two"]
    got = json.loads(out.read_text())
    assert got == expected  # dict equality: key order aside
    assert [type(r.get("id")) for r in got] == [type(r.get("id")) for r in expected]
    # export(blend(export)) == export
    again = tmp_path / "again.toml"
    again.write_text(f'name = "again"\ntitle = "t"\nlayout = "llava"\n[[entries]]\nname = "x"\npath = "{out}"\n')
    res2 = tree.blend(str(again), out=tmp_path / "b2")
    out2 = tmp_path / "e2.json"
    assert cli("export", res2.out, out2).code == 0
    assert json.loads(out2.read_text()) == expected
    # the blend's unique ids on request
    ids = tmp_path / "ids.jsonl"
    assert cli("export", res.out, ids, "--format", "llava-jsonl", "--blend-ids").code == 0
    rows = [json.loads(line) for line in ids.read_text().splitlines()]
    assert len({r["id"] for r in rows}) == len(rows) == len(expected)
    assert all(isinstance(r["id"], str) for r in rows)


def test_a_common_record_costs_no_extra(tree, tmp_path):
    import datasets

    view = tree.view("llava")
    recs = [{"id": f"r{i}", "image": f"coco/train2017/{i}.jpg",
             "conversations": [{"from": "human", "value": _q()}, {"from": "gpt", "value": "ok"}]} for i in range(5)]
    recs.append({"id": "t", "conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]})
    write_json(tree.root.path / "plain.json", recs)
    touch_images(view, [r["image"] for r in recs if "image" in r])
    recipe = tmp_path / "plain.toml"
    recipe.write_text('name = "plain"\ntitle = "t"\nlayout = "llava"\n[[entries]]\nname = "p"\npath = "plain.json"\n')
    res = tree.blend(str(recipe), out=tmp_path / "o")
    assert datasets.load_from_disk(str(res.out))["record_extra"] == [None] * 6
