"""LLaVA's modality-and-length grouped sampler on true (signed) token counts."""
from __future__ import annotations

import random

import pytest

from vlmtrain.data import make_length_grouped_sampler


def signed_lengths(n: int, text_share: float = 0.3, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [(-1 if rng.random() < text_share else 1) * rng.randint(20, 2048) for _ in range(n)]


def test_deterministic_per_seed_and_epoch():
    lengths = signed_lengths(1000)
    a = make_length_grouped_sampler(lengths, 4, 2, seed=7, group_by_modality=True)
    b = make_length_grouped_sampler(lengths, 4, 2, seed=7, group_by_modality=True)
    assert list(a) == list(b) and list(a) == list(a)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    c = make_length_grouped_sampler(lengths, 4, 2, seed=8, group_by_modality=True)
    assert list(c) != list(b)
    assert sorted(a) == list(range(1000)) and len(a) == 1000


@pytest.mark.parametrize("bs,world", [(4, 1), (4, 2), (3, 4)])
def test_batches_hold_one_modality(bs, world):
    lengths = signed_lengths(997, seed=bs * world)
    order = list(make_length_grouped_sampler(lengths, bs, world, seed=0, group_by_modality=True))
    mega = bs * world
    n_mm, n_lang = sum(l > 0 for l in lengths), sum(l < 0 for l in lengths)
    tail = n_mm % mega + n_lang % mega  # the one mixed leftover megabatch, last
    body = order[: len(order) - tail]
    mixed = 0
    for i in range(0, len(body), bs):
        signs = {lengths[j] > 0 for j in body[i:i + bs]}
        mixed += len(signs) > 1
    assert mixed == 0
    assert len({lengths[j] > 0 for j in order[len(order) - tail:]}) == 2


def test_megabatches_split_evenly_across_ranks_sorted_by_length():
    bs, world = 4, 4
    lengths = [random.Random(1).randint(10, 5000) for _ in range(64 * 10)]
    order = list(make_length_grouped_sampler(lengths, bs, world, seed=3, group_by_modality=True))
    for m in range(0, len(order), bs * world):
        chunks = [order[m + r * bs: m + (r + 1) * bs] for r in range(world)]
        assert all(len(c) == bs for c in chunks)
        totals = [sum(lengths[j] for j in c) for c in chunks]
        longest = max(lengths[j] for c in chunks for j in c)
        assert max(totals) - min(totals) <= longest  # greedy balancing: within one sample
        assert max(lengths[j] for j in chunks[0]) == longest  # the longest goes first


def test_group_by_length_only_mixes_modalities():
    lengths = signed_lengths(200)
    s = make_length_grouped_sampler(lengths, 4, 1, seed=0, group_by_modality=False)
    order = list(s)
    assert sorted(order) == list(range(200))
    assert any(len({lengths[j] > 0 for j in order[i:i + 4]}) > 1 for i in range(0, 200, 4))


def test_zero_length_rejected():
    with pytest.raises(ValueError):
        list(make_length_grouped_sampler([5, 0, -3], 1, 1, seed=0, group_by_modality=True))
