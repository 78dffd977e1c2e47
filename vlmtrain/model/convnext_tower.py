"""ConvLLaVA's vision tower: the laion CLIP-ConvNeXt-Large image trunk on transformers' ConvNext classes.

ConvLLaVA (alibaba/conv-llava, ``convnext_encoder.py``) runs transformers' ``ConvNextModel`` and
publishes its towers in that layout (ConvLLaVA/LAION-CLIP-ConvNeXt-Large-512: the laion weights,
4 stages; ConvLLaVA/ConvLLaVA-ConvNeXt-{768,1024,1536}: 5 stages), so transformers' own
``ConvNextEmbeddings`` / ``ConvNextEncoder`` / ``ConvNextStage`` load them as they are. What ConvLLaVA
does on top, and this module does the same way:

- resolution: images are resized and centre-cropped to ``image_size`` (768 / 1024 / 1536);
- an added fifth stage (``vision_add_five_stage 6``, width 3072): a ``ConvNextStage(1536 -> 3072,
  depth 6)`` with a stride-2 downsampling layer, i.e. what ``ConvNextEncoder`` builds for a fifth
  entry of ``depths`` / ``hidden_sizes``. Built on the 4-stage checkpoint it starts from PyTorch's
  default initialisation (ConvLLaVA appends it after loading) and is what its stage 1 trains;
- features: the last stage's map (no final norm), flattened row-major to tokens, (H/64)^2 with five
  stages: 144 at 768 px, 576 at 1536 px; no CLS. The projector sees ``hidden_sizes[-1]`` channels;
- stage 2 (``tune_vit_from_layer 2``): stages 2.. (downsampling layers included) train, the stem
  and stages 0-1 stay frozen (:func:`unfreeze_from`).

The pooled-output LayerNorm of ``ConvNextModel`` is not part of the tower: ConvLLaVA never uses it
and deletes its keys when it saves a tower, so its published towers have none.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, ConvNextConfig
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.convnext.modeling_convnext import ConvNextEmbeddings, ConvNextPreTrainedModel, ConvNextStage

from vlmtrain.config import ConfigError

MODEL_TYPE = "convllava_convnext"
PUBLISHED_MODEL_TYPES = ("convnext",)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


class ConvNextTowerConfig(ConvNextConfig):
    """``ConvNextConfig`` as a LLaVA tower: ``image_size`` is the input resolution, the width is the last stage's."""

    model_type = MODEL_TYPE

    @property
    def hidden_size(self) -> int:  # what transformers' Llava projector reads
        return self.hidden_sizes[-1]


class ConvNextStages(nn.Module):
    """The stages as ``ConvNextEncoder`` builds them (same keys: ``stages.N.*``). Not ``ConvNextEncoder``
    itself: in transformers 5 that is a PreTrainedModel of its own, which refuses the attention setting
    the Llava model is built with (a ConvNeXt has no attention)."""

    def __init__(self, config: ConvNextTowerConfig):
        super().__init__()
        rates = torch.linspace(0, config.drop_path_rate, sum(config.depths), device="cpu").split(config.depths)
        self.stages = nn.ModuleList()
        for i, (depth, width) in enumerate(zip(config.depths, config.hidden_sizes)):
            self.stages.append(ConvNextStage(config, config.hidden_sizes[max(i - 1, 0)], width, stride=2 if i else 1,
                                             depth=depth, drop_path_rates=rates[i].tolist()))


class ConvNextTower(ConvNextPreTrainedModel):
    """ConvNeXt stem + stages; hidden states are token sequences [B, H*W, C], one per stage (stem first)."""

    config_class = ConvNextTowerConfig
    supports_gradient_checkpointing = True
    _no_split_modules = ["ConvNextLayer"]
    # No attention inside: any implementation the LLM is built with is fine for the tower.
    _supports_sdpa = _supports_flash_attn = _supports_flex_attn = True

    def __init__(self, config: ConvNextTowerConfig):
        super().__init__(config)
        self.embeddings = ConvNextEmbeddings(config)
        self.encoder = ConvNextStages(config)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, output_hidden_states=None, return_dict=None,
                **kwargs) -> BaseModelOutputWithPooling:
        x = self.embeddings(pixel_values)
        maps = [x]
        for stage in self.encoder.stages:
            for layer in stage.downsampling_layer:
                x = layer(x)
            for layer in stage.layers:
                if self.gradient_checkpointing and self.training:
                    x = self._gradient_checkpointing_func(layer.__call__, x)
                else:
                    x = layer(x)
            maps.append(x)
        tokens = tuple(m.flatten(2).transpose(1, 2) for m in maps)  # [B, C, H, W] -> [B, H*W, C]
        return BaseModelOutputWithPooling(last_hidden_state=tokens[-1], hidden_states=tokens)


AutoConfig.register(MODEL_TYPE, ConvNextTowerConfig, exist_ok=True)
AutoModel.register(ConvNextTowerConfig, ConvNextTower, exist_ok=True)


