"""A stage-3 model in MoE-LLaVA's checkpoint layout, for the original repo's eval and serve code.

MoE-LLaVA saves ``pytorch_model.bin`` from its ``MoELLaVA<Family>ForCausalLM`` (training-recipes.md §2):
the LLM at ``model.*`` / ``lm_head.*``, the tower at ``model.image_tower.image_tower.vision_model.*``, the
projector at ``model.mm_projector.image_spatial_proj.{0,2}.*`` (an ``nn.Sequential``), and each MoE
layer as DeepSpeed's module tree:

    model.layers.N.mlp.deepspeed_moe.gate.wg.weight
    model.layers.N.mlp.deepspeed_moe.experts.deepspeed_experts.E.<ffn>.{weight,bias}
    model.layers.N.mlp.mlp.*, model.layers.N.mlp.coefficient.*       (use_residual only)

This module renames vlmtrain's keys (transformers' Llava layout, our ``router`` / ``experts`` /
``residual_mlp``) to those, and back. phi and stablelm keep transformers' own LLM key names, as
MoE-LLaVA's copies of their modeling code do. Qwen-1 is remote code with its own names
(``transformer.h.N.attn.c_attn`` fused, ``mlp.w1`` / ``w2`` / ``c_proj``, everything under ``transformer.``):
its LLM keys go through vlmtrain.model.qwen's converter and its config.json is written in Qwen-1's own
field names (:func:`qwen1_text_fields`), so MoE-LLaVA's ``QWenConfig`` builds modules of the exported shapes.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from vlmtrain.model.export_folder import renamed

FAMILIES = {"phi": "Phi", "stablelm": "Stablelm", "llama": "Llama", "mistral": "Mistral", "qwen2": "QWen"}
MODEL_TYPES = {"qwen2": "moe_llava_qwen"}

_MOE = [(r"\.mlp\.router\.", ".mlp.deepspeed_moe.gate.wg."),
        (r"\.mlp\.experts\.(\d+)\.", r".mlp.deepspeed_moe.experts.deepspeed_experts.\1."),
        (r"\.mlp\.residual_mlp\.", ".mlp.mlp.")]
_PARTS = [("model.language_model.", "model."),
          ("model.vision_tower.", "model.image_tower.image_tower.vision_model."),  # CLIPVisionModel's own prefix
          ("model.multi_modal_projector.linear_1.", "model.mm_projector.image_spatial_proj.0."),
          ("model.multi_modal_projector.linear_2.", "model.mm_projector.image_spatial_proj.2."),
          ("model.multi_modal_projector.", "model.mm_projector.image_spatial_proj.")]


def to_moellava_key(key: str) -> str:
    key = renamed(key, _PARTS)
    for pattern, repl in _MOE:
        key = re.sub(pattern, repl, key)
    return key


def from_moellava_key(key: str) -> str:
    for pattern, repl in [(r"\.mlp\.deepspeed_moe\.gate\.wg\.", ".mlp.router."),
                          (r"\.mlp\.deepspeed_moe\.experts\.deepspeed_experts\.(\d+)\.", r".mlp.experts.\1."),
                          (r"\.mlp\.mlp\.", ".mlp.residual_mlp.")]:
        key = re.sub(pattern, repl, key)
    for ours, theirs in reversed(_PARTS[:4]):
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    if key.startswith("model.mm_projector.image_spatial_proj."):
        return "model.multi_modal_projector." + key[len("model.mm_projector.image_spatial_proj."):]
    return key


def moellava_state_dict(state: dict, text_model_type: str) -> dict:
    """A whole vlmtrain stage-3 state dict in MoE-LLaVA's names (see the module docstring)."""
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if text_model_type != "qwen2":
        return {to_moellava_key(k): v for k, v in state.items()}
    from vlmtrain.model.qwen import native_state_to_qwen

    prefix = "model.language_model."
    llm, rest = {}, {}
    for k, v in state.items():
        if k.startswith(prefix) or k.startswith("lm_head."):
            for pattern, repl in _MOE:  # DeepSpeed's module tree first; the converter renames the FFN leaves under it
                k = re.sub(pattern, repl, k)
            llm[k] = v
        else:
            rest[k] = v
    out = native_state_to_qwen(llm, native_prefix=prefix)
    for k, v in rest.items():  # MoE-LLaVA's Qwen wrapper keeps the tower and projector under `transformer.`
        out["transformer." + to_moellava_key(k)[len("model."):]] = v
    return out


