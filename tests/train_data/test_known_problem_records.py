"""The real datasets' odd records (datasets.md §3, §7, §9, §11), blended by `vlmdata blend` and read by
vlmtrain's data path: what a training step gets from each, against what LLaVA's own loader gives
(bench/train_data/llava_reference.py: its preprocess_multimodal, preprocess_v1 / preprocess_plain,
expand2square and Image.open(...).convert("RGB")).

Where the two differ on purpose (docs/blend.md, "Where blend differs from the training repos"), the
test says which way.
"""
from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.train_data import llava_reference as ref
from traindata_helpers import collapse, conv
from vlmdata.blend.pipeline import Options, run_blend
from vlmdata.blend.recipe import resolve
from vlmdata.manifest import load_catalog
from vlmdata.state import Root
from vlmtrain.data import DataArgs, ImageTokens, build_train_data

PER_IMAGE = 3
COCO = "coco/train2017/000000033471.jpg"


def _bytes(fmt: str, mode: str, size=(14, 9)) -> bytes:
    from PIL import Image

    im = Image.new("RGB", size, (200, 40, 10))
    im.paste((10, 90, 250), (0, 0, size[0] // 2, size[1]))
    buf = io.BytesIO()
    (im.convert(mode) if mode != "RGB" else im).save(buf, format=fmt)
    return buf.getvalue()


IMAGES = {
    COCO: _bytes("JPEG", "RGB"),
    "ocr_vqa/images/1437717772.jpg": _bytes("GIF", "P"),     # GIF bytes named .jpg (#593, #1618)
    "ocr_vqa/images/0001055178.jpg": _bytes("PNG", "RGBA"),  # PNG bytes named .jpg, with alpha
    "ocr_vqa/images/0002007770.jpg": _bytes("JPEG", "CMYK"),
    "LLaVA-Pretrain/images/00453/004539375.jpg": _bytes("JPEG", "L", (9, 14)),
}
# what vlmdata blend keeps of the odd records (tests/blend/test_blend_known_problems.py has the drops)
RECORDS: list[dict[str, Any]] = [
    {"id": 4539375, "image": COCO, "conversations": conv("<image>\nWhat is this?", "A cat.", "Color?", "Black.")},
    {"id": "1437717772", "image": "ocr_vqa/images/1437717772.jpg", "conversations": conv("<image>\nWho wrote it?", "Kathleen")},
    {"id": "0001055178", "image": "ocr_vqa/images/0001055178.jpg", "conversations": conv("<image>\nTitle?", "Gods of Egypt")},
    {"id": "0002007770", "image": "ocr_vqa/images/0002007770.jpg", "conversations": conv("<image>\nComedy?", "No")},
    {"id": "wgByO4Y_0", "model": "", "conversations": conv("Write a haiku about rain.", "Soft rain on the roof")},
    {"id": "i6IyJda_2", "model": "", "conversations": [{"from": "gpt", "value": "Sure, go on."}]
     + conv("Continue the story.", "The end.")},
    {"id": "end-token", "image": COCO, "conversations": conv("Describe the photo.\n<image>", "A cat on a mat.")},
    {"id": "uni", "conversations": conv("Zoë 🎉 日本語\u200b?", "Ça va — ok")},
    # where blend differs from the training repos on purpose:
    {"id": "sys-0", "conversations": [{"from": "system", "value": "Be brief."}] + conv("Hi", "Hello")},
    {"id": "no-token", "image": COCO, "conversations": conv("What is this?", "A cat.")},
]
LLAVA_SAME = ["4539375", "1437717772", "0001055178", "0002007770", "wgByO4Y_0", "i6IyJda_2", "end-token", "uni"]


def _blend(tmp_path: Path, records: list[dict[str, Any]], name: str) -> tuple[Path, Path]:
    import json

    images = tmp_path / "images"
    for rel, data in IMAGES.items():
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        (images / rel).write_bytes(data)
    src = tmp_path / f"{name}.json"
    src.write_text(json.dumps(records), encoding="utf-8")
    recipe = tmp_path / f"{name}.toml"
    recipe.write_text(f'name = "{name}"\ntitle = "t"\nstage = "finetune"\nlayout = "llava"\nseed = 0\n'
                      f'[[entries]]\nname = "mix"\npath = "{src}"\n', encoding="utf-8")
    catalog = load_catalog()
    res = resolve(catalog.blend(str(recipe)), catalog, Root(tmp_path / "root"), image_root=images)
    run_blend(res, Options(progress=False, max_drop=100.0, jobs=1), tmp_path / name)
    return tmp_path / name, images


def _data(tmp_path, tok, processor, template, records, name):
    blend, images = _blend(tmp_path, records, name)
    data = build_train_data(DataArgs(str(blend), template=template, cache_dir=str(tmp_path / f"c-{name}")),
                            tok, processor, ImageTokens("<image>", len(tok), PER_IMAGE))
    return {data.dataset[i]["id"]: data.dataset[i] for i in range(len(data.dataset))}, data, images


def _collapse(item, token_id):
    return collapse(item["input_ids"].tolist(), item["labels"].tolist(), token_id, PER_IMAGE)


def _llava_v1(tok, record):
    """What LLaVA's LazySupervisedDataset.__getitem__ makes of the raw record (ids, labels)."""
    sources = [copy.deepcopy(record["conversations"])]
    if "image" in record:
        sources = ref.preprocess_multimodal(sources)
    out = ref.preprocess_v1(sources, tok, has_image="image" in record)
    assert not out["mismatch"][0]
    return out["input_ids"][0].tolist(), out["labels"][0].tolist()


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "non-legacy"])
def test_odd_records_train_as_in_llava(tmp_path, make_tokenizer, processor, legacy):
    tok = make_tokenizer(legacy)
    items, data, _ = _data(tmp_path, tok, processor, "vicuna_v1", RECORDS, "v1")
    assert data.report.encoded == len(RECORDS) and not data.report.mask_failures
    raw = {str(r["id"]): r for r in RECORDS}
    for rid in LLAVA_SAME:
        assert _collapse(items[rid], len(tok)) == _llava_v1(tok, raw[rid]), rid
    # text-only ShareGPT records: no image in the sample (the collator's black stand-in is tested elsewhere)
    assert items["wgByO4Y_0"]["pixel_values"].shape[0] == 0 and items["uni"]["pixel_values"].shape[0] == 0


