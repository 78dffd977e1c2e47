"""Routing and the MoE block against DeepSpeed's own gate and MoE layer (what MoE-LLaVA trains with).

Same logits and the same RNG state on both sides (the second-expert Gumbel noise and top-1's random
token selection draw from torch's global RNG): the kept (token, expert) pairs, their weights, the
load-balancing loss and the expert counts must be equal; the block's output equal to float tolerance.
"""
from __future__ import annotations

import copy
import importlib
import itertools

import pytest
import torch
from torch import nn

from vlmtrain.model.moe import MoeSettings, SparseMoeBlock, route

ds_moe = pytest.importorskip("deepspeed.moe.sharded_moe")
ds_layer = importlib.import_module("deepspeed.moe.layer")


def ds_gate(logits, k, cf, min_capacity, drop_tokens, sampling, rts):
    if k == 1:
        return ds_moe.top1gating(logits, cf, min_capacity, None, None, drop_tokens, rts)
    return ds_moe.top2gating(logits, cf, min_capacity, drop_tokens, None, sampling)


def dense_weights(experts: torch.Tensor, weights: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Our [k, S] routes -> [S, E] weights (0 where not routed or dropped)."""
    out = torch.zeros(experts.shape[1], num_experts)
    for c in range(experts.shape[0]):
        keep = experts[c] >= 0
        out[keep.nonzero().squeeze(1), experts[c][keep]] += weights[c][keep]
    return out


CASES = list(itertools.product([1, 2], [7, 64, 301], [4, 8], [1.5, 2.0, 0.25], [True, False]))


@pytest.mark.parametrize("k,tokens,experts,cf,noise", CASES)
def test_routing_equals_deepspeed(k, tokens, experts, cf, noise):
    g = torch.Generator().manual_seed(tokens * 31 + experts)
    logits = torch.randn(tokens, experts, generator=g) * 2
    torch.manual_seed(5)
    l_aux, combine, dispatch, counts = ds_gate(logits.clone(), k, cf, 0, True, noise, noise)
    torch.manual_seed(5)
    r = route(logits.clone(), k, cf, 0, second_expert_sampling=noise, random_token_selection=noise)
    assert torch.equal(r.aux_loss, l_aux)
    assert torch.equal(r.exp_counts, counts)
    assert r.capacity == combine.shape[2]
    ours = dense_weights(r.experts, r.weights, experts)
    assert torch.equal(ours > 0, dispatch.any(dim=2))        # the same routes kept
    assert torch.equal(ours, combine.sum(dim=2))             # with the same weights
    if cf == 0.25:
        assert r.experts.eq(-1).any()                        # the small capacity did drop routes


@pytest.mark.parametrize("k", [1, 2])
def test_routing_without_dropping_and_min_capacity(k):
    logits = torch.randn(40, 4, generator=torch.Generator().manual_seed(2)) * 3
    torch.manual_seed(1)
    l_aux, combine, dispatch, counts = ds_gate(logits.clone(), k, 1.0, 30, True, True, True)
    torch.manual_seed(1)
    r = route(logits.clone(), k, 1.0, 30)
    assert r.capacity == 30 == combine.shape[2]
    assert torch.equal(dense_weights(r.experts, r.weights, 4), combine.sum(dim=2))
    assert torch.equal(r.aux_loss, l_aux)


def test_top1_with_fewer_tokens_than_min_capacity_keeps_every_route():
    """A forward of fewer tokens than min_capacity (each generated token is one) has room for all of
    them; DeepSpeed's top-1 asserts instead, which was a traceback mid-run or in `vlmtrain generate`."""
    logits = torch.randn(3, 4, generator=torch.Generator().manual_seed(5))
    r = route(logits, 1, 1.0, 4)
    assert torch.equal(r.experts[0], logits.argmax(dim=1))
    assert torch.allclose(r.weights[0], torch.softmax(logits, dim=1).max(dim=1).values)
    block = SparseMoeBlock(8, nn.Linear(8, 8), MoeSettings(num_experts=4, top_k=1, min_capacity=4)).eval()
    assert block(torch.randn(1, 1, 8)).shape == (1, 1, 8) and block.last.kept == 1


def test_aux_loss_has_the_router_gradient():
    logits = torch.randn(16, 4, requires_grad=True)
    route(logits, 2, 1.5).aux_loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


class Mlp(nn.Module):  # a phi-shaped FFN: fc1 -> gelu -> fc2, with biases
    def __init__(self, d: int, f: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, f), nn.Linear(f, d)

    def forward(self, x):
        return self.fc2(torch.nn.functional.gelu(self.fc1(x)))


@pytest.mark.parametrize("k,experts,cf,residual,train", [
    (2, 4, 1.5, False, True), (2, 4, 0.3, False, True), (2, 8, 2.0, False, False), (1, 4, 1.0, False, True),
    (2, 4, 1.5, True, True)])
def test_block_equals_deepspeed_layer(k, experts, cf, residual, train):
    torch.manual_seed(0)
    d = 24
    dense = Mlp(d, 48)
    ds = ds_layer.MoE(d, expert=copy.deepcopy(dense), num_experts=experts, ep_size=1, k=k, capacity_factor=cf,
                      eval_capacity_factor=cf, min_capacity=0, use_residual=residual)
    ours = SparseMoeBlock(d, copy.deepcopy(dense), MoeSettings(num_experts=experts, top_k=k, capacity_factor=cf,
                                                                eval_capacity_factor=cf, use_residual=residual))
    ours.router.weight.data.copy_(ds.deepspeed_moe.gate.wg.weight.data)
    if residual:
        ours.coefficient.load_state_dict(ds.coefficient.state_dict())
    ds.train(train), ours.train(train)
    x = torch.randn(3, 37, d)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    torch.manual_seed(9)
    out_ds, l_aux, counts = ds(x1)
    torch.manual_seed(9)
    out = ours(x2)
    torch.testing.assert_close(out, out_ds, rtol=1e-5, atol=1e-6)
    assert torch.equal(ours.last.aux_loss, l_aux) and torch.equal(ours.last.exp_counts, counts)
    (out.square().sum() + ours.last.aux_loss).backward()
    (out_ds.square().sum() + l_aux).backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.router.weight.grad, ds.deepspeed_moe.gate.wg.weight.grad, rtol=1e-4, atol=1e-5)
    for e in range(experts):
        mine = ours.experts[e].fc1.weight.grad
        theirs = ds.deepspeed_moe.experts.deepspeed_experts[e].fc1.weight.grad
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


