"""The causal-LM loss on supervised positions only, with the LM head applied in chunks.

Equal to transformers' ``ForCausalLMLoss`` (shift by one, cross-entropy in fp32, ignore -100, sum
divided by ``num_items_in_batch`` when the Trainer passes it, else the mean): positions whose next
token has no label contribute nothing to that loss, so their logits are never computed. In LLaVA
stage 2 most positions are image tokens and prompts, so the LM head does a fraction of the work,
and no [batch x length x vocab] tensor is built (chunks of at most ``chunk_tokens`` rows keep every
GEMM in the range cuBLAS's fast kernels handle).

``fused``: a fused linear cross-entropy ``fused(hidden, weight, target, bias) -> summed loss`` to use
instead of the chunks (``kernels: liger`` sets liger-kernel's, vlmtrain.model.kernels).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def supervised_lm_loss(lm_head, hidden: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None,
                       chunk_tokens: int = 8192, fused: Callable | None = None) -> torch.Tensor:
    target = labels[:, 1:].to(hidden.device)
    keep = target != IGNORE_INDEX
    h = hidden[:, :-1][keep]
    t = target[keep]
    if t.numel() == 0:  # nothing supervised: a zero that keeps the graph (and ZeRO's hooks) alive
        return lm_head(hidden[:, :1]).float().sum() * 0.0
    if fused is not None:
        total = fused(h, lm_head.weight, t, lm_head.bias)
    else:
        total = None
        for i in range(0, t.numel(), chunk_tokens):
            logits = lm_head(h[i:i + chunk_tokens]).float()
            part = F.cross_entropy(logits, t[i:i + chunk_tokens], reduction="sum")
            total = part if total is None else total + part
    if num_items_in_batch is None:
        return total / t.numel()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch
