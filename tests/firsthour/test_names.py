"""Item 17: names as users type them. Case and '-' vs '_' are forgiven; a layout or a recipe where
a dataset goes (and the other way round) says what it is and the command that fetches what it needs."""
from __future__ import annotations

from tests.conftest import run_vlmdata


def test_case_and_dashes_find_the_dataset(tmp_path):
    for name, dataset in (("COCO", "coco"), ("Coco", "coco"), ("ocr-vqa", "ocr_vqa"), ("OCR_VQA", "ocr_vqa")):
        r = run_vlmdata("--root", tmp_path, "plan", name, "--json")
        plan = r.json()
        assert {i["dataset"] for i in plan["items"]} == {dataset}, (name, r.err)
        # (COCO needs ~39 GB: on a fuller disk the plan is still printed and the preflight says no, exit 1)
        assert (r.code, "not enough disk" in r.err) == ((0, False) if plan["fits"] else (1, True)), (name, r.err)
    assert run_vlmdata("info", "LLaVA-665K").out.startswith("llava-665k:")
    assert run_vlmdata("info", "Llava").out.startswith("llava:")


def test_a_layout_where_a_dataset_goes(tmp_path):
    r = run_vlmdata("--root", tmp_path, "fetch", "llava")
    assert r.code == 2
    assert "'llava' is a layout, not a dataset" in r.err
    assert "`vlmdata fetch --layout llava`" in r.err
    assert not tmp_path.joinpath(".vlmdata").exists()


def test_a_recipe_where_a_dataset_goes(tmp_path):
    r = run_vlmdata("--root", tmp_path, "fetch", "llava-665k")
    assert r.code == 2 and "'llava-665k' is a blend recipe, not a dataset" in r.err
    assert "`vlmdata fetch --recipe llava-665k`" in r.err and "then `vlmdata blend llava-665k`" in r.err
    # what --recipe fetches: images under the recipe's image_prefix only (stage 1 needs LLaVA-Pretrain, not COCO)
    r = run_vlmdata("--root", tmp_path, "plan", "--recipe", "llava-558k", "--json")
    keys = [i["key"] for i in r.json()["items"]]
    assert keys == ["llava_pretrain:blip_laion_cc_sbu_558k.json", "llava_pretrain:images.zip"]


def test_the_suggested_command_works(demo, tmp_path):
    from firsthour_helpers import DemoRoot

    d = DemoRoot(demo, tmp_path / "root")
    r = d.run("fetch", "llava-665k")
    cmd = r.err.split("fetch what it needs: `", 1)[1].split("`", 1)[0].split()
    assert cmd[:2] == ["vlmdata", "fetch"]
    assert d.run(*cmd[1:]).code == 0
    r = d.run("blend", "llava-665k", "--max-drop", "20")  # the demo loses a few records on purpose
    assert r.code == 0, r.err


def test_a_dataset_or_layout_where_a_recipe_goes(tmp_path):
    r = run_vlmdata("--root", tmp_path, "blend", "coco")
    assert r.code == 2 and "'coco' is a dataset, not a blend recipe" in r.err and "llava-665k" in r.err
    r = run_vlmdata("--root", tmp_path, "report", "llava")
    assert r.code == 2 and "'llava' is a layout, not a blend recipe" in r.err and "llava-558k, llava-665k" in r.err
    r = run_vlmdata("info", "llava-66k")
    assert r.code == 2 and "did you mean llava-665k" in r.err