def export_problem(tc) -> str | None:
    """Why an LLM with text config ``tc`` has no MoE-LLaVA layout (None: it has one), for a stage 3 with
    save_moellava_checkpoint to say before it trains rather than when it saves."""
    if tc.model_type not in FAMILIES:
        return f"no MoE-LLaVA layout for a {tc.model_type!r} LLM (have: {', '.join(FAMILIES)})"
    if tc.model_type == "qwen2":
        try:
            qwen1_text_fields(tc)
        except ValueError as e:
            return str(e)
    return None


def moellava_config(model, vision_tower: str | None, image_aspect_ratio: str) -> dict:
    """config.json in MoE-LLaVA's form: the LLM's fields at top level plus its multimodal and ``moe`` keys."""
    cfg = model.config
    tc = cfg.text_config
    family = FAMILIES.get(tc.model_type)
    if family is None:
        raise ValueError(f"no MoE-LLaVA layout for a {tc.model_type!r} LLM (have: {', '.join(FAMILIES)})")
    if tc.model_type == "qwen2":
        out = qwen1_text_fields(tc)
    else:
        out = tc.to_dict()
        out.update(legacy_text_fields(out, tc.model_type))
    layer = cfg.vision_feature_layer
    out.update({
        "architectures": [f"MoELLaVA{family}ForCausalLM"],
        "model_type": MODEL_TYPES.get(tc.model_type, f"moe_llava_{tc.model_type}"),
        "mm_image_tower": vision_tower, "image_projector_type": getattr(cfg, "mm_projector_type", "mlp2x_gelu"),
        "mm_hidden_size": cfg.vision_config.hidden_size, "mm_vision_select_layer": layer,
        "mm_vision_select_feature": "patch" if cfg.vision_feature_select_strategy == "default" else "cls_patch",
        "image_aspect_ratio": image_aspect_ratio, "use_mm_proj": True, "tokenizer_padding_side": "right",
        # read as attributes (no default) by its builder.py, serve/cli.py and eval scripts; the patch
        # token one defaults to True there, which would add <im_patch> / <vid_patch> to the vocabulary
        "mm_video_tower": None, "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
        "moe": dict(cfg.moe),
    })
    return out


def legacy_text_fields(text: dict, model_type: str) -> dict:
    """The LLM config's fields under the names MoE-LLaVA's config classes read (transformers 4.37 era).

    transformers 5 keeps the rotary settings in one ``rope_parameters`` dict; MoE-LLaVA's ``PhiConfig``
    reads top-level ``partial_rotary_factor`` (default 0.5, phi-2 has 0.4), ``rope_theta`` and
    ``rope_scaling``, and its StableLM (``StableLMEpochConfig``) reads ``rope_pct`` and ``norm_eps``.
    Left out, its loader would silently build phi-2 with the wrong rotary width."""
    rope = text.get("rope_parameters") or {}
    out: dict = {}
    if "rope_theta" in rope:
        out["rope_theta"] = rope["rope_theta"]
    if "partial_rotary_factor" in rope:
        out["partial_rotary_factor"] = rope["partial_rotary_factor"]
    kind = rope.get("rope_type", "default")
    if kind != "default":  # (its rope_scaling check wants exactly {type, factor}; absent means none)
        out["rope_scaling"] = {"type": kind, "factor": rope.get("factor")}
    if model_type == "stablelm":
        out["rope_pct"] = out.get("partial_rotary_factor", text.get("partial_rotary_factor", 0.25))
        out["norm_eps"] = text.get("layer_norm_eps", 1e-5)
    return out


