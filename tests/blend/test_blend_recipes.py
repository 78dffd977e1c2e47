"""Every shipped recipe blends a synthetic tree shaped like its real inputs."""
from __future__ import annotations

import json

import pyarrow as pa
import pytest

from blend_helpers import rows
from vlmdata.contract import arrow_schema
from vlmdata.manifest import load_catalog

RECIPES = sorted(load_catalog().blends)


def test_every_recipe_of_the_brief_is_shipped(cli):
    names = {"llava-558k", "llava-665k", "sharegpt4v-pt", "sharegpt4v-665k", "sharegpt4v-cap100k", "allava-caption",
             "allava-instruct", "vflan", "convllava-stage1", "convllava-stage2", "convllava-stage3",
             "moe-llava-stage1", "moe-llava-stage2", "moe-llava-stage3"}
    assert names <= set(RECIPES)
    listed = cli("list", "--json").json()
    assert names <= {b["name"] for b in listed["blends"]}


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_blends(tree, recipe):
    made = tree.place_recipe(recipe)
    res = tree.blend(recipe)
    got = rows(res.out)
    expect = sum(m.kept for m in made.values())
    assert len(got) == expect == res.rows
    # exactly the DESIGN.md columns, in order
    import datasets

    ds = datasets.load_from_disk(str(res.out))
    assert ds.data.schema.remove_metadata() == arrow_schema(extra=True)
    # sources in recipe order, each with its records in file order
    order = [r["source"] for r in got]
    assert order == [name for name, m in made.items() for _ in range(m.kept)]
    assert len({r["id"] for r in got}) == len(got)
    root = tree.view(tree.catalog.blend(recipe).layout)
    for r in got:
        assert r["n_images"] == len(r["images"])
        assert sum(t["value"].count("<image>") for t in r["conversations"]) == r["n_images"]
        assert all((root / p).is_file() for p in r["images"])
        assert r["text_chars"] == sum(len(t["value"]) for t in r["conversations"])
        assert [t["from"] for t in r["conversations"]] == ["human", "gpt"] * (len(r["conversations"]) // 2)
    meta = json.loads((res.out / "blend.json").read_text())
    assert meta["image_root"] == str(root)
    for name, m in made.items():
        c = meta["counts"][name]
        assert c["read"] == len(m.records)
        assert c["kept"] == m.kept
        assert c["dropped"] == m.dropped
    assert all(len(i["sha256"]) == 64 and i["size"] > 0 for i in meta["inputs"])


def test_moe_llava_shapes(tree):
    """List images, video records dropped, ids absent (source:index) or all the same (renamed)."""
    tree.place_recipe("moe-llava-stage2")
    res = tree.blend("moe-llava-stage2")
    got = rows(res.out)
    multi = [r for r in got if r["n_images"] == 2]
    assert multi and all(r["conversations"][0]["value"].startswith("<image>\n<image>\n") for r in multi)
    assert {r["id"] for r in got if r["source"] == "lrv-331k"} == {f"lrv-331k:{i}" for i in range(6)}
    text = [r for r in got if r["source"] == "nlp"]
    assert len(text) == 4 and all(r["images"] == [] for r in text)
    dropped = [json.loads(x) for x in (res.out / "dropped.jsonl").read_text().splitlines()]
    assert [d["reason"] for d in dropped] == ["video not supported"] * 2
    assert {d["source"] for d in dropped} == {"mimicit-la-256k"}


def test_colliding_ids_made_unique_with_the_source(tree):
    tree.place_recipe("moe-llava-stage3")
    got = rows(tree.blend("moe-llava-stage3").out)
    ft = [r["id"] for r in got if r["source"] == "llava-ft-665k"]
    # every record of this input has id "0": renamed <source>:<id>#<index>
    assert ft == [f"llava-ft-665k:0#{i}" for i in range(len(ft))]


def test_allava_idx_and_prefix(tree):
    from blend_helpers import Shape

    tree.place("allava:allava_laion/ALLaVA-Caption-LAION-4V.json", Shape(["allava_laion/images"], ids="idx", ext="jpeg"))
    tree.place_recipe("allava-caption")
    got = rows(tree.blend("allava-caption").out)
    laion = [r for r in got if r["source"] == "allava-laion-caption"]
    assert laion[0]["id"] == "ALLaVA-Caption-LAION-4V0"  # the idx value when there is no id
    assert all(r["images"][0].startswith("allava/allava_laion/images/") for r in laion)
    vflan = [r for r in got if r["source"] == "allava-vflan-caption"]
    assert all(r["images"][0].startswith("allava/allava_vflan/images/images_191task_1k/") for r in vflan)


def test_int_ids_become_strings_and_text_only_kept(tree):
    made = tree.place_recipe("llava-665k")["llava-mix665k"]
    got = rows(tree.blend("llava-665k").out)
    assert [r["id"] for r in got] == [str(i) for i in range(len(made.records))]
    assert sum(1 for r in got if r["n_images"] == 0) == 3
    # a single image with no <image> token gets "<image>\n" prepended (record 2 of the shape)
    assert got[2]["conversations"][0]["value"] == "<image>\nQuestion 2 about llava_v1_5_mix665k?"
    # <image> at the end of the turn is kept where it is
    assert got[1]["conversations"][0]["value"].endswith("\n<image>")
    meta = json.loads((tree.root.path / "blends" / "llava-665k" / "blend.json").read_text())
    assert meta["counts"]["llava-mix665k"]["fixed"] == {"<image> added to the first human turn": 4}


def test_pretrain_prefix_resolves_under_llava_pretrain(tree):
    tree.place_recipe("llava-558k")
    got = rows(tree.blend("llava-558k").out)
    assert got[0]["images"] == ["LLaVA-Pretrain/images/00453/blip_laion_cc_sbu_558k_0.jpg"]
    assert got[0]["conversations"][0]["value"].endswith("\n<image>")  # as in LCS-558K: token at the end


def test_arrow_types(tree):
    tree.place_recipe("vflan")
    import datasets

    ds = datasets.load_from_disk(str(tree.blend("vflan").out))
    f = ds.features
    assert str(f["conversations"]) == "List({'from': Value('string'), 'value': Value('string')})"
    assert ds.data.schema.field("n_images").type == pa.int32()
