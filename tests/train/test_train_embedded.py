"""A self-contained blend (`vlmdata blend --embed-images`) trains after its image folder is gone: the
blend folder is copied elsewhere, the image tree deleted, and `vlmtrain run` trains on the copy.
`load_from_disk` users get the embedded images as a datasets.Image column."""
from __future__ import annotations

import shutil

import pytest

from tests.cli_runner import run_main
from train_helpers import read_metrics


def _vlmdata(*args):
    from vlmdata.cli.app import main

    return run_main(main, "vlmdata", *map(str, args))


@pytest.fixture
def moved_blends(tmp_path):
    """The same records blended twice (with and without --embed-images), both copied to another
    folder, then the image tree removed: what another machine without the images would see."""
    from vlmtrain.tinydata import write_tiny_blend

    tiny = write_tiny_blend(tmp_path / "tiny", n=12, kind="instruct", seed=4)
    records = tmp_path / "records.json"
    assert _vlmdata("export", tiny, records).code == 0
    recipe = tmp_path / "mix.toml"
    recipe.write_text(f'name = "mix"\ntitle = "t"\nlayout = "llava"\n[[entries]]\nname = "tiny"\npath = "{records}"\n')
    made = {}
    for name, flags in (("embedded", ["--embed-images"]), ("plain", [])):
        r = _vlmdata("--root", tmp_path / "root", "blend", recipe, "--image-root", tiny / "images",
                     "--out", tmp_path / name, *flags)
        assert r.code == 0, r.err
        made[name] = shutil.copytree(tmp_path / name, tmp_path / "elsewhere" / name)
        shutil.rmtree(tmp_path / name)
    shutil.rmtree(tiny)  # the image tree is gone
    return made


def test_embedded_blend_trains_without_its_image_folder(moved_blends, make_config, tmp_path, vlmtrain):
    import datasets

    ds = datasets.load_from_disk(str(moved_blends["embedded"]))
    row = next(r for r in ds if r["n_images"])
    assert row["image_bytes"][0].mode == "RGB" and min(row["image_bytes"][0].size) > 0  # decoded, no file needed
    cfg = make_config(moved_blends["embedded"], "emb", max_steps=2, bad_samples="fail")
    r = vlmtrain("run", str(cfg))
    assert r.code == 0, r.err[-3000:]
    assert sorted(read_metrics(tmp_path / "emb")) == [1, 2]


def test_a_plain_blend_without_its_images_says_so(moved_blends, make_config, vlmtrain):
    cfg = make_config(moved_blends["plain"], "plain", max_steps=2)
    r = vlmtrain("run", str(cfg))
    assert r.code == 2
    assert "image root" in r.err and "does not exist" in r.err
