"""The causal-LM loss on supervised positions only, with the LM head applied in chunks.

Equal to transformers' ``ForCausalLMLoss`` (shift by one, cross-entropy in fp32, ignore -100, sum
divided by ``num_items_in_batch`` when the Trainer passes it, else the mean): positions whose next
token has no label contribute nothing to that loss, so their logits are never computed. In LLaVA
stage 2 most positions are image tokens and prompts, so the LM head does a fraction of the work,
and no [batch x length x vocab] tensor is built (chunks of at most ``chunk_tokens`` rows keep every
GEMM in the range cuBLAS's fast kernels handle).

``fused``: a fused linear cross-entropy ``fused(hidden, weight, target, bias) -> summed loss`` to use
instead of the chunks (``kernels: liger`` sets liger-kernel's, vlmtrain.model.kernels); not under ZeRO-3,
whose partitioned head weight is whole only inside the head's own call.

Under ZeRO-3 every rank calls the head the same number of times (each call gathers its weight, and the
ranks' gathers must pair): as many as the rank with the most chunks, empty ones included.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def supervised_positions(labels: torch.Tensor) -> torch.Tensor:
    """[N, 2] (row, position) of the hidden states whose next token has a label, in row-major order.

    Finding them reads a count back to the host (the GPU's queue drains), so the model does it before
    its forward, where little is queued, rather than after the LLM, where the host would wait for all of it
    and the GPU then for the host's next launches."""
    return (labels[:, 1:] != IGNORE_INDEX).nonzero()


def supervised_lm_loss(lm_head, hidden: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None,
                       chunk_tokens: int = 8192, fused: Callable | None = None,
                       positions: torch.Tensor | None = None) -> torch.Tensor:
    """``positions``: :func:`supervised_positions` of ``labels``, when the caller found them already."""
    if positions is None:
        positions = supervised_positions(labels)
    rows, cols = positions[:, 0].to(hidden.device), positions[:, 1].to(hidden.device)
    h = hidden[rows, cols]
    t = labels.to(hidden.device)[rows, cols + 1]
    zero3 = _partitioned(lm_head.weight)
    if fused is not None and t.numel() and not zero3:  # (under ZeRO-3 the head's weight is not whole here)
        total = fused(h, lm_head.weight, t, lm_head.bias)
    else:
        # Every rank calls the head as many times (ZeRO-3 gathers its weight at each call, and the ranks'
        # gathers must pair): the most chunks any rank has, empty ones included. With nothing supervised,
        # one empty call keeps the graph (and ZeRO's hooks) alive for a zero loss.
        chunks = max(1, -(-t.numel() // chunk_tokens))
        if zero3:
            chunks = _most_on_any_rank(chunks, h.device)
        total = None
        for i in range(chunks):
            logits = lm_head(h[i * chunk_tokens:(i + 1) * chunk_tokens]).float()
            part = t[i * chunk_tokens:(i + 1) * chunk_tokens]
            loss = F.cross_entropy(logits, part, reduction="sum") if part.numel() else logits.sum() * 0.0
            total = loss if total is None else total + loss
    if t.numel() == 0:
        return total
    if num_items_in_batch is None:
        return total / t.numel()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def _partitioned(weight: torch.Tensor) -> bool:
    """A parameter that DeepSpeed ZeRO-3 partitions across ranks (gathered at each module call)."""
    return hasattr(weight, "ds_id")


def _most_on_any_rank(n: int, device: torch.device) -> int:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return n
    most = torch.tensor([n], dtype=torch.long, device=device)
    dist.all_reduce(most, op=dist.ReduceOp.MAX)
    return int(most.item())
