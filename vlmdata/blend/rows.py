"""The blend's rows on their way to Arrow: ``RowBuffer`` holds normalised rows as columns, never
as a dict or tuple per row, and hands them out as record batches in the output's schema.

A decoded batch whose records are all good arrives as columns and becomes Arrow arrays at once
(``add_piece``), while its strings are still in the CPU's cache; rows checked one by one wait as
plain lists (``append``) until the next piece or ``take``, which joins everything in order and
cuts a piece where its limit falls.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from vlmdata.contract import BLEND_SCHEMA, CONVERSATIONS_TYPE, IMAGES_TYPE, TURN_TYPE


class RowBuffer:
    """Normalised rows waiting to be written, in order: Arrow pieces (a decoded batch whose records
    were all good, made into columns at once while its strings are still in the CPU's cache), then
    rows appended one by one, kept as columns of plain lists until the next piece or ``take``: id,
    images (flat, and a count per row), turn values (flat, and a count per row), index in the
    input, fixes applied (bit i: validate.FIXES[i]), record_extra. A row's text chars are counted
    from its values when its piece is made."""

    __slots__ = ("keep_text", "ids", "n_images", "images", "n_turns", "values", "index", "fixes", "kept",
                 "pieces", "piece_rows")

    def __init__(self, keep_text: bool = True) -> None:
        self.keep_text = keep_text
        self.ids: list[str] = []
        self.n_images: list[int] = []
        self.images: list[str] = []
        self.n_turns: list[int] = []
        self.values: list[str] = []
        self.index: list[int] = []
        self.fixes: list[int] = []
        self.kept: list[str | None] = []
        self.pieces: list[tuple[pa.RecordBatch, np.ndarray, np.ndarray]] = []  # (columns but source, index, fixes)
        self.piece_rows = 0

    def __len__(self) -> int:
        return self.piece_rows + len(self.ids)

    def append(self, rid: str, images: list[str], values: list[str], index: int, fixes: int, kept: str | None) -> None:
        """One row."""
        self.ids.append(rid)
        self.n_images.append(len(images))
        self.images += images
        self.n_turns.append(len(values))
        self.values += values
        self.index.append(index)
        self.fixes.append(fixes)
        self.kept.append(kept)

    def add_piece(self, ids: list[str], n_images: Any, images: list[str], n_turns: Any, values: list[str],
                  kept: list[str | None] | None, index: np.ndarray, fixes: np.ndarray) -> None:
        """Rows given as columns (counts as lists or integer arrays; ``kept`` None: no record_extra)."""
        self._seal()
        batch = pa.RecordBatch.from_arrays(_columns(ids, n_images, images, n_turns, values, kept, self.keep_text),
                                           schema=_PIECE_SCHEMA)
        self.pieces.append((batch, index.astype(np.int64, copy=False), fixes.astype(np.int8)))
        self.piece_rows += batch.num_rows

    def _seal(self) -> None:
        """The rows appended one by one become a piece (so the pieces stay in row order)."""
        if not self.ids:
            return
        ids, n_images, images, n_turns, values, index, fixes, kept = (getattr(self, c) for c in _LISTS)
        for c in _LISTS:
            setattr(self, c, [])
        self.add_piece(ids, n_images, images, n_turns, values, kept, np.array(index, np.int64),
                       np.array(fixes, np.int8))

    def take(self, source: str, limit: int | None = None) -> tuple[pa.RecordBatch, np.ndarray, np.ndarray]:
        """The first ``limit`` rows (all by default) in the output columns
        (vlmdata.blend.columns.REQUIRED), with per row its index in the input (int64) and its
        fixes (int8); they leave the buffer."""
        self._seal()
        n = self.piece_rows if limit is None else min(limit, self.piece_rows)
        parts: list[tuple[pa.RecordBatch, np.ndarray, np.ndarray]] = []
        got = 0
        while got < n:
            batch, index, fixes = self.pieces[0]
            k = min(batch.num_rows, n - got)
            if k == batch.num_rows:
                self.pieces.pop(0)
            else:  # (the rest stays in front)
                self.pieces[0] = (batch.slice(k), index[k:], fixes[k:])
                batch, index, fixes = batch.slice(0, k), index[:k], fixes[:k]
            parts.append((batch, index, fixes))
            got += k
        self.piece_rows -= n
        if not parts:
            return pa.RecordBatch.from_pylist([], schema=BLEND_SCHEMA), np.zeros(0, np.int64), np.zeros(0, np.int8)
        joined = parts[0][0] if len(parts) == 1 else _concat([p[0] for p in parts])
        cols = list(joined.columns)
        cols.insert(_SOURCE_AT, pa.repeat(pa.scalar(source, pa.string()), n))
        batch = pa.RecordBatch.from_arrays(cols, schema=BLEND_SCHEMA)
        return batch, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


_LISTS = ("ids", "n_images", "images", "n_turns", "values", "index", "fixes", "kept")  # RowBuffer's list columns
_SOURCE_AT = BLEND_SCHEMA.get_field_index("source")
_PIECE_SCHEMA = BLEND_SCHEMA.remove(_SOURCE_AT)


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    """One record batch of these (pyarrow 19 has concat_batches; the oldest supported, 15, not)."""
    if hasattr(pa, "concat_batches"):
        return pa.concat_batches(batches)
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def _columns(ids: list[str], n_images: Any, images: list[str], n_turns: Any, values: list[str],
             kept: list[str | None] | None, keep_text: bool) -> list[pa.Array]:
    """The output's columns but ``source`` (in _PIECE_SCHEMA's order) of rows given as lists."""
    n = len(ids)
    images_arr = pa.ListArray.from_arrays(_offsets(n_images), pa.array(images, pa.string()), type=IMAGES_TYPE)
    text = pa.array(values, pa.string())
    if keep_text:
        turns = pa.StructArray.from_arrays([_roles(len(values)), text], fields=list(TURN_TYPE))
        conv = pa.ListArray.from_arrays(_offsets(n_turns), turns, type=CONVERSATIONS_TYPE)
        extras = pa.array(kept, pa.string()) if kept is not None else pa.nulls(n, pa.string())
    else:
        turns = pa.StructArray.from_arrays([pa.array([], pa.string())] * 2, fields=list(TURN_TYPE))
        conv = pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), turns, type=CONVERSATIONS_TYPE)
        extras = pa.nulls(n, pa.string())
    return [pa.array(ids, pa.string()), images_arr, conv, pa.array(np.asarray(n_images, np.int32)),
            _chars(values, text, n_turns), extras]


def _offsets(counts: Any) -> pa.Array:
    """Arrow list offsets of lists of these lengths: 0, then their running total."""
    out = np.zeros(len(counts) + 1, np.int32)
    np.cumsum(np.array(counts, np.int32), out=out[1:])
    return pa.array(out)


def _chars(values: list[str], text: pa.Array, n_turns: Any) -> pa.Array:
    """Each row's text chars: the characters of its turns. When every value is ASCII (a str knows
    whether it is), a value's characters are its bytes in the UTF-8 column: the column's offsets;
    else Python's len of each (which a str holds: cheaper than counting the column's code points)."""
    if all(map(str.isascii, values)):
        upto = np.frombuffer(text.buffers()[1], np.int32)[text.offset:text.offset + len(text) + 1].astype(np.int64)
    else:
        upto = np.zeros(len(values) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, values), np.int64, len(values)), out=upto[1:])
    ends = np.zeros(len(n_turns) + 1, np.int64)
    np.cumsum(np.array(n_turns, np.int64), out=ends[1:])
    return pa.array((upto[ends[1:]] - upto[ends[:-1]]).astype(np.int32))


def _roles(n: int) -> pa.Array:
    """``from`` of ``n`` turns: every conversation alternates human/gpt with an even length, so the
    column is human, gpt, human, gpt, ... across the whole batch."""
    codes = pa.array(np.arange(n, dtype=np.int8) & 1)
    return pa.DictionaryArray.from_arrays(codes, _ROLE_NAMES).cast(pa.string())


_ROLE_NAMES = pa.array(["human", "gpt"])
