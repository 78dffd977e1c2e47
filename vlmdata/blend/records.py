"""Normalise one record of a LLaVA-family JSON into the blend's columns, checking it on the way.

Accepted shapes (datasets.md §7, §9): ``{id, image, conversations}`` (LLaVA, ShareGPT4V, ALLaVA,
Vision-Flan), ``idx`` instead of ``id`` (ALLaVA Evol-Instruct), ``image`` as a list (MoE-LLaVA),
no ``image`` (text-only), extra keys (``model``, ``task_name``, ``url`` ...: kept in the
``record_extra`` column with whatever else export needs to write the record back; extra.py).

Rules, as the LLaVA loaders apply them (llava/train/train.py):
- id: a string, or an int made a string; absent -> ``idx``; absent too -> ``<source>:<index>``.
- image: str or list of str -> ``images`` (with the entry's image_prefix); absent/null/[] -> text-only.
- a ``video`` key: dropped ("video not supported").
- conversations: a leading non-human turn is removed (LLaVA does the same), then turns must
  alternate human/gpt, end with gpt, and have non-blank string values; only from/value are kept.
- ``<image>`` tokens: their count must equal the number of images, and none may be in a gpt turn;
  a single image with no token gets ``"<image>\\n"`` prepended to the first human turn, as LLaVA's
  preprocess_multimodal does.

Rows are kept in a ``RowBuffer`` as one tuple each, made into one Arrow record batch of columns
(flat lists + offsets) per few thousand rows: no per-row dict is built for the output.

The reader decodes records into ``Record`` where they fit it (the common shape: a string or int
``id``, a string ``image`` or none, ``conversations``, at most a string ``model``; msgspec checks
those types in C and builds no dict per record or turn). A ``Record`` in that shape with nothing
to fix but a missing ``<image>`` is appended by ``_add_typed``; any other goes through the same
checks as a plain JSON record, as the dict it was decoded from.
"""
from __future__ import annotations

from itertools import chain
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from vlmdata.blend import extra, validate
from vlmdata.contract import BLEND_SCHEMA, CONVERSATIONS_TYPE, IMAGE_TOKEN, IMAGES_TYPE, TURN_TYPE

