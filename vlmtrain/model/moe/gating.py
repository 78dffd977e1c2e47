"""Top-1 / top-2 routing with expert capacity, computed the way DeepSpeed's MoE gate computes it.

MoE-LLaVA trains with ``deepspeed.moe.layer.MoE``; this module reproduces what its gate
(``TopKGate`` -> ``top1gating`` / ``top2gating`` in ``deepspeed/moe/sharded_moe.py``) decides for
the same logits and the same random state, so a vlmtrain stage 3 routes, drops and balances
tokens as MoE-LLaVA's did. tests/train/test_moe_gating.py compares the two on fixed logits.

The rules (S tokens, E experts, everything in fp32):

- ``gates = softmax(logits)``; the first expert is ``argmax(gates)``.
- top-2: the second expert is the argmax of the logits with the first masked out; by default Gumbel
  noise is added to the logits first (DeepSpeed's ``top2_2nd_expert_sampling``, on in training
  *and* in eval), drawn from the global torch RNG, so a seeded run is reproducible.
- capacity per expert: ``max(ceil(S / E * cf * k), min_capacity)``, ``cf`` the training or the
  eval capacity factor. Slots are handed out in token order, all first choices before all second
  choices; a route past the capacity is dropped. top-1 with random token selection (``use_rts``,
  DeepSpeed's default) keeps, per expert, the routed tokens with the highest uniform noise instead.
- the kept routes' gate values are renormalised to sum to one (top-2; a token whose second route
  was dropped gets weight 1 on its first); a token with no kept route gets a zero output.
- load-balancing loss (GShard): ``E * sum(mean(gates) * mean(first-choice one-hot))`` for top-1,
  ``E * E * mean(...)`` (the same number) for top-2; first choices before dropping.
- ``exp_counts``: routes per expert before dropping (first and second choices).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Routing:
    """Which expert each (choice, token) goes to and with what weight.

    ``experts`` and ``weights`` are [k, S]; a dropped route has expert -1 and weight 0.
    """

    experts: torch.Tensor        # int64 [k, S]
    weights: torch.Tensor        # fp32 [k, S]
    aux_loss: torch.Tensor       # fp32 scalar, differentiable w.r.t. the logits
    exp_counts: torch.Tensor     # int64 [E], routes per expert before the capacity cut
    capacity: int


def capacity(num_tokens: int, num_experts: int, factor: float, min_capacity: int) -> int:
    """DeepSpeed's ``_capacity``: ``ceil(S / E * factor)`` (factor already times k), at least min_capacity."""
    value = torch.ceil(torch.tensor(num_tokens / num_experts) * torch.tensor(factor)).to(torch.int64)
    return int(max(int(value), int(min_capacity)))


