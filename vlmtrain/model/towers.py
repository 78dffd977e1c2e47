"""The vision towers vlmtrain builds, and what each one needs from the rest of the build.

- CLIP / SigLIP: transformers' classes, loaded as they ship.
- InternViT-6B (InternVL-Chat with LLaVA): transformers' ``InternVLVisionModel``, the published
  weights renamed on load (:mod:`vlmtrain.model.internvit`); no remote code.
- ConvNeXt (ConvLLaVA): transformers' ConvNext stages in a LLaVA tower wrapper, with ConvLLaVA's
  resolution and added stage (:mod:`vlmtrain.model.convnext_tower`).

One place answers, per tower: its config (from a checkpoint folder or a YAML mapping), CLS or not,
tokens per image, loading, the image processor, partial unfreezing (``tune_vit_from_layer``) and the
sizes the MFU count needs. build.py and run.py ask here instead of testing model types themselves.
"""
from __future__ import annotations

import logging

from transformers import PretrainedConfig

from vlmtrain.config import ConfigError
from vlmtrain.model import convnext_tower, internvit

log = logging.getLogger("vlmtrain")

KINDS = {"clip_vision_model": "clip", "siglip_vision_model": "siglip",
         internvit.NATIVE_MODEL_TYPE: "internvit", convnext_tower.MODEL_TYPE: "convnext"}
# Fields of a YAML vision_config that apply on top of a checkpoint's own config in a real run: they
# describe how the run uses the tower (resolution, an added stage), not the published weights.
RUN_FIELDS = {"internvit": ("input_image_size",), "convnext": ("image_size", "depths", "hidden_sizes", "drop_path_rate")}


def kind(vc: PretrainedConfig) -> str:
    k = KINDS.get(getattr(vc, "model_type", ""))
    if k is None:
        raise ConfigError(f"vision tower type {getattr(vc, 'model_type', '?')!r} is not supported",
                          hint="vlmtrain builds CLIP, SigLIP, InternViT-6B (intern_vit_6b) and ConvNeXt (ConvLLaVA) towers")
    return k


def config_from_mapping(d: dict) -> PretrainedConfig | None:
    """A YAML / JSON ``vision_config`` written in a published layout (``intern_vit_6b``, ``convnext``), or None."""
    if internvit.is_published_config(d):
        return internvit.native_config_from_published(d, d.get("input_image_size"))
    if convnext_tower.is_published_config(d):
        return convnext_tower.tower_config(d)
    return None


def config_from_checkpoint(name: str, yaml_fields: dict | None) -> PretrainedConfig | None:
    """The tower config of an InternViT / ConvNeXt checkpoint (its config.json + the run's fields), or None
    for any other checkpoint (CLIP, SigLIP: transformers reads those)."""
    from vlmtrain.model.checkpoint_files import read_config_json

    d = read_config_json(name)
    run = yaml_fields or {}
    if internvit.is_published_config(d):
        return internvit.native_config_from_published(d, run.get("input_image_size"))
    if convnext_tower.is_published_config(d):
        return convnext_tower.tower_config(d, {k: run[k] for k in RUN_FIELDS["convnext"] if k in run})
    return None


def has_cls(vc: PretrainedConfig) -> bool:
    return kind(vc) in ("clip", "internvit")


