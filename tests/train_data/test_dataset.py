"""The Arrow-backed dataset, images, truncation, collator, bad samples, the length cache."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from traindata_helpers import conv, write_blend, write_image
from vlmtrain.data import (BadSampleError, DataArgs, DataError, Encoder, ImageTokens, MaskError,
                           build_train_data, expand2square, pop_batch_meta)

PER_IMAGE = 4


def tokens(tok):
    return ImageTokens("<image>", len(tok), PER_IMAGE)


@pytest.fixture
def blend(tmp_path):
    root = tmp_path / "images"
    write_image(root / "coco/wide.jpg", (24, 16), (200, 30, 30))
    write_image(root / "coco/tall.png", (10, 30), (10, 200, 10), fmt="PNG")
    (root / "coco/corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    recs = [
        {"id": "img-1", "images": ["coco/wide.jpg"], "conversations": conv("<image>\nwhat color?", "red", "sure?", "yes")},
        {"id": "txt-1", "conversations": conv("what is two and three?", "five")},
        {"id": "img-2", "images": ["coco/tall.png"], "conversations": conv("describe the picture\n<image>", "a green table")},
        {"id": "two-img", "images": ["coco/wide.jpg", "coco/tall.png"],
         "conversations": conv("first <image> then <image> which is left?", "the left one")},
    ]
    return write_blend(tmp_path / "blend", recs, root), root


def test_items_and_true_lengths(blend, make_tokenizer, processor):
    ds_dir, _ = blend
    tok = make_tokenizer(False)
    data = build_train_data(DataArgs(str(ds_dir)), tok, processor, tokens(tok))
    assert len(data.dataset) == 4 and data.report.encoded == 4 and data.report.text_only == 1
    for i, length in enumerate(data.lengths):
        item = data.dataset[i]
        n_img = item["pixel_values"].shape[0]
        assert abs(length) == len(item["input_ids"]) == len(item["labels"])
        assert (length > 0) == (n_img > 0)
        assert int((item["input_ids"] == len(tok)).sum()) == PER_IMAGE * n_img  # image features == image tokens
    assert [data.dataset[i]["pixel_values"].shape[0] for i in range(4)] == [1, 0, 1, 2]
    assert data.dataset[1]["pixel_values"].shape == (0, 3, 16, 16)


def test_collator_mixed_batch(blend, make_tokenizer, processor):
    ds_dir, _ = blend
    tok = make_tokenizer(True)
    data = build_train_data(DataArgs(str(ds_dir)), tok, processor, tokens(tok))
    items = [data.dataset[i] for i in range(4)]
    batch = data.collator(items)
    meta = pop_batch_meta(batch)
    assert meta["ids"] == ["img-1", "txt-1", "img-2", "two-img"] and meta["skipped"] == []
    # counted on the CPU for the trainer: each sample's length, and the targets of the shifted loss
    assert meta["sample_lengths"] == [len(it["input_ids"]) for it in items]
    assert meta["supervised"] == sum(int((it["labels"][1:] != -100).sum()) for it in items)
    T = max(len(it["input_ids"]) for it in items)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (4, T)
    assert batch["pixel_values"].shape == (4, 3, 16, 16)  # 1 + 0 + 1 + 2 images, in order
    assert torch.equal(batch["pixel_values"][1], items[2]["pixel_values"][0])
    for b, it in enumerate(items):
        n = len(it["input_ids"])
        assert torch.equal(batch["input_ids"][b, :n], it["input_ids"])
        assert (batch["input_ids"][b, n:] == tok.pad_token_id).all()
        assert (batch["labels"][b, n:] == -100).all() and torch.equal(batch["labels"][b, :n], it["labels"])
        assert batch["attention_mask"][b].sum() == n and (batch["attention_mask"][b, :n] == 1).all()
    text_only = data.collator([items[1]])
    assert "pixel_values" not in text_only  # no zero images for text-only batches


def test_pad_and_square_image_processing(blend, make_tokenizer, processor):
    from PIL import Image

    ds_dir, root = blend
    tok = make_tokenizer(False)
    pad = build_train_data(DataArgs(str(ds_dir), image_aspect_ratio="pad"), tok, processor, tokens(tok))
    square = build_train_data(DataArgs(str(ds_dir), image_aspect_ratio="square"), tok, processor, tokens(tok))
    img = Image.open(root / "coco/wide.jpg").convert("RGB")
    mean_rgb = tuple(int(x * 255) for x in processor.image_mean)
    want_pad = processor(images=[expand2square(img, mean_rgb)], return_tensors="pt")["pixel_values"]
    want_square = processor(images=[img], return_tensors="pt")["pixel_values"]
    assert torch.allclose(pad.dataset[0]["pixel_values"], want_pad)
    assert torch.allclose(square.dataset[0]["pixel_values"], want_square)
    assert not torch.allclose(want_pad, want_square)
    # 24x16 padded to 24x24 then 16x16: the top row is the pad colour = the processor mean (normalised ~ 0)
    top = pad.dataset[0]["pixel_values"][0, :, 0, :]
    expect = torch.tensor([(c / 255 - m) / s for c, m, s in zip(mean_rgb, processor.image_mean, processor.image_std)])
    assert torch.allclose(top, expect[:, None].expand_as(top), atol=1e-5)
    assert expand2square(Image.new("RGB", (10, 30)), mean_rgb).size == (30, 30)


def test_truncation_counts_image_tokens_and_never_cuts_an_image(tmp_path, make_tokenizer, processor):
    tok = make_tokenizer(False)
    root = tmp_path / "img"
    write_image(root / "a.jpg")
    long_answer = " ".join(["the left sign"] * 40)
    recs = [{"id": "long", "images": ["a.jpg"], "conversations": conv("<image>\nwhat?", long_answer)}]
    ds_dir = write_blend(tmp_path / "b", recs, root)
    enc_full = Encoder(tok, "vicuna_v1", tokens(tok), 100_000).encode(recs[0]["conversations"], 1)
    image_end = int(np.nonzero(enc_full.input_ids == len(tok))[0][-1]) + 1
    limit = image_end + 10
    data = build_train_data(DataArgs(str(ds_dir), model_max_length=limit), tok, processor, tokens(tok))
    item = data.dataset[0]
    assert len(item["input_ids"]) == limit == data.lengths[0] and data.report.truncated == 1
    assert torch.equal(item["input_ids"], torch.from_numpy(enc_full.input_ids[:limit]))
    assert int((item["input_ids"] == len(tok)).sum()) == PER_IMAGE and item["pixel_values"].shape[0] == 1
    # a limit inside the image's token run: the sample cannot be used (never a cut image)
    with pytest.raises(MaskError, match="images do not fit"):
        Encoder(tok, "vicuna_v1", tokens(tok), image_end - 1).encode(recs[0]["conversations"], 1)
    with pytest.raises(DataError, match="long.*images do not fit"):
        build_train_data(DataArgs(str(ds_dir), model_max_length=image_end - 1, cache_dir=str(tmp_path / "c")),
                         tok, processor, tokens(tok))
    # a limit that leaves no answer token
    with pytest.raises(MaskError, match="no trained tokens within"):
        Encoder(tok, "vicuna_v1", tokens(tok), image_end + 1).encode(recs[0]["conversations"], 1)


def test_mask_failures_are_counted_and_reported_not_zeroed(tmp_path, make_tokenizer, processor):
    tok = make_tokenizer(True)
    recs = [{"id": "good", "conversations": conv("what?", "two")},
            {"id": "sep-in-answer", "conversations": conv("what?", "two</s>USER: three")},
            {"id": "odd", "conversations": conv("what?", "two", "and?")}]
    ds_dir = write_blend(tmp_path / "b", recs, None)
    with pytest.raises(DataError) as e:
        build_train_data(DataArgs(str(ds_dir)), tok, processor, tokens(tok))
    assert "2 sample(s)" in str(e.value) and "sep-in-answer" in str(e.value) and "bad_samples: skip" in str(e.value)
    data = build_train_data(DataArgs(str(ds_dir), bad_samples="skip"), tok, processor, tokens(tok))
    assert len(data.dataset) == 1 and data.dataset[0]["id"] == "good" and len(data.lengths) == 1
    rep = data.report.to_dict()
    assert rep["mask_failures"] == 2 and rep["mask_failure_ids"] == ["sep-in-answer", "odd"]
    assert "round separator" in data.report.summary()


def test_bad_images_fail_or_skip(tmp_path, make_tokenizer, processor):
    tok = make_tokenizer(False)
    root = tmp_path / "img"
    write_image(root / "ok.jpg")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    recs = [{"id": "ok", "images": ["ok.jpg"], "conversations": conv("<image>\nq", "a")},
            {"id": "missing", "images": ["gone/x.jpg"], "conversations": conv("<image>\nq", "a")},
            {"id": "corrupt", "images": ["corrupt.jpg"], "conversations": conv("<image>\nq", "a")}]
    ds_dir = write_blend(tmp_path / "b", recs, root)
    fail = build_train_data(DataArgs(str(ds_dir)), tok, processor, tokens(tok))
    with pytest.raises(BadSampleError, match=r"'missing'.*gone/x\.jpg.*file not found"):
        fail.dataset[1]
    with pytest.raises(BadSampleError, match=r"'corrupt'.*corrupt\.jpg.*cannot decode"):
        fail.dataset[2]
    skip = build_train_data(DataArgs(str(ds_dir), bad_samples="skip"), tok, processor, tokens(tok))
    batch = skip.collator([skip.dataset[i] for i in range(3)])
    meta = pop_batch_meta(batch)
    assert meta["ids"] == ["ok"] and [s["id"] for s in meta["skipped"]] == ["missing", "corrupt"]
    assert batch["input_ids"].shape[0] == 1 and batch["pixel_values"].shape[0] == 1
    skip.report.record_batch(meta)
    assert skip.report.to_dict()["skipped_ids"] == ["missing", "corrupt"]
    assert len(skip.report.bad_images) == 2


def test_image_root_override_and_errors(tmp_path, blend, make_tokenizer, processor):
    ds_dir, root = blend
    tok = make_tokenizer(False)
    with pytest.raises(DataError, match="does not exist"):
        build_train_data(DataArgs(str(tmp_path / "nope")), tok, processor, tokens(tok))
    with pytest.raises(DataError, match="image root"):
        build_train_data(DataArgs(str(ds_dir), image_root=str(tmp_path / "elsewhere")), tok, processor, tokens(tok))
    moved = tmp_path / "moved"
    root.rename(moved)
    data = build_train_data(DataArgs(str(ds_dir), image_root=str(moved)), tok, processor, tokens(tok))
    assert data.dataset[0]["pixel_values"].shape == (1, 3, 16, 16)
    with pytest.raises(DataError, match="template"):
        build_train_data(DataArgs(str(ds_dir), template="vicuna"), tok, processor, tokens(tok))


def test_lengths_are_cached(blend, make_tokenizer, processor, monkeypatch):
    ds_dir, _ = blend
    tok = make_tokenizer(False)
    first = build_train_data(DataArgs(str(ds_dir)), tok, processor, tokens(tok))
    assert not first.report.lengths_cache_hit and str(ds_dir) in first.report.lengths_cache
    import vlmtrain.data.dataset as dsmod

    monkeypatch.setattr(dsmod, "measure_lengths", lambda *a, **k: pytest.fail("recomputed"))
    second = build_train_data(DataArgs(str(ds_dir)), tok, processor, tokens(tok))
    assert second.report.lengths_cache_hit and second.lengths == first.lengths
    monkeypatch.undo()
    other = build_train_data(DataArgs(str(ds_dir), model_max_length=30, bad_samples="skip"), tok, processor, tokens(tok))
    assert not other.report.lengths_cache_hit


def test_num_proc_and_dataloader_workers(blend, make_tokenizer, processor, tmp_path):
    ds_dir, _ = blend
    tok = make_tokenizer(False)
    one = build_train_data(DataArgs(str(ds_dir), cache_dir=str(tmp_path / "c1")), tok, processor, tokens(tok))
    two = build_train_data(DataArgs(str(ds_dir), num_proc=2, cache_dir=str(tmp_path / "c2")), tok, processor, tokens(tok))
    assert one.lengths == two.lengths
    loader = torch.utils.data.DataLoader(two.dataset, batch_size=2, collate_fn=two.collator, num_workers=2)
    batches = list(loader)
    assert [i for b in batches for i in b["ids"]] == ["img-1", "txt-1", "img-2", "two-img"]


def test_chat_template(tmp_path, make_tokenizer, processor):
    import copy

    tok = copy.deepcopy(make_tokenizer(False))
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    turns = conv("<image>\nwhat color?", "red", "sure?", "yes")
    enc = Encoder(tok, "chat_template", tokens(tok), 2048).encode(turns, 1)
    trained = tok.decode([i for i, l in zip(enc.input_ids, enc.labels) if l != -100])
    assert trained.replace(" ", "") == "red</s>\nyes</s>\n"
    assert int((enc.input_ids == len(tok)).sum()) == PER_IMAGE and enc.input_ids[0] != tok.bos_token_id
    with pytest.raises(ValueError, match="chat template"):
        Encoder(make_tokenizer(True), "chat_template", tokens(tok), 2048).encode(turns, 1)


def test_embedded_image_bytes_need_no_image_root(tmp_path, make_tokenizer, processor):
    """`vlmdata blend --embed-images` adds image_bytes (list<binary>); no image root is needed then."""
    import datasets

    tok = make_tokenizer(False)
    png = write_image(tmp_path / "a.png", (20, 12), (0, 0, 250), fmt="PNG").read_bytes()
    ds_dir = write_blend(tmp_path / "b", [{"id": "e", "images": ["a.png"], "conversations": conv("<image>\nq", "a")}], None)
    ds = datasets.load_from_disk(str(ds_dir))
    ds = ds.add_column("image_bytes", [[png]])
    ds.save_to_disk(str(tmp_path / "embedded"))
    (tmp_path / "embedded/blend.json").write_text("{}")
    (tmp_path / "a.png").unlink()
    data = build_train_data(DataArgs(str(tmp_path / "embedded")), tok, processor, tokens(tok))
    assert data.dataset[0]["pixel_values"].shape == (1, 3, 16, 16)


def test_marker_in_a_dropped_leading_gpt_turn_is_a_mask_failure(make_tokenizer):
    tok = make_tokenizer(False)
    turns = [{"from": "gpt", "value": "<image>\nhello"}] + conv("what color?", "left")
    with pytest.raises(MaskError, match="marker count"):
        Encoder(tok, "vicuna_v1", tokens(tok), 2048).encode(turns, 1)
