"""LLaVA's modality-and-length grouped sampler (``llava/train/llava_trainer.py``), on true token counts.

Lengths are signed: positive for samples with images, negative for text-only ones (LLaVA's
``modality_lengths``). Per modality: a random permutation, cut into megabatches of
``world_size * batch_size``, each sorted longest first and split into ``world_size`` chunks of
equal size balanced by summed length (``split_to_even_chunks``), so every rank's batch in a step
holds one modality and similar lengths. The megabatches of both modalities are then shuffled
together; the two leftovers form one last mixed megabatch.

Differences from the reference, on purpose: every random draw comes from one generator seeded from
``(seed, epoch)`` (LLaVA passes ``generator=None`` for the per-modality permutations, so its order
depends on the global RNG), which makes the order a pure function of (lengths, sizes, seed, epoch)
and a resumed run sees the same order.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def split_to_even_chunks(indices: list[int], lengths: Sequence[int], num_chunks: int) -> list[list[int]]:
    if len(indices) % num_chunks != 0:
        return [indices[i::num_chunks] for i in range(num_chunks)]
    per_chunk = len(indices) // num_chunks
    chunks: list[list[int]] = [[] for _ in range(num_chunks)]
    totals = [0.0] * num_chunks
    for index in indices:
        shortest = totals.index(min(totals))
        chunks[shortest].append(index)
        totals[shortest] += lengths[index]
        if len(chunks[shortest]) == per_chunk:
            totals[shortest] = float("inf")
    return chunks


def length_grouped_indices(lengths: Sequence[int], batch_size: int, world_size: int,
                           generator: torch.Generator) -> list[int]:
    indices = torch.randperm(len(lengths), generator=generator).tolist()
    size = world_size * batch_size
    out: list[int] = []
    for i in range(0, len(lengths), size):
        mega = sorted(indices[i:i + size], key=lambda j: lengths[j], reverse=True)
        for chunk in split_to_even_chunks(mega, lengths, world_size):
            out.extend(chunk)
    return out


def modality_length_grouped_indices(lengths: Sequence[int], batch_size: int, world_size: int,
                                    generator: torch.Generator) -> list[int]:
    if any(l == 0 for l in lengths):
        raise ValueError("a length of 0 has no modality sign (lengths must be non-zero)")
    if all(l > 0 for l in lengths) or all(l < 0 for l in lengths):
        return length_grouped_indices([abs(l) for l in lengths], batch_size, world_size, generator)
    mm = [(i, l) for i, l in enumerate(lengths) if l > 0]
    lang = [(i, -l) for i, l in enumerate(lengths) if l < 0]
    size = world_size * batch_size
    groups = []
    for pairs in (mm, lang):
        idx = [i for i, _ in pairs]
        order = [idx[j] for j in length_grouped_indices([l for _, l in pairs], batch_size, world_size, generator)]
        groups.append([order[i:i + size] for i in range(0, len(order), size)])
    mm_mega, lang_mega = groups
    additional = mm_mega[-1] + lang_mega[-1]
    megabatches = mm_mega[:-1] + lang_mega[:-1]
    perm = torch.randperm(len(megabatches), generator=generator).tolist()
    megabatches = [megabatches[i] for i in perm]
    if additional:
        megabatches.append(sorted(additional))
    return [i for mega in megabatches for i in mega]


class LengthGroupedSampler(Sampler[int]):
    """Yields dataset indices; deterministic for (lengths, batch_size, world_size, seed, epoch).

    ``world_size`` is the number of batches that make one megabatch: ranks (times gradient
    accumulation steps, as LLaVA passes it) — consecutive ``batch_size`` slices of the order are
    the per-rank batches of one step.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, world_size: int, seed: int,
                 *, group_by_modality: bool) -> None:
        if batch_size < 1 or world_size < 1:
            raise ValueError("batch_size and world_size must be >= 1")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.world_size = world_size
        self.seed = seed
        self.group_by_modality = group_by_modality
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self) -> list[int]:
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + self.epoch) % (1 << 63))  # no (seed, epoch) collisions like seed+epoch
        if self.group_by_modality:
            return modality_length_grouped_indices(self.lengths, self.batch_size, self.world_size, g)
        return length_grouped_indices([abs(l) for l in self.lengths], self.batch_size, self.world_size, g)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return len(self.lengths)


def make_length_grouped_sampler(lengths: Sequence[int], batch_size: int, world_size: int, seed: int,
                                *, group_by_modality: bool) -> LengthGroupedSampler:
    return LengthGroupedSampler(lengths, batch_size, world_size, seed, group_by_modality=group_by_modality)
