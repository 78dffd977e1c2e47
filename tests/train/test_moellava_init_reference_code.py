"""MoE-LLaVA's stage-3 start (its train.py with --moe_enable: ``initialize_moe_modules`` then
``initialize_vision_modules``, finetune_moe.sh's flags) on a tiny vlmtrain stage 2 handed over as its stage 2
saves, beside vlmtrain's stage 3 started from the same stage 2: the same MoE layers, every expert the dense
FFN (exact), the same routers' shapes, the same trainable parameters, the same ``moe`` config values, and,
with its routers' random weights in ours, the same first forward in eval mode: logits and aux losses.

Opt-in, as test_moellava_reference_code.py: ``VLMTRAIN_TEST_REFERENCE_ENV=DIR`` (build_env)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from train_helpers import run_vlmtrain, tiny_config, write_config

from tools.reference_code.our_side import MOELLAVA_FAMILIES as FAMILIES, TINY_SHAPE as SHAPE

ENV = os.environ.get("VLMTRAIN_TEST_REFERENCE_ENV")
pytestmark = pytest.mark.skipif(not ENV, reason="VLMTRAIN_TEST_REFERENCE_ENV names no reference environment "
                                                "(python -m tools.reference_code.build_env)")

MOE = {"num_experts": 4, "top_k_experts": 2, "capacity_factor": 1.5, "moe_mode": "sparse", "router_aux_loss_coef": 0.01}
_EXPERT = re.compile(r"\.deepspeed_moe\.experts\.deepspeed_experts\.\d+\.")


def stage2_and_stage3_config(tmp: Path, family: str, extra: dict) -> Path:
    """A tiny stage 2, trained; the stage-3 config that starts from it with finetune_moe.sh's values, and
    ``extra`` (flags of its that no shipped script sets: --moe_layers_idx, --use_residual True)."""
    from vlmtrain.tinydata import write_tiny_blend

    text, version, modules = FAMILIES[family]
    blend = write_tiny_blend(tmp / "blend", n=24, kind="instruct", seed=1)
    s2 = tiny_config(blend, tmp / "s2", text_config={**SHAPE, **text}, version=version, max_steps=3)
    assert run_vlmtrain("run", write_config(tmp / "s2.yaml", s2)).code == 0
    s3 = {"stage": 3, "model_name_or_path": str(tmp / "s2"), "version": version, "dataset_dir": str(blend),
          **MOE, "train_modules": modules, **extra, "model_max_length": 512, "output_dir": str(tmp / "s3"),
          "per_device_train_batch_size": 4, "max_steps": 2, "learning_rate": 3e-3, "seed": 7, "report_to": []}
    return write_config(tmp / "s3.yaml", s3)


@pytest.mark.parametrize("family,extra", [(f, {}) for f in FAMILIES] + [("phi", {"moe_layers_idx": [1, 3]}),
                                                                        ("phi", {"use_residual": True})])
def test_stage3_start_matches_moellava_code(family, extra, tmp_path):
    from tools.reference_code.moellava_init_ours import forward_with_routers, hand_over, our_report, our_start, run_init_theirs

    config = stage2_and_stage3_config(tmp_path, family, extra)
    work = tmp_path / "work"
    hand_over(tmp_path / "s2", work, family, {**MOE, "train_modules": FAMILIES[family][2], **extra})
    theirs = run_init_theirs(Path(ENV), work, family)
    cfg, model = our_start(config)
    we = our_report(model)

    assert theirs["moe_layers"] == we["moe_layers"] == extra.get("moe_layers_idx", [0, 2])
    experts = [k for k in theirs["state"] if _EXPERT.search(k)]
    assert len(experts) == 4 * 2 * len([k for k in theirs["dense"] if re.search(r"\.0\.mlp\.", k)])
    residual = [k for k in theirs["state"] if ".mlp.mlp." in k]  # use_residual's dense FFN beside the experts
    assert bool(residual) == extra.get("use_residual", False)
    for k in experts + residual:  # each expert is the dense FFN, in its model and in ours
        torch.testing.assert_close(theirs["state"][k], theirs["dense"][_EXPERT.sub(".", k).replace(".mlp.mlp.", ".mlp.")], rtol=0, atol=0, msg=k)
        torch.testing.assert_close(we["state"][k], theirs["state"][k], rtol=0, atol=0, msg=k)
    assert we["routers"] == theirs["routers"] and len(we["routers"]) == 2 * (1 + extra.get("use_residual", False) * 2)
    for k, v in theirs["state"].items():  # nothing else of the stage 2 changed on the way
        if k not in theirs["routers"]:
            torch.testing.assert_close(we["state"][k], v, rtol=0, atol=0, msg=k)
    assert we["trainable"] == set(theirs["trainable"]), (we["trainable"] ^ set(theirs["trainable"]))
    for key, value in theirs["moe_config"].items():
        assert we["moe_config"][key] == value, key

    routers = {k: theirs["state"][k] for k in theirs["routers"]}
    logits, aux = forward_with_routers(model, cfg, work, routers)
    torch.testing.assert_close(logits, theirs["logits"], rtol=1e-5, atol=1e-5)
    # the logits cannot tell routers apart here (identical experts, gates summing to one, no token over the
    # eval capacity); the aux losses, from the routers' probabilities and routes, do
    torch.testing.assert_close(MOE["router_aux_loss_coef"] * torch.stack(aux).sum(), theirs["moe_loss"],
                               rtol=1e-5, atol=1e-7)
    if theirs["moe_losses"] is not None:
        torch.testing.assert_close(torch.stack(aux), torch.stack(theirs["moe_losses"]), rtol=1e-5, atol=1e-6)
