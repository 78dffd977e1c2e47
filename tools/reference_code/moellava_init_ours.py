"""Our half of the stage-3 start comparison: a vlmtrain stage 2 handed to MoE-LLaVA's stage 3 as its own
stage 2 leaves its output (``hand_over``), its child run (``run_init_theirs``, moellava_init_side.py), and
vlmtrain's stage 3 started from the same stage 2 as ``vlmtrain run`` starts it (``our_start``), reported in
MoE-LLaVA's names (``our_report``), with a forward under its routers' weights (``forward_with_routers``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tools.reference_code.build_env import paths
from tools.reference_code.our_side import IMAGE_INDEX, TOWER, prepare, prompt_ids, run_side

QUESTION = "what color?"


def write_stage2_folder(run_dir: Path, out: Path) -> Path:
    """The run's dense model as MoE-LLaVA's stage 2 saves it (``Llava<Family>ForCausalLM``: its LLM keys,
    ``model.mm_projector.*``, the tower's weights, a config without ``moe``), through vlmtrain's own
    MoE-LLaVA key and config mapping; the tokenizer's files beside."""
    from vlmtrain.generate import load_run
    from vlmtrain.model.export_folder import write_export
    from vlmtrain.model.moe.checkpoint_keys import moellava_config, moellava_state_dict

    run = load_run(run_dir)
    model = run.model
    model.config.moe = {}  # (moellava_config copies it; a dense stage 2 has none, popped below)
    config = moellava_config(model, TOWER, run.cfg.image_aspect_ratio)
    del model.config.moe
    config.pop("moe")
    config["model_type"] = config["model_type"].replace("moe_llava_", "llava_")
    config["architectures"] = [a.replace("MoELLaVA", "Llava") for a in config["architectures"]]
    state = moellava_state_dict(model.state_dict(), model.config.text_config.model_type)
    write_export(out, state, config, model, run.tokenizer)
    return out


def hand_over(run_dir: Path, work: Path, family: str, init: dict[str, Any]) -> dict[str, Any]:
    """``work/`` as MoE-LLaVA's stage 3 finds its inputs: the stage-2 folder (named as its scripts name it:
    its train.py picks the class by the family's word), the tower folder, an image, and in ``spec.json`` the
    finetune_moe.sh flags (``init``; its tower, projector and feature layer flags as the stage 2 has them) and
    the prompt's ids, the image as its one IMAGE_TOKEN_INDEX."""
    from vlmtrain.generate import load_run

    stage2 = write_stage2_folder(run_dir, work.parent / f"llava{family}-finetune")
    spec = prepare(run_dir, work, family, question=QUESTION, export=stage2)
    ids, image_id = prompt_ids(load_run(run_dir), QUESTION, per_image=1)
    saved = json.loads((stage2 / "config.json").read_text())
    init = {**init, "tower": TOWER, "projector_type": saved["image_projector_type"],
            "select_layer": saved["mm_vision_select_layer"]}
    spec.update(init=init, init_ids=[IMAGE_INDEX if t == image_id else t for t in ids[0].tolist()])
    (work / "spec.json").write_text(json.dumps(spec))
    return spec


def run_init_theirs(env: Path, work: Path, family: str, *, timeout: float = 300) -> dict[str, Any]:
    """moellava_init_side.py on ``work`` in a child Python on MoE-LLaVA's path (transformers 4.34 for Mistral)."""
    overlay = "site434" if family == "openchat" else None
    run_side("moellava_init_side.py", [str(work)], paths(env, overlay=overlay), "MoE-LLaVA's", timeout=timeout)
    return torch.load(work / "theirs_init.pt", weights_only=False)


def our_start(config: Path) -> tuple[Any, Any]:
    """A stage-3 config's model as ``vlmtrain run`` has it before its first step (train/run.py: the seed, the
    tokenizer, build_model from the stage-2 folder, the stage's freeze, prepare_moe): cfg, model."""
    from transformers import set_seed

    from vlmtrain.config import load_config
    from vlmtrain.model.build import apply_freeze, build_model
    from vlmtrain.train.stage3 import prepare_moe
    from vlmtrain.train.tokenizer import load_tokenizer

    cfg = load_config(config)
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg)
    built = build_model(cfg, vocab_size=len(tokenizer), image_token_id=tokenizer.convert_tokens_to_ids(cfg.image_token))
    apply_freeze(built.model, cfg.frozen(), cfg.tune_vit_from_layer)
    prepare_moe(built.model, cfg)
    return cfg, built.model


def their_name(name: str, tensor: torch.Tensor, model_type: str) -> str:
    """One of our parameter names in MoE-LLaVA's (checkpoint_keys' mapping, which renames whole state dicts)."""
    from vlmtrain.model.moe.checkpoint_keys import moellava_state_dict

    (key,) = moellava_state_dict({name: tensor}, model_type)
    return key


def our_report(model: Any) -> dict[str, Any]:
    """What ``moellava_init_side`` reports, for our stage-3 start, in MoE-LLaVA's names."""
    from vlmtrain.model.moe import moe_blocks
    from vlmtrain.model.moe.checkpoint_keys import moellava_state_dict

    model_type = model.config.text_config.model_type
    state = moellava_state_dict(model.state_dict(), model_type)
    # (renamed together: Qwen-1 fuses q, k and v into one c_attn)
    trainable = moellava_state_dict({n: p for n, p in model.named_parameters() if p.requires_grad}, model_type)
    return {"state": state, "moe_layers": [i for i, _ in moe_blocks(model)], "trainable": set(trainable),
            "routers": {k: tuple(v.shape) for k, v in state.items()
                        if ".deepspeed_moe.gate.wg." in k or ".mlp.coefficient." in k},
            "moe_config": dict(model.config.moe)}


def forward_with_routers(model: Any, cfg: Any, work: Path,
                         routers: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Our first forward in eval mode on the spec's prompt and image, the routers' (and use_residual's
    coefficients') weights set to ``routers`` (MoE-LLaVA's names; ours are drawn from our seed, theirs from
    its): logits, each MoE layer's aux loss."""
    from vlmtrain.model.moe import moe_blocks

    from vlmtrain.data.images import ImageLoader, open_rgb
    from vlmtrain.generate import load_run

    spec = json.loads((work / "spec.json").read_text())
    model_type = model.config.text_config.model_type
    copied = 0
    for n, p in model.named_parameters():
        key = their_name(n, p.detach(), model_type) if ".router." in n or ".coefficient." in n else None
        if key in routers:
            with torch.no_grad():
                p.copy_(routers[key])
            copied += 1
    if copied != len(routers):
        raise ValueError(f"{copied} of {len(routers)} routers found in our model: {sorted(routers)}")
    run = load_run(Path(cfg.model_name_or_path))  # the stage 2's tokenizer and processor: stage 3's
    ids, _ = prompt_ids(run, spec["question"], per_image=run.per_image)
    pixels = ImageLoader(run.image_processor, cfg.image_aspect_ratio).process([open_rgb(work / spec["image"])])
    model.eval()
    torch.manual_seed(spec["seed"])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels).logits[0]
    return logits, [b.last.aux_loss for _, b in moe_blocks(model)]