def tokens_per_image(vc: PretrainedConfig, feature: str) -> int:
    k = kind(vc)
    if k == "convnext":
        return convnext_tower.tokens_per_image(vc)
    side = (internvit.input_size(vc) // internvit.patch_size(vc)) if k == "internvit" else vc.image_size // vc.patch_size
    return side * side + (1 if feature == "cls_patch" else 0)


def check_select_layer(vc: PretrainedConfig, layer: int) -> None:
    if kind(vc) == "convnext":
        convnext_tower.check_select_layer(layer)


def load(name: str, vc: PretrainedConfig, *, dtype, attn_implementation: str):
    """Load an InternViT / ConvNeXt tower from its published checkpoint (None for CLIP / SigLIP)."""
    from vlmtrain.model.checkpoint_files import read_config_json

    k = kind(vc)
    if k == "internvit":
        return internvit.load_tower(name, vc, dtype=dtype, attn_implementation=attn_implementation)
    if k == "convnext":
        return convnext_tower.load_tower(name, read_config_json(name) or {}, vc, dtype=dtype)
    return None


def finish(tower, vc: PretrainedConfig) -> None:
    """What a built tower needs on top of transformers' class, however it was built (loaded, random, a
    whole Llava checkpoint): InternViT resizes its position grid in float32, as the original."""
    if kind(vc) == "internvit":
        internvit.resize_positions_in_float32(tower)


def image_processor(vision_tower: str | None, vc: PretrainedConfig, backend: str = "pil"):
    """The processor ConvLLaVA / InternVL-LLaVA use with their towers (None: CLIP / SigLIP, handled by run.py),
    on the image backend the config names (vlmtrain.data.image_processor)."""
    k = kind(vc)
    if k == "internvit":
        return internvit.image_processor(vc, backend)
    if k == "convnext":
        return convnext_tower.image_processor(vision_tower, vc, backend)
    return None


def unfreeze_from(tower, vc: PretrainedConfig, index: int, feature_layer: int | list[int] = -1) -> None:
    """Train the tower from block (ViT) / stage (ConvNeXt) ``index`` on, as ConvLLaVA's and ShareGPT4V's
    ``unlock_vit``, up to the last block whose output reaches the selected hidden state (``feature_layer``,
    ``mm_vision_select_layer``). The blocks after it get no gradient: the references mark them trainable all
    the same, which changes nothing under DeepSpeed but makes DDP without unused-parameter search (the
    Trainer's choice under gradient checkpointing) fail at the first backward; here they stay frozen."""
    k = kind(vc)
    if k == "convnext":
        convnext_tower.unfreeze_from(tower, index)  # only its last stage is selectable: every stage feeds it
        return
    if k == "internvit":
        layers = tower.encoder.layer
    else:  # transformers 5's CLIP / SigLIP vision models hold the encoder themselves; 4.x wrapped it in vision_model
        layers = getattr(tower, "vision_model", tower).encoder.layers
    if not 0 <= index < len(layers):
        raise ConfigError(f"`tune_vit_from_layer: {index}`: the tower has blocks 0..{len(layers) - 1}")
    used = blocks_feeding(len(layers), feature_layer)
    if index >= used:
        raise ConfigError(f"`tune_vit_from_layer: {index}`: the selected hidden state (`mm_vision_select_layer: "
                          f"{feature_layer}`) is the output of block {used - 1}, so blocks {index}.. get no gradient",
                          hint=f"give a block below {used} to train part of the tower")
    for layer in layers[index:used]:
        layer.requires_grad_(True)
    if used < len(layers):
        log.info("vision tower: blocks %d..%d train; %d..%d come after the selected hidden state and stay frozen",
                 index, used - 1, used, len(layers) - 1)


def blocks_feeding(n_blocks: int, feature_layer: int | list[int]) -> int:
    """How many blocks (from the first) a selected hidden state depends on: hidden states are the embeddings'
    output, then one per block, so ``-1`` is block ``n-1``'s output and ``-2`` block ``n-2``'s."""
    layers = feature_layer if isinstance(feature_layer, (list, tuple)) else [feature_layer]
    return max(i if i >= 0 else n_blocks + 1 + i for i in layers)  # (several layers: the deepest one)


def flop_shape(vc: PretrainedConfig) -> tuple[int, int, int, float]:
    """(tokens the tower processes per image, attention layers, width, conv FLOPs per image forward)."""
    k = kind(vc)
    if k == "convnext":
        return tokens_per_image(vc, "patch"), 0, 0, convnext_tower.forward_flops(vc)
    return tokens_per_image(vc, "cls_patch" if has_cls(vc) else "patch"), vc.num_hidden_layers, vc.hidden_size, 0.0
