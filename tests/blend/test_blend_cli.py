"""The blend, report, export and stats commands: exit codes, JSON, round trip."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from blend_helpers import Shape, rows, touch_images, turns, write_json

MIX = "llava_instruct:llava_v1_5_mix665k.json"


def test_blend_json_and_quiet(tree, cli):
    tree.place_recipe("llava-665k")
    r = cli("--root", tree.root.path, "blend", "llava-665k", "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert out["out"] == str(tree.root.path / "blends" / "llava-665k")
    assert out["totals"]["rows"] == 15 and out["counts"]["llava-mix665k"]["kept"] == 15
    assert "parse" not in r.err and "write" not in r.err  # no progress bars under --json


def test_blend_text_summary(tree, cli, tmp_path):
    tree.place_recipe("moe-llava-stage2")
    r = cli("--root", tree.root.path, "blend", "moe-llava-stage2", "--out", tmp_path / "o", "--max-drop", "30")
    assert r.code == 0, r.err
    assert "dropped 2 (video not supported)" in r.out and str(tmp_path / "o") in r.out


def test_report(tree, cli):
    made = tree.place_recipe("llava-665k")["llava-mix665k"]
    view = tree.view("llava")
    (view / made.images[0]).unlink()
    r = cli("--root", tree.root.path, "report", "llava-665k", "--json")
    assert r.code == 0, r.err
    rep = r.json()
    assert rep["totals"]["images_needed"] == 12 and rep["totals"]["images_missing"] == 1
    assert rep["totals"]["would_drop"] == 1 and rep["totals"]["would_keep"] == 14
    coco = next(f for f in rep["folders"] if f["folder"] == "coco/train2017")
    assert coco == {"folder": "coco/train2017", "needed": 2, "present": 1, "missing": 1, "corrupt": 0}
    src = rep["sources"][0]
    assert src["dropped"] == {"missing image": 1}
    assert src["dropped_examples"][0]["detail"] == made.images[0]
    assert rep["missing_examples"] == [made.images[0]]
    assert not (tree.root.path / "blends").exists()  # the report writes no dataset
    text = cli("--root", tree.root.path, "report", "llava-665k", "--deep")
    assert text.code == 0 and "coco/train2017" in text.out and made.images[0] in text.out


def test_export_round_trip_is_lossless(tree, cli, tmp_path):
    tree.place_recipe("moe-llava-stage2")
    assert cli("--root", tree.root.path, "blend", "moe-llava-stage2", "--max-drop", "30").code == 0
    first = tmp_path / "first.json"
    r = cli("export", tree.root.path / "blends" / "moe-llava-stage2", "--format", "llava-json", first, "--json")
    assert r.code == 0, r.err
    assert r.json()["records"] == 28
    recs = json.loads(first.read_text())
    assert not any("id" in x for x in recs)  # these MoE-LLaVA JSONs have no ids: the export has none either
    blend_ids = tmp_path / "ids.json"
    assert cli("export", tree.root.path / "blends" / "moe-llava-stage2", blend_ids, "--blend-ids").code == 0
    assert all("image" not in x for x in json.loads(blend_ids.read_text()) if x["id"].startswith("nlp:"))
    assert any(isinstance(x.get("image"), list) for x in recs) and any(isinstance(x.get("image"), str) for x in recs)
    # blend the export again (a path entry), export that: the same bytes
    recipe = tmp_path / "again.toml"
    recipe.write_text(f'name = "again"\ntitle = "t"\nlayout = "moe-llava"\n[[entries]]\nname = "x"\npath = "{first}"\n')
    img = tree.view("moe-llava")
    assert cli("--root", tree.root.path, "blend", recipe, "--image-root", img, "--out", tmp_path / "again").code == 0
    second = tmp_path / "second.json"
    assert cli("export", tmp_path / "again", second).code == 0
    assert second.read_bytes() == first.read_bytes()
    jl = tmp_path / "x.jsonl"
    assert cli("export", tmp_path / "again", jl, "--format", "llava-jsonl").code == 0
    assert [json.loads(line) for line in jl.read_text().splitlines()] == recs


def test_stats(tree, cli, tmp_path):
    tree.place_recipe("llava-665k")
    cli("--root", tree.root.path, "blend", "llava-665k")
    out = tree.root.path / "blends" / "llava-665k"
    r = cli("stats", out, "--json")
    assert r.code == 0, r.err
    st = r.json()
    assert st["rows"] == 15 and st["text_only"] == 3 and st["text_only_share"] == 0.2
    assert st["images_per_record"] == {"0": 3, "1": 12}
    assert st["sources"][0]["source"] == "llava-mix665k"
    assert sum(h["rows"] for h in st["text_chars"]["histogram"]) == 15
    png = tmp_path / "s.png"
    text = cli("stats", out, "--png", png)
    assert text.code == 0 and "text length" in text.out and png.stat().st_size > 1000


def test_user_errors_exit_2(tree, cli, tmp_path):
    r = cli("--root", tree.root.path, "blend", "llava-66k")
    assert r.code == 2 and "did you mean llava-665k" in r.err
    r = cli("--root", tree.root.path, "blend", "llava-665k")
    assert r.code == 2 and "vlmdata fetch llava_instruct:llava_v1_5_mix665k.json" in r.err
    tree.place_recipe("llava-665k")
    r = cli("--root", tree.root.path, "blend", "llava-665k", "--missing", "sometimes")
    assert r.code == 2 and "'sometimes' is not one of 'drop', 'fail', 'keep'" in r.err
    r = cli("export", tmp_path, tmp_path / "x.json")
    assert r.code == 2 and "not a dataset folder" in r.err
    r = cli("stats", tmp_path / "nope")
    assert r.code == 2


def test_strict_and_missing_fail_exit_codes(tree, cli):
    write_json(tree.root.store_path("LLaVA-Instruct-150K/llava_v1_5_mix665k.json"), [
        {"id": "a", "image": "coco/1.jpg", "conversations": turns("<image>\nq", "a")},
        {"id": "b", "image": "coco/2.jpg", "conversations": turns("<image>\n<image>\nq", "a")},
    ])
    touch_images(tree.view("llava"), ["coco/1.jpg", "coco/2.jpg"])
    r = cli("--root", tree.root.path, "blend", "llava-665k", "--strict")
    assert r.code == 2 and "record 1" in r.err and "id 'b'" in r.err and "<image> count" in r.err
    (tree.view("llava") / "coco" / "1.jpg").unlink()
    r = cli("--root", tree.root.path, "blend", "llava-665k", "--missing", "fail")
    assert r.code == 1 and "coco/1.jpg" in r.err
    r = cli("--root", tree.root.path, "blend", "llava-665k", "--max-drop", "100")
    assert r.code == 0 and "dropped 1 (missing image)" in r.out


def test_info_shows_a_recipe(cli):
    r = cli("info", "convllava-stage2", "--json")
    assert r.code == 0
    assert [e["name"] for e in r.json()["entries"]][-1] == "vflan-191task-1k"


def test_user_recipe_by_path(tree, cli, tmp_path):
    tree.place(MIX, Shape(["coco/train2017"], n=4))
    tree.place_recipe("llava-665k")
    p = tmp_path / "my-mix.toml"
    p.write_text('name = "my-mix"\ntitle = "t"\nlayout = "llava"\n[[entries]]\nname = "m"\n'
                 'dataset = "llava_instruct"\nfile = "llava_v1_5_mix665k.json"\nsample = "first:2"\n')
    r = cli("--root", tree.root.path, "blend", p, "--json")
    assert r.code == 0, r.err
    assert len(rows(Path(r.json()["out"]))) == 2 and r.json()["out"].endswith("blends/my-mix")


def test_a_blend_the_disk_refuses_names_its_output_and_leaves_nothing(tree, tmp_path):
    # The process's file size limit stands in for a full disk (no root here to make one): Arrow's
    # writes fail as they would on one, and name no file; the message names the output instead.
    import os
    import subprocess
    import sys

    from blend_helpers import REPO_ROOT
    from tests.limits import with_file_size_limit

    tree.place_recipe("llava-665k")
    out = tmp_path / "outs" / "o"
    argv = [sys.executable, "-m", "vlmdata.cli.app", "--root", tree.root.path, "blend", "llava-665k", "--out", out]
    r = subprocess.run(with_file_size_limit(4096, argv), env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert f"error: {out}: file too large" in r.stderr and "ulimit -f" in r.stderr and "Traceback" not in r.stderr
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no output, no temporary folder


def test_a_file_of_ones_own_in_an_earlier_blend_is_not_deleted(tree, cli):
    """An earlier blend's folder is replaced whole: a file put in it (notes, a script) went with it
    without a word. The blend's own files, `datasets`' map caches and vlmtrain's length cache go."""
    tree.place_recipe("llava-665k")
    out = tree.root.path / "blends" / "llava-665k"
    assert cli("--root", tree.root.path, "blend", "llava-665k").code == 0
    (out / "cache-0123abcd.arrow").write_bytes(b"")
    (out / ".vlmtrain-cache").mkdir()
    (out / "notes.md").write_text("which checkpoint used this")
    r = cli("--root", tree.root.path, "blend", "llava-665k")
    assert r.code == 2 and "is an earlier blend but also holds other files (notes.md)" in r.err
    assert (out / "notes.md").read_text() == "which checkpoint used this" and (out / "blend.json").is_file()
    (out / "notes.md").unlink()
    r = cli("--root", tree.root.path, "blend", "llava-665k")
    assert r.code == 0, r.err
    assert not (out / ".vlmtrain-cache").exists() and not (out / "cache-0123abcd.arrow").exists()


