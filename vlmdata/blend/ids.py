"""Step 4 of a blend: the final ids, unique across the blend.

An id used more than once becomes ``<source>:<id>`` everywhere it occurs; one still repeated
inside a source gets ``#<index in the input>``; a weight's extra copies are ``<id>#rep<k>``.

The one pass over every id (hashing them: Arrow's dictionary encoding) does not depend on which
rows are kept, so a blend starts it in a thread as soon as its rows are sampled (``encode_soon``),
while the image check hashes the image paths (Arrow releases the GIL: on two cores the two passes
took 0.35 s together against 0.5 s one after the other, for the 665k mix); which rows are kept is
applied to the codes afterwards, with a count per distinct id.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vlmdata.blend.weights import copy_id
from vlmdata.errors import OperationError

if TYPE_CHECKING:
    from vlmdata.blend.pipeline import Source


class IdCodes(NamedTuple):
    """Every row's id, per source (all rows of its table, kept or not), and its code: the same
    code for the same id anywhere in the blend, codes from 0 to ``distinct - 1``."""

    ids: list[pa.Array]
    codes: list[np.ndarray]
    distinct: int


def encode(tables: list[pa.Table]) -> IdCodes:
    ids = [t.column("id").combine_chunks() if t.num_rows else pa.array([], pa.string()) for t in tables]
    if not ids or not sum(len(a) for a in ids):
        return IdCodes(ids, [np.zeros(len(a), np.int32) for a in ids], 0)
    enc = pa.chunked_array(ids, pa.string()).combine_chunks().dictionary_encode()
    codes = enc.indices.to_numpy(zero_copy_only=False)
    return IdCodes(ids, np.split(codes, np.cumsum([len(a) for a in ids])[:-1]), len(enc.dictionary))


def encode_soon(sources: list[Source]) -> Future[IdCodes]:
    """``encode`` of the sources' tables, in a thread of its own (see the module's docstring)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlmdata-ids")
    try:
        return pool.submit(encode, [s.table for s in sources])
    finally:
        pool.shutdown(wait=False)  # (the thread ends with its one task)


def assign_ids(sources: list[Source], codes: IdCodes) -> None:
    """Each source's ``ids`` (of its kept rows), ``renamed`` and ``ids_renamed``; ``codes``: from
    ``encode`` of the same tables."""
    kept = [c[s.keep] for s, c in zip(sources, codes.codes)]
    counts = np.bincount(np.concatenate(kept), minlength=codes.distinct) if kept else np.zeros(0, np.int64)
    shared = counts > 1  # per distinct id: more than one kept row has it
    for s, every, k in zip(sources, codes.ids, kept):
        ids = every.filter(pa.array(s.keep))
        hit = shared[k]
        s.ids = ids
        if not hit.any():
            continue
        renamed = pc.if_else(pa.array(hit), pc.binary_join_element_wise(pa.scalar(s.name), ids, ":"), ids)
        again = _duplicates(renamed.filter(pa.array(hit)))
        if len(again):
            twice = pc.is_in(renamed, value_set=again)
            suffixed = pc.binary_join_element_wise(renamed, pc.cast(pa.array(s.index[s.keep]), pa.string()), "#")
            renamed = pc.if_else(twice, suffixed, renamed)
        s.ids = renamed
        s.renamed = hit
        s.ids_renamed = int(hit.sum())
    left = _duplicates_after_renaming(sources)
    if len(left):
        raise OperationError(f"could not make ids unique: {left[0].as_py()!r} still occurs more than once",
                             hint="rename the clashing records in the input JSON")
    _check_copy_ids(sources)


def _check_copy_ids(sources: list[Source]) -> None:
    copied = pa.array([copy_id(i, k) for s in sources if s.reps is not None
                       for i, r in zip(s.ids.to_pylist(), s.reps[s.keep].tolist()) for k in range(2, r + 1)],
                      pa.string())
    if len(copied):
        clash = pc.is_in(pa.chunked_array([s.ids for s in sources], pa.string()), value_set=copied)
        if pc.any(clash).as_py():
            raise OperationError("a weight's copy id (<id>#rep<k>) equals an id already in the blend",
                                 hint="rename the records whose ids end in #rep<number>, or use weight 1")


def _duplicates(ids: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The values that occur more than once (one hashing pass: dictionary-encode, count the codes)."""
    if len(ids) == 0:
        return pa.array([], pa.string())
    enc = (ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids).dictionary_encode()
    counts = np.bincount(enc.indices.to_numpy(zero_copy_only=False), minlength=len(enc.dictionary))
    return enc.dictionary.filter(pa.array(counts > 1))


def _duplicates_after_renaming(sources: list[Source]) -> pa.Array:
    """Ids still repeated once the clashing ones were renamed. Every id that occurred more than once
    was renamed wherever it occurred, so the others are unique and a repeat must involve a renamed
    id: only the ids equal to one of those (a few, usually) are counted, not the whole blend again."""
    renamed = [s.ids.filter(pa.array(s.renamed)) for s in sources if s.renamed is not None and s.ids is not None]
    if not renamed:
        return pa.array([], pa.string())
    everyone = pa.chunked_array([s.ids for s in sources], pa.string())
    return _duplicates(everyone.filter(pc.is_in(everyone, value_set=pa.chunked_array(renamed).combine_chunks())))