def qwen1_text_fields(tc) -> dict:
    """A native qwen2 config (vlmtrain's form of Qwen-1, vlmtrain.model.qwen) in the fields of Qwen-1's
    ``QWenConfig`` (MoE-LLaVA's moellava/model/language_model/qwen/configuration_qwen.py), what its
    ``MoELLaVAQWenForCausalLM`` is built from.

    - ``intermediate_size`` is twice qwen2's: ``QWenMLP`` builds w1 / w2 as ``Linear(hidden, intermediate_size
      // 2)`` and c_proj as ``Linear(intermediate_size // 2, hidden)``; qwen2's field counts one branch.
    - attention: ``kv_channels`` (the head width; QWenConfig's default 128 is Qwen-7B's, not a small model's),
      ``rotary_pct`` 1.0, ``rotary_emb_base`` (qwen2's rope theta), ``layer_norm_epsilon`` (its RMSNorm eps),
      ``no_bias`` (no bias on c_proj or the MLP; c_attn always has one, as qwen2's q/k/v do).
    - ``seq_length``, which QWenModel reads as an attribute (no default), is the model's
      ``max_position_embeddings`` (both 8192 in Qwen-1_8B's config.json).
    - ``use_dynamic_ntk`` / ``use_logn_attn`` are false, where Qwen-1_8B's config.json has them true: vlmtrain's
      qwen2 has neither, and both act only on sequences longer than ``seq_length`` (vlmtrain.model.qwen), so
      this is the model that was trained and evaluated here at every length, and MoE-LLaVA's at up to 8192
      tokens.

    qwen2's own names (``rms_norm_eps``, ``rope_parameters``, ``num_key_value_heads``, ...) are left out; the
    generic PretrainedConfig fields (token ids, dtype, ``tie_word_embeddings``, ``use_cache``) are kept. A
    qwen2 that Qwen-1's code cannot express (grouped-query attention, a head width other than hidden /
    heads, rope scaling, a sliding window, an activation other than SiLU) is a ValueError."""
    from transformers import PretrainedConfig

    d = tc.to_dict()
    heads, hidden = tc.num_attention_heads, tc.hidden_size
    head_dim = getattr(tc, "head_dim", None) or hidden // heads
    rope = d.get("rope_parameters") or {}
    why = [w for bad, w in (
        ((getattr(tc, "num_key_value_heads", None) or heads) != heads,
         f"{tc.num_key_value_heads} key/value heads for {heads} query heads (Qwen-1 has no grouped-query attention)"),
        (head_dim * heads != hidden, f"head_dim {head_dim} x {heads} heads != hidden_size {hidden}"),
        (rope.get("rope_type", "default") != "default", f"rope scaling {rope.get('rope_type')!r}"),
        (bool(getattr(tc, "use_sliding_window", False)), "a sliding window"),
        (getattr(tc, "hidden_act", "silu") != "silu", f"hidden_act {getattr(tc, 'hidden_act', None)!r}"))
        if bad]
    if why:
        raise ValueError(f"this qwen2 LLM has no Qwen-1 (MoE-LLaVA QWen) layout: {'; '.join(why)}")
    generic = set(PretrainedConfig().to_dict()) | {"bos_token_id", "eos_token_id", "pad_token_id",
                                                    "tie_word_embeddings", "use_cache"}
    out = {k: v for k, v in d.items() if k in generic}
    out.update({
        "vocab_size": tc.vocab_size, "hidden_size": hidden, "num_hidden_layers": tc.num_hidden_layers,
        "num_attention_heads": heads, "kv_channels": head_dim, "intermediate_size": 2 * tc.intermediate_size,
        "layer_norm_epsilon": tc.rms_norm_eps, "rotary_emb_base": float(rope.get("rope_theta", 10000.0)),
        "rotary_pct": 1.0, "max_position_embeddings": tc.max_position_embeddings,
        "seq_length": tc.max_position_embeddings, "use_dynamic_ntk": False, "use_logn_attn": False,
        "no_bias": True, "scale_attn_weights": True, "initializer_range": tc.initializer_range,
        "emb_dropout_prob": 0.0, "attn_dropout_prob": float(getattr(tc, "attention_dropout", 0.0)),
    })
    return out


