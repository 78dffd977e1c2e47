"""vlmtrain's stage 1 (projector pretraining) beside LLaVA's own code (haotian-liu/LLaVA c121f04, transformers
4.37.2), on the same weights, and the stage-1 -> stage-2 hand-off both ways: one training step of its model
built as scripts/v1_5/pretrain.sh builds it; vlmtrain's ``mm_projector.bin`` loaded by its
``initialize_vision_modules(pretrain_mm_mlp_adapter=...)``; the ``mm_projector.bin`` its own save writes loaded
by a vlmtrain stage 2 (``pretrain_mm_mlp_adapter``), and that stage's first forward beside its finetune's.

Opt-in: ``python -m tools.reference_code.build_env DIR --moellava SRC --llava SRC`` once (network to the package
index), then ``VLMTRAIN_TEST_REFERENCE_ENV=DIR``. Skipped otherwise."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from train_helpers import REPO, TINY_TEXT, TINY_VISION, run_vlmtrain, tiny_config, write_config

ENV = os.environ.get("VLMTRAIN_TEST_REFERENCE_ENV")
pytestmark = pytest.mark.skipif(not ENV, reason="VLMTRAIN_TEST_REFERENCE_ENV names no reference environment "
                                                "(python -m tools.reference_code.build_env)")

# blip_laion_cc_sbu_558k's shapes: an instruction before or after the image (its preprocess_plain keeps the
# image alone of the human turn), then the caption
CAPTIONS = [[{"from": "human", "value": "<image>\nWrite a terse but informative summary of the picture."},
             {"from": "gpt", "value": "a red bus parked by the side of a road"}],
            [{"from": "human", "value": "Give a brief description of the image.\n<image>"},
             {"from": "gpt", "value": "people walking on a street in the rain."}]]
# LLaVA's names of each projector (its builder's nn.Sequential / bare nn.Linear), under model.mm_projector.
PROJECTORS = {"mlp2x_gelu": {"0.weight", "0.bias", "2.weight", "2.bias"},  # LLaVA-1.5
              "linear": {"weight", "bias"}}  # LLaVA-1's default


def shipped(name: str) -> dict:
    """configs/NAME.yaml's values the comparison depends on."""
    from vlmtrain.config import load_config

    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    return {k: getattr(cfg, k) for k in ("stage", "version", "image_aspect_ratio", "mm_vision_select_layer",
                                         "mm_vision_select_feature", "mm_projector_type")}


@pytest.fixture(scope="module", params=sorted(PROJECTORS))
def handed(request, caption_blend, instruct_blend, tmp_path_factory) -> tuple[Path, Path, dict, dict, set]:
    """A tiny vlmtrain stage 1 as configs/llava-1.5-7b-pretrain.yaml sets it (plain, square, projector only) from a
    Llama and a CLIP folder, with its mlp2x_gelu projector or LLaVA-1's linear one, handed to LLaVA's code, which
    steps, saves, and starts its finetune from its save. Returns the run, the work folder, the spec, what LLaVA's
    side computed and the projector's names in its files."""
    from tools.reference_code.llava_stage1_ours import hand_over_stage1, run_llava_stage1
    from tools.reference_code.our_side import CONVERSATIONS, write_pretrained_parts

    tmp = tmp_path_factory.mktemp("llava-s1")
    torch.manual_seed(0)
    vocab = tiny_config(caption_blend, tmp)["tokenizer_train_vocab_size"]
    write_pretrained_parts(tmp, dict(TINY_TEXT, vocab_size=vocab), TINY_VISION)
    s1 = tiny_config(caption_blend, tmp / "s1", **shipped("llava-1.5-7b-pretrain"), random_init=False,
                     model_name_or_path=str(tmp / "llm"), vision_tower=str(tmp / "clip"), text_config=None,
                     vision_config=None, max_steps=2, learning_rate=1e-2)
    s1["mm_projector_type"] = request.param
    r = run_vlmtrain("run", write_config(tmp / "s1.yaml", s1))
    assert r.code == 0, r.err
    work = tmp / "work"
    spec = hand_over_stage1(tmp / "s1", work, tmp / "clip" / "preprocessor_config.json", captions=CAPTIONS,
                            finetune_conversations=CONVERSATIONS)
    assert spec["mm_projector_type"] == request.param
    names = {"model.mm_projector." + k for k in PROJECTORS[request.param]}
    return tmp / "s1", work, spec, run_llava_stage1(Path(ENV), work), names


