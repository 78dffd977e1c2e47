"""vlmtrain's ShareGPT4V runs beside ShareGPT4V's own code (ShareGPT4Omni/ShareGPT4V at b6f70e9, transformers
4.31.0, tokenizers 0.13.3), on the same inputs and weights: its train.py's preprocess for the scripts'
``--version plain`` / ``v1``, its image path (``square`` / ``pad``), what its pretrain unlocks
(``--tune_entire_model true --tune_vit_from_layer N``), one training step of its ``Share4VLlamaForCausalLM`` per
stage on a tiny vlmtrain chain's weights, and its builder loading ``vlmtrain export-llava``'s output.

Opt-in: ``python -m tools.reference_code.build_env DIR --moellava SRC --llava SRC`` once (network to the package
index), ``python -m tools.reference_code.sharegpt4v_env DIR --sharegpt4v SRC``, then
``VLMTRAIN_TEST_REFERENCE_ENV=DIR``. Skipped otherwise."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from train_helpers import REPO, TINY_TEXT, TINY_VISION, run_vlmtrain, tiny_config, write_config

ENV = os.environ.get("VLMTRAIN_TEST_REFERENCE_ENV")
pytestmark = pytest.mark.skipif(not ENV or not (Path(ENV) / "src-sharegpt4v").is_dir(),
                                reason="VLMTRAIN_TEST_REFERENCE_ENV names no reference environment with ShareGPT4V "
                                       "(python -m tools.reference_code.sharegpt4v_env DIR --sharegpt4v SRC)")

TOWER = dict(TINY_VISION, num_hidden_layers=4)  # ShareGPT4V's 12-of-24 blocks: 2-of-4
FROM = 2
LAST = f"model.vision_tower.vision_tower.vision_model.encoder.layers.{TOWER['num_hidden_layers'] - 1}."
CAPTIONS = [[{"from": "human", "value": "<image>\nWrite a short caption."},
             {"from": "gpt", "value": "A green field under a clear sky."}],
            [{"from": "human", "value": "Describe it.\n<image>"},
             {"from": "gpt", "value": "people walking on a street in the rain."}]]


def shipped(stage: str) -> dict:
    """configs/sharegpt4v-7b-STAGE.yaml's values the comparison depends on, its tower depth scaled to TOWER's."""
    from vlmtrain.config import load_config

    cfg = load_config(REPO / "configs" / f"sharegpt4v-7b-{stage}.yaml")
    out = {k: getattr(cfg, k) for k in ("stage", "version", "image_aspect_ratio", "mm_vision_select_layer",
                                        "mm_vision_select_feature", "mm_projector_type")}
    if cfg.tune_vit_from_layer is not None:  # 12 of CLIP-L's 24 blocks
        out["tune_vit_from_layer"] = cfg.tune_vit_from_layer * TOWER["num_hidden_layers"] // 24
        assert out["tune_vit_from_layer"] == FROM
    return out


@pytest.fixture(scope="module", params=[False, True], ids=["not-legacy", "legacy"])
def chain(request, caption_blend, instruct_blend, tmp_path_factory) -> tuple[Path, Path, bool, Path]:
    """The recipe as one tiny chain (tests/train/test_sharegpt4v.py's): LLaVA-1.5's stage 1 -> pretrain (plain,
    square, LLM + projector + tower blocks 2.. training) -> finetune (v1, pad, tower frozen), from a Llama and a
    CLIP folder, the tokenizer trained on the fly (``legacy`` or not). Last: the CLIP folder's processor json."""
    from tools.reference_code.our_side import write_pretrained_parts

    tmp = tmp_path_factory.mktemp("sharegpt4v")
    torch.manual_seed(0)
    # as many rows as the tokenizer trained on the fly has tokens, as Vicuna's 32000: the run adds <image> as a
    # row of its own. (With spare rows, its builder cuts them: resize_token_embeddings(len(tokenizer)).)
    vocab = tiny_config(caption_blend, tmp)["tokenizer_train_vocab_size"]
    write_pretrained_parts(tmp, dict(TINY_TEXT, vocab_size=vocab), TOWER)
    common = dict(random_init=False, model_name_or_path=str(tmp / "llm"), vision_tower=str(tmp / "clip"),
                  text_config=None, vision_config=None, max_steps=2, learning_rate=1e-2,
                  tokenizer_legacy=request.param)
    s1 = tiny_config(caption_blend, tmp / "s1", stage=1, version="plain", **common)
    pre = tiny_config(caption_blend, tmp / "pre", **shipped("pretrain"), **common)
    ft = tiny_config(instruct_blend, tmp / "ft", **shipped("finetune"), **dict(common, vision_tower=None))
    r = run_vlmtrain("run", *(write_config(tmp / f"{n}.yaml", c) for n, c in (("s1", s1), ("pre", pre), ("ft", ft))))
    assert r.code == 0, r.err
    return tmp / "pre", tmp / "ft", request.param, tmp / "clip" / "preprocessor_config.json"


def _same_steps(theirs: dict, ours: list[dict], logits: list[torch.Tensor], legacy: bool,
                conversations: list) -> int:
    """Each step's ids, labels, pixels, logits, loss and every gradient; a sample its preprocess masks whole
    only where docs/original-repos.md says (a non-legacy tokenizer, more than one round, tokenizers < 0.14).
    Returns how many steps were compared in full."""
    from tools.reference_code.our_side import IMAGE_INDEX, assert_same_step, with_image

    full = 0
    for t, we, our_logits, conversation in zip(theirs["steps"], ours, logits, conversations, strict=True):
        torch.testing.assert_close(we["pixel_values"], t["pixel_values"], rtol=0, atol=0)
        if all(x == -100 for x in t["labels"].tolist()) and not we["reference_masked"]:
            assert not legacy and len(conversation) > 2, conversation  # the documented case, no other
            n = len(we["ids"]) - len(t["ids"]) + 1
            at = t["ids"].tolist().index(IMAGE_INDEX)
            assert with_image(t["ids"].tolist(), we["ids"][at:at + n].tolist()) == we["ids"].tolist()
            assert (we["labels"] != -100).any()  # we train the answers it drops
            continue
        assert assert_same_step(t, we)
        torch.testing.assert_close(our_logits, t["logits"], rtol=1e-5, atol=1e-5)
        full += 1
    return full


def test_its_pretrain_step_on_our_weights_is_ours(chain, tmp_path):
    """Our pretrain run's weights handed over as its pretrain script's inputs (a Llama folder, a CLIP folder,
    ``--pretrain_mm_mlp_adapter``); its train.py sets the stage up (``--version plain``, square images,
    ``--tune_entire_model true --tune_vit_from_layer 2``) and steps once per caption: our ids, labels, pixels,
    logits, loss and every gradient. It marks trainable what we train plus the last block, which comes after
    the selected layer -2 and gets no gradient there (tests/train/test_sharegpt4v.py says why ours is frozen)."""
    from tools.reference_code.our_side import our_logits, our_trainable, training_step
    from tools.reference_code.sharegpt4v_ours import hand_over, run_sharegpt4v

    pre, _, legacy, processor = chain
    work = tmp_path / "work"
    spec = hand_over(pre, work, "pretrain", processor, conversations=CAPTIONS)
    assert (spec["version"], spec["image_aspect_ratio"], spec["tune_vit_from_layer"]) == ("plain", "square", FROM)
    theirs = run_sharegpt4v(Path(ENV), work, "train")
    assert theirs["transformers"] == "4.31.0" and theirs["legacy"] is legacy
    assert _same_steps(theirs, training_step(pre, work), our_logits(pre, work), legacy, CAPTIONS) == len(CAPTIONS)
    ours = our_trainable(pre)
    last = {n for n in theirs["trainable"] if n.startswith(LAST)}
    assert last and set(theirs["trainable"]) - last == ours
    tower = {n for n in ours if n.startswith("model.vision_tower.")}
    assert tower and all(re.search(rf"\.layers\.{FROM}\.", n) for n in tower)
    for step in theirs["steps"]:
        assert set(step["grads"]) == ours  # its last block: trainable, no gradient


def test_its_finetune_step_on_our_weights_is_ours(chain, tmp_path):
    """Our finetune run's weights handed over as its pretrain leaves them (LLM + projector without the tower,
    ``OUT/vision_tower``); its train.py's finetune (``--version v1``, pad, the tower frozen) steps once per
    conversation: ours, one round and two, but for a non-legacy tokenizer's two rounds under its pins."""
    from tools.reference_code.our_side import CONVERSATIONS, our_logits, our_trainable, training_step
    from tools.reference_code.sharegpt4v_ours import hand_over, run_sharegpt4v

    _, ft, legacy, processor = chain
    work = tmp_path / "work"
    spec = hand_over(ft, work, "finetune", processor, conversations=CONVERSATIONS)
    assert (spec["version"], spec["image_aspect_ratio"]) == ("v1", "pad")
    theirs = run_sharegpt4v(Path(ENV), work, "train")
    full = _same_steps(theirs, training_step(ft, work), our_logits(ft, work), legacy, CONVERSATIONS)
    assert full == (len(CONVERSATIONS) if legacy else 1)
    ours = our_trainable(ft)
    assert set(theirs["trainable"]) == ours and not any(n.startswith("model.vision_tower.") for n in ours)


@pytest.mark.parametrize("legacy", [False, True], ids=["not-legacy", "legacy"])
def test_its_preprocess_masks_as_ours(legacy, tmp_path):
    """Its preprocess for the scripts' ``--version plain`` and ``v1`` (LLaVA's without the later non-legacy
    correction, under tokenizers 0.13.3), with an image and text-only: our ids always; our labels, but for a non-legacy tokenizer's samples of
    more than one round, which it masks whole (no loss) and we train."""
    from tests.train_data.traindata_helpers import corpus
    from tools.reference_code.our_side import CONVERSATIONS, with_image
    from tools.reference_code.sharegpt4v_ours import run_sharegpt4v
    from vlmtrain.data import Encoder, ImageTokens
    from vlmtrain.data.slow_tokenizer_files import save_tokenizer
    from vlmtrain.data.tokenizers import train_llama_sentencepiece

    tok = train_llama_sentencepiece(corpus(), 700, legacy=legacy, workdir=tmp_path / "train")
    save_tokenizer(tok, tmp_path / "tokenizer")
    text_only = [[{"from": t["from"], "value": t["value"].replace("<image>\n", "")} for t in c] for c in CONVERSATIONS]
    samples = ([("plain", "plain", c, 1) for c in CAPTIONS] + [("v1", "vicuna_v1", c, 1) for c in CONVERSATIONS]
               + [("v1", "vicuna_v1", c, 0) for c in text_only])
    (tmp_path / "spec.json").write_text(json.dumps({
        "folder": str(tmp_path / "tokenizer"), "model_max_length": 2048,
        "samples": [{"version": v, "conversations": c, "has_image": bool(n)} for v, _, c, n in samples]}))
    theirs = run_sharegpt4v(Path(ENV), tmp_path, "tokenize")
    assert theirs["legacy"] is legacy and theirs["transformers"] == "4.31.0"
    tok.pad_token = tok.unk_token
    image_id = len(tok)  # an id past the vocabulary, as their -200
    for (_, template, conversation, images), t in zip(samples, theirs["encoded"], strict=True):
        (enc,) = Encoder(tok, template, ImageTokens("<image>", image_id, 1), 2048).encode_many(
            [(conversation, images)], check_reference=True)
        ids = with_image(t["input_ids"], [image_id]) if images else t["input_ids"]
        assert ids == enc.input_ids.tolist(), conversation
        if not legacy and len(conversation) > 2:
            assert all(x == -100 for x in t["labels"]) and (enc.labels != -100).any()
            assert not enc.reference_masked  # our replay is LLaVA's under tokenizers >= 0.14 (docs/train-data.md)
        else:
            assert t["labels"] == enc.labels.tolist(), conversation


def test_its_builder_loads_our_export_and_answers_as_we_do(chain, tmp_path):
    """``vlmtrain export-llava`` of the finetune run, named as its builder needs (``sharegpt4v`` in the folder
    name picks its Share4VLlamaForCausalLM), loaded by share4v/model/builder.py's load_pretrained_model: its
    prompt (``vicuna_v1``), ids, tokenizer size, pixels (pad), logits and greedy answer are ``vlmtrain
    generate``'s. Under another name it does not load."""
    import shutil

    from tools.reference_code.our_side import TOWER as TOWER_FOLDER
    from tools.reference_code.our_side import assert_same_answer, ours, prepare
    from tools.reference_code.sharegpt4v_ours import run_sharegpt4v

    _, ft, _, processor = chain
    export = tmp_path / "sharegpt4v-7b"
    r = run_vlmtrain("export-llava", str(ft), str(export))
    assert r.code == 0, r.err
    work = tmp_path / "work"
    prepare(ft, work, "llava", export=export)
    shutil.copy(processor, work / TOWER_FOLDER)  # the processor its pretrain saves beside the tuned tower
    theirs = run_sharegpt4v(Path(ENV), work, "answer")
    assert theirs["class"] == "Share4VLlamaForCausalLM" and theirs["name"] == "sharegpt4v-7b-tiny"
    assert_same_answer(theirs, ours(ft, work))
    # without "sharegpt4v" in the name its builder takes AutoModelForCausalLM, which knows no llava_llama
    (work / "sharegpt4v-7b-tiny").rename(work / "llava-v1.5-7b-tiny")
    spec = json.loads((work / "spec.json").read_text())
    (work / "spec.json").write_text(json.dumps(dict(spec, model="llava-v1.5-7b-tiny")))
    with pytest.raises(RuntimeError, match="KeyError: 'llava_llama'"):
        run_sharegpt4v(Path(ENV), work, "answer")