# The folder name save_moellava_checkpoint writes under output_dir, per LLM family: one MoE-LLaVA's
# loader reads as that family (see loader_name_problem).
EXPORT_NAMES = {"phi": "moe-llava-phi", "stablelm": "moe-llava-stablelm", "qwen2": "moe-llava-qwen",
                "mistral": "moe-llava-mistral", "llama": "moe-llava-llama"}
# ... except where a template's word in the name also makes serve/cli.py pick that template and the
# loader still reads the family: 'openchat' (cli.py's conv_openchat; builder.py's Mistral class)
TEMPLATE_EXPORT_NAMES = {("mistral", "openchat"): "moe-llava-openchat"}
# vlmtrain's templates by the name of the same conversation in MoE-LLaVA's conv_templates
CONV_MODES = {"phi": "phi", "qwen": "qwen", "stablelm": "stablelm", "openchat": "openchat", "mistral": "mistral",
              "vicuna_v1": "v1"}


def export_name(text_model_type: str, template: str) -> str:
    """The export folder's name for an LLM of ``text_model_type`` trained on ``template``: MoE-LLaVA's
    loader reads it as that family, and its serve/cli.py picks the template from it where any name can
    make it (TEMPLATE_EXPORT_NAMES, else EXPORT_NAMES, else moe-llava-TYPE)."""
    return (TEMPLATE_EXPORT_NAMES.get((text_model_type, template))
            or EXPORT_NAMES.get(text_model_type, f"moe-llava-{text_model_type}"))


def export_name_of_run(run_dir: Path, template: str) -> str:
    """export_name for a finished run, from its config.json's LLM type (read before any weights)."""
    try:
        text = json.loads((Path(run_dir) / "config.json").read_text()).get("text_config") or {}
    except (OSError, ValueError):
        text = {}
    return export_name(str(text.get("model_type", "<family>")), template)


def _serve_conv_mode(name: str) -> str:
    """The conversation template MoE-LLaVA's serve/cli.py picks for a lower-case model name when no
    ``--conv-mode`` is given: the first of its substring tests that matches, in its order."""
    for word, mode in (("qwen", "qwen"), ("openchat", "openchat"), ("phi", "phi"), ("stablelm", "stablelm"),
                       ("llama-2", "llava_llama_2"), ("v1", "llava_v1"), ("mpt", "mpt")):
        if word in name:
            return mode
    return "llava_v0"


def serve_template_problem(folder: Path, template: str) -> str | None:
    """Why MoE-LLaVA's serve/cli.py would chat with ``folder`` in another template than ``template``
    (it picks one from the folder's name), or None; also None for a template MoE-LLaVA does not have."""
    want = CONV_MODES.get(template)
    got = _serve_conv_mode(Path(folder).resolve().name.lower())
    if want is None or got == want:
        return None
    return (f"MoE-LLaVA's serve/cli.py picks its {got!r} conversation template for the name "
            f"{Path(folder).name!r}, not the {template!r} this model was trained on: pass --conv-mode {want} there")


def _loader_family(name: str) -> str:
    """The LLM family MoE-LLaVA's ``load_pretrained_model`` (builder.py) reads from a lower-case model
    name: the first of its substring tests that matches, in its order."""
    if "mpt" in name:
        return "mpt"
    if "qwen" in name and "1.5" not in name:
        return "qwen2"
    if "openchat" in name or "mistral" in name:
        return "mistral"
    if "phi" in name:
        return "phi"
    if "qwen" in name:
        return "qwen1.5"
    if "minicpm" in name:
        return "minicpm"
    if "stablelm" in name:
        return "stablelm"
    return "llama"


