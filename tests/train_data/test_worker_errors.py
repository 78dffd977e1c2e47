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