def test_info_of_a_recipe_shows_its_image_prefix_and_description(cli):
    """docs/recipes.md: `vlmdata info NAME` prints what the page says of a recipe; the text left out
    each entry's image_prefix (where its image paths are looked up) and the description."""
    r = cli("info", "allava-caption")
    assert r.code == 0, r.err
    assert "allava:allava_laion/ALLaVA-Caption-LAION-4V.json  sample=all  images under allava" in r.out
    assert "hence image_prefix" in r.out and "follows: FreedomIntelligence/ALLaVA" in r.out
    j = cli("info", "allava-caption", "--json").json()
    assert j["stage"] == "pretrain" and "hence image_prefix" in j["description"] and j["references"]


@pytest.mark.parametrize("name, text, said", [
    ("m.jsonl", "", "holds no records"),
    ("m.jsonl", "\n\n", "holds no records"),
    ("m.json", "[]\n", "holds no records"),
    ("m.json", "", "the file is empty (0 bytes)"),
])
def test_a_source_file_without_records_exits_2_and_writes_nothing(tree, cli, tmp_path, name, text, said):
    src = tmp_path / name
    src.write_text(text)
    (tmp_path / "imgs").mkdir()
    p = tmp_path / "m2.toml"
    p.write_text(f'name = "m2"\ntitle = "t"\nlayout = "llava"\n[[entries]]\nname = "m2"\npath = "{src}"\n')
    out = tmp_path / "outs" / "o"
    r = cli("--root", tree.root.path, "blend", p, "--image-root", tmp_path / "imgs", "--out", out)
    assert r.code == 2 and said in r.err and str(src) in r.err and "0 records" not in r.out
    assert ("drop the entry from the recipe" in r.err) if said == "holds no records" else ("export it again" in r.err)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_export_into_the_blend_folder_suggests_a_file_beside_it(tree, cli, tmp_path):
    tree.place_recipe("llava-665k")
    assert cli("--root", tree.root.path, "blend", "llava-665k").code == 0
    blend = tree.root.path / "blends" / "llava-665k"
    r = cli("export", blend, blend)
    assert r.code == 2 and f"e.g. {tree.root.path / 'blends' / 'llava-665k.json'}" in r.err
    (tmp_path / "exports").mkdir()
    r = cli("export", blend, tmp_path / "exports")
    assert r.code == 2 and f"e.g. {tmp_path / 'exports' / 'llava-665k.json'}" in r.err


