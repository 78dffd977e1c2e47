"""Checks over a batch's turn values once they are one Arrow string column: numpy passes over the
column's contiguous UTF-8 bytes instead of a Python call per value.

Each pass over half a million Python strings costs 60-100 ms on this machine whatever it does
(a cache miss per string object), so the blend builds the column (which it writes anyway) first,
and asks it how many ``<image>`` tokens each value holds, which values could be blank, and whether
the text is all ASCII. The answers are exact: a token is found byte for byte inside one value
(UTF-8 never puts an ASCII byte inside a multi-byte character), and a value is only called
possibly blank here, to be asked ``str.isspace`` in Python, when its first character could be
whitespace.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from vlmdata.contract import IMAGE_TOKEN

_TOKEN = np.frombuffer(IMAGE_TOKEN.encode(), np.uint8)
# First bytes after which a value may be all whitespace: the ASCII controls and space (Python's
# whitespace among them: \t\n\v\f\r, \x1c-\x1f, ' '), and every byte that starts a multi-byte
# character (U+0085, U+00A0, U+1680, U+2000... are whitespace to str.isspace)
_MAY_START_SPACE = np.zeros(256, bool)
_MAY_START_SPACE[:0x21] = True
_MAY_START_SPACE[0x80:] = True


def buffers(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets: int64, len(text) + 1 of them, from 0; bytes: uint8) of a string column."""
    bufs = text.buffers()
    offsets = np.frombuffer(bufs[1], np.int32, len(text) + 1, 4 * text.offset).astype(np.int64) \
        if len(text) else np.zeros(1, np.int64)
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets - offsets[0], data[offsets[0]:offsets[-1]]


def token_counts(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """``value.count(IMAGE_TOKEN)`` of each value (int64). The token cannot overlap itself, so
    its occurrences are the non-overlapping ones str.count counts; one that would run across
    two neighbouring values is not in either."""
    n = len(offsets) - 1
    k = len(_TOKEN)
    at = np.flatnonzero(data[:max(0, len(data) - k + 1)] == _TOKEN[0])
    for i in range(1, k):
        at = at[data[at + i] == _TOKEN[i]]
    if not len(at):
        return np.zeros(n, np.int64)
    value = np.searchsorted(offsets, at, side="right") - 1
    value = value[at + k <= offsets[value + 1]]
    return np.bincount(value, minlength=n)


def maybe_blank(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Indexes of the values that are empty or may be all whitespace (ask ``str.isspace``);
    every other value has a character that is not whitespace."""
    lengths = np.diff(offsets)
    first = data[np.minimum(offsets[:-1], max(0, len(data) - 1))] if len(data) else np.zeros(len(lengths), np.uint8)
    return np.flatnonzero((lengths == 0) | _MAY_START_SPACE[first])


def is_ascii(data: np.ndarray) -> bool:
    """Whether every byte is ASCII (then a value's characters are its bytes)."""
    return not len(data) or int(data.max()) < 0x80


def char_counts(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Characters (code points) of each value: its bytes less its UTF-8 continuation bytes."""
    if is_ascii(data):
        return np.diff(offsets)
    starts = np.zeros(len(data) + 1, np.int64)
    np.cumsum((data & 0xC0) != 0x80, out=starts[1:])
    return np.diff(starts[offsets])
