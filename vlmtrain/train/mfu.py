"""Model FLOPs and MFU for a LLaVA training step.

FLOPs are the *model's* (what the step needs), not the hardware's (recompute from gradient
checkpointing and padding are not counted): MFU = model FLOPs per second / peak dense bf16 FLOPs.

Per part, with N the part's matmul parameters (embeddings excluded, lm_head included; in MoE layers
only the top_k of num_experts expert copies a token runs through):

- a part whose weights train: 6·N per token (forward 2N, backward 4N);
- a frozen part with something trainable *before* it (the LLM in stage 1: gradients flow through it
  to the projector): 4·N per token (forward + activation gradients);
- a frozen part with nothing trainable before it (the vision tower): 2·N per token, forward only.

The LM head runs only on positions with a label (vlmtrain.model.loss), so its 6·N_head counts
per supervised token, not per token. Attention scores add, per layer and sequence of length s, 4·d·s² forward (QKᵀ and AV, counted in
full as nanoGPT / PaLM do), times 3 when gradients flow back through the layer. Tokens are the true
(non-pad) tokens, image tokens included; the tower's tokens are its patches (+ CLS).
"""
from __future__ import annotations

from dataclasses import dataclass

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s. Matched by substring of the device name,
# most specific first.
PEAK_BF16: list[tuple[str, float]] = [
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),        # SXM
    ("H800", 989e12),
    ("H20", 148e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("A10G", 125e12),  # (also matches "A10" below otherwise)
    ("A10", 125e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
    ("V100", 125e12),        # fp16 (no bf16 on Volta)
]


def peak_flops(device_name: str | None) -> float | None:
    """Peak dense bf16 FLOP/s of one device, or None (CPU / unknown: MFU is reported as n/a)."""
    if not device_name:
        return None
    for key, value in PEAK_BF16:
        if key.lower() in device_name.lower():
            return value
    return None


def device_name() -> str | None:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return None


@dataclass
class FlopModel:
    """The numbers the FLOP count needs, read once from the model."""

    llm_params: int          # matmul params of the LLM body (no input embeddings, no lm_head)
    head_params: int         # lm_head (runs on supervised positions only)
    llm_layers: int
    llm_width: int
    llm_factor: int          # 6 trainable / 4 gradients pass through / 2 forward only
    vision_params: int
    vision_layers: int
    vision_width: int
    vision_tokens: int       # per image (patches + CLS)
    vision_factor: int
    projector_params: int
    projector_factor: int
    vision_conv_flops: float = 0.0  # forward FLOPs per image of a conv tower (ConvNeXt), whose work is not params x tokens

    def attention_weight(self) -> float:
        """The LLM's attention FLOPs per position per token of sequence width, over its other FLOPs per
        position: what a longer packed row costs (vlmtrain.data.packing)."""
        attn_mult = 3 if self.llm_factor > 2 else 1
        return attn_mult * 4 * self.llm_layers * self.llm_width / max(self.llm_factor * self.llm_params, 1)

    def step_flops(self, seq_lens: list[int], n_images: int, n_supervised: int | None = None) -> float:
        """Model FLOPs of one forward+backward over sequences of these true lengths."""
        tokens = sum(seq_lens)
        attn_mult = 3 if self.llm_factor > 2 else 1
        f = self.llm_factor * self.llm_params * tokens
        f += self.llm_factor * self.head_params * (tokens if n_supervised is None else n_supervised)
        f += attn_mult * 4 * self.llm_layers * self.llm_width * sum(s * s for s in seq_lens)
        v_attn_mult = 3 if self.vision_factor > 2 else 1
        f += n_images * (self.vision_factor * self.vision_params * self.vision_tokens
                         + v_attn_mult * 4 * self.vision_layers * self.vision_width * self.vision_tokens ** 2
                         + self.vision_factor / 2 * self.vision_conv_flops)
        f += n_images * self.projector_factor * self.projector_params * self.vision_tokens
        return float(f)


def _matmul_params(module, exclude=()) -> int:
    from torch import nn

    skip = {id(p) for m in exclude if m is not None for p in m.parameters()}
    n = 0
    for m in module.modules():
        if isinstance(m, nn.Embedding):
            skip.update(id(p) for p in m.parameters())
    for p in module.parameters():
        if id(p) not in skip and p.dim() >= 2:
            n += p.numel() if not hasattr(p, "ds_numel") else p.ds_numel
            skip.add(id(p))
    return n


def _trains(modules) -> bool:
    """Most of the part's weights train (LoRA adapters alone do not make it a 6N part)."""
    total = trainable = 0
    for m in modules:
        for p in m.parameters():
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
    return total > 0 and trainable * 2 > total


def _any_trains(modules) -> bool:
    return any(p.requires_grad for m in modules for p in m.parameters())


def flop_model(model) -> FlopModel:
    """Read sizes and the freeze state from a (possibly peft-wrapped) Llava model."""
    from vlmtrain.model.build import parts
    from vlmtrain.model.towers import flop_shape

    p = parts(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    tc, vc = cfg.text_config, cfg.vision_config
    vision_train, proj_train = _trains(p["vision"]), _any_trains(p["projector"])
    llm_train = _trains(p["llm"])
    lora = _any_trains(p["llm"]) and not llm_train
    # The tower's patch embedding is a conv (4-D weight) and counts; position embeddings do not.
    llm_params = _matmul_params(p["llm"][0]) - _inactive_expert_params(base)
    head_params = _matmul_params(p["llm"][1], exclude=[p["llm"][0]])
    tokens, vision_layers, vision_width, conv_flops = flop_shape(vc)
    return FlopModel(
        llm_params=llm_params, head_params=head_params, llm_layers=tc.num_hidden_layers, llm_width=tc.hidden_size,
        llm_factor=6 if llm_train else (4 if (proj_train or vision_train or lora) else 2),
        vision_params=0 if conv_flops else _matmul_params(p["vision"][0]), vision_layers=vision_layers,
        vision_width=vision_width, vision_tokens=tokens, vision_factor=6 if vision_train else 2,
        vision_conv_flops=conv_flops,
        projector_params=_matmul_params(p["projector"][0]),
        projector_factor=6 if proj_train else (4 if vision_train else 2),
    )


def _inactive_expert_params(model) -> int:
    """MoE layers (stage 3): a token runs through top_k of the num_experts FFN copies, not all of them."""
    from vlmtrain.model.moe import moe_blocks

    n = 0
    for _, block in moe_blocks(model):
        e, k = block.settings.num_experts, block.settings.top_k
        n += _matmul_params(block.experts) * (e - k) // e
    return n


def mfu(flops_per_s: float, n_devices: int, peak: float | None) -> float | None:
    if not peak:
        return None
    return flops_per_s / (peak * n_devices)
