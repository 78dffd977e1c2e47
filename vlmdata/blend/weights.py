"""A recipe entry's ``weight``: how many times each of its records is written, predictably.

A source whose records pass every check (``kept``, n of them) with weight ``w`` contributes
``round(n * w)`` rows: ``w = 2`` writes every record twice, ``w = 0.5`` half of them, ``w = 1.5``
every record once and a seeded half of them a second time. The records that get one copy more
(or, below 1, the ones kept at all) are drawn with the recipe's seed and the entry's name, so the
same recipe gives the same rows on any machine. Copies after the first carry the id
``<id>#rep<k>`` (k = 2, 3, ...) so ids stay unique.

The weight acts after the records are sampled (``sample``) and checked (missing images, bad
records): it scales what is left, so the counts a user reads in blend.json are exactly n and
round(n * w). No weight means 1.
"""
from __future__ import annotations

import random
from hashlib import sha256

import numpy as np

REPEAT_SUFFIX = "#rep"


def copies(n: int, weight: float | None, seed: int, name: str) -> np.ndarray | None:
    """How many times each of ``n`` records is written (None: once each, no weight to apply)."""
    if weight is None or weight == 1.0 or n == 0:
        return None
    target = int(round(n * weight))
    base, extra = divmod(target, n)
    reps = np.full(n, base, dtype=np.int32)
    if extra:
        rng = random.Random(int.from_bytes(sha256(f"{seed}/{name}/weight".encode()).digest()[:8], "big"))
        reps[rng.sample(range(n), extra)] += 1
    return reps


def copy_id(rid: str, k: int) -> str:
    """The id of the k-th copy (k >= 2) of a record."""
    return f"{rid}{REPEAT_SUFFIX}{k}"
