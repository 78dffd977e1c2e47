"""Qwen-1_8B (MoE-LLaVA's third LLM) as transformers' native ``qwen2``, converted exactly, and back.

Qwen/Qwen-1_8B ships as remote code (``model_type: qwen``, ``QWenLMHeadModel``). Its math is
Qwen2's: pre-norm RMSNorm blocks, rotary on the whole head (``rotary_pct`` 1.0, rotate-half), q/k/v
with bias, an output projection and a SwiGLU MLP without bias, untied embeddings. Only the layout
differs, so the published weights load into ``Qwen2ForCausalLM`` after renaming, with equal logits.

Key map (Qwen ``transformer.`` <-> native ``model.``; ``lm_head`` is ``lm_head`` in both):

====================================  ===========================================================
Qwen (MoE-LLaVA's names)              native qwen2
====================================  ===========================================================
``transformer.wte``                   ``model.embed_tokens``
``transformer.ln_f``                  ``model.norm``
``transformer.h.N.ln_1``              ``model.layers.N.input_layernorm``
``transformer.h.N.ln_2``              ``model.layers.N.post_attention_layernorm``
``transformer.h.N.attn.c_attn``       ``model.layers.N.self_attn.{q,k,v}_proj`` (rows split in three,
                                      q first; weight and bias)
``transformer.h.N.attn.c_proj``       ``model.layers.N.self_attn.o_proj``
``transformer.h.N.mlp.w1``            ``model.layers.N.mlp.up_proj``
``transformer.h.N.mlp.w2``            ``model.layers.N.mlp.gate_proj``
``transformer.h.N.mlp.c_proj``        ``model.layers.N.mlp.down_proj``
====================================  ===========================================================

Why w1 is ``up_proj`` and w2 ``gate_proj``: Qwen's MLP returns ``c_proj(w1(x) * silu(w2(x)))``
(``QWenMLP.forward`` in modeling_qwen.py), Qwen2's ``down_proj(silu(gate_proj(x)) * up_proj(x))``:
the activated branch is w2. Both are ``hidden -> intermediate_size // 2``: Qwen's config counts the
two branches together (11008 for Qwen-1_8B), Qwen2's counts one (5504).

The MLP rename applies under any path below ``.mlp.``, so MoE-LLaVA's stage-3 expert keys map too:
``transformer.h.N.mlp.deepspeed_moe.experts.deepspeed_experts.E.w1.weight`` <->
``model.layers.N.mlp.deepspeed_moe.experts.deepspeed_experts.E.up_proj.weight`` (and the router
``...mlp.deepspeed_moe.gate.wg.weight`` keeps its leaf). Use :func:`native_key_to_qwen` /
:func:`qwen_key_to_native` per key, :func:`native_state_to_qwen` / :func:`qwen_state_to_native`
for whole state dicts (only they can fuse / split ``c_attn``).

Not carried over: Qwen's dynamic NTK rotary scaling and log-n attention scaling act only at
inference on sequences longer than ``seq_length`` (8192); training (2048 tokens in MoE-LLaVA) and
any forward up to 8192 tokens is the same computation.
"""
from __future__ import annotations

import re

import torch

from vlmtrain.config import ConfigError

QWEN_PREFIX = "transformer."
NATIVE_PREFIX = "model."
MLP_QWEN_TO_NATIVE = {"w1": "up_proj", "w2": "gate_proj", "c_proj": "down_proj"}
MLP_NATIVE_TO_QWEN = {v: k for k, v in MLP_QWEN_TO_NATIVE.items()}
_TOP_QWEN_TO_NATIVE = {"wte.": "embed_tokens.", "ln_f.": "norm."}
_LAYER_QWEN_TO_NATIVE = {"ln_1.": "input_layernorm.", "ln_2.": "post_attention_layernorm.",
                         "attn.c_proj.": "self_attn.o_proj."}
QWEN_MODEL_TYPES = ("qwen",)


