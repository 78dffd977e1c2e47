"""Issue 13 items 1 and 12 (trainer side): a dataset with nothing to train on, a wrong image root, or a LLaVA JSON
where the dataset folder goes is refused with exit 2 and the command that fixes it, before a model is built."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from train_helpers import run_vlmtrain


def _empty_blend(path: Path, *, read: int = 95) -> Path:
    """What `vlmdata blend llava-665k` leaves when only the JSON was fetched and every record was dropped."""
    import datasets

    feats = datasets.Features({"id": datasets.Value("string"), "source": datasets.Value("string"),
                               "images": datasets.Sequence(datasets.Value("string")),
                               "conversations": [{"from": datasets.Value("string"), "value": datasets.Value("string")}],
                               "n_images": datasets.Value("int32"), "text_chars": datasets.Value("int32")})
    datasets.Dataset.from_dict({k: [] for k in feats}, features=feats).save_to_disk(str(path), num_shards=1)
    (path / "blend.json").write_text(json.dumps({
        "recipe": {"name": "llava-665k"}, "image_root": str(path),
        "counts": {"llava-mix665k": {"read": read, "kept": 0, "dropped": {"missing image": read}}},
        "totals": {"rows": 0, "read": read, "dropped": read}}))
    return path


def test_empty_dataset_is_refused_before_the_model(make_config, tmp_path):
    ds = _empty_blend(tmp_path / "empty")
    r = run_vlmtrain("run", make_config(ds, "e"))
    assert r.code == 2, r.err
    assert "has no samples to train on" in r.err and "read 95 records and dropped 95 (missing image: 95)" in r.err
    assert "vlmdata report llava-665k" in r.err and "vlmdata blend llava-665k" in r.err
    assert "done:" not in r.err and not (tmp_path / "e").exists()  # nothing built, nothing saved


def test_no_encodable_sample_with_skip_is_refused_and_nothing_is_saved(caption_blend, make_config, tmp_path):
    # 16 image tokens per image do not fit in 10: every sample is left out by bad_samples: skip.
    r = run_vlmtrain("run", make_config(caption_blend, "n", stage=1, version="plain", model_max_length=10,
                                        bad_samples="skip"))
    assert r.code == 2, r.err
    assert "no trainable sample" in r.err and "0/16 samples" in r.err and "images do not fit" in r.err
    out = tmp_path / "n"
    assert not list(out.glob("checkpoint-*")) and not (out / "mm_projector.bin").exists()


def test_packing_stats_refuses_a_blend_with_nothing_to_lay_out(caption_blend, make_config, tmp_path):
    # It reported "100% padding" for a blend of no rows, and for one whose every sample is left out.
    r = run_vlmtrain("packing-stats", make_config(_empty_blend(tmp_path / "empty"), "pe"))
    assert r.code == 2, r.err
    assert "has no samples to train on" in r.err and "vlmdata blend llava-665k" in r.err and "padding" not in r.out
    r = run_vlmtrain("packing-stats", make_config(caption_blend, "pn", stage=1, version="plain", model_max_length=10,
                                                  bad_samples="skip"))
    assert r.code == 2, r.err
    assert "no trainable sample" in r.err and "all 16 are left out" in r.err and "padding" not in r.out


def test_wrong_image_root_is_refused_before_training(instruct_blend, make_config, tmp_path):
    elsewhere = tmp_path / "moved"
    elsewhere.mkdir()
    r = run_vlmtrain("run", make_config(instruct_blend, "w", image_root=str(elsewhere), bad_samples="skip"))
    assert r.code == 2, r.err
    assert f"exist under the image root {elsewhere}" in r.err and "image_folder" in r.err
    assert not (tmp_path / "w").exists()


def test_some_missing_images_are_announced(instruct_blend, make_config, tmp_path, caplog):
    from vlmtrain.config import load_config
    from vlmtrain.train.preflight import preflight

    copy = tmp_path / "copy"
    shutil.copytree(instruct_blend, copy)
    images = sorted((copy / "images").iterdir())
    images[0].unlink()
    meta = json.loads((copy / "blend.json").read_text())
    meta["image_root"] = str(copy / "images")
    (copy / "blend.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="vlmtrain"):
        preflight(load_config(make_config(copy, "m")))
    assert any("are missing under" in r.getMessage() and "bad_samples: fail" in r.getMessage() for r in caplog.records)


def test_a_blend_that_dropped_most_records_is_announced(instruct_blend, make_config, tmp_path, caplog):
    from vlmtrain.config import load_config
    from vlmtrain.train.preflight import preflight

    copy = tmp_path / "mostly-dropped"
    shutil.copytree(instruct_blend, copy)
    meta = json.loads((copy / "blend.json").read_text())
    meta.update({"recipe": {"name": "llava-665k"}, "totals": {"read": 95, "dropped": 71},
                 "counts": {"x": {"dropped": {"missing image": 71}}}})
    (copy / "blend.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="vlmtrain"):
        preflight(load_config(make_config(copy, "d")))
    msgs = [r.getMessage() for r in caplog.records]
    assert any("keeps 24 of the 95 records" in m and "vlmdata report llava-665k" in m for m in msgs), msgs


def test_llava_json_as_data_path_names_the_blend_command(make_config, tmp_path, instruct_blend):
    js = tmp_path / "data" / "LLaVA-Instruct-150K" / "llava_v1_5_mix665k.json"
    js.parent.mkdir(parents=True)
    js.write_text("[]")
    cfg = make_config(instruct_blend, "j")
    r = run_vlmtrain("run", cfg, "--set", f"data_path={js}", "--set", f"image_folder={tmp_path}")
    assert r.code == 2, r.err
    assert f"is the JSON file {js}" in r.err and "does not exist" not in r.err
    assert f'path = "{js}"' in r.err and f"vlmdata blend ./my-data.toml --image-root {tmp_path} --out DIR" in r.err
    assert "vlmdata list" in r.err
    r = run_vlmtrain("run", cfg, "--set", f"data_path={js}")
    assert r.code == 2 and "--image-root IMAGE_FOLDER" in r.err


def test_the_suggested_recipe_blends(tmp_path):
    """The recipe the error suggests is one `vlmdata blend` takes, and its output trains."""
    import re

    from tests.cli_runner import run_main
    from vlmdata.cli.app import main as vlmdata_main
    from vlmtrain.config import TrainConfig
    from vlmtrain.train.preflight import json_instead_of_dataset

    images = tmp_path / "img"
    (images / "coco").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (20, 10), (9, 9, 9)).save(images / "coco" / "a.jpg")
    js = tmp_path / "mine.json"
    js.write_text(json.dumps([{"id": 1, "image": "coco/a.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A dark box."}]}]))
    hint = json_instead_of_dataset(js, TrainConfig(image_root=str(images)), "cfg").hint
    toml = "\n".join(ln.strip() for ln in hint.split("then run")[0].splitlines()[1:])
    (tmp_path / "my-data.toml").write_text(toml + "\n")
    cmd = re.search(r"vlmdata blend (\S+) --image-root (\S+) --out DIR", hint)
    r = run_main(vlmdata_main, "vlmdata", "blend", str(tmp_path / "my-data.toml"), "--image-root", cmd.group(2),
                 "--out", str(tmp_path / "out"), "--root", str(tmp_path / "root"))
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "out" / "blend.json").read_text())["totals"]["rows"] == 1