_TOKEN_PREFIX = IMAGE_TOKEN + "\n"
_FIX_LEADING = 1 << validate.FIXES.index(validate.FIX_LEADING_TURN)
_FIX_TOKEN = 1 << validate.FIXES.index(validate.FIX_TOKEN_ADDED)
# the roles of a well-formed conversation of each length: human, gpt, human, gpt, ... (longer
# conversations, and any other, take the exact checks' path)
_ROLES = {n: ["human", "gpt"] * (n // 2) for n in range(2, 202, 2)}
_UNSET = msgspec.UNSET


class Human(msgspec.Struct, tag_field="from", tag="human", gc=False):
    """A turn ``{"from": "human", "value": ...}`` as the reader decodes it: msgspec reads the role
    as the type, so checking the roles is comparing types (other keys of a turn are not kept, as
    for a dict; any other role does not fit the Record type)."""

    value: str


class Gpt(msgspec.Struct, tag_field="from", tag="gpt", gc=False):
    """A turn ``{"from": "gpt", "value": ...}``."""

    value: str


_ROLE_TYPES = {n: [Human, Gpt] * (n // 2) for n in range(2, 202, 2)}


class Record(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The common record's shape (gc=False: a record holds strings and lists, never a cycle)."""

    conversations: list[Human | Gpt]
    id: str | int | msgspec.UnsetType = _UNSET
    image: str | msgspec.UnsetType = _UNSET
    model: str | msgspec.UnsetType = _UNSET  # (ShareGPT's text-only records)


def record_id(rec: Any) -> str | None:
    """The record's own ``id`` (or ``idx``) as a string, for the list of bad records."""
    if type(rec) is Record:  # (a Record has no idx)
        rid = None if rec.id is _UNSET else rec.id
    else:
        rid = rec.get("id", rec.get("idx")) if type(rec) is dict else None
    return None if rid is None else str(rid)


class RowBuffer:
    """Up to a batch of normalised rows, one tuple each (one list append per record; the columns
    are made once per batch, in ``take``): id, images, turn values, text chars, index in the
    input, fixes applied (bit i: validate.FIXES[i]), record_extra."""

    __slots__ = ("rows", "keep_text")

    def __init__(self, keep_text: bool = True) -> None:
        self.keep_text = keep_text
        self.rows: list[tuple[str, list[str], list[str], int, int, int, str | None]] = []

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, source: str, limit: int | None = None) -> tuple[pa.RecordBatch, np.ndarray, np.ndarray]:
        """The first ``limit`` rows (all by default) in the output columns
        (vlmdata.blend.columns.REQUIRED), with per row its index in the input (int64) and its
        fixes (int8); they leave the buffer."""
        if limit is None or limit >= len(self.rows):
            rows, self.rows = self.rows, []
        else:
            rows, self.rows = self.rows[:limit], self.rows[limit:]
        n = len(rows)
        ids, images, values, chars, index, fixes, kept = zip(*rows) if rows else ((),) * 7
        images_arr = pa.ListArray.from_arrays(_offsets(images, n), pa.array(list(chain.from_iterable(images)), pa.string()),
                                              type=IMAGES_TYPE)
        if self.keep_text:
            flat = list(chain.from_iterable(values))
            turns = pa.StructArray.from_arrays([_roles(len(flat)), pa.array(flat, pa.string())], fields=list(TURN_TYPE))
            conv = pa.ListArray.from_arrays(_offsets(values, n), turns, type=CONVERSATIONS_TYPE)
            extras = pa.array(kept, pa.string())
        else:
            turns = pa.StructArray.from_arrays([pa.array([], pa.string())] * 2, fields=list(TURN_TYPE))
            conv = pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), turns, type=CONVERSATIONS_TYPE)
            extras = pa.nulls(n, pa.string())
        batch = pa.RecordBatch.from_arrays(
            [pa.array(ids, pa.string()), pa.repeat(pa.scalar(source, pa.string()), n), images_arr, conv,
             pa.array(np.fromiter(map(len, images), np.int32, n)), pa.array(chars, pa.int32()), extras],
            schema=BLEND_SCHEMA)
        return batch, np.array(index, dtype=np.int64), np.array(fixes, dtype=np.int8)


def _offsets(lists: tuple[list, ...], n: int) -> pa.Array:
    """Arrow list offsets of ``n`` lists: 0, then the running total of their lengths."""
    out = np.zeros(n + 1, np.int32)
    np.cumsum(np.fromiter(map(len, lists), np.int32, n), out=out[1:])
    return pa.array(out)


def _roles(n: int) -> pa.Array:
    """``from`` of ``n`` turns: every conversation alternates human/gpt with an even length, so the
    column is human, gpt, human, gpt, ... across the whole batch."""
    codes = pa.array(np.arange(n, dtype=np.int8) & 1)
    return pa.DictionaryArray.from_arrays(codes, _ROLE_NAMES).cast(pa.string())


_ROLE_NAMES = pa.array(["human", "gpt"])


class Normaliser:
    """Checks records of one input and appends the good ones to a RowBuffer."""

    def __init__(self, source: str, image_prefix: str = "") -> None:
        self.source = source
        self.prefix = image_prefix.rstrip("/") + "/" if image_prefix else ""

    def add_all(self, records: list[Any], first: int, out: RowBuffer, *,
                stop_on_bad: bool = False) -> list[tuple[int, validate.Bad]]:
        """``add`` each of ``records`` (input indexes from ``first``); the bad ones' positions in
        the list and reasons (only the first with ``stop_on_bad``: the rest are not added)."""
        bad: list[tuple[int, validate.Bad]] = []
        add, typed = self.add, self._add_typed
        for k, rec in enumerate(records, first):
            if type(rec) is Record:
                if typed(rec, k, out):
                    continue  # (the common case, without add's own call)
                rec = msgspec.to_builtins(rec)  # checked as the dict it was decoded from
            try:
                add(rec, k, out)
            except validate.Bad as e:
                bad.append((k - first, e))
                if stop_on_bad:
                    break
        return bad

    def add(self, rec: Any, index: int, out: RowBuffer) -> None:
        """Append ``rec`` (a plain JSON value; ``add_all`` also takes Records) to ``out``, or raise
        ``validate.Bad`` (``out`` is then unchanged).

        The fast path handles a well-formed record with a few C-level list operations; anything
        unusual goes through ``_turns``, which finds the exact problem.
        """
        if type(rec) is not dict:
            raise validate.Bad(validate.NOT_OBJECT, f"a JSON {type(rec).__name__}, not an object")
        if "video" in rec:
            raise validate.Bad(validate.VIDEO, "the record has a 'video' key (video samples are not supported)")
        rid = rec.get("id")
        if type(rid) is not str or not rid:
            rid = self._id(rec, index)
        conv = rec.get("conversations")
        try:
            froms = [t["from"] for t in conv]  # type: ignore[union-attr]
            values = [t["value"] for t in conv]  # type: ignore[union-attr]
            if froms != _ROLES.get(len(froms)):
                raise LookupError
            human = "\n".join(values[0::2])
            gpt = "\n".join(values[1::2])  # TypeError unless every value is a string
            if "" in values or any(map(str.isspace, values)) or IMAGE_TOKEN in gpt:
                raise LookupError
            leading = False
            chars = len(human) + len(gpt) - len(values) + 2  # (less the joins' separators)
        except (LookupError, TypeError, AttributeError):
            values, human, leading = self._turns(conv)
            chars = sum(map(len, values))
        tokens = human.count(IMAGE_TOKEN)

        image = rec.get("image")
        images = [self.prefix + validate.clean_image_path(image)] if type(image) is str else self._images(rec)
        n = len(images)
        fixes = _FIX_LEADING if leading else 0
        if tokens != n:
            if n == 1 and tokens == 0:
                values[0] = _TOKEN_PREFIX + values[0]
                chars += len(_TOKEN_PREFIX)
                fixes |= _FIX_TOKEN
            elif n == 0:
                raise validate.Bad(validate.TOKEN_TEXT_ONLY, f"{tokens} {IMAGE_TOKEN} token(s) but no image")
            else:
                raise validate.Bad(validate.TOKEN_MISMATCH, f"{tokens} {IMAGE_TOKEN} token(s) for {n} image(s)")
        out.rows.append((rid, images, values, chars, index, fixes, extra.of_record(rec, image) if out.keep_text else None))

    def _add_typed(self, rec: Record, index: int, out: RowBuffer) -> bool:
        """Append a decoded ``Record`` that needs no check's message and no fix but a missing
        ``<image>``; False (``out`` unchanged) for any other, which ``add`` then checks as a dict."""
        rid = rec.id
        if type(rid) is not str or not rid:
            return False
        conv = rec.conversations
        values = [t.value for t in conv]
        if list(map(type, conv)) != _ROLE_TYPES.get(len(values)):
            return False
        if not all(map(str.strip, values)):  # (an empty or blank value strips to "")
            return False
        text = "\n".join(values)  # ("\n" cannot be part of a token: none is made or split)
        chars = len(text) - len(values) + 1
        tokens = text.count(IMAGE_TOKEN)
        image = rec.image
        fixes = 0
        if image is _UNSET:
            if tokens:
                return False
            images = []
        else:
            try:
                images = [self.prefix + validate.clean_image_path(image)]
            except validate.Bad:
                return False
            if tokens != 1 or IMAGE_TOKEN not in values[0]:  # (the one token in the first turn: not a gpt one)
                if tokens:
                    return False  # (the checks of add find where the tokens are)
                values[0] = _TOKEN_PREFIX + values[0]
                chars += len(_TOKEN_PREFIX)
                fixes = _FIX_TOKEN
        kept = None
        if rec.model is not _UNSET and out.keep_text:
            kept = extra.of_record(msgspec.to_builtins(rec), None if image is _UNSET else image)
        out.rows.append((rid, images, values, chars, index, fixes, kept))
        return True

    def _turns(self, conv: Any) -> tuple[list[str], str, bool]:
        """The slow path: (values, human text, leading turn removed), or Bad with the exact problem."""
        if type(conv) is not list or not conv:
            raise validate.Bad(validate.NO_CONVERSATIONS, "'conversations' is missing, not a list, or empty")
        leading = False
        if type(conv[0]) is dict and conv[0].get("from") != "human":
            conv = conv[1:]  # LLaVA: "if roles[source[0]['from']] != conv.roles[0]: source = source[1:]"
            leading = True
            if not conv:
                raise validate.Bad(validate.NO_CONVERSATIONS, "the only turn is not from human")
        values: list[str] = []
        human_values: list[str] = []
        for k, turn in enumerate(conv):
            expected = "gpt" if k % 2 else "human"
            if type(turn) is not dict:
                raise validate.Bad(validate.BAD_TURN, f"turn {k} is a JSON {type(turn).__name__}, not an object")
            role, value = turn.get("from"), turn.get("value")
            if role != expected:
                if role not in ("human", "gpt"):
                    raise validate.Bad(validate.UNKNOWN_ROLE if type(role) is str else validate.BAD_TURN,
                                f"turn {k}: 'from' is {role!r} (expected 'human' or 'gpt')")
                raise validate.Bad(validate.NOT_ALTERNATING, f"turn {k} is from {role!r}, expected {expected!r}")
            if type(value) is not str:
                raise validate.Bad(validate.BAD_TURN, f"turn {k}: 'value' is {type(value).__name__}, not a string")
            if not value or value.isspace():
                raise validate.Bad(validate.EMPTY_VALUE, f"turn {k} ({role}) has an empty value")
            if expected == "gpt" and IMAGE_TOKEN in value:
                raise validate.Bad(validate.TOKEN_IN_GPT, f"turn {k} (gpt) contains {IMAGE_TOKEN}")
            values.append(value)
            if expected == "human":
                human_values.append(value)
        if len(values) % 2:
            raise validate.Bad(validate.ENDS_WITH_HUMAN, f"{len(values)} turns: the last one is from human and has no answer")
        return values, "\n".join(human_values), leading

    def _id(self, rec: dict, index: int) -> str:
        rid = rec.get("id")
        if rid is None or rid == "":
            rid = rec.get("idx")
        t = type(rid)
        if t is str and rid:
            return rid
        if t is int:
            return str(rid)
        if rid is None or rid == "":
            return f"{self.source}:{index}"
        if t is float:
            return str(int(rid)) if rid.is_integer() else repr(rid)
        raise validate.Bad(validate.BAD_ID, f"id is a JSON {type(rid).__name__} ({rid!r:.40})")

    def _images(self, rec: dict) -> list[str]:
        image = rec.get("image")
        if image is None:
            return []
        if type(image) is str:
            paths = [image]
        elif type(image) is list:
            paths = image
            for p in paths:
                if type(p) is not str:
                    raise validate.Bad(validate.BAD_IMAGE_FIELD, f"image list holds a JSON {type(p).__name__}")
        else:
            raise validate.Bad(validate.BAD_IMAGE_FIELD, f"image is a JSON {type(image).__name__}")
        clean = validate.clean_image_path
        if self.prefix:  # the prefix is a clean relative path (checked by the recipe schema)
            return [self.prefix + clean(p) for p in paths]
        return [clean(p) for p in paths]