def loader_name_problem(folder: Path, text_model_type: str, template: str) -> str | None:
    """Why MoE-LLaVA would not load ``folder`` as this model, or None. Its loader goes by the folder's
    name: "llava" and "moe" in it, no "lora", and the family's word (phi, stablelm, qwen without "1.5",
    openchat or mistral, ...) before any other family's."""
    name = Path(folder).resolve().name.lower()
    want = export_name(text_model_type, template)
    if "llava" not in name or "moe" not in name:
        why = "lacks " + " and ".join(repr(w) for w in ("llava", "moe") if w not in name)
    elif "lora" in name:
        why = "contains 'lora' (its LoRA branch)"
    elif _loader_family(name) != _loader_family(want):
        why = f"reads as a {_loader_family(name)} model, not {text_model_type}"
    else:
        return None
    return (f"MoE-LLaVA's load_pretrained_model picks the model class from the folder's name, and "
            f"{Path(folder).name!r} {why}: rename it (e.g. {want}-...) before loading it there")


def export_notes(folder: Path, text_model_type: str, template: str) -> list[str]:
    """What would keep MoE-LLaVA from loading or serving the export in ``folder`` as it was trained: the
    folder's name (model class, chat template) and the tokenizer's files. Empty when nothing would."""
    from vlmtrain.model.legacy_tokenizer import slow_tokenizer_problem

    found = (loader_name_problem(folder, text_model_type, template), serve_template_problem(folder, template),
             slow_tokenizer_problem(folder), tower_name_problem(folder))
    return [note for note in found if note]


# MoE-LLaVA's multimodal_encoder/builder.py builds an image tower only from a name with one of these starts,
# and loads the tower's weights from that name (delay_load), not from the checkpoint's tower keys
TOWER_NAME_STARTS = ("openai", "laion", "google")


def tower_name_problem(folder: Path) -> str | None:
    """What MoE-LLaVA would make of the export's ``mm_image_tower``, when that is not a Hub id it builds."""
    try:
        tower = json.loads((Path(folder) / "config.json").read_text()).get("mm_image_tower")
    except (OSError, ValueError, AttributeError):
        return None
    if tower is None:
        return ("config.json's mm_image_tower is null (the run's vision_tower was not named: random_init?): "
                "MoE-LLaVA builds no image tower or projector from it")
    if not str(tower).startswith(TOWER_NAME_STARTS):
        return (f"config.json's mm_image_tower is {tower!r}: MoE-LLaVA builds its tower only from a name starting "
                f"with {', '.join(TOWER_NAME_STARTS)} and loads the tower's weights from that name, not from this "
                "folder; set it to the Hub id (e.g. openai/clip-vit-large-patch14-336), with that model in the "
                "Hugging Face cache where MoE-LLaVA runs")
    return None


def is_moellava_export(folder: Path) -> bool:
    """Whether ``folder`` holds an earlier export: config.json naming a MoELLaVA architecture, and the weights."""
    from vlmtrain.model.export_folder import architecture_of

    return architecture_of(folder).startswith("MoELLaVA") and (Path(folder) / "pytorch_model.bin").is_file()


def check_export_target(run_dir: Path, out: Path, name: str) -> None:
    """export_folder.check_export_target for a MoE-LLaVA export."""
    from vlmtrain.model.export_folder import check_export_target as check

    check(run_dir, out, name, is_export=is_moellava_export, loader="MoE-LLaVA", command="export-moe-llava")


def write_moellava_checkpoint(model, out_dir: str | Path, *, vision_tower: str | None,
                              image_aspect_ratio: str = "pad", tokenizer=None) -> Path:
    """``out_dir/pytorch_model.bin`` + ``config.json`` in MoE-LLaVA's names, ``generation_config.json``, and the
    tokenizer's files (vlmtrain.model.export_folder.write_export). Returns the weights file."""
    from vlmtrain.model.export_folder import write_export

    config = moellava_config(model, vision_tower, image_aspect_ratio)
    state = moellava_state_dict(model.state_dict(), model.config.text_config.model_type)
    return write_export(out_dir, state, config, model, tokenizer)
