"""`vlmdata fetch --layout llava-eval` prepares LLaVA's playground/data/eval: every public file from a
local mirror shaped like its origins (small stand-ins), LLaVA-Bench from the loopback hub, eval.zip
(Google Drive, by hand) from the downloads folder, the GQA and TextVQA images linked from the
training datasets (the demo's)."""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from vlmdata.manifest import load_catalog
from vlmdata.net.urls import rewrite

pytestmark = pytest.mark.usefixtures("hub_online")  # (the loopback hub is asked)


def _jpg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), "blue").save(buf, "JPEG")
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


STAND_INS = {  # what each public eval file of the shipped manifest holds here (shaped like the real ones)
    "test2015.zip": _zip({"test2015/COCO_test2015_000000000001.jpg": _jpg()}),
    "questions1.2.zip": _zip({"testdev_balanced_questions.json": b"{}", "testdev_all_questions.json": b"{}",
                              "train_balanced_questions.json": b"{}"}),
    "Annotations.zip": _zip({"Annotations/train.json": b"[]", "Annotations/val.json": b"[]", "Annotations/test.json": b"[]"}),
    "test.zip": _zip({"test/VizWiz_test_00000000.jpg": _jpg()}),
    "TextVQA_0.5.1_val.json": b'{"data": []}',
    "coco_pope_adversarial.json": b'{"question_id": 1}\n',
    "coco_pope_popular.json": b'{"question_id": 2}\n',
    "coco_pope_random.json": b'{"question_id": 3}\n',
    "val2014.zip": _zip({"val2014/COCO_val2014_000000000042.jpg": _jpg()}),
    "mmbench_dev_20230712.tsv": b"index\tquestion\n0\tq\n",
    "mmbench_dev_cn_20231003.tsv": b"index\tquestion\n0\tq\n",
    "mm-vet.zip": _zip({"mm-vet/images/v1_0.png": _jpg(), "mm-vet/mm-vet.json": b"{}"}),
}
EVAL_ZIP = _zip({"eval/gqa/llava_gqa_testdev_balanced.jsonl": b"{}\n", "eval/pope/llava_pope_test.jsonl": b"{}\n",
                 "eval/vqav2/llava_vqav2_mscoco_test-dev2015.jsonl": b"{}\n", "eval/MME/llava_mme.jsonl": b"{}\n"})


def test_fetch_layout_llava_eval(cli, demo, hub, tmp_path):
    mirror = Path(shutil.copytree(demo.mirror, tmp_path / "mirror"))
    spec = load_catalog().dataset("llava_eval")
    for name, data in STAND_INS.items():
        url = spec.file(name).sources[0].url
        target = Path(rewrite(url, str(mirror)))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    hub.add("liuhaotian/llava-bench-in-the-wild", "questions.jsonl", b'{"question_id": 0}\n', lfs=False)
    hub.add("liuhaotian/llava-bench-in-the-wild", "images/001.jpg", _jpg(), lfs=True)
    root = tmp_path / "data"
    args = ["--manifests", str(demo.manifests), "--root", str(root), "--mirror", str(mirror),
            "--hf-endpoint", hub.hub.url]

    plan = cli("plan", "--layout", "llava-eval", "--json", *args)
    assert plan.code == 0, plan.err
    keys = {i["key"] for i in json.loads(plan.out)["items"]}
    assert {"llava_eval:eval.zip", "llava_eval:val2014.zip", "gqa:images.zip", "textvqa:train_val_images.zip"} <= keys
    assert not any(k.endswith(("MME_Benchmark_release_version", "scienceqa")) for k in keys)  # optional, by hand

    # eval.zip is on Google Drive only: the fetch says what to do and places everything else
    r = cli("fetch", "--layout", "llava-eval", *args, env={"HF_TOKEN": hub.token})
    assert r.code == 1
    download = root / ".vlmdata/downloads/llava_eval/eval.zip"
    assert "eval.zip" in r.err and str(download) in r.err and "drive.google.com" in r.err
    assert (root / "llava_eval/pope/val2014/COCO_val2014_000000000042.jpg").is_file()

    download.parent.mkdir(parents=True, exist_ok=True)
    download.write_bytes(EVAL_ZIP)  # what a person does
    r = cli("fetch", "--layout", "llava-eval", *args, env={"HF_TOKEN": hub.token})
    assert r.code == 0, r.err
    view = root / "layouts/llava-eval"
    for path in ("gqa/llava_gqa_testdev_balanced.jsonl", "pope/llava_pope_test.jsonl",  # eval.zip, top folder removed
                 "vqav2/test2015/COCO_test2015_000000000001.jpg", "gqa/data/testdev_balanced_questions.json",
                 "vizwiz/test.json", "vizwiz/test/VizWiz_test_00000000.jpg", "textvqa/TextVQA_0.5.1_val.json",
                 "pope/coco/coco_pope_random.json", "pope/val2014/COCO_val2014_000000000042.jpg",
                 "mmbench/mmbench_dev_cn_20231003.tsv", "llava-bench-in-the-wild/questions.jsonl",
                 "llava-bench-in-the-wild/images/001.jpg", "mm-vet/images/v1_0.png", "mm-vet/mm-vet.json"):
        assert (view / path).is_file(), path
    assert not (view / "gqa/data/train_balanced_questions.json").exists()  # only the testdev questions
    assert any((view / "gqa/data/images").iterdir()) and any((view / "textvqa/train_images").iterdir())
    check = cli("layout", "check", "--layout", "llava-eval", str(view), "--no-counts", "--manifests", str(demo.manifests))
    assert check.code == 0, check.out