def test_its_stage1_step_on_our_projector_is_ours(handed):
    """Its pretrain set-up loads our ``mm_projector.bin`` (its pretrain_mm_mlp_adapter branch) into its
    projector exactly; it marks the projector alone trainable, as our stage 1 trains it; one step per caption
    (its preprocess_plain, its forward with labels, a backward) gives our ids, labels, loss and projector
    gradients, and no other gradient, in either."""
    from tools.reference_code.our_side import assert_same_step, training_step
    from vlmtrain.generate import load_run
    from vlmtrain.model.llava_export import llava_state_dict

    s1, work, spec, theirs, names = handed
    assert theirs["transformers"] == "4.37.2" and spec["version"] == "plain" and spec["image_aspect_ratio"] == "square"
    ours = torch.load(s1 / "mm_projector.bin", weights_only=True)
    assert set(ours) == names
    assert {"model.mm_projector." + k for k in theirs["loaded"]} == names
    for k, v in theirs["loaded"].items():
        torch.testing.assert_close(v, ours["model.mm_projector." + k], rtol=0, atol=0, msg=k)
    run = load_run(s1)  # what our steps start from: the same file, through our loader
    model_projector = {k: v for k, v in llava_state_dict(run.model.state_dict()).items() if k in names}
    assert set(model_projector) == names
    for k, v in model_projector.items():
        torch.testing.assert_close(v, ours[k], rtol=0, atol=0, msg=k)
    assert set(theirs["trainable"]) == names
    steps = training_step(s1, work, trained_only=True)
    for t, we in zip(theirs["steps"], steps, strict=True):
        torch.testing.assert_close(we["pixel_values"], t["pixel_values"], rtol=0, atol=0)
        assert assert_same_step(t, we)
        assert set(t["grads"]) == set(we["grads"]) == names
        assert all(bool(g.abs().sum() > 0) for g in t["grads"].values())


def test_its_padded_stage1_micro_batch_is_ours(handed):
    """Both captions (of different lengths) as one micro-batch, as its pretrain's 32 per GPU are: its collator
    pads with unk and its forward re-pads the spliced embeddings with zeros, ours pads with the pad token and
    an attention mask; the same supervised tokens, loss and projector gradients."""
    from tools.reference_code.llava_stage1_ours import batched_step

    s1, work, _, theirs, names = handed
    t, we = theirs["batched"], batched_step(s1, work)
    lengths = we["batch"]["attention_mask"].sum(dim=1).tolist()
    assert len(lengths) == len(CAPTIONS) and len(set(lengths)) == len(CAPTIONS)  # padding in play
    assert sorted(x for row in t["batch_labels"].tolist() for x in row if x != -100) == \
        sorted(x for row in we["batch"]["labels"].tolist() for x in row if x != -100)
    torch.testing.assert_close(we["loss"], t["loss"], rtol=1e-5, atol=1e-6)
    assert set(t["grads"]) == set(we["grads"]) == names
    for k in names:
        torch.testing.assert_close(we["grads"][k], t["grads"][k], rtol=1e-4, atol=1e-6, msg=k)


def test_its_saved_projector_starts_our_stage2_as_its_finetune(handed, instruct_blend, tmp_path):
    """The ``mm_projector.bin`` its save writes after an optimizer step (its safe_save_model_for_hf_trainer,
    tune_mm_mlp_adapter branch) as a vlmtrain stage 2's ``pretrain_mm_mlp_adapter`` (configs/llava-1.5-7b-
    finetune.yaml's version and image_aspect_ratio): our projector gets its weights exactly, and our first
    forward on a one- and a two-round conversation has its finetune's ids, labels, pixels (pad), logits and loss."""
    from tools.reference_code.llava_stage1_ours import stage2_forward
    from tools.reference_code.our_side import with_image

    s1, work, spec, theirs, names = handed
    saved = torch.load(theirs["saved"], weights_only=True)
    assert set(saved) == names  # its names: trainer.model.named_parameters()
    ours_s1 = torch.load(s1 / "mm_projector.bin", weights_only=True)
    assert all(not torch.equal(saved[k], ours_s1[k]) for k in names)  # its step moved every tensor
    for k, v in theirs["stepped"].items():
        torch.testing.assert_close(saved["model.mm_projector." + k], v, rtol=0, atol=0)
        torch.testing.assert_close(theirs["finetune_loaded"][k], v, rtol=0, atol=0)
    s2 = tiny_config(instruct_blend, tmp_path / "s2", **dict(shipped("llava-1.5-7b-finetune"), mm_projector_type=spec["mm_projector_type"]), random_init=False,
                     model_name_or_path=spec["llm"], vision_tower=spec["tower"], text_config=None,
                     vision_config=None, tokenizer_train_vocab_size=None, pretrain_mm_mlp_adapter=theirs["saved"])
    ours = stage2_forward(write_config(tmp_path / "s2.yaml", s2), work)
    # the real run takes it too (a file it cannot read as a stage-1 projector stops it with exit 2)
    r = run_vlmtrain("run", write_config(tmp_path / "s2-run.yaml", dict(s2, max_steps=1)))
    assert r.code == 0, r.err
    assert set(ours["projector"]) == names
    for k in names:
        torch.testing.assert_close(ours["projector"][k], saved[k], rtol=0, atol=0, msg=k)
    for t, we in zip(theirs["finetune"], ours["steps"], strict=True):
        ids, labels = t["ids"].tolist(), t["labels"].tolist()
        n = len(we["ids"]) - len(ids) + 1
        at = ids.index(-200)
        assert with_image(ids, we["ids"][at:at + n].tolist()) == we["ids"].tolist()
        assert labels[:at] + [-100] * n + labels[at + 1:] == we["labels"].tolist()
        torch.testing.assert_close(we["pixel_values"], t["pixel_values"], rtol=0, atol=0)
        torch.testing.assert_close(we["logits"], t["logits"], rtol=1e-5, atol=1e-5)  # (its -200: our n rows)
        torch.testing.assert_close(we["loss"], t["loss"], rtol=1e-5, atol=1e-6)
