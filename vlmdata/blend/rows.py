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

from vlmdata.blend.text_scan import buffers, char_counts
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

    def add_piece(self, ids: list[str], n_images: Any, images: list[str], n_turns: Any, text: pa.Array,
                  kept: list[str | None] | None, index: np.ndarray, fixes: np.ndarray) -> None:
        """Rows given as columns (counts as lists or integer arrays; ``text``: every turn's value, a
        string column made by ``text_column``; ``kept`` None: no record_extra)."""
        self._seal()
        batch = pa.RecordBatch.from_arrays(_columns(ids, n_images, images, n_turns, text, kept, self.keep_text),
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
        self.add_piece(ids, n_images, images, n_turns, text_column(values), kept, np.array(index, np.int64),
                       np.array(fixes, np.int8))

    def take(self, source: str, limit: int | None = None) -> tuple[pa.Table, np.ndarray, np.ndarray]:
        """The first ``limit`` rows (all by default) in the output columns
        (vlmdata.blend.columns.REQUIRED), with per row its index in the input (int64) and its
        fixes (int8); they leave the buffer. The table's chunks are the pieces as they were made
        (not joined into one: that copied every byte again, for files whose readers see no
        difference; a piece holds a few hundred rows, the batch size `datasets` writes too)."""
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
            parts.append((_with_source(batch, source), index, fixes))
            got += k
        self.piece_rows -= n
        if not parts:
            return BLEND_SCHEMA.empty_table(), np.zeros(0, np.int64), np.zeros(0, np.int8)
        table = pa.Table.from_batches([p[0] for p in parts], schema=BLEND_SCHEMA)
        return table, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def _with_source(batch: pa.RecordBatch, source: str) -> pa.RecordBatch:
    cols = list(batch.columns)
    cols.insert(_SOURCE_AT, pa.repeat(pa.scalar(source, pa.string()), batch.num_rows))
    return pa.RecordBatch.from_arrays(cols, schema=BLEND_SCHEMA)


_LISTS = ("ids", "n_images", "images", "n_turns", "values", "index", "fixes", "kept")  # RowBuffer's list columns
_SOURCE_AT = BLEND_SCHEMA.get_field_index("source")
_PIECE_SCHEMA = BLEND_SCHEMA.remove(_SOURCE_AT)


def text_column(values: list[str]) -> pa.Array:
    """The turns' values as one string column (text_scan reads its bytes)."""
    return pa.array(values, pa.string())


def _columns(ids: list[str], n_images: Any, images: list[str], n_turns: Any, text: pa.Array,
             kept: list[str | None] | None, keep_text: bool) -> list[pa.Array]:
    """The output's columns but ``source`` (in _PIECE_SCHEMA's order) of rows given as lists."""
    n = len(ids)
    images_arr = pa.ListArray.from_arrays(_offsets(n_images), pa.array(images, pa.string()), type=IMAGES_TYPE)
    if keep_text:
        turns = pa.StructArray.from_arrays([_roles(len(text)), text], fields=list(TURN_TYPE))
        conv = pa.ListArray.from_arrays(_offsets(n_turns), turns, type=CONVERSATIONS_TYPE)
        extras = pa.array(kept, pa.string()) if kept is not None else pa.nulls(n, pa.string())
    else:
        turns = pa.StructArray.from_arrays([pa.array([], pa.string())] * 2, fields=list(TURN_TYPE))
        conv = pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), turns, type=CONVERSATIONS_TYPE)
        extras = pa.nulls(n, pa.string())
    return [pa.array(ids, pa.string()), images_arr, conv, pa.array(np.asarray(n_images, np.int32)),
            _chars(text, n_turns), extras]


def _offsets(counts: Any) -> pa.Array:
    """Arrow list offsets of lists of these lengths: 0, then their running total."""
    out = np.zeros(len(counts) + 1, np.int32)
    np.cumsum(np.array(counts, np.int32), out=out[1:])
    return pa.array(out)


def _chars(text: pa.Array, n_turns: Any) -> pa.Array:
    """Each row's text chars: the characters of its turns (Python's len), counted in the column's
    UTF-8 bytes (text_scan.char_counts), not by a call per value."""
    upto = np.zeros(len(text) + 1, np.int64)
    np.cumsum(char_counts(*buffers(text)), out=upto[1:])
    ends = np.zeros(len(n_turns) + 1, np.int64)
    np.cumsum(np.array(n_turns, np.int64), out=ends[1:])
    return pa.array((upto[ends[1:]] - upto[ends[:-1]]).astype(np.int32))


def _roles(n: int) -> pa.Array:
    """``from`` of ``n`` turns: every conversation alternates human/gpt with an even length, so the
    column is human, gpt, human, gpt, ... across the whole batch: a slice of one column made once
    (and made again, longer, when a batch needs more)."""
    global _ROLE_COLUMN
    if len(_ROLE_COLUMN) < n:
        size = max(n, 2 * len(_ROLE_COLUMN))
        codes = pa.array(np.arange(size, dtype=np.int8) & 1)
        _ROLE_COLUMN = pa.DictionaryArray.from_arrays(codes, _ROLE_NAMES).cast(pa.string())
    return _ROLE_COLUMN.slice(0, n)


_ROLE_NAMES = pa.array(["human", "gpt"])
_ROLE_COLUMN = pa.array([], pa.string())
