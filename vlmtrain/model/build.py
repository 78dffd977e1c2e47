"""Build the LLaVA model on transformers' own classes: a vision tower + any causal LM.

Towers: CLIP, SigLIP, InternViT-6B and ConvLLaVA's ConvNeXt (vlmtrain.model.towers says what each
needs). Checkpoints published in a layout that is not a transformers class (InternViT-6B, Qwen-1_8B)
are renamed on load, so no remote code runs (vlmtrain.model.internvit, vlmtrain.model.qwen).

Three ways in, all ending in a ``LlavaForConditionalGeneration`` (or the thin
:class:`VlmLlavaForConditionalGeneration` when the projector is not ``mlp2x_gelu``):

- ``random_init`` / ``meta``: from the configs alone (``text_config`` / ``vision_config`` given as
  fields in the YAML or JSON files under configs/model_configs/). ``meta=True`` allocates nothing:
  ``vlmtrain run --dry-run`` counts a 13B model's parameters on a laptop, offline.
- separate pretrained parts (LLaVA stage 1): the LLM from ``model_name_or_path`` and the vision
  tower from ``vision_tower`` are loaded with their own classes and put into a Llava skeleton built
  on the meta device, so no weight is allocated twice. The projector is fresh.
- a whole Llava checkpoint (``model_name_or_path`` whose config is ``llava``): loaded as is.

The image placeholder is a real token id: ``<image>`` is added to the tokenizer when missing and
the data pipeline expands it into ``per_image`` copies, which transformers' Llava fills by
``masked_scatter``.

Why one file of ~500 lines: the three ways in share the config readers, the model class and the
part/freeze helpers, and each is a few lines of the same sequence; split, a reader would hop between
files to follow one build.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, LlavaConfig, LlavaForConditionalGeneration, PretrainedConfig

from vlmtrain.config import ConfigError, TrainConfig
from vlmtrain.model import qwen, towers
from vlmtrain.model.projector import build_sequential, load_mm_projector, read_mm_projector

log = logging.getLogger(__name__)

LLAVA_TYPES = ("llava",)


class VlmLlavaForConditionalGeneration(LlavaForConditionalGeneration):
    """transformers' Llava with LLaVA's other projector types and a leaner training loss.

    - ``mm_projector_type`` (an extra field of the plain ``LlavaConfig``): ``mlp2x_gelu`` keeps the
      stock projector, so such checkpoints load in stock ``LlavaForConditionalGeneration`` too;
      ``linear`` / ``mlpNx_gelu`` / ``identity`` use LLaVA's Sequential layout.
    - ``moe`` (an extra field, written by stage 3): the listed decoder layers' FFNs are sparse MoE
      blocks (vlmtrain.model.moe); their load-balancing loss is added by the trainer.
    - With ``labels``, the LM head runs only on the positions that have a label, in chunks (see
      :func:`vlmtrain.model.loss.supervised_lm_loss`): the same loss as the stock forward, without
      a [batch x length x vocab] logits tensor. That tensor is 3.3 GB for 16 x 1024 tokens and a 100k
      vocabulary, past what cuBLAS's fast kernels index, and took a third of an H100 step.
    """

    def __init__(self, config: LlavaConfig):
        super().__init__(config)
        if getattr(config, "mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
            self.model.multi_modal_projector = make_projector(config)
        if getattr(config, "moe", None):  # a stage-3 model: rebuild its MoE layers before the weights load
            from vlmtrain.model.moe import MoeSpec, convert_to_moe

            convert_to_moe(self, MoeSpec.from_config(config.moe), check=False)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' ``from_pretrained``; saved weights with an ``lm_head.bias`` (an older stage 1-2 output,
        trained with phi-2's output bias) are a ConfigError rather than a bias dropped silently."""
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        _check_no_lm_head_bias(info, args[0] if args else kwargs.get("pretrained_model_name_or_path"))
        return (model, info) if want_info else model

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, labels=None,
                num_items_in_batch=None, image_stand_in=None, **kwargs):
        if labels is None:
            return super().forward(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                                   **kwargs)
        from transformers.models.llava.modeling_llava import LlavaCausalLMOutputWithPast

        from vlmtrain.model.loss import supervised_lm_loss, supervised_positions

        # A loss forward keeps no KV cache; with one, transformers would not read restarting position_ids
        # as packed samples (vlmtrain.data.packing) and attention would cross between them.
        kwargs.setdefault("use_cache", False)
        # What the host must read back (the loss's positions, the image-token count), read at the start,
        # while little is queued on the GPU: read later, each read would drain the tower's or the LLM's
        # kernels and leave the GPU idle while the host queued the next ones.
        positions = supervised_positions(labels)
        given = kwargs.pop("inputs_embeds", None)  # (PEFT's wrapper passes inputs_embeds=None)
        if given is not None:  # a caller's own embeddings: transformers' way
            out = self.model(pixel_values=pixel_values, attention_mask=attention_mask, inputs_embeds=given, **kwargs)
        else:
            image_tokens = 0 if pixel_values is None else int((input_ids == self.config.image_token_id).sum())
            embeds = self._inputs_embeds(input_ids, attention_mask, pixel_values, image_stand_in, image_tokens)
            out = self.model.language_model(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs)
        loss = supervised_lm_loss(self.lm_head, out.last_hidden_state, labels, num_items_in_batch,
                                  fused=getattr(self, "fused_lm_loss", None),  # kernels: liger (model/kernels.py)
                                  positions=positions)
        return LlavaCausalLMOutputWithPast(loss=loss, logits=None)

    def _inputs_embeds(self, input_ids, attention_mask, pixel_values, image_stand_in, image_tokens: int) -> torch.Tensor:
        """The LLM's input for a loss forward: token embeddings, the image features at the image tokens.

        Padding is zero vectors, as LLaVA's and MoE-LLaVA's prepare_inputs_labels_for_multimodal pad: the
        real tokens' outputs do not change (attention skips padded keys), but an MoE layer's router sees
        padding too, and it takes expert capacity as it did there. A text-only batch runs the tower and
        projector on ``image_stand_in`` (collate.Collator.add_pixels) and adds them times zero. The modules
        run in the same order in every batch (embeddings, tower, projector, LLM), which ZeRO-3's parameter
        gathers need across ranks; hence this, not transformers' LlavaModel.forward (which would look up the
        image token's embedding again, in image batches only, to find the image positions).
        ``image_tokens``: the batch's count of image tokens, read by the caller before the tower runs."""
        embeds = self.get_input_embeddings()(input_ids)
        if attention_mask is not None:  # (packed batches have none: no padding)
            embeds = embeds * attention_mask.unsqueeze(-1).to(embeds.dtype)
        images = pixel_values if pixel_values is not None else image_stand_in
        if images is None:
            return embeds
        feats = self._image_features(images).to(embeds.device, embeds.dtype)
        if pixel_values is None:
            return embeds + 0.0 * feats.sum()
        if image_tokens * embeds.shape[-1] != feats.numel():
            raise ValueError(f"{image_tokens} image tokens in the batch for {feats.numel() // embeds.shape[-1]} "
                             "image features")
        at = input_ids == self.config.image_token_id
        return embeds.masked_scatter(at.unsqueeze(-1), feats)

    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The projected features of ``pixel_values``, as the forward computes them for its images."""
        c = self.config
        out = self.model.get_image_features(pixel_values=pixel_values, vision_feature_layer=c.vision_feature_layer,
                                            vision_feature_select_strategy=c.vision_feature_select_strategy,
                                            return_dict=True)
        feats = out.pooler_output
        return torch.cat(list(feats), dim=0) if isinstance(feats, (list, tuple)) else feats


def make_projector(config: LlavaConfig) -> nn.Module:
    kind = getattr(config, "mm_projector_type", "mlp2x_gelu")
    layers = config.vision_feature_layer
    width = config.vision_config.hidden_size * (1 if isinstance(layers, int) else len(layers))
    return build_sequential(kind, width, config.text_config.hidden_size)


def model_class(projector_type: str):
    return VlmLlavaForConditionalGeneration


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------

def _config_from_dict(d: dict, what: str, where: str | None = None) -> PretrainedConfig:
    from vlmtrain.config_check import check_section

    d = dict(d)
    if not d.get("model_type"):
        raise ConfigError(f"`{what}` needs a `model_type` (e.g. llama, qwen2, phi, stablelm, clip_vision_model)")
    check_section(d, what, where)  # a typo'd key would otherwise be set aside and the class default used
    model_type = d.pop("model_type")
    try:
        return AutoConfig.for_model(model_type, **d)
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"`{what}`: transformers cannot build a {model_type!r} config: {e}") from None


def _pretrained_config(name: str, cfg: TrainConfig, what: str) -> PretrainedConfig:
    from vlmtrain.model.hub_reach import require_hub_for

    require_hub_for(name, what)  # (offline, a Hub request would retry for most of a minute)
    native = _native_config(name, cfg, what)
    if native is not None:
        return native
    try:
        return AutoConfig.from_pretrained(name, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        first = str(e).splitlines()[0]
        if "trust_remote_code" in str(e) and not cfg.trust_remote_code:
            raise ConfigError(
                f"{what} {name!r} is remote code (its config.json names its own Python classes): {first}",
                hint="`trust_remote_code` is off by default; set `trust_remote_code: true` to run the publisher's "
                     "code. InternViT-6B and Qwen-1_8B need none: vlmtrain loads them natively") from None
        raise ConfigError(
            f"cannot read the config of {what} {name!r}: {first}",
            hint=f"give a local path, check the Hub id / network, or put its fields under `{what}_config` "
                 f"(see configs/model_configs/) to build without downloading") from None


def _native_config(name: str, cfg: TrainConfig, what: str) -> PretrainedConfig | None:
    """The native config of a checkpoint published as remote code or wrapped by vlmtrain; None for the others."""
    if what == "vision":
        fields = cfg.vision_config if isinstance(cfg.vision_config, dict) else None
        return towers.config_from_checkpoint(name, fields)
    from vlmtrain.model.checkpoint_files import read_config_json

    d = read_config_json(name)
    return qwen.qwen2_config_from_qwen(d) if qwen.is_qwen_config(d) else None


def check_model_fields(cfg: TrainConfig) -> None:
    """The ``text_config`` / ``vision_config`` mappings of ``cfg``, checked key by key now (a chain checks every
    stage's before the first one trains); those in a published layout go through their translators instead."""
    from vlmtrain.config_check import check_section

    for what, d in (("text_config", cfg.text_config), ("vision_config", cfg.vision_config)):
        if not (isinstance(d, dict) and d.get("model_type")):
            continue
        published = qwen.is_qwen_config(d) if what == "text_config" else towers.config_from_mapping(d) is not None
        if not published:
            check_section(d, what, cfg._source)


def text_config(cfg: TrainConfig) -> PretrainedConfig:
    if isinstance(cfg.text_config, dict) and cfg.text_config.get("model_type"):
        if qwen.is_qwen_config(cfg.text_config):  # Qwen-1_8B's published config.json fields
            return qwen.qwen2_config_from_qwen(cfg.text_config)
        return _config_from_dict(cfg.text_config, "text_config", cfg._source)
    base = _pretrained_config(cfg.model_name_or_path, cfg, "text")
    if getattr(base, "model_type", None) in LLAVA_TYPES:
        base = base.text_config
    from vlmtrain.config_check import check_overrides

    check_overrides(base, cfg.text_config, "text_config")
    for k, v in (cfg.text_config or {}).items():  # overrides on top of the downloaded config
        setattr(base, k, v)
    return base


def vision_config(cfg: TrainConfig) -> PretrainedConfig:
    """The tower's config for shape-only builds: the YAML's fields, else the tower's (or checkpoint's) own."""
    if isinstance(cfg.vision_config, dict) and cfg.vision_config.get("model_type"):
        native = towers.config_from_mapping(cfg.vision_config)  # written in a published layout
        return _vision_half(native or _config_from_dict(cfg.vision_config, "vision_config", cfg._source))
    if cfg.vision_tower:
        vc = _vision_half(_pretrained_config(cfg.vision_tower, cfg, "vision"))
        from vlmtrain.config_check import check_overrides

        # (the run's own fields, e.g. InternViT's input_image_size, were applied by _pretrained_config: the
        # tower config has no such key, and a run builds from them the same way)
        run = towers.RUN_FIELDS.get(towers.kind(vc), ())
        fields = {k: v for k, v in (cfg.vision_config or {}).items() if k not in run}
        check_overrides(vc, fields, "vision_config")
        for k, v in fields.items():
            setattr(vc, k, v)
        return vc
    whole = _whole_llava_config(cfg)
    if whole is None:
        raise ConfigError("no vision tower: set `vision_tower` (e.g. openai/clip-vit-large-patch14-336) or `vision_config`")
    return _vision_half(whole.vision_config)


def _vision_half(vc: PretrainedConfig) -> PretrainedConfig:
    """A full CLIP / SigLIP config (text + vision) -> its vision config; a tower type vlmtrain builds."""
    if getattr(vc, "model_type", "") in ("clip", "siglip") and hasattr(vc, "vision_config"):
        vc = vc.vision_config
    towers.kind(vc)  # a clear error for any other tower
    return vc


def has_cls_token(vc: PretrainedConfig) -> bool:
    return towers.has_cls(vc)  # CLIP and InternViT have one; SigLIP and ConvNeXt do not


def select_strategy(vc: PretrainedConfig, feature: str) -> str:
    """LLaVA's ``patch`` / ``cls_patch`` -> transformers' ``default`` (drop CLS) / ``full``."""
    if feature == "cls_patch":
        if not has_cls_token(vc):
            raise ConfigError("`mm_vision_select_feature: cls_patch` needs a CLS token; SigLIP has none (use patch)")
        return "full"
    return "default" if has_cls_token(vc) else "full"


def tokens_per_image(vc: PretrainedConfig, feature: str) -> int:
    return towers.tokens_per_image(vc, feature)


def llava_config(cfg: TrainConfig, tc: PretrainedConfig, vc: PretrainedConfig, image_token_id: int) -> LlavaConfig:
    towers.check_select_layer(vc, cfg.mm_vision_select_layer)
    lc = LlavaConfig(
        vision_config=vc.to_dict(),
        text_config=tc.to_dict(),
        image_token_id=image_token_id,
        image_seq_length=tokens_per_image(vc, cfg.mm_vision_select_feature),
        projector_hidden_act="gelu",
        vision_feature_select_strategy=select_strategy(vc, cfg.mm_vision_select_feature),
        vision_feature_layer=cfg.mm_vision_select_layer,
        multimodal_projector_bias=True,
        mm_projector_type=cfg.mm_projector_type,
    )
    return lc


def attn_implementation(cfg: TrainConfig, on_cuda: bool | None = None) -> str:
    """flash_attention_2 when asked for or (auto) when flash_attn is importable on a GPU; sdpa otherwise."""
    if on_cuda is None:
        on_cuda = torch.cuda.is_available()
    if cfg.attn_implementation != "auto":
        if cfg.attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            raise ConfigError("`attn_implementation: flash_attention_2` but flash_attn is not installed",
                              hint="pip install 'vlmdata[flash]' on a CUDA machine, or use sdpa")
        return cfg.attn_implementation
    if on_cuda and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------

@dataclass
class BuiltModel:
    model: nn.Module
    image_token_id: int
    tokens_per_image: int
    attn: str
    vision: PretrainedConfig


def _whole_llava_config(cfg: TrainConfig) -> PretrainedConfig | None:
    """The config of ``model_name_or_path`` when it is a whole Llava checkpoint (a stage-2 output)."""
    if not cfg.model_name_or_path:
        return None
    c = _pretrained_config(cfg.model_name_or_path, cfg, "text")
    return c if getattr(c, "model_type", None) in LLAVA_TYPES else None


def build_model(cfg: TrainConfig, *, vocab_size: int | None = None, image_token_id: int | None = None,
                meta: bool = False, dtype: torch.dtype | None = None, on_cuda: bool | None = None,
                device: str | None = None) -> BuiltModel:
    """The model for ``cfg``.

    ``vocab_size`` / ``image_token_id`` come from the tokenizer (after ``<image>`` was added). With
    ``meta`` (dry-run) or ``random_init`` the configs in the YAML decide the shapes; otherwise the
    pretrained checkpoints' own configs do. ``device`` places a random-init model's weights directly
    (a 2B model initialised on the GPU instead of the CPU).
    """
    attn = attn_implementation(cfg, on_cuda)
    dtype = dtype or torch.float32
    if meta or cfg.random_init:
        tc, vc = text_config(cfg), vision_config(cfg)
        if vocab_size is not None:
            tc.vocab_size = vocab_size
        if image_token_id is None:  # dry-run without a tokenizer: `<image>` appended as a new id
            image_token_id = tc.vocab_size
            tc.vocab_size += 1
        lc = llava_config(cfg, tc, vc, image_token_id)
        where = torch.device("meta") if meta else (torch.device(device) if device else contextlib.nullcontext())
        with where:
            model = model_class(cfg.mm_projector_type)._from_config(lc, attn_implementation=attn, dtype=dtype)
        towers.finish(model.model.vision_tower, vc)
        return BuiltModel(model, image_token_id, lc.image_seq_length, attn, vc)

    whole = _whole_llava_config(cfg)
    if whole is not None:  # a Llava checkpoint (stage-2 output, llava-hf/*): loaded as is
        model = _load(model_class(getattr(whole, "mm_projector_type", "mlp2x_gelu")).from_pretrained,
                      cfg.model_name_or_path, dtype=dtype, attn_implementation=attn)
    else:  # stage 1 from separate parts: the LLM and the tower keep their pretrained weights
        from transformers import AutoModel

        if not cfg.vision_tower:
            raise ConfigError("no vision tower: set `vision_tower` (local path or Hub id of a CLIP / SigLIP model)")
        vc = _vision_half(_pretrained_config(cfg.vision_tower, cfg, "vision"))
        llm = _load_llm(cfg, dtype, attn)
        tower = _load(towers.load, cfg.vision_tower, vc, dtype=dtype, attn_implementation=attn)
        if tower is None:  # CLIP / SigLIP: transformers loads them as they ship
            tower = _load(AutoModel._model_mapping[type(vc)].from_pretrained, cfg.vision_tower, config=vc,
                          dtype=dtype, attn_implementation=attn)
        lc = llava_config(cfg, llm.config, tower.config, image_token_id if image_token_id is not None else llm.config.vocab_size)
        cls = model_class(cfg.mm_projector_type)
        with torch.device("meta"):  # the skeleton allocates nothing; the loaded parts go in
            model = cls._from_config(lc, attn_implementation=attn, dtype=dtype)
        model.model.language_model = llm.get_decoder()
        model.lm_head = _bias_free_head(llm.get_output_embeddings(), llm.config.model_type)
        model.model.vision_tower = tower
        projector = _stock_projector(lc) if cfg.mm_projector_type == "mlp2x_gelu" else make_projector(lc)
        model.model.multi_modal_projector = projector.to(dtype)
        del llm
    # Grow only: a checkpoint with spare rows (phi-2: 51,200 rows for ~50,300 tokens) keeps them, as the
    # reference repos do; shrinking would change the softmax over the vocabulary.
    if vocab_size is not None and vocab_size > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(vocab_size, mean_resizing=True)
    model.config.text_config.vocab_size = model.get_input_embeddings().weight.shape[0]
    if image_token_id is not None:
        model.config.image_token_id = image_token_id
    vc = model.config.vision_config
    towers.finish(model.model.vision_tower, vc)
    return BuiltModel(model, model.config.image_token_id, tokens_per_image(vc, cfg.mm_vision_select_feature), attn, vc)


def _bias_free_head(head: nn.Module, model_type: str) -> nn.Module:
    """The LLM's output head without its bias, as MoE-LLaVA builds it (``nn.Linear(hidden, vocab, bias=False)``
    in its LlavaPhiForCausalLM / MoELLaVAPhiForCausalLM, so phi-2's ``lm_head.bias`` is dropped at load).

    transformers' Llava head has no bias either: with one, stage 2 would train and save a bias that every
    later ``from_pretrained`` (stage 3, ``vlmtrain generate``) drops. The weight is the same Parameter, so
    an LLM whose head is tied to its input embeddings stays tied."""
    if not isinstance(head, nn.Linear) or head.bias is None:
        return head
    with torch.device("meta"):  # (allocates nothing: the weight is put in next)
        free = nn.Linear(head.in_features, head.out_features, bias=False)
    free.weight = head.weight
    log.info("lm_head: the %s LLM's output bias is dropped, as MoE-LLaVA's model classes do (its lm_head is "
             "Linear(bias=False))", model_type)
    return free


def is_lm_head_bias(key: str) -> bool:
    """A state-dict key of the output head's bias (an older stage 1-2 output's, see _bias_free_head)."""
    return key == "lm_head.bias" or key.endswith(".lm_head.bias")


def _check_no_lm_head_bias(info: dict, source) -> None:
    """A ConfigError when a saved model's weights hold an ``lm_head.bias`` the loaded model has no place for.

    Such weights are a stage 1-2 output of a vlmtrain before :func:`_bias_free_head`: that model was
    trained with phi-2's output bias, and dropping it changes every logit (by a per-token constant, so
    the softmax and the greedy choices change), so loading it silently would not be the trained model."""
    stray = [k for k in info.get("unexpected_keys", []) if is_lm_head_bias(k)]
    if stray:
        raise ConfigError(
            f"{source}: the saved weights include {stray[0]}, which this model has no place for (its lm_head has "
            "no bias, as MoE-LLaVA's): it was saved by an older vlmtrain, whose stage 1-2 kept the LLM's output "
            "bias, and without it the model computes other logits than the ones it was trained with",
            hint="train stage 2 again with this vlmtrain, or accept the change as MoE-LLaVA makes it (it drops the "
                 "bias at load) by removing the key from the saved weights: python -c \"from vlmtrain.model.build "
                 f"import drop_lm_head_bias; drop_lm_head_bias('{source}')\"")


def drop_lm_head_bias(folder: str | Path) -> list[str]:
    """Remove ``lm_head.bias`` from a saved model's safetensors files (an older stage 1-2 output, see
    :func:`_check_no_lm_head_bias`), each file replaced atomically; the keys removed (none: nothing written)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save

    from vlmdata.atomic import atomic_open, write_text

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        idx = json.loads(index.read_text())
        files = sorted(set(idx["weight_map"].values()))
    else:
        idx, files = None, ["model.safetensors"]
    removed: list[str] = []
    for name in files:
        with safe_open(str(folder / name), framework="pt") as fh:
            keys = [k for k in fh.keys() if is_lm_head_bias(k)]
            if not keys:
                continue
            meta = fh.metadata()
            state = {k: fh.get_tensor(k) for k in fh.keys() if k not in keys}
        with atomic_open(folder / name) as out:
            out.write(save(state, metadata=meta))
        removed += keys
    if idx is not None and removed:
        idx["weight_map"] = {k: v for k, v in idx["weight_map"].items() if k not in removed}
        write_text(index, json.dumps(idx, indent=2) + "\n")
    return removed


def _load_llm(cfg: TrainConfig, dtype: torch.dtype, attn: str) -> nn.Module:
    """The LLM of a stage-1 build: Qwen-1_8B's published layout converted to qwen2, anything else as it ships."""
    from transformers import AutoModelForCausalLM

    from vlmtrain.model.checkpoint_files import read_config_json

    d = read_config_json(cfg.model_name_or_path)
    if qwen.is_qwen_config(d):
        return qwen.load_qwen_as_qwen2(cfg.model_name_or_path, d, dtype=dtype, attn_implementation=attn)
    return _load(AutoModelForCausalLM.from_pretrained, cfg.model_name_or_path, dtype=dtype,
                 attn_implementation=attn, trust_remote_code=cfg.trust_remote_code)


def _load(fn, name, *args, **kwargs):
    try:
        return fn(name, *args, **kwargs)
    except OSError as e:
        raise ConfigError(f"cannot load pretrained weights from {name!r}: {str(e).splitlines()[0]}",
                          hint="check the path / Hub id and the network, or use `random_init: true` to build without weights") from None


def _stock_projector(lc: LlavaConfig) -> nn.Module:
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    return LlavaMultiModalProjector(lc)


# ---------------------------------------------------------------------------------------------
# Parts, freezing, LoRA
# ---------------------------------------------------------------------------------------------

def parts(model: nn.Module) -> dict[str, list[nn.Module]]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {
        "vision": [base.model.vision_tower],
        "projector": [base.model.multi_modal_projector],
        "llm": [base.model.language_model, base.lm_head],
    }


def apply_freeze(model: nn.Module, frozen: dict[str, bool], vision_from: int | None = None) -> None:
    """requires_grad per part. ``vision_from`` (``tune_vit_from_layer``): of an unfrozen tower, only the
    blocks (ViT) / stages (ConvNeXt) from that index on train, as ConvLLaVA's ``unlock_vit``."""
    for name, modules in parts(model).items():
        for m in modules:
            m.requires_grad_(not frozen[name] and not (name == "vision" and vision_from is not None))
    if vision_from is not None and not frozen["vision"]:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        towers.unfreeze_from(base.model.vision_tower, base.config.vision_config, vision_from,
                             base.config.vision_feature_layer)


def param_counts(model: nn.Module) -> dict[str, dict[str, int]]:
    """Parameters per part (tied weights counted once), total and trainable."""
    seen: set[int] = set()
    out: dict[str, dict[str, int]] = {}
    for name, modules in parts(model).items():
        total = trainable = 0
        for m in modules:
            for p in m.parameters():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                n = p.numel() if not hasattr(p, "ds_numel") else p.ds_numel
                total += n
                trainable += n if p.requires_grad else 0
        out[name] = {"total": total, "trainable": trainable}
    # LoRA adapters live inside the LLM modules and are counted there.
    out["all"] = {k: sum(v[k] for v in out.values()) for k in ("total", "trainable")}
    return out


def add_lora(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """peft LoRA on every Linear of the LLM (not lm_head), like LLaVA's find_all_linear_names.

    The projector is listed in ``modules_to_save`` so it trains and is saved (and resumed) with
    the adapter.
    """
    from peft import LoraConfig, get_peft_model

    targets = cfg.lora_target_modules
    if not targets:
        names = set()
        for name, module in model.model.language_model.named_modules():
            if isinstance(module, nn.Linear):
                names.add(name.split(".")[-1])
        targets = sorted(names)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias=cfg.lora_bias,
                      target_modules=r".*language_model.*\.(" + "|".join(targets) + r")$",
                      modules_to_save=["multi_modal_projector"], task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def read_pretrain_adapter(path: str | Path) -> dict:
    """The stage-1 projector's tensors, read before anything of the run is written."""
    try:
        return read_mm_projector(path)
    except ValueError as e:
        raise ConfigError(str(e), hint="`pretrain_mm_mlp_adapter` is the stage-1 run's output_dir/mm_projector.bin "
                                       "(or the reference repo's file of that name)") from None


def load_pretrain_adapter(model: nn.Module, path_or_weights: str | Path | dict) -> list[str]:
    if not isinstance(path_or_weights, dict):
        path_or_weights = read_pretrain_adapter(path_or_weights)
    try:
        return load_mm_projector(model, path_or_weights)
    except ValueError as e:
        raise ConfigError(str(e), hint="the stage-1 and stage-2 configs must agree on towers, LLM and projector type") from None


def describe(counts: dict[str, dict[str, int]]) -> list[tuple[str, str, str]]:
    def fmt(n: int) -> str:
        return f"{n / 1e9:.3f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n:,}"

    return [(k, fmt(v["total"]), fmt(v["trainable"])) for k, v in counts.items()]
