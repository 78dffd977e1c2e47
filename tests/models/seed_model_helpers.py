"""Tiny checkpoints written in the published layouts (Qwen-1_8B, InternViT-6B, ConvLLaVA's ConvNeXt), the
reference forwards they are checked against, and a one-step training helper.

The reference forwards are written from each architecture's description (the published modeling
files define it): they share no code with transformers or with vlmtrain, so an error in a key map
(a swapped w1/w2, q/k/v split in the wrong order) shows up as different numbers.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

TINY_LLAMA = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256, "vocab_size": 120}
TINY_CLIP = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "patch_size": 8, "image_size": 32}

# Qwen-1_8B's config.json, shrunk (same fields; auto_map as published: remote code).
QWEN_TINY = {"model_type": "qwen", "architectures": ["QWenLMHeadModel"],
             "auto_map": {"AutoConfig": "configuration_qwen.QWenConfig",
                          "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel"},
             "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
             "kv_channels": 8, "vocab_size": 97, "max_position_embeddings": 64, "seq_length": 64,
             "layer_norm_epsilon": 1e-6, "rotary_emb_base": 10000, "rotary_pct": 1.0, "no_bias": True,
             "tie_word_embeddings": False, "use_dynamic_ntk": True, "use_logn_attn": True}

# InternViT-6B's config.json, shrunk.
INTERNVIT_TINY = {"model_type": "intern_vit_6b", "architectures": ["InternVisionModel"],
                  "auto_map": {"AutoConfig": "configuration_intern_vit.InternVisionConfig",
                               "AutoModel": "modeling_intern_vit.InternVisionModel"},
                  "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 2,
                  "patch_size": 8, "image_size": 32, "num_channels": 3, "hidden_act": "gelu", "layer_norm_eps": 1e-6,
                  "qkv_bias": False, "qk_normalization": True, "initializer_factor": 0.1, "dropout": 0.0,
                  "attention_dropout": 0.0, "drop_path_rate": 0.0}

# ConvLLaVA/LAION-CLIP-ConvNeXt-Large-512's config.json, shrunk (4 stages, transformers' ConvNext layout).
CONVNEXT_TINY = {"model_type": "convnext", "depths": [1, 1, 2, 1], "hidden_sizes": [8, 16, 24, 32], "num_stages": 4,
                 "image_size": 64, "patch_size": 4, "num_channels": 3, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
                 "layer_scale_init_value": 1e-6, "drop_path_rate": 0.0}


def _rand(*shape: int, scale: float = 0.2) -> torch.Tensor:
    return torch.randn(*shape) * scale


def write_checkpoint(folder: Path, config: dict, state: dict[str, torch.Tensor], *, shards: int = 1,
                     fmt: str = "safetensors") -> Path:
    """config.json + weights as a publisher ships them: one file, or shards with an index."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    keys = sorted(state)
    ext = "safetensors" if fmt == "safetensors" else "bin"
    stem = "model" if fmt == "safetensors" else "pytorch_model"

    def save(part: dict, name: str) -> None:
        if fmt == "safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in part.items()}, str(folder / name))
        else:
            torch.save(part, folder / name)

    if shards == 1:
        save(state, f"{stem}.{ext}")
        return folder
    weight_map = {}
    for i in range(shards):
        name = f"{stem}-{i + 1:05d}-of-{shards:05d}.{ext}"
        part = {k: state[k] for k in keys[i::shards]}
        save(part, name)
        weight_map.update({k: name for k in part})
    (folder / f"{stem}.{ext}.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


# ---------------------------------------------------------------------------------------------
# Qwen
# ---------------------------------------------------------------------------------------------

def qwen_state(c: dict = QWEN_TINY, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under Qwen's published key names (transformer.h.N.attn.c_attn, mlp.w1/w2/c_proj, ...)."""
    torch.manual_seed(seed)
    d, ff, v = c["hidden_size"], c["intermediate_size"] // 2, c["vocab_size"]
    s = {"transformer.wte.weight": _rand(v, d, scale=1.0), "transformer.ln_f.weight": 1 + _rand(d),
         "lm_head.weight": _rand(v, d)}
    for i in range(c["num_hidden_layers"]):
        p = f"transformer.h.{i}."
        s.update({p + "ln_1.weight": 1 + _rand(d), p + "ln_2.weight": 1 + _rand(d),
                  p + "attn.c_attn.weight": _rand(3 * d, d), p + "attn.c_attn.bias": _rand(3 * d),
                  p + "attn.c_proj.weight": _rand(d, d), p + "mlp.w1.weight": _rand(ff, d),
                  p + "mlp.w2.weight": _rand(ff, d), p + "mlp.c_proj.weight": _rand(d, ff)})
    return s


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def qwen_reference_logits(s: dict[str, torch.Tensor], c: dict, ids: torch.Tensor) -> torch.Tensor:
    """Qwen's forward from its description: RMSNorm pre-norm blocks, fused q|k|v, rotate-half rotary on the
    whole head, causal softmax(qk/sqrt(d)), MLP c_proj(w1(x) * silu(w2(x))), final norm, untied head."""
    b, t = ids.shape
    d, h = c["hidden_size"], c["num_attention_heads"]
    hd, eps = d // h, c["layer_norm_epsilon"]
    dev = ids.device
    inv = 1.0 / (c["rotary_emb_base"] ** (torch.arange(0, hd, 2, device=dev).float() / hd))
    ang = torch.outer(torch.arange(t, device=dev).float(), inv)
    cos, sin = torch.cat([ang, ang], -1).cos()[None, :, None], torch.cat([ang, ang], -1).sin()[None, :, None]

    def rotary(x):  # [b, t, h, hd]
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    causal = torch.full((t, t), float("-inf"), device=dev).triu(1)
    x = s["transformer.wte.weight"][ids]
    for i in range(c["num_hidden_layers"]):
        p = f"transformer.h.{i}."
        y = _rms(x, s[p + "ln_1.weight"], eps)
        q, k, v = (y @ s[p + "attn.c_attn.weight"].T + s[p + "attn.c_attn.bias"]).split(d, dim=-1)
        q, k, v = (z.view(b, t, h, hd) for z in (q, k, v))
        q, k = rotary(q), rotary(k)
        att = (torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd) + causal).softmax(-1)
        x = x + torch.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, t, d) @ s[p + "attn.c_proj.weight"].T
        y = _rms(x, s[p + "ln_2.weight"], eps)
        x = x + ((y @ s[p + "mlp.w1.weight"].T) * F.silu(y @ s[p + "mlp.w2.weight"].T)) @ s[p + "mlp.c_proj.weight"].T
    return _rms(x, s["transformer.ln_f.weight"], eps) @ s["lm_head.weight"].T