def is_qwen_config(d: dict | None) -> bool:
    return isinstance(d, dict) and d.get("model_type") in QWEN_MODEL_TYPES


def qwen2_config_from_qwen(d: dict):
    """The published Qwen config.json (a dict) -> transformers' Qwen2Config of the same model."""
    from transformers import Qwen2Config

    heads = d["num_attention_heads"]
    if d.get("kv_channels", d["hidden_size"] // heads) * heads != d["hidden_size"]:
        raise ConfigError(f"Qwen config: kv_channels x heads ({d.get('kv_channels')} x {heads}) != hidden_size "
                          f"({d['hidden_size']}); qwen2 needs head_dim = hidden_size / heads")
    if float(d.get("rotary_pct", 1.0)) != 1.0:
        raise ConfigError(f"Qwen config: rotary_pct {d.get('rotary_pct')} (partial rotary) has no qwen2 equivalent")
    if not d.get("no_bias", True):
        raise ConfigError("Qwen config: no_bias false (biased MLP / output projection) has no qwen2 equivalent")
    return Qwen2Config(
        vocab_size=d["vocab_size"], hidden_size=d["hidden_size"], intermediate_size=d["intermediate_size"] // 2,
        num_hidden_layers=d["num_hidden_layers"], num_attention_heads=heads, num_key_value_heads=heads,
        hidden_act="silu", max_position_embeddings=d.get("max_position_embeddings", d.get("seq_length", 8192)),
        initializer_range=d.get("initializer_range", 0.02), rms_norm_eps=d.get("layer_norm_epsilon", 1e-6),
        rope_parameters={"rope_type": "default", "rope_theta": float(d.get("rotary_emb_base", 10000))},
        attention_dropout=d.get("attn_dropout_prob", 0.0), tie_word_embeddings=d.get("tie_word_embeddings", False),
        use_cache=True)


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------

_QWEN_LAYER = re.compile(r"^h\.(\d+)\.(.*)$")
_NATIVE_LAYER = re.compile(r"^layers\.(\d+)\.(.*)$")


def _mlp_leaf(rest: str, table: dict[str, str]) -> str | None:
    """``mlp.<anything.>LEAF.weight`` with LEAF renamed by ``table``; None when it is not an MLP leaf."""
    if not rest.startswith("mlp."):
        return None
    head, _, param = rest.rpartition(".")
    path, _, leaf = head.rpartition(".")
    if leaf in table:
        return f"{path}.{table[leaf]}.{param}"
    return rest  # e.g. MoE-LLaVA's router ``mlp.deepspeed_moe.gate.wg.weight``: same leaf on both sides


def qwen_key_to_native(key: str, native_prefix: str = NATIVE_PREFIX) -> str:
    """One Qwen key -> its native name. ``attn.c_attn`` is fused (one key, three native keys): ValueError."""
    if key.startswith("lm_head."):
        return key
    if not key.startswith(QWEN_PREFIX):
        raise ValueError(f"{key!r} is not a Qwen LLM key (expected lm_head.* or transformer.*)")
    rest = key[len(QWEN_PREFIX):]
    for q, n in _TOP_QWEN_TO_NATIVE.items():
        if rest.startswith(q):
            return native_prefix + n + rest[len(q):]
    m = _QWEN_LAYER.match(rest)
    if not m:
        raise ValueError(f"{key!r}: no native name known")
    layer, rest = m.groups()
    if rest.startswith("attn.c_attn."):
        raise ValueError(f"{key!r} is fused q/k/v; convert whole state dicts with qwen_state_to_native")
    for q, n in _LAYER_QWEN_TO_NATIVE.items():
        if rest.startswith(q):
            return f"{native_prefix}layers.{layer}.{n}{rest[len(q):]}"
    mlp = _mlp_leaf(rest, MLP_QWEN_TO_NATIVE)
    if mlp is None:
        raise ValueError(f"{key!r}: no native name known")
    return f"{native_prefix}layers.{layer}.{mlp}"


def native_key_to_qwen(key: str, native_prefix: str = NATIVE_PREFIX) -> str:
    """One native key -> its Qwen (MoE-LLaVA) name. q/k/v_proj fuse into one key: ValueError."""
    if key.startswith("lm_head."):
        return key
    if not key.startswith(native_prefix):
        raise ValueError(f"{key!r} does not start with {native_prefix!r}")
    rest = key[len(native_prefix):]
    for q, n in _TOP_QWEN_TO_NATIVE.items():
        if rest.startswith(n):
            return QWEN_PREFIX + q + rest[len(n):]
    m = _NATIVE_LAYER.match(rest)
    if not m:
        raise ValueError(f"{key!r}: no Qwen name known")
    layer, rest = m.groups()
    if re.match(r"self_attn\.[qkv]_proj\.", rest):
        raise ValueError(f"{key!r} is one third of Qwen's fused c_attn; convert whole state dicts with "
                         "native_state_to_qwen")
    for q, n in _LAYER_QWEN_TO_NATIVE.items():
        if rest.startswith(n):
            return f"{QWEN_PREFIX}h.{layer}.{q}{rest[len(n):]}"
    mlp = _mlp_leaf(rest, MLP_NATIVE_TO_QWEN)
    if mlp is None:
        raise ValueError(f"{key!r}: no Qwen name known")
    return f"{QWEN_PREFIX}h.{layer}.{mlp}"


def qwen_state_to_native(state: dict[str, torch.Tensor], native_prefix: str = NATIVE_PREFIX) -> dict[str, torch.Tensor]:
    """A Qwen-layout state dict -> native qwen2 names; ``c_attn`` split into q, k, v (in that order)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = re.match(r"^transformer\.h\.(\d+)\.attn\.c_attn\.(weight|bias)$", key)
        if m:
            layer, param = m.groups()
            if value.shape[0] % 3:
                raise ConfigError(f"{key}: {tuple(value.shape)} does not split into q, k, v")
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{native_prefix}layers.{layer}.self_attn.{name}.{param}"] = part.clone()
            continue
        out[qwen_key_to_native(key, native_prefix)] = value
    return out


def native_state_to_qwen(state: dict[str, torch.Tensor], native_prefix: str = NATIVE_PREFIX) -> dict[str, torch.Tensor]:
    """Native qwen2 names -> Qwen's (what MoE-LLaVA reads); q, k, v fused back into ``c_attn``."""
    out: dict[str, torch.Tensor] = {}
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    pat = re.compile("^" + re.escape(native_prefix) + r"layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$")
    for key, value in state.items():
        m = pat.match(key)
        if m:
            layer, which, param = m.groups()
            parts.setdefault((layer, param), {})[which] = value
            continue
        out[native_key_to_qwen(key, native_prefix)] = value
    for (layer, param), qkv in parts.items():
        if set(qkv) != {"q", "k", "v"}:
            raise ValueError(f"layer {layer} {param}: has {sorted(qkv)} of q, k, v")
        out[f"{QWEN_PREFIX}h.{layer}.attn.c_attn.{param}"] = torch.cat([qkv["q"], qkv["k"], qkv["v"]], dim=0)
    return out


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def load_qwen_as_qwen2(name: str, config: dict, *, dtype: torch.dtype, attn_implementation: str):
    """A Qwen-1_8B checkpoint (folder or Hub id, read as it ships) as ``Qwen2ForCausalLM``, every key checked."""
    from transformers import Qwen2ForCausalLM

    from vlmtrain.model.checkpoint_files import from_state_dict, read_state_dict

    state = qwen_state_to_native(read_state_dict(name))
    return from_state_dict(Qwen2ForCausalLM, qwen2_config_from_qwen(config), state, source=name, dtype=dtype,
                           attn_implementation=attn_implementation)