def gumbel_noise(shape: torch.Size, device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise from the global RNG (the same draws as DeepSpeed's ``gumbel_rsample``)."""
    zero, one = torch.tensor(0.0, device=device), torch.tensor(1.0, device=device)
    return torch.distributions.gumbel.Gumbel(zero, one).rsample(shape)


def uniform_noise(shape: torch.Size, device: torch.device) -> torch.Tensor:
    """U(0, 1) from the global RNG (the same draws as DeepSpeed's random token selection)."""
    zero, one = torch.tensor(0.0, device=device), torch.tensor(1.0, device=device)
    return torch.distributions.uniform.Uniform(zero, one).rsample(shape)


def route(logits: torch.Tensor, k: int, capacity_factor: float, min_capacity: int = 0, *,
          drop_tokens: bool = True, second_expert_sampling: bool = True, random_token_selection: bool = True,
          ) -> Routing:
    """Route S tokens given fp32 router ``logits`` [S, E]. See the module docstring for the rules."""
    if k == 1:
        return _top1(logits, capacity_factor, min_capacity, drop_tokens, random_token_selection)
    if k == 2:
        return _top2(logits, capacity_factor, min_capacity, drop_tokens, second_expert_sampling)
    raise ValueError(f"top-{k} routing is not supported (MoE-LLaVA uses top-1 or top-2)")


def _balance_loss(gates: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    num_experts = gates.shape[1]
    return torch.mean(torch.mean(gates, dim=0) * torch.mean(first.float(), dim=0)) * num_experts * num_experts


def _top1(logits: torch.Tensor, cf: float, min_capacity: int, drop_tokens: bool, rts: bool) -> Routing:
    gates = F.softmax(logits, dim=1)
    num_tokens, num_experts = gates.shape
    choice = torch.argmax(gates, dim=1)
    onehot = F.one_hot(choice, num_classes=num_experts)
    counts = onehot.sum(dim=0).detach()
    cap = capacity(num_tokens, num_experts, cf, min_capacity)
    if not drop_tokens:
        cap = min(int(counts.max()), num_tokens)
    # The GShard loss written as top-1's sum(me*ce)*E equals mean(me*ce)*E*E.
    aux = torch.sum(torch.mean(gates, dim=0) * torch.mean(onehot.float(), dim=0)) * num_experts
    # Fewer tokens than min_capacity (a generated token, a short batch): every route fits, so all are
    # kept. DeepSpeed asserts here instead, which stopped a run mid-training or every `generate`.
    # Which routed tokens keep their slot: the highest noise (random token selection) or, without
    # it, torch.topk's order over the 0/1 mask, as DeepSpeed does.
    score = onehot * uniform_noise(onehot.shape, logits.device) if rts else onehot
    top = torch.topk(score, k=min(cap, num_tokens), dim=0)[1]
    kept = onehot * torch.zeros_like(onehot).scatter_(0, top, 1)
    kept_any = kept.sum(dim=1) > 0
    experts = torch.where(kept_any, choice, torch.full_like(choice, -1)).unsqueeze(0)
    weights = (gates * kept.float()).sum(dim=1).unsqueeze(0)
    return Routing(experts, weights, aux, counts, cap)


def _top2(logits: torch.Tensor, cf: float, min_capacity: int, drop_tokens: bool, sampling: bool) -> Routing:
    gates = F.softmax(logits, dim=1)
    num_tokens, num_experts = gates.shape
    first = torch.argmax(gates, dim=1)
    mask1 = F.one_hot(first, num_classes=num_experts)
    noisy = logits + gumbel_noise(logits.shape, logits.device) if sampling else logits
    second = torch.argmax(noisy.masked_fill(mask1.bool(), float("-inf")), dim=1)
    mask2 = F.one_hot(second, num_classes=num_experts)

    # Slot of each route in its expert's buffer: first choices in token order, then second choices.
    slot1 = (torch.cumsum(mask1, dim=0) - 1).gather(1, first[:, None]).squeeze(1)
    slot2 = (torch.cumsum(mask2, dim=0) - 1 + mask1.sum(dim=0, keepdim=True)).gather(1, second[:, None]).squeeze(1)
    aux = _balance_loss(gates, mask1)
    counts = (mask1 + mask2).sum(dim=0).detach()
    if drop_tokens:
        cap = capacity(num_tokens, num_experts, cf * 2, min_capacity)
    else:
        cap = int(counts.max())
    keep1, keep2 = slot1 < cap, slot2 < cap

    g1 = torch.where(keep1, gates.gather(1, first[:, None]).squeeze(1), torch.zeros((), device=gates.device))
    g2 = torch.where(keep2, gates.gather(1, second[:, None]).squeeze(1), torch.zeros((), device=gates.device))
    denom = torch.clamp(g1 + g2, min=torch.finfo(g1.dtype).eps)
    experts = torch.stack([torch.where(keep1, first, -1), torch.where(keep2, second, -1)])
    return Routing(experts, torch.stack([g1 / denom, g2 / denom]), aux, counts, cap)