# ---------------------------------------------------------------------------------------------
# InternViT
# ---------------------------------------------------------------------------------------------

def internvit_state(c: dict = INTERNVIT_TINY, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under InternViT-6B's published key names."""
    torch.manual_seed(seed)
    d, ff, p = c["hidden_size"], c["intermediate_size"], c["patch_size"]
    n = (c["image_size"] // p) ** 2
    s = {"embeddings.class_embedding": _rand(1, 1, d, scale=1.0),
         "embeddings.patch_embedding.weight": _rand(d, 3, p, p), "embeddings.patch_embedding.bias": _rand(d),
         "embeddings.position_embedding": _rand(1, n + 1, d, scale=1.0)}
    for i in range(c["num_hidden_layers"]):
        q = f"encoder.layers.{i}."
        s.update({q + "attn.qkv.weight": _rand(3 * d, d), q + "attn.q_norm.weight": 1 + _rand(d),
                  q + "attn.k_norm.weight": 1 + _rand(d), q + "attn.proj.weight": _rand(d, d),
                  q + "attn.proj.bias": _rand(d), q + "mlp.fc1.weight": _rand(ff, d), q + "mlp.fc1.bias": _rand(ff),
                  q + "mlp.fc2.weight": _rand(d, ff), q + "mlp.fc2.bias": _rand(d), q + "norm1.weight": 1 + _rand(d),
                  q + "norm2.weight": 1 + _rand(d), q + "ls1": 0.5 + _rand(d), q + "ls2": 0.5 + _rand(d)})
    return s


def internvit_reference_hidden_states(s: dict[str, torch.Tensor], c: dict, pixels: torch.Tensor) -> list[torch.Tensor]:
    """InternViT's forward from its description: conv patches + CLS + position embeddings (bicubic-resized
    to the input grid), blocks x + ls1*attn(norm1 x), x + ls2*mlp(norm2 x) with RMSNorm and RMS QK-norm
    over the full width; returns the embeddings and every block's output."""
    d, h, p, eps = c["hidden_size"], c["num_attention_heads"], c["patch_size"], c["layer_norm_eps"]
    hd = d // h
    x = F.conv2d(pixels, s["embeddings.patch_embedding.weight"], s["embeddings.patch_embedding.bias"], stride=p)
    b, _, gh, gw = x.shape
    x = x.flatten(2).transpose(1, 2)
    pos = s["embeddings.position_embedding"]
    g = c["image_size"] // p
    grid = pos[:, 1:].reshape(1, g, g, d).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
    x = torch.cat([s["embeddings.class_embedding"].expand(b, 1, d), x], 1) + torch.cat([pos[:, :1], grid], 1)
    out = [x]
    for i in range(c["num_hidden_layers"]):
        q = f"encoder.layers.{i}."
        y = _rms(x, s[q + "norm1.weight"], eps)
        qq, kk, vv = (y @ s[q + "attn.qkv.weight"].T).split(d, dim=-1)
        qq, kk = _rms(qq, s[q + "attn.q_norm.weight"], eps), _rms(kk, s[q + "attn.k_norm.weight"], eps)
        qq, kk, vv = (z.view(b, -1, h, hd) for z in (qq, kk, vv))
        att = (torch.einsum("bqhd,bkhd->bhqk", qq, kk) / math.sqrt(hd)).softmax(-1)
        a = torch.einsum("bhqk,bkhd->bqhd", att, vv).reshape(b, -1, d) @ s[q + "attn.proj.weight"].T + s[q + "attn.proj.bias"]
        x = x + a * s[q + "ls1"]
        y = _rms(x, s[q + "norm2.weight"], eps)
        m = F.gelu(y @ s[q + "mlp.fc1.weight"].T + s[q + "mlp.fc1.bias"]) @ s[q + "mlp.fc2.weight"].T + s[q + "mlp.fc2.bias"]
        x = x + m * s[q + "ls2"]
        out.append(x)
    return out


# ---------------------------------------------------------------------------------------------
# Training step
# ---------------------------------------------------------------------------------------------

def one_training_step(built, pixels: torch.Tensor, lr: float = 1e-2) -> tuple[float, dict[str, bool]]:
    """Forward with labels, backward, one AdamW step; returns the loss and, per parameter name, whether it changed."""
    model = built.model
    model.train()
    per = built.tokens_per_image
    n = pixels.shape[0]
    torch.manual_seed(1)
    ids = torch.randint(3, 90, (n, per + 10))
    ids[:, 2:2 + per] = built.image_token_id
    labels = ids.clone()
    labels[:, :2 + per] = -100
    trainable = {k: p for k, p in model.named_parameters() if p.requires_grad}
    before = {k: p.detach().clone() for k, p in trainable.items()}
    opt = torch.optim.AdamW(trainable.values(), lr=lr)
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels, labels=labels)
    out.loss.backward()
    opt.step()
    changed = {k: not torch.equal(before[k], p.detach()) for k, p in trainable.items()}
    return float(out.loss.detach()), changed