def is_published_config(d: dict | None) -> bool:
    return isinstance(d, dict) and d.get("model_type") in PUBLISHED_MODEL_TYPES + (MODEL_TYPE,)


def tower_config(published: dict, overrides: dict | None = None) -> ConvNextTowerConfig:
    """The checkpoint's config.json, with the run's ``image_size`` and an added stage (``depths`` /
    ``hidden_sizes`` that extend the checkpoint's) from ``overrides``."""
    d = {k: v for k, v in published.items() if k not in ("model_type", "out_features", "out_indices", "stage_names",
                                                       "architectures", "_name_or_path", "transformers_version")}
    for key, value in (overrides or {}).items():
        if key in ("depths", "hidden_sizes"):
            have = list(published.get(key, []))
            if list(value)[:len(have)] != have:
                raise ConfigError(f"vision_config `{key}` {list(value)} must extend the checkpoint's {have} "
                                  "(ConvLLaVA adds stages after the published ones; it does not change them)")
        if key != "model_type":
            d[key] = value
    d["num_stages"] = len(d["depths"])
    if len(d["hidden_sizes"]) != d["num_stages"]:
        raise ConfigError(f"vision_config: {len(d['hidden_sizes'])} hidden_sizes for {d['num_stages']} depths")
    return ConvNextTowerConfig(**d)


def tokens_per_image(vc) -> int:
    side = vc.image_size // (vc.patch_size * 2 ** (len(vc.depths) - 1))
    return side * side


def check_select_layer(layer: int) -> None:
    if layer != -1:
        raise ConfigError(f"`mm_vision_select_layer: {layer}` with a ConvNeXt tower; ConvLLaVA's scripts select the "
                          "last stage's map (-1)", hint="set `mm_vision_select_layer: -1`")


def load_tower(name: str, published: dict, vc: ConvNextTowerConfig, *, dtype: torch.dtype) -> ConvNextTower:
    """A ConvLLaVA / laion ConvNeXt checkpoint in transformers' layout; stages beyond the checkpoint's start fresh."""
    from vlmtrain.model.checkpoint_files import from_state_dict, read_state_dict

    have = len(published.get("depths", []))
    state = {k: v for k, v in read_state_dict(name).items() if not k.startswith("layernorm.")}  # pooled-output norm
    new = tuple(f"encoder.stages.{i}." for i in range(have, len(vc.depths)))
    tower = from_state_dict(ConvNextTower, vc, state, source=name, new=new, dtype=dtype)
    for i in range(have, len(vc.depths)):  # as ConvLLaVA's add_stage: a freshly constructed stage
        stage = ConvNextStage(vc, vc.hidden_sizes[i - 1], vc.hidden_sizes[i], depth=vc.depths[i])
        tower.encoder.stages[i] = stage.to(dtype)
    return tower


def unfreeze_from(tower: nn.Module, stage: int) -> None:
    """ConvLLaVA's ``make_layers_trainable_after_stage``: stages ``stage``.. train (with their downsampling)."""
    n = len(tower.encoder.stages)
    if not 0 <= stage < n:
        raise ConfigError(f"`tune_vit_from_layer: {stage}`: the ConvNeXt tower has stages 0..{n - 1}")
    for i, s in enumerate(tower.encoder.stages):
        if i >= stage:
            s.requires_grad_(True)


def image_processor(name: str | None, vc, backend: str = "pil"):
    """The tower folder's processor with its size and crop set to ``image_size`` (ConvLLaVA's ``set_crop_size``);
    a CLIP processor with CLIP's mean/std (laion's preprocessing) when the folder has none. On ``backend``."""
    import transformers

    from vlmtrain.data.image_processor import processor_class

    s = vc.image_size
    if name:
        try:
            proc = transformers.AutoImageProcessor.from_pretrained(name, backend=backend)
        except (OSError, ValueError):
            proc = None
        if proc is not None:
            proc.size = {"shortest_edge": s}
            proc.crop_size = {"height": s, "width": s}
            return proc
    cls = processor_class("CLIPImageProcessor", backend)
    return cls(size={"shortest_edge": s}, crop_size={"height": s, "width": s}, do_center_crop=True,
               image_mean=CLIP_MEAN, image_std=CLIP_STD)


def forward_flops(vc) -> float:
    """Matmul FLOPs of one image's forward (2 per multiply-add): stem, downsampling convs, blocks."""
    side = vc.image_size // vc.patch_size
    macs = side * side * vc.num_channels * vc.patch_size ** 2 * vc.hidden_sizes[0]
    for i, (depth, width) in enumerate(zip(vc.depths, vc.hidden_sizes)):
        if i > 0:
            side //= 2
            macs += side * side * 4 * vc.hidden_sizes[i - 1] * width  # 2x2 stride-2 conv
        macs += depth * side * side * (49 * width + 8 * width * width)  # 7x7 depthwise + two 4x pointwise
    return 2.0 * macs
