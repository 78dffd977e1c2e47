"""A recipe's `weight` is what the blend writes: round(kept x weight) rows per source, seeded, with the
counts in blend.json and the mix in `stats`."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from blend_helpers import Shape, make, rows, touch_images, write_json
from vlmdata.blend.weights import copies


def _setup(tree, tmp_path: Path, weights: dict[str, str], seed: int = 0) -> Path:
    sizes = {"a": 40, "b": 40, "c": 30, "d": 7}
    entries = ""
    for name, n in sizes.items():
        made = make(Shape(["coco/train2017"], n=n, ids="str"), name)
        recs = made.records
        if name == "c":  # one record whose image is missing: dropped before the weight applies
            recs = recs + [{"id": "c_missing", "image": "coco/train2017/nowhere.jpg",
                            "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]}]
        write_json(tree.root.path / f"{name}.json", recs)
        touch_images(tree.view("llava"), made.images)
        entries += f'\n[[entries]]\nname = "{name}"\npath = "{name}.json"\n' + (
            f"weight = {weights[name]}\n" if name in weights else "")
    recipe = tmp_path / f"weighted-{seed}.toml"
    recipe.write_text(f'name = "weighted"\ntitle = "t"\nlayout = "llava"\nseed = {seed}\n{entries}')
    return recipe


def test_counts_follow_the_weights(tree, tmp_path, cli):
    recipe = _setup(tree, tmp_path, {"a": "2.0", "b": "0.25", "c": "1.5"})
    res = tree.blend(str(recipe), out=tmp_path / "out")
    meta = json.loads((res.out / "blend.json").read_text())
    c = meta["counts"]
    assert (c["a"]["kept"], c["a"]["weight"], c["a"]["rows"]) == (40, 2.0, 80)
    assert (c["b"]["kept"], c["b"]["rows"]) == (40, 10)
    assert (c["c"]["kept"], c["c"]["rows"]) == (30, 45)  # the missing-image record is not counted, nor repeated
    assert (c["d"]["weight"], c["d"]["rows"]) == (1.0, 7)
    assert meta["totals"]["rows"] == res.rows == 142
    assert {k: v["share"] for k, v in meta["mix"].items()} == {"a": round(80 / 142, 6), "b": round(10 / 142, 6),
                                                              "c": round(45 / 142, 6), "d": round(7 / 142, 6)}
    got = rows(res.out)
    assert len(got) == 142 and len({r["id"] for r in got}) == 142
    per = Counter(r["source"] for r in got)
    assert per == {"a": 80, "b": 10, "c": 45, "d": 7}
    # a: every record twice, the copy named <id>#rep2 and equal to the original otherwise
    a = {r["id"]: r for r in got if r["source"] == "a"}
    for i in range(40):
        one, two = a[f"a_{i:06d}"], a[f"a_{i:06d}#rep2"]
        assert {**one, "id": None} == {**two, "id": None}
    # c: 15 of its 30 records twice; b: 10 distinct records of its 40
    assert sum(r["id"].endswith("#rep2") for r in got if r["source"] == "c") == 15
    assert len({r["id"] for r in got if r["source"] == "b"}) == 10 and not any("#rep" in r["id"] for r in got
                                                                                 if r["source"] == "b")
    assert "c_missing" in (res.out / "dropped.jsonl").read_text()
    # stats shows the mix as blended
    st = cli("stats", str(res.out), "--json")
    assert st.code == 0, st.err
    mix = {s["source"]: (s["rows"], s["weight"], s["kept"]) for s in json.loads(st.out)["sources"]}
    assert mix == {"a": (80, 2.0, 40), "b": (10, 0.25, 40), "c": (45, 1.5, 30), "d": (7, 1.0, 7)}
    text = cli("stats", str(res.out))
    assert "56.3%" in text.out  # a's share, 80 / 142


def test_weights_are_seeded_and_deterministic(tree, tmp_path):
    recipe = _setup(tree, tmp_path, {"b": "0.25", "c": "1.5"})
    one = rows(tree.blend(str(recipe), out=tmp_path / "one").out)
    two = rows(tree.blend(str(recipe), out=tmp_path / "two").out)
    assert one == two
    other = _setup(tree, tmp_path, {"b": "0.25", "c": "1.5"}, seed=1)
    three = rows(tree.blend(str(other), out=tmp_path / "three").out)
    pick = lambda rs: {r["id"] for r in rs if r["source"] in "bc"}  # noqa: E731
    assert pick(one) != pick(three) and len(pick(one)) == len(pick(three))


def test_the_report_counts_what_a_blend_would_write(tree, tmp_path):
    recipe = _setup(tree, tmp_path, {"a": "3"})
    rep = tree.report(str(recipe))
    assert rep["totals"]["would_keep"] == 117 and rep["totals"]["would_write"] == 197
    assert rep["mix"]["a"] == {"weight": 3.0, "kept": 40, "rows": 120, "share": round(120 / 197, 6)}


def test_copies_rounding():
    assert copies(10, None, 0, "x") is None and copies(10, 1.0, 0, "x") is None
    assert copies(10, 2.0, 0, "x").tolist() == [2] * 10
    c = copies(10, 0.35, 0, "x")
    assert sorted(c.tolist()) == [0] * 6 + [1] * 4  # round(3.5) = 4 (banker's rounding gives 4)
    c = copies(7, 1.3, 5, "y")
    assert c.sum() == 9 and set(c.tolist()) == {1, 2}
    assert (copies(7, 1.3, 5, "y") == c).all() and not (copies(70, 1.3, 6, "y") == copies(70, 1.3, 5, "y")).all()


def test_a_weight_of_nan_or_inf_is_a_recipe_error(tree, tmp_path, cli):
    """TOML allows `nan` and `inf`; either used to end in a ValueError/OverflowError traceback
    (round(n * weight)) after every input was read."""
    for bad in ("nan", "inf", "+inf"):
        recipe = _setup(tree, tmp_path, {"a": bad})
        res = cli("blend", str(recipe), "--root", str(tree.root.path), "--out", str(tmp_path / "out"))
        assert res.code == 2, (bad, res.err)
        assert "Traceback" not in res.err and "entries[0].weight" in res.err and "finite number > 0" in res.err
        assert not (tmp_path / "out").exists()


def test_stats_lists_a_source_whose_weight_wrote_no_row(tree, tmp_path, cli):
    """A weight that rounds a source's rows to 0 (d: 7 records x 0.01) left it out of `stats`'
    per-source table, as if the recipe had no such entry; blend.json's mix has it with rows 0."""
    recipe = _setup(tree, tmp_path, {"d": "0.01"})
    res = tree.blend(str(recipe), out=tmp_path / "out")
    st = cli("stats", str(res.out), "--json")
    assert st.code == 0, st.err
    got = {s["source"]: (s["rows"], s["kept"], s["weight"], s["share"]) for s in json.loads(st.out)["sources"]}
    assert list(got) == ["a", "b", "c", "d"] and got["d"] == (0, 7, 0.01, 0.0)
    assert "    d " in cli("stats", str(res.out)).out
