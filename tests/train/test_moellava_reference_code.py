"""Our MoE-LLaVA exports, loaded and run by MoE-LLaVA's own code (its classes, loader steps, template,
tokenizer, image processing, and DeepSpeed 0.9.5's MoE layer), beside `vlmtrain generate` on the same
question and image: the same prompt, input ids, pixels, logits and greedy answer, for each family its
stage-3 scripts train.

Opt-in: it needs MoE-LLaVA's code and the versions it pins, prepared once with network to the package
index by ``python -m tools.reference_code.build_env DIR --moellava SRC``; then
``VLMTRAIN_TEST_REFERENCE_ENV=DIR``. Skipped otherwise (CI has neither)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from train_helpers import run_vlmtrain, tiny_config, write_config

from tools.reference_code.our_side import MOELLAVA_FAMILIES as FAMILIES, TINY_SHAPE as SHAPE

ENV = os.environ.get("VLMTRAIN_TEST_REFERENCE_ENV")
pytestmark = pytest.mark.skipif(not ENV, reason="VLMTRAIN_TEST_REFERENCE_ENV names no reference environment "
                                                "(python -m tools.reference_code.build_env)")


def train_stage3(tmp: Path, family: str) -> Path:
    """A tiny stage 2, then stage 3 from it with save_moellava_checkpoint, as the shipped chains run."""
    from vlmtrain.tinydata import write_tiny_blend

    text, version, modules = FAMILIES[family]
    blend = write_tiny_blend(tmp / "blend", n=24, kind="instruct", seed=1)
    s2 = tiny_config(blend, tmp / "s2", text_config={**SHAPE, **text}, version=version, max_steps=3)
    assert run_vlmtrain("run", write_config(tmp / "s2.yaml", s2)).code == 0
    s3 = {"stage": 3, "model_name_or_path": str(tmp / "s2"), "version": version, "dataset_dir": str(blend),
          "num_experts": 4, "top_k_experts": 2, "capacity_factor": 1.5, "moe_mode": "sparse",
          "train_modules": modules, "router_aux_loss_coef": 0.01, "model_max_length": 512,
          "output_dir": str(tmp / "s3"), "per_device_train_batch_size": 4, "max_steps": 2, "learning_rate": 3e-3,
          "warmup_ratio": 0.0, "logging_steps": 1, "seed": 7, "report_to": [], "save_moellava_checkpoint": True}
    r = run_vlmtrain("run", write_config(tmp / "s3.yaml", s3))
    assert r.code == 0, r.err
    return tmp / "s3"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_moellava_code_loads_our_export_and_answers_as_we_do(family, tmp_path):
    from tools.reference_code.our_side import assert_same_answer, ours, prepare, run_theirs

    run_dir = train_stage3(tmp_path, family)
    work = tmp_path / "work"
    prepare(run_dir, work, family)
    assert_same_answer(run_theirs(Path(ENV), work, family), ours(run_dir, work))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_training_step_matches_moellava_code(family, tmp_path):
    """One stage-3 training step on a one-round and a two-round conversation: its preprocess's ids and labels
    (the template's masking, with its own slow tokenizer for phi and openchat) are ours, and its model in
    train mode (DeepSpeed 0.9.5's gate at the training capacity factor, its second expert drawn with noise)
    gives our loss, aux term and gradients, parameter by parameter under its names. Where its length
    arithmetic masks a whole sample (its "tokenization mismatch"), our replay of it says so."""
    from tools.reference_code.our_side import assert_same_step, prepare, run_theirs, training_step

    run_dir = train_stage3(tmp_path, family)
    work = tmp_path / "work"
    prepare(run_dir, work, family)
    theirs = run_theirs(Path(ENV), work, family)["steps"]
    compared = 0
    for t, we in zip(theirs, training_step(run_dir, work), strict=True):
        if assert_same_step(t, we):
            assert any(".deepspeed_moe.gate.wg." in k for k in t["grads"]) and any("deepspeed_experts" in k for k in t["grads"])
            compared += 1
    assert compared >= 1
