"""How much padding packing saves on a dataset: the batches a run would draw, padded and packed.

From the true lengths alone (no model, no images): the per-device batches of one epoch in the
sampler's order, each laid out as the padded collator does (``B x longest``) and as the packing
collator does (vlmtrain.data.packing), summed. Both sampler orders are reported: a seeded random
order and LLaVA's modality-and-length grouping, which already removes most of the padding that a
random order leaves.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .packing import best_rows, padded_positions
from .sampler import LengthGroupedSampler

ORDERS = ("random", "length-grouped")


def batch_orders(lengths: Sequence[int], batch_size: int, world_size: int, seed: int) -> dict[str, list[int]]:
    """Sample indices in each sampler's order for epoch 0 (signed lengths: negative = text-only)."""
    g = torch.Generator()
    g.manual_seed(seed)
    grouped = LengthGroupedSampler(lengths, batch_size, world_size, seed, group_by_modality=True)
    return {"random": torch.randperm(len(lengths), generator=g).tolist(), "length-grouped": grouped.indices()}


def layout_totals(lengths: Sequence[int], order: Sequence[int], batch_size: int, max_length: int,
                  *, flat: bool = False, attention_weight: float = 0.0) -> dict[str, float]:
    """Tokens, positions padded and packed, rows packed, over the batches of ``order``."""
    tokens = padded = packed = rows = batches = 0
    for a in range(0, len(order), batch_size):
        b = [abs(int(lengths[i])) for i in order[a:a + batch_size]]
        tokens += sum(b)
        padded += padded_positions(b)
        if flat:
            packed += sum(b)
            rows += 1
        else:
            layout = best_rows(b, max_length, attention_weight)
            packed += len(layout) * max(sum(b[i] for i in row) for row in layout)
            rows += len(layout)
        batches += 1
    return {"batches": batches, "tokens": tokens, "padded_positions": padded, "packed_positions": packed,
            "padding_frac_padded": 1 - tokens / max(padded, 1), "padding_frac_packed": 1 - tokens / max(packed, 1),
            "positions_saved": 1 - packed / max(padded, 1), "samples_per_row": len(order) / max(rows, 1)}


def padding_report(lengths: Sequence[int], batch_size: int, max_length: int, *, world_size: int = 1, seed: int = 0,
                   flat: bool = False, attention_weight: float = 0.0) -> dict:
    """``layout_totals`` for both sampler orders, plus the length distribution's summary."""
    absl = sorted(abs(int(n)) for n in lengths)
    n = len(absl)
    orders = batch_orders(lengths, batch_size, world_size, seed)
    return {
        "samples": n, "batch_size": batch_size, "world_size": world_size, "max_length": max_length, "flat": flat,
        "lengths": {"mean": sum(absl) / max(n, 1), "p50": absl[n // 2] if n else 0,
                    "p90": absl[int(n * 0.9)] if n else 0, "max": absl[-1] if n else 0,
                    "text_only": sum(1 for x in lengths if x < 0)},
        "attention_weight": attention_weight,
        **{name: layout_totals(lengths, orders[name], batch_size, max_length, flat=flat,
                               attention_weight=attention_weight) for name in ORDERS},
    }


def render(report: dict) -> str:
    ls = report["lengths"]
    lines = [f"{report['samples']:,} samples ({ls['text_only']:,} text-only), true tokens per sample: mean "
             f"{ls['mean']:.0f}, median {ls['p50']}, p90 {ls['p90']}, max {ls['max']}",
             f"batches of {report['batch_size']} per device (length-grouped: megabatches of {report['world_size']} batches), "
             f"rows of at most {report['max_length']} tokens" + (" (one row per batch: flash-attn varlen)"
                                                                  if report["flat"] else ""),
             f"{'sampler order':16s} {'padding, padded':>16s} {'padding, packed':>16s} {'positions saved':>16s} "
             f"{'samples/row':>12s}"]
    for name in ORDERS:
        r = report[name]
        lines.append(f"{name:16s} {100 * r['padding_frac_padded']:15.1f}% {100 * r['padding_frac_packed']:15.1f}% "
                     f"{100 * r['positions_saved']:15.1f}% {r['samples_per_row']:12.2f}")
    return "\n".join(lines)
