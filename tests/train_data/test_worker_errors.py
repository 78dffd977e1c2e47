"""A bad sample met in a DataLoader worker (dataloader_num_workers >= 1, as LLaVA's and ConvLLaVA's recipes
run) reaches the user as the same one-line error as in the main process, not as torch's re-raise with the
worker's traceback in the message."""
from __future__ import annotations

import pytest
import torch

from traindata_helpers import conv, write_blend, write_image
from vlmtrain.data import BadSampleError, DataArgs, DataError, ImageTokens, build_train_data


def _first_error(dataset, workers: int) -> BaseException:
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=workers, collate_fn=lambda x: x)
    with pytest.raises((BadSampleError, DataError)) as e:
        for _ in loader:
            pass
    return e.value


@pytest.mark.parametrize("workers", [0, 1])
def test_a_missing_image_with_bad_samples_fail_is_one_clear_line(tmp_path, make_tokenizer, processor, workers):
    tok = make_tokenizer(False)
    root = tmp_path / "img"
    write_image(root / "coco/0.jpg")
    recs = [{"id": "0001047973", "images": ["ocr_vqa/images/0001047973.jpg"], "conversations": conv("<image>\nq", "a")}]
    data = build_train_data(DataArgs(str(write_blend(tmp_path / "b", recs, root))), tok, processor,
                            ImageTokens("<image>", len(tok), 4))
    err = _first_error(data.dataset, workers)
    assert type(err) is BadSampleError
    text = str(err)
    assert text.startswith("record '0001047973' (row 0): image ") and "ocr_vqa/images/0001047973.jpg: file not found" in text
    assert "Traceback" not in text and "Caught" not in text and "\n" not in text


@pytest.mark.parametrize("workers", [0, 1])
def test_a_data_error_in_a_worker_is_its_own_message(tmp_path, make_tokenizer, processor, workers):
    tok = make_tokenizer(False)
    recs = [{"id": "img", "images": ["a.jpg"], "conversations": conv("<image>\nq", "a")}]
    ds_dir = write_blend(tmp_path / "b", recs, tmp_path)
    data = build_train_data(DataArgs(str(ds_dir)), tok, processor, ImageTokens("<image>", len(tok), 4))
    data.dataset.image_root = None  # (no image root and no embedded images: a DataError from __getitem__)
    err = _first_error(data.dataset, workers)
    assert type(err) is DataError
    assert str(err).startswith("the dataset has images but no image root") and "Traceback" not in str(err)


def test_a_message_that_only_looks_like_a_worker_one_is_kept():
    msg = "Caught BadSampleError in a test.\nOriginal text, no traceback"
    assert str(BadSampleError(msg)) == msg


@pytest.mark.parametrize("bad_samples, said", [("fail", True), ("skip", False)])
def test_a_blend_that_kept_missing_images_is_said_before_training(tmp_path, make_tokenizer, processor, caplog,
                                                                  bad_samples, said):
    """`vlmdata blend --missing keep` keeps rows whose image is gone, and counts them in blend.json: with
    bad_samples fail the run would stop at the first one, hours in; that is said when the data is opened."""
    import json
    import logging

    tok = make_tokenizer(False)
    write_image(tmp_path / "img/coco/0.jpg")
    recs = [{"id": "a", "images": ["coco/0.jpg"], "conversations": conv("<image>\nq", "a")},
            {"id": "b", "images": ["ocr_vqa/images/1.jpg"], "conversations": conv("<image>\nq", "a")}]
    ds_dir = write_blend(tmp_path / "b", recs, tmp_path / "img")
    blend = json.loads((ds_dir / "blend.json").read_text())
    blend["counts"] = {"ocr_vqa": {"kept": 1, "kept_with_missing_or_corrupt_images": 1}, "coco": {"kept": 1}}
    (ds_dir / "blend.json").write_text(json.dumps(blend))
    with caplog.at_level(logging.WARNING):
        build_train_data(DataArgs(str(ds_dir), bad_samples=bad_samples), tok, processor, ImageTokens("<image>", len(tok), 4))
    warned = [r.getMessage() for r in caplog.records if "--missing keep" in r.getMessage()]
    assert bool(warned) == said, warned
    if said:
        assert "keeps 1 row(s) whose image was missing or corrupt" in warned[0] and "bad_samples: skip" in warned[0]