def _read_only(monkeypatch, module, name):
    """``module.name`` fails as a write onto a read-only mount does (the path is its second argument)."""
    import errno
    import os

    def refuse(_, path, *a, **kw):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(module, name, refuse)


def test_a_refused_output_names_its_own_option(tree, cli, tmp_path, monkeypatch):
    from vlmdata.blend import export, stats

    tree.place_recipe("llava-665k")
    assert cli("--root", tree.root.path, "blend", "llava-665k").code == 0
    blend = tree.root.path / "blends" / "llava-665k"
    _read_only(monkeypatch, stats, "write_png")
    r = cli("stats", blend, "--png", tmp_path / "s.png")
    assert r.code == 2 and f"{tmp_path / 's.png'}: read-only file system" in r.err and "another --png" in r.err
    assert "--root" not in r.err and "--out" not in r.err
    _read_only(monkeypatch, export, "export")
    r = cli("export", blend, tmp_path / "x.json")
    assert r.code == 2 and "another OUT" in r.err and "--root" not in r.err and "--out" not in r.err


def test_outputs_on_a_real_read_only_mount(tree, cli, tmp_path):
    from tests.ro_mount import read_only_mount

    tree.place_recipe("llava-665k")
    assert cli("--root", tree.root.path, "blend", "llava-665k").code == 0
    blend = tree.root.path / "blends" / "llava-665k"
    with read_only_mount(tmp_path / "ro") as ro:
        for args, option in ((("stats", blend, "--png", ro / "s.png"), "--png"), (("export", blend, ro / "x.json"), "OUT"),
                             (("--root", tree.root.path, "blend", "llava-665k", "--out", ro / "b"), "--out")):
            r = cli(*args)
            assert r.code == 2 and "read-only file system" in r.err and f"give another {option} " in r.err, r.err
            assert ".tmp-" not in r.err and "Traceback" not in r.err
        assert list(ro.iterdir()) == []
