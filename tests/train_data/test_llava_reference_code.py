"""LLaVA's own train.py tokenises and masks conversations as vlmtrain's encoder does, with the slow
Llama tokenizer its train() loads from the same folder: `--version v1` (LLaVA-1.5's instruction tuning)
and `--version plain` (its projector pretraining), under the transformers it pins today (4.37.2) and the
one LLaVA-1.5 was trained with (4.31.0, tokenizers 0.13.3), for a legacy and a non-legacy tokenizer.

Opt-in, as tests/train/test_moellava_reference_code.py: ``python -m tools.reference_code.build_env DIR
--moellava SRC --llava SRC`` once (network to the package index), then ``VLMTRAIN_TEST_REFERENCE_ENV=DIR``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from traindata_helpers import corpus

ENV = os.environ.get("VLMTRAIN_TEST_REFERENCE_ENV")
pytestmark = pytest.mark.skipif(not ENV, reason="VLMTRAIN_TEST_REFERENCE_ENV names no reference environment "
                                                "(python -m tools.reference_code.build_env)")
PER_IMAGE = 5
IMAGE_INDEX = -200  # LLaVA's IMAGE_TOKEN_INDEX


def turns(*values: str) -> list[dict]:
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(values)]


# (LLaVA's --version, our template, conversation, has an image): shapes of the real mixes' records
SAMPLES = [
    ("v1", "vicuna_v1", turns("<image>\nWhat is in the picture?", "A red bus parked by the road."), True),
    ("v1", "vicuna_v1", turns("<image>\nWhat color is the bus?", "Red.", "Where is it parked?",
                              "By the road, next to 2 trees.", "Is it day?", "Yes, it is 12:30 and sunny."), True),
    ("v1", "vicuna_v1", turns("Write a haiku about rain.", "Soft rain on the roof,\nthe city hums below it.",
                              "Now one about snow.", "White hush on the street."), False),
    ("v1", "vicuna_v1", turns("<image>\nAnswer with one word. What is it?", "Bus"), True),
    ("v1", "vicuna_v1", turns("<image>\nDescribe the image.", "A café in Zürich, 3 chairs — one is empty."), True),
    ("plain", "plain", turns("<image>", "a red bus parked by the side of a road"), True),
    ("plain", "plain", turns("<image>", "people walking on a street in the rain."), True),
]


@pytest.fixture(scope="module", params=[True, False], ids=["legacy", "not-legacy"])
def tokenizer_folder(request, tmp_path_factory) -> Path:
    from vlmtrain.data.slow_tokenizer_files import save_tokenizer
    from vlmtrain.data.tokenizers import train_llama_sentencepiece

    wd = tmp_path_factory.mktemp("tok")
    tok = train_llama_sentencepiece(corpus(), 700, legacy=request.param, workdir=wd / "train")
    save_tokenizer(tok, wd / "tokenizer")
    return wd / "tokenizer"


def theirs(folder: Path, overlay: str, tmp: Path) -> dict:
    from tools.reference_code.build_env import paths

    spec = {"tokenizer": str(folder), "model_max_length": 2048,
            "samples": [{"version": v, "conversations": c, "has_image": img} for v, _, c, img in SAMPLES]}
    (tmp / "spec.json").write_text(json.dumps(spec))
    path = os.pathsep.join(str(p) for p in paths(Path(ENV), overlay=overlay))
    child = subprocess.run([sys.executable, str(Path("tools/reference_code/llava_side.py").resolve()),
                            str(tmp / "spec.json"), str(tmp / "out.json")], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": path}, timeout=300)
    assert child.returncode == 0, child.stderr[-4000:]
    return json.loads((tmp / "out.json").read_text())


@pytest.mark.parametrize("overlay", ["site4372", "site431"])
def test_llava_train_py_masks_as_our_encoder(tokenizer_folder, overlay, tmp_path):
    from transformers import AutoTokenizer

    from vlmtrain.data import Encoder, ImageTokens

    got = theirs(tokenizer_folder, overlay, tmp_path)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_folder))  # as our run loads it
    tok.pad_token = tok.unk_token
    image_id = len(tok)  # an id past the vocabulary, as LLaVA's 32000
    masked = []
    for (version, template, conversation, has_image), t in zip(SAMPLES, got["samples"], strict=True):
        enc = Encoder(tok, template, ImageTokens("<image>", image_id, PER_IMAGE), 2048)
        (ours,) = enc.encode_many([(conversation, int(has_image))], check_reference=True)
        ids, labels = [], []
        for i, lab in zip(t["input_ids"], t["labels"]):  # its one -200 per image: our PER_IMAGE image tokens
            ids += [image_id] * PER_IMAGE if i == IMAGE_INDEX else [i]
            labels += [-100] * PER_IMAGE if i == IMAGE_INDEX else [lab]
        where = f"{version} {conversation[0]['value'][:30]!r} ({got['transformers']}, legacy {got['legacy']})"
        assert ours.input_ids.tolist() == ids, where
        if all(x == -100 for x in labels):  # its length arithmetic masked the whole sample
            # Our replay of that arithmetic (data_report.json's reference_masked) is its train.py under the
            # tokenizers it pins today (>= 0.14, which turns its non-legacy correction on); under 4.31 with
            # tokenizers 0.13.3 the correction is off, and a non-legacy tokenizer's later rounds do not add up.
            assert overlay == "site431" or ours.reference_masked, where
            masked.append(where)
            continue
        assert not ours.reference_masked, where
        assert ours.labels.tolist() == labels, where
    if got["legacy"] or overlay == "site4372":
        assert masked == []
    else:  # LLaVA-1.5's own versions with a non-legacy tokenizer: every sample of more than one round
        assert len(masked) == sum(len(c) > 2 for _, _, c, _ in SAMPLES), masked