def test_where_blend_differs_from_llava_on_purpose(tmp_path, make_tokenizer, processor):
    tok = make_tokenizer(False)
    items, _, _ = _data(tmp_path, tok, processor, "vicuna_v1", RECORDS, "v1")
    raw = {str(r["id"]): r for r in RECORDS}
    # a leading system turn: LLaVA's roles[...] raises KeyError('system'); the blend drops the turn
    # (counted as a fix) and the sample trains as the rest of the conversation
    with pytest.raises(KeyError):
        {"human": 0, "gpt": 1}[raw["sys-0"]["conversations"][0]["from"]]
    assert _collapse(items["sys-0"], len(tok)) == _llava_v1(tok, {"conversations": conv("Hi", "Hello")})
    # one image and no marker: LLaVA tokenises no image (its model splices image_features[0:0], the image
    # is never seen); the blend puts "<image>\n" before the first question, so the model sees the image
    llava_ids, _ = _llava_v1(tok, raw["no-token"])
    assert ref.IMAGE_TOKEN_INDEX not in llava_ids
    ours_ids, ours_lab = _collapse(items["no-token"], len(tok))
    assert ours_ids.count(ref.IMAGE_TOKEN_INDEX) == 1
    assert (ours_ids, ours_lab) == _llava_v1(tok, {"image": COCO, "conversations": conv("<image>\nWhat is this?", "A cat.")})


def test_images_named_jpg_that_are_gif_png_cmyk_give_llavas_pixels(tmp_path, make_tokenizer, processor):
    from PIL import Image

    tok = make_tokenizer(False)
    items, _, images = _data(tmp_path, tok, processor, "vicuna_v1", RECORDS, "v1")
    mean = tuple(int(x * 255) for x in processor.image_mean)
    for rid, rel in [("1437717772", "ocr_vqa/images/1437717772.jpg"), ("0001055178", "ocr_vqa/images/0001055178.jpg"),
                     ("0002007770", "ocr_vqa/images/0002007770.jpg"), ("4539375", COCO)]:
        llava = ref.expand2square(Image.open(images / rel).convert("RGB"), mean)
        want = processor(images=[llava], return_tensors="pt")["pixel_values"]
        assert torch.equal(items[rid]["pixel_values"], want), rid


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "non-legacy"])
def test_lcs558k_caption_with_the_image_at_the_end_trains_as_llava_plain(tmp_path, make_tokenizer, processor, legacy):
    tok = make_tokenizer(legacy)
    rec = {"id": "004539375", "image": "00453/004539375.jpg", "conversations": conv(
        "Render a clear and concise summary of the photo.\n<image>", "select luxury furniture 3 - inch gel memory foam")}
    blended = dict(rec, image="LLaVA-Pretrain/images/00453/004539375.jpg")  # the llava-558k recipe's image_prefix
    items, data, _ = _data(tmp_path, tok, processor, "plain", [blended], "plain")
    out = ref.preprocess_plain([copy.deepcopy(rec["conversations"])], tok)
    assert _collapse(items["004539375"], len(tok)) == (out["input_ids"][0].tolist(), out["labels"][0].tolist())
    assert items["004539375"]["pixel_values"].shape[0] == 1  # a grey-scale (L) JPEG, made RGB
