"""Packing: the samples of a batch laid end to end in rows of at most ``model_max_length`` tokens.

A padded batch is ``[B, longest sample]``; a packed one is ``[R, longest row]`` with R <= B rows,
each holding several whole samples (first-fit decreasing). Rows are cut at the row length W, at most
``model_max_length``, that costs least: ``R x W x (1 + attention_weight x W)``. The first factor is
the positions (a row of three samples is not always better than two rows: three samples of 250
tokens are 2 x 500 positions packed at 512, 3 x 250 padded); the second is attention, which SDPA and
eager compute over the whole W x W square of a row, mask or not, so longer rows cost more per token
(``attention_weight``: attention's FLOPs per position per token of row width over the other
FLOPs per position; vlmtrain.train.mfu gives it for a model; 0 counts positions only). The padded
layout is among the candidates, so packing never costs more than padding. Nothing else about the
step changes:
the batch holds the same samples the sampler chose (the length-grouped sampler, exact resume and
``num_items_in_batch`` work as before), so the loss and the gradients are those of the padded
batch. What goes is the padding.

How attention stays inside a sample: ``position_ids`` restart at 0 at every sample, and the batch
has no ``attention_mask``. transformers reads that as packed sequences
(``masking_utils.find_packed_sequence_indices``): with SDPA / eager it builds a block-diagonal causal
mask per row; with flash_attention_2 it calls flash-attn's varlen kernel, which needs the whole
batch as one row, so ``flat=True`` puts every sample in a single row with no padding at all.
The padding that is left at the end of a row gets its own position ids (0, 1, ...): a segment of its
own that no sample attends to, labelled -100.

Labels: each sample's first label becomes -100. In a padded batch a sample's first token is never a
target (the loss predicts token t+1 from token t); in a row it follows the previous sample's last
token, which must not be trained to predict it.

Images: transformers' Llava fills the image-token positions of ``input_ids`` in row-major order with
the image features in order, so ``pixel_values`` are reordered to the samples' packed order.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .collate import Collator, add_counts
from .encode import IGNORE_INDEX


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: sample indices per row, each row's lengths summing to at most ``capacity``.

    Deterministic (ties keep index order), so a resumed run packs a batch the same way. A sample
    longer than ``capacity`` gets a row of its own (the encoder truncates to model_max_length, so
    this happens only when the caller packs to less than that).
    """
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, not {capacity}")
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = int(lengths[i])
        for r, room in enumerate(free):
            if n <= room:
                rows[r].append(i)
                free[r] -= n
                break
        else:
            rows.append([i])
            free.append(capacity - n)
    return rows


def best_rows(lengths: Sequence[int], max_length: int, attention_weight: float = 0.0,
              candidates: int = 16) -> list[list[int]]:
    """``pack_rows`` at the row length in [longest sample, max_length] that costs least (module doc).

    Candidates: multiples of the longest sample (k = 1 is the padded layout), ``max_length`` and
    ``candidates`` evenly spaced lengths between; ties go to the shorter rows."""
    longest = max((int(n) for n in lengths), default=0)
    if longest == 0 or longest >= max_length:
        return pack_rows(lengths, max(max_length, longest, 1))
    caps = {max_length, *range(longest, max_length + 1, longest)}
    caps |= {longest + (max_length - longest) * j // candidates for j in range(candidates + 1)}
    best: tuple[float, list[list[int]]] | None = None
    for cap in sorted(caps):
        rows = pack_rows(lengths, cap)
        width = max(sum(int(lengths[i]) for i in row) for row in rows)
        cost = len(rows) * width * (1.0 + attention_weight * width)
        if best is None or cost < best[0]:
            best = (cost, rows)
    return best[1]


class PackingCollator(Collator):
    """Items -> a packed batch: ``input_ids``, ``labels``, ``position_ids`` [R, W] (no attention_mask),
    ``pixel_values`` in packed order, and the bookkeeping keys ``ids``, ``skipped`` and
    ``sample_lengths`` (each sample's true length, in packed order) and ``supervised`` (pop them with
    ``pop_batch_meta``)."""

    def __init__(self, pad_token_id: int, max_length: int, *, flat: bool = False,
                 attention_weight: float = 0.0) -> None:
        super().__init__(pad_token_id)
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, not {max_length}")
        self.max_length = int(max_length)
        self.flat = flat
        self.attention_weight = float(attention_weight)

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        kept, skipped = self.split(items)
        lengths = [len(it["input_ids"]) for it in kept]
        rows = best_rows(lengths, self.max_length, self.attention_weight) if kept else []
        if self.flat and rows:
            rows = [[i for row in rows for i in row]]
        width = max((sum(lengths[i] for i in row) for row in rows), default=0)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                n = lengths[i]
                input_ids[r, at:at + n] = kept[i]["input_ids"]
                labels[r, at:at + n] = kept[i]["labels"]
                labels[r, at] = IGNORE_INDEX
                position_ids[r, at:at + n] = torch.arange(n)
                at += n
            position_ids[r, at:] = torch.arange(width - at)  # the row's padding: a segment of its own
        order = [i for row in rows for i in row]
        batch: dict[str, Any] = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
        self.add_pixels(batch, [kept[i] for i in order], items)
        batch["ids"] = [kept[i]["id"] for i in order]
        batch["skipped"] = skipped
        add_counts(batch, [lengths[i] for i in order])
        return batch


def padded_positions(lengths: Sequence[int]) -> int:
    """Positions of a right-padded batch of these samples: B x the longest."""
    return len(lengths) * max(lengths, default=0)


def packed_positions(lengths: Sequence[int], capacity: int, *, flat: bool = False,
                     attention_weight: float = 0.0) -> int:
    """Positions of the packed batch (``PackingCollator``'s shape) of these samples."""
    if flat:
        return int(sum(lengths))
    rows = best_rows(lengths, capacity, attention_weight)
    return len(rows) * max((sum(int(lengths[i]) for i in row) for row in rows), default=0)
