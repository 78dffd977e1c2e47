"""InternViT-6B (InternVL-Chat "with LLaVA") on transformers' own ``InternVLVisionModel``, no remote code.

OpenGVLab publishes InternViT-6B as remote code (``model_type: intern_vit_6b``, modeling_intern_vit.py).
transformers ships the same architecture natively as ``InternVLVisionModel`` (InternVL3's tower):
pre-norm blocks with RMSNorm, QK-norm over the whole width (before the split into heads), layer
scale on both branches, a CLS token, absolute position embeddings interpolated bicubically when the
input grid differs from the checkpoint's, and no final norm (``use_mean_pooling`` makes it an
identity). What differs is the layout, which :func:`published_to_native` renames:

=========================================  ====================================================
published (InternViT-6B-448px-V1-0 ...)    transformers InternVLVisionModel
=========================================  ====================================================
``embeddings.class_embedding``             ``embeddings.cls_token``
``embeddings.position_embedding``          ``embeddings.position_embeddings``
``embeddings.patch_embedding.*``           ``embeddings.patch_embeddings.projection.*``
``encoder.layers.N.attn.qkv.*``            ``encoder.layer.N.attention.{q,k,v}_proj.*`` (rows split in three)
``encoder.layers.N.attn.{q,k}_norm.*``     ``encoder.layer.N.attention.{q,k}_norm.*``
``encoder.layers.N.attn.proj.*``           ``encoder.layer.N.attention.projection_layer.*``
``encoder.layers.N.mlp.fc{1,2}.*``         ``encoder.layer.N.mlp.fc{1,2}.*``
``encoder.layers.N.norm1`` / ``norm2``     ``encoder.layer.N.layernorm_before`` / ``layernorm_after``
``encoder.layers.N.ls1`` / ``ls2``         ``encoder.layer.N.lambda_1`` / ``lambda_2``
=========================================  ====================================================

The hidden states are indexed as the original's (embeddings first, then one per block), so
InternVL's ``mm_vision_select_layer -4`` selects the same block. InternVL-LLaVA's image processor is
built in code (CLIP-style resize + centre crop to the tower's input size, ImageNet mean/std), not
read from the folder: :func:`image_processor` does the same.

``input_image_size`` (vlmtrain's field): the resolution images are fed at, when it differs from the
checkpoint's position grid (InternViT-6B-224px fed 336 px in the 224to336 recipes: 576 tokens, the
position embeddings interpolated every forward, as the original does: in float32, then cast to the
weights' dtype, :func:`resize_positions_in_float32`).
"""
from __future__ import annotations

import functools
import logging
import re

import torch

from vlmtrain.config import ConfigError

log = logging.getLogger(__name__)

PUBLISHED_MODEL_TYPES = ("intern_vit_6b",)
NATIVE_MODEL_TYPE = "internvl_vision"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def is_published_config(d: dict | None) -> bool:
    return isinstance(d, dict) and d.get("model_type") in PUBLISHED_MODEL_TYPES


def native_config_from_published(d: dict, input_image_size: int | None = None):
    """The published config.json (a dict) -> ``InternVLVisionConfig`` of the same tower."""
    from transformers import InternVLVisionConfig

    eps = d.get("layer_norm_eps", 1e-6)
    if d.get("qk_normalization", True) and eps != 1e-6:
        # transformers' q/k norms use eps 1e-6 whatever the config says; the original uses layer_norm_eps.
        raise ConfigError(f"InternViT config: layer_norm_eps {eps} with QK-norm; the native q/k norms use 1e-6")
    if d.get("drop_path_rate", 0.0):
        log.warning("InternViT drop_path_rate %s is not applied (transformers' InternVLVision has no drop path); "
                    "it only matters when the tower trains", d["drop_path_rate"])
    image_size = d.get("image_size", 224)
    vc = InternVLVisionConfig(
        hidden_size=d["hidden_size"], intermediate_size=d["intermediate_size"],
        num_hidden_layers=d["num_hidden_layers"], num_attention_heads=d["num_attention_heads"],
        attention_bias=d.get("qkv_bias", False), use_qk_norm=d.get("qk_normalization", True),
        norm_type=d.get("norm_type", "rms_norm"), layer_norm_eps=eps, hidden_act=d.get("hidden_act", "gelu"),
        image_size=image_size, patch_size=d.get("patch_size", 14), num_channels=d.get("num_channels", 3),
        layer_scale_init_value=d.get("initializer_factor", 0.1), use_mean_pooling=True,
        use_absolute_position_embeddings=True, use_mask_token=False,
        # InternViT's `dropout` is its attention's proj_drop only; transformers' hidden_dropout_prob would add
        # dropout on the embeddings and after every MLP, which InternViT does not have.
        hidden_dropout_prob=0.0, projection_dropout=d.get("dropout", 0.0),
        attention_dropout=d.get("attention_dropout", 0.0), initializer_range=d.get("initializer_range", 0.02))
    if input_image_size:
        vc.input_image_size = int(input_image_size)
    return vc


def input_size(vc) -> int:
    """The side of the square images the tower is fed (its config's grid unless ``input_image_size`` says)."""
    size = getattr(vc, "input_image_size", None) or vc.image_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def patch_size(vc) -> int:
    p = vc.patch_size
    return int(p[0] if isinstance(p, (list, tuple)) else p)


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------

