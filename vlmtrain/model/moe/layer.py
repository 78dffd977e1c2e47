"""A sparse MoE feed-forward block that stands in a decoder layer's ``mlp``.

Why our own layer and not ``deepspeed.moe.layer.MoE`` (which MoE-LLaVA uses): DeepSpeed's layer
ties training to the DeepSpeed engine (its optimizer needs MoE parameter groups, it refuses ZeRO-3,
its outputs are a tuple that every decoder layer must be patched to unpack), and it dispatches
through fixed-capacity buffers, so every expert runs on ``capacity`` rows, most of them padding
when the router is unbalanced. This layer runs under plain PyTorch, the HF Trainer, DDP and
DeepSpeed ZeRO-2/3 alike, runs each expert only on the tokens routed to it, and returns a tensor
like the dense FFN it replaces. What it computes is DeepSpeed's: the routing is
:func:`vlmtrain.model.moe.gating.route` (tested equal to DeepSpeed's gate on the same logits and
noise) and the output is the gate-weighted sum of the kept routes' expert outputs, accumulated in
fp32 and cast back, as the installed DeepSpeed's combine step does (its ``_sparse_decode``;
tests/train/test_moe_gating.py compares the whole layer with DeepSpeed's). DeepSpeed 0.9.5, which
MoE-LLaVA pins, combines in the activation dtype instead: its MOELayer casts the combine weights to
the input's dtype and the weighted sum comes out in it (bf16 in MoE-LLaVA's training), so in bf16 the
two differ by that rounding.

Every expert is called in every forward, with zero rows when nothing is routed to it: ZeRO-3
gathers a module's weights when it is called, and all ranks must make the same calls.

The router (``router``, DeepSpeed's ``gate.wg``) is a bias-free Linear evaluated in fp32, autocast or not. With
``use_residual`` (Residual-MoE), the dense FFN stays as ``residual_mlp`` and a ``coefficient``
Linear(hidden, 2) mixes the two outputs by softmax, as DeepSpeed's ``use_residual`` does.

The layer keeps its last forward's statistics (``last``) for the trainer's logs; the
load-balancing loss there is part of the autograd graph.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .gating import route


@dataclass
class MoeSettings:
    """The per-layer routing settings (MoE-LLaVA's ``config.moe`` keys, minus the layer choice)."""

    num_experts: int = 4
    top_k: int = 2
    capacity_factor: float = 1.5
    eval_capacity_factor: float = 2.0
    min_capacity: int = 0
    use_residual: bool = False
    second_expert_sampling: bool = True      # DeepSpeed's top2_2nd_expert_sampling
    random_token_selection: bool = True      # DeepSpeed's use_rts (top-1)
    drop_tokens: bool = True


@dataclass
class MoeStats:
    aux_loss: torch.Tensor        # scalar, in the graph
    exp_counts: torch.Tensor      # [E] routes per expert before the capacity cut
    routes: int                   # tokens x k
    kept: int                     # routes that got a slot


class SparseMoeBlock(nn.Module):
    """``num_experts`` copies of a dense FFN behind a top-k router."""

    def __init__(self, hidden_size: int, dense_mlp: nn.Module, settings: MoeSettings) -> None:
        super().__init__()
        self.settings = settings
        self.router = nn.Linear(hidden_size, settings.num_experts, bias=False)
        self.experts = nn.ModuleList([copy.deepcopy(dense_mlp) for _ in range(settings.num_experts)])
        if settings.use_residual:
            self.residual_mlp = dense_mlp
            self.coefficient = nn.Linear(hidden_size, 2)
        self.last: MoeStats | None = None

    # Eager under `compile: layers` / `model`: routing is data-dependent (host reads of the capacity and
    # bucket sizes), so traced it breaks the graph at each read and recompiles for each token count
    @torch.compiler.disable
    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        s = self.settings
        flat = hidden.reshape(-1, hidden.shape[-1])
        # (outside autocast: under bf16 autocast, which a run without DeepSpeed trains in, a Linear is
        # cast to bf16 whatever its inputs are; DeepSpeed's gate, which runs without autocast, is fp32)
        with torch.autocast(device_type=flat.device.type, enabled=False):
            logits = F.linear(flat.float(), self.router.weight.float())
            r = route(logits, s.top_k, s.capacity_factor if self.training else s.eval_capacity_factor,
                      s.min_capacity, drop_tokens=s.drop_tokens, second_expert_sampling=s.second_expert_sampling,
                      random_token_selection=s.random_token_selection)
        # Sort the (choice, token) routes by expert: one host sync per layer for the bucket sizes,
        # then one contiguous slice per expert. Bucket 0 holds the dropped routes (expert -1).
        k, n = r.experts.shape
        experts = r.experts.reshape(-1)
        order = torch.argsort(experts, stable=True)
        sizes = torch.bincount(experts + 1, minlength=s.num_experts + 1).tolist()
        token = torch.arange(n, device=flat.device).repeat(k)[order][sizes[0]:]
        weight = r.weights.reshape(-1)[order][sizes[0]:]
        chunks = flat.index_select(0, token).split(sizes[1:])
        outs = []
        for expert, chunk in zip(self.experts, chunks):
            y = expert(chunk)
            outs.append(y[0] if isinstance(y, tuple) else y)
        # Each token gets at most k <= 2 terms added to 0, so the fp32 sum is the same in any order.
        out = torch.zeros(flat.shape, dtype=torch.float32, device=flat.device)
        out.index_add_(0, token, torch.cat(outs).float() * weight.unsqueeze(1))
        result = out.to(hidden.dtype).reshape(hidden.shape)
        if s.use_residual:
            dense = self.residual_mlp(hidden)
            if isinstance(dense, tuple):
                dense = dense[0]
            coef = F.softmax(self.coefficient(hidden), dim=-1)
            result = result * coef[..., 0:1] + dense * coef[..., 1:]
        self.last = MoeStats(r.aux_loss, r.exp_counts, k * n, k * n - sizes[0])
        return result
