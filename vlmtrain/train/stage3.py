"""Stage 3 (MoE-tuning) from a run config: the MoE spec, the conversion, what trains, the aux loss.

The model side lives in vlmtrain.model.moe; this module reads the config's MoE-LLaVA keys, checks
them against the model before any weight is loaded (``check_against_model`` on the meta skeleton),
and turns a loaded stage-2 model into the stage-3 model.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from vlmtrain.config import ConfigError, TrainConfig
from vlmtrain.model.moe import MoeSettings, MoeSpec, apply_train_modules, convert_to_moe, moe_blocks, moe_layer_indices

log = logging.getLogger("vlmtrain")

# MoE-LLaVA's finetune_moe.sh --train_modules per LLM family (what `train_modules` defaults to; MoE-LLaVA's
# own default, with no --train_modules, freezes nothing: `train_modules: all` here).
DEFAULT_TRAIN_MODULES = {
    "phi": ["fc1", "fc2", "wg"],
    "qwen2": ["mlp.w1", "mlp.w2", "mlp.c_proj", "wg"],
    "stablelm": ["gate_proj", "up_proj", "down_proj", "wg"],
    "llama": ["gate_proj", "up_proj", "down_proj", "wg"],
    "mistral": ["gate_proj", "up_proj", "down_proj", "wg"],
}


def spec_from_config(cfg: TrainConfig, num_layers: int, text_model_type: str) -> MoeSpec:
    """The MoeSpec a stage-3 config asks for on a model of ``num_layers`` decoder layers."""
    where = cfg._source or "config"
    mode = cfg.moe_layers_idx if cfg.moe_layers_idx is not None else cfg.moe_mode
    try:
        layers = moe_layer_indices(mode, num_layers)
    except ValueError as e:
        key = "moe_layers_idx" if cfg.moe_layers_idx is not None else "moe_mode"
        raise ConfigError(f"`{key}`: {e}", where=where) from None
    experts = cfg.num_experts[0] if isinstance(cfg.num_experts, list) else cfg.num_experts
    settings = MoeSettings(num_experts=experts, top_k=cfg.top_k_experts, capacity_factor=cfg.capacity_factor,
                           eval_capacity_factor=cfg.eval_capacity_factor, min_capacity=cfg.min_capacity,
                           use_residual=cfg.use_residual, second_expert_sampling=cfg.moe_second_expert_sampling,
                           random_token_selection=cfg.moe_random_token_selection, drop_tokens=cfg.moe_drop_tokens)
    train_modules = cfg.train_modules
    if train_modules == "all":  # (MoE-LLaVA without --train_modules: its list is None, and nothing is frozen)
        train_modules = []
    elif train_modules is None:
        train_modules = DEFAULT_TRAIN_MODULES.get(text_model_type)
        if train_modules is None:
            raise ConfigError(f"no default `train_modules` for a {text_model_type!r} LLM", where=where,
                              hint="list the FFN weight names that train, e.g. train_modules: [gate_proj, up_proj, down_proj, wg]")
    # config.moe's moe_mode is MoE-LLaVA's: its initialize_moe_modules records the --moe_mode flag before an
    # explicit --moe_layers_idx turns it to "custom", so a layer list keeps the flag's value there
    recorded = cfg.moe_mode if isinstance(cfg.moe_mode, str) else "custom"
    return MoeSpec(layers=layers, settings=settings, moe_mode=recorded,
                   router_aux_loss_coef=cfg.router_aux_loss_coef, train_modules=list(train_modules))


def prepare_moe(model: nn.Module, cfg: TrainConfig, *, meta: bool = False) -> MoeSpec:
    """Convert the stage-2 model's chosen FFNs to MoE (unless it is a stage-3 model already) and
    freeze what ``train_modules`` does not name. Call after the stage's freeze spec is applied."""
    where = cfg._source or "config"
    tc = model.config.text_config
    if cfg.save_moellava_checkpoint:
        from vlmtrain.model.moe.checkpoint_keys import export_problem

        problem = export_problem(tc)
        if problem is not None:  # said now, not after the stage has trained
            raise ConfigError(f"`save_moellava_checkpoint`: {problem}", where=where,
                              hint="set `save_moellava_checkpoint: false` (the run's own output is kept either way)")
    n_layers = tc.num_hidden_layers
    spec = spec_from_config(cfg, n_layers, tc.model_type)
    existing = moe_blocks(model)
    if existing:  # continuing from a stage-3 model: its experts are trained, keep them
        have = [i for i, _ in existing]
        if have != spec.layers or existing[0][1].settings.num_experts != spec.settings.num_experts:
            raise ConfigError(f"`model_name_or_path` is already an MoE model (layers {have}, "
                              f"{existing[0][1].settings.num_experts} experts) that the MoE keys do not describe",
                              where=where, hint="match moe_mode / num_experts to it, or start from the stage-2 model")
        for _, block in existing:
            block.settings = spec.settings
        model.config.moe = spec.to_config()
        log.info("stage 3: continuing an MoE model (layers %s)", have)
    else:
        convert_to_moe(model, spec, check=not meta)
    matched = apply_train_modules(model, spec.train_modules, tc.model_type)
    if matched == 0 and spec.train_modules:
        raise ConfigError(f"`train_modules` {spec.train_modules} matches no parameter of the {tc.model_type!r} LLM",
                          where=where, hint="name parameter substrings such as fc1 fc2 wg (phi), "
                                            "gate_proj up_proj down_proj wg (stablelm, llama, mistral)")
    return spec


def check_against_model(cfg: TrainConfig) -> None:
    """The MoE keys against the model's shape, on the meta device: no weight is read or allocated."""
    from vlmtrain.model.build import build_model

    built = build_model(cfg, meta=True)
    prepare_moe(built.model, cfg, meta=True)


def zero_stage(deepspeed_json: str | None) -> int | None:
    import json
    from pathlib import Path

    if not deepspeed_json:
        return None
    try:
        return int(json.loads(Path(deepspeed_json).read_text()).get("zero_optimization", {}).get("stage", 0))
    except (ValueError, TypeError, OSError):
        return None


def aux_loss(model: nn.Module) -> torch.Tensor | None:
    """The sum of the MoE layers' load-balancing losses of the last forward (in the graph), or None."""
    losses = [block.last.aux_loss for _, block in moe_blocks(model) if block.last is not None]
    return torch.stack(losses).sum() if losses else None