_TOP = {"embeddings.class_embedding": "embeddings.cls_token",
        "embeddings.position_embedding": "embeddings.position_embeddings"}
_LAYER = {"attn.q_norm.": "attention.q_norm.", "attn.k_norm.": "attention.k_norm.",
          "attn.proj.": "attention.projection_layer.", "mlp.fc1.": "mlp.fc1.", "mlp.fc2.": "mlp.fc2.",
          "norm1.": "layernorm_before.", "norm2.": "layernorm_after."}
_SCALE = {"ls1": "lambda_1", "ls2": "lambda_2"}


def published_to_native(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """InternViT's published state dict -> transformers' InternVLVisionModel names (q, k, v split from qkv)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _TOP:
            out[_TOP[key]] = value
            continue
        if key.startswith("embeddings.patch_embedding."):
            out["embeddings.patch_embeddings.projection." + key.rsplit(".", 1)[1]] = value
            continue
        m = re.match(r"^encoder\.layers\.(\d+)\.(.+)$", key)
        if not m:
            raise ConfigError(f"InternViT checkpoint: unknown key {key!r}")
        n, rest = m.groups()
        base = f"encoder.layer.{n}."
        if rest.startswith("attn.qkv."):
            param = rest.rsplit(".", 1)[1]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{base}attention.{name}.{param}"] = part.clone()
        elif rest in _SCALE:
            out[base + _SCALE[rest]] = value
        else:
            for pub, nat in _LAYER.items():
                if rest.startswith(pub):
                    out[base + nat + rest[len(pub):]] = value
                    break
            else:
                raise ConfigError(f"InternViT checkpoint: unknown key {key!r}")
    return out


def native_to_published(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`published_to_native` (q, k, v fused back into qkv)."""
    out: dict[str, torch.Tensor] = {}
    inv_top = {v: k for k, v in _TOP.items()}
    inv_layer = {v: k for k, v in _LAYER.items()}
    inv_scale = {v: k for k, v in _SCALE.items()}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key in inv_top:
            out[inv_top[key]] = value
            continue
        if key.startswith("embeddings.patch_embeddings.projection."):
            out["embeddings.patch_embedding." + key.rsplit(".", 1)[1]] = value
            continue
        n, rest = re.match(r"^encoder\.layer\.(\d+)\.(.+)$", key).groups()
        m = re.match(r"^attention\.([qkv])_proj\.(weight|bias)$", rest)
        if m:
            qkv.setdefault((n, m.group(2)), {})[m.group(1)] = value
        elif rest in inv_scale:
            out[f"encoder.layers.{n}.{inv_scale[rest]}"] = value
        else:
            nat = next(p for p in inv_layer if rest.startswith(p))
            out[f"encoder.layers.{n}.{inv_layer[nat]}{rest[len(nat):]}"] = value
    for (n, param), parts in qkv.items():
        out[f"encoder.layers.{n}.attn.qkv.{param}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


# ---------------------------------------------------------------------------------------------
# Loading, processing
# ---------------------------------------------------------------------------------------------

def load_tower(name: str, vc, *, dtype: torch.dtype, attn_implementation: str):
    """The published InternViT checkpoint (folder or Hub id) as ``InternVLVisionModel``, every key checked."""
    from transformers import InternVLVisionModel

    from vlmtrain.model.checkpoint_files import from_state_dict, read_state_dict

    state = published_to_native(read_state_dict(name))
    return from_state_dict(InternVLVisionModel, vc, state, source=name, dtype=dtype,
                           attn_implementation=attn_implementation)


@functools.lru_cache(maxsize=None)
def _float32_position_resize():
    """``InternVLVisionEmbeddings`` whose position grid is resized in float32 and cast back, as InternViT's
    own ``_get_pos_embed`` does; transformers resizes in the weights' dtype, which in bf16 gives other
    position embeddings whenever the input grid differs from the checkpoint's (224 px fed 336 px)."""
    from torch.nn import functional as F
    from transformers.models.internvl.modeling_internvl import InternVLVisionEmbeddings

    class Float32PositionResize(InternVLVisionEmbeddings):
        def interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
            pos = self.position_embeddings
            n = pos.shape[1] - 1
            if embeddings.shape[1] - 1 == n and height == width:
                return pos
            side, dim = int(round(n ** 0.5)), pos.shape[-1]
            grid = pos[:, 1:].float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(height // self.patch_size[0], width // self.patch_size[1]),
                                 mode="bicubic", align_corners=False)
            return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos.dtype)], dim=1)

    return Float32PositionResize


def resize_positions_in_float32(tower) -> None:
    """Make ``tower`` (an ``InternVLVisionModel``) resize its position embeddings as the original does."""
    from transformers.models.internvl.modeling_internvl import InternVLVisionEmbeddings

    if type(tower.embeddings) is InternVLVisionEmbeddings:
        tower.embeddings.__class__ = _float32_position_resize()


def image_processor(vc, backend: str = "pil"):
    """InternVL-LLaVA's processor: resize the short side and centre-crop to the input size, ImageNet mean/std."""
    from vlmtrain.data.image_processor import processor_class

    s = input_size(vc)
    cls = processor_class("CLIPImageProcessor", backend)
    return cls(size={"shortest_edge": s}, crop_size={"height": s, "width": s}, do_resize=True, do_center_crop=True,
               do_normalize=True, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