def test_fresh_block_computes_the_dense_ffn():
    """Every expert a copy of the FFN and the kept weights of a token summing to one: the output is the FFN's."""
    torch.manual_seed(0)
    dense = Mlp(16, 32)
    block = SparseMoeBlock(16, copy.deepcopy(dense), MoeSettings(num_experts=4, top_k=2, capacity_factor=4.0))
    x = torch.randn(2, 9, 16)
    torch.testing.assert_close(block(x), dense(x), rtol=1e-5, atol=1e-6)
    assert block.last.kept == block.last.routes == 2 * 18


def test_the_router_runs_in_fp32_under_bf16_autocast(monkeypatch):
    """Found in review: a run without DeepSpeed trains under bf16 autocast, which cast the router's
    Linear to bf16 whatever its inputs were; its top-k then chose from rounded logits, where
    DeepSpeed's gate (no autocast) computes them in fp32."""
    from vlmtrain.model.moe import layer as layer_mod

    torch.manual_seed(0)
    block = SparseMoeBlock(32, Mlp(32, 64), MoeSettings(num_experts=4, top_k=2)).eval()
    seen = []

    def spy(logits, *a, **kw):
        seen.append(logits)
        return route(logits, *a, **kw)

    monkeypatch.setattr(layer_mod, "route", spy)
    x = torch.randn(2, 11, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        block(x)
    want = x.reshape(-1, 32) @ block.router.weight.T
    assert seen[0].dtype == torch.float32
    torch.testing.assert_close(seen[0], want, rtol=1e-5, atol=1e-5)  # (bf16 would be off by ~1e-2)
