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
  a single image with no token gets ``"<image>\\n"`` prepended to the first human turn (LLaVA's
  preprocess_multimodal adds none: its model then never sees the image; docs/blend.md, "Where blend
  differs from the training repos").

The good rows go to a ``RowBuffer`` (rows.py): a decoded batch whose records are all good as
columns at once, a record checked on its own as one row.

The reader decodes records into ``Record`` where they fit it (the common shape: a string or int
``id``, a string ``image`` or none, ``conversations``, at most a string ``model``; msgspec checks
those types in C and builds no dict per record or turn). A batch of Records is checked as a whole
(``_Checked``: the same checks as passes over its columns); the Records with nothing to fix but a
missing ``<image>`` are appended in runs, and any other goes through the same checks as a plain
JSON record, as the dict it was decoded from.

Why one file of ~370 lines: the checks of one record (``Normaliser.add``) and the same checks
on a batch of Records (``_Checked``) must accept exactly the same records and make the same rows;
side by side, a change to one is made beside the other (tests/blend/test_blend_typed_records.py
compares the two on every shape of record).
"""
from __future__ import annotations

from itertools import chain, compress, repeat
from operator import is_, is_not
from typing import Any

import msgspec
import numpy as np

from vlmdata.blend import extra, text_scan, validate
from vlmdata.blend.rows import RowBuffer, text_column
from vlmdata.contract import IMAGE_TOKEN

_TOKEN_PREFIX = IMAGE_TOKEN + "\n"
_FIX_LEADING = 1 << validate.FIXES.index(validate.FIX_LEADING_TURN)
_FIX_TOKEN = 1 << validate.FIXES.index(validate.FIX_TOKEN_ADDED)
# the roles of a well-formed conversation of each length: human, gpt, human, gpt, ... (longer
# conversations, and any other, take the exact checks' path)
_LONGEST = 200  # turns: a longer conversation takes the exact checks' path (_turns)
_ROLES = {n: ["human", "gpt"] * (n // 2) for n in range(2, _LONGEST + 1, 2)}
_UNSET = msgspec.UNSET


class Human(msgspec.Struct, tag_field="from", tag="human", gc=False):
    """A turn ``{"from": "human", "value": ...}`` as the reader decodes it: msgspec reads the role
    as the type, so checking the roles is comparing types (other keys of a turn are not kept, as
    for a dict; any other role does not fit the Record type)."""

    value: str


class Gpt(msgspec.Struct, tag_field="from", tag="gpt", gc=False):
    """A turn ``{"from": "gpt", "value": ...}``."""

    value: str


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
    if rid is None:
        return None
    rid = str(rid)
    try:
        rid.encode()
    except UnicodeEncodeError:  # (a lone surrogate, validate.check_unicode: written escaped, as JSON would)
        rid = rid.encode("utf-8", "backslashreplace").decode()
    return rid


class Normaliser:
    """Checks records of one input and appends the good ones to a RowBuffer."""

    def __init__(self, source: str, image_prefix: str = "") -> None:
        self.source = source
        self.prefix = image_prefix.rstrip("/") + "/" if image_prefix else ""

    def add_all(self, records: list[Any], first: int, out: RowBuffer, *,
                stop_on_bad: bool = False, slow: bool = False) -> list[tuple[int, validate.Bad]]:
        """``add`` each of ``records`` (input indexes from ``first``); the bad ones' positions in
        the list and reasons (only the first with ``stop_on_bad``: the rest are not added).
        ``slow``: the standard library decoded them, so their text is checked to be valid Unicode."""
        if records and all(map(is_, map(type, records), repeat(Record))):  # (a batch is all Records or none)
            return self._add_records(records, first, out, stop_on_bad)
        return self._add_each(records, first, out, 0, len(records), stop_on_bad, slow)

    def _add_each(self, records: list[Any], first: int, out: RowBuffer, start: int, end: int,
                  stop_on_bad: bool, slow: bool = False) -> list[tuple[int, validate.Bad]]:
        """``add`` records ``start:end`` one by one (a Record as the dict it was decoded from)."""
        bad: list[tuple[int, validate.Bad]] = []
        add = self.add
        for k in range(start, end):
            rec = records[k]
            if type(rec) is Record:
                rec = msgspec.to_builtins(rec)
            try:
                if slow:
                    validate.check_unicode(rec)
                add(rec, first + k, out)
            except validate.Bad as e:
                bad.append((k, e))
                if stop_on_bad:
                    break
        return bad

    def _add_records(self, recs: list[Record], first: int, out: RowBuffer,
                     stop_on_bad: bool) -> list[tuple[int, validate.Bad]]:
        """A batch of Records: the ones that need no check's message and no fix but a missing
        ``<image>`` go to ``out`` in runs, as slices of the batch's columns (``_Checked``); each
        other one, in its place, through ``add``."""
        checked = _Checked(recs, self.prefix, out.keep_text)
        if checked.good.all():  # (the common case: the whole batch is one piece)
            checked.to_piece(out, first)
            return []
        bad: list[tuple[int, validate.Bad]] = []
        k = 0
        for m in [*np.flatnonzero(~checked.good).tolist(), len(recs)]:
            if k < m:
                checked.extend(out, k, m, first)
            if m == len(recs):
                break
            found = self._add_each(recs, first, out, m, m + 1, stop_on_bad)
            if found:
                bad += found
                if stop_on_bad:
                    break
            k = m + 1
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
        except (LookupError, TypeError, AttributeError):
            values, human, leading = self._turns(conv)
        tokens = human.count(IMAGE_TOKEN)

        image = rec.get("image")
        images = [self.prefix + validate.clean_image_path(image)] if type(image) is str else self._images(rec)
        n = len(images)
        fixes = _FIX_LEADING if leading else 0
        if tokens != n:
            if n == 1 and tokens == 0:
                values[0] = _TOKEN_PREFIX + values[0]
                fixes |= _FIX_TOKEN
            elif n == 0:
                raise validate.Bad(validate.TOKEN_TEXT_ONLY, f"{tokens} {IMAGE_TOKEN} token(s) but no image")
            else:
                raise validate.Bad(validate.TOKEN_MISMATCH, f"{tokens} {IMAGE_TOKEN} token(s) for {n} image(s)")
        out.append(rid, images, values, index, fixes, extra.of_record(rec, image) if out.keep_text else None)

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
            at = k + int(leading)  # (the turn's place in the record as written, for the user to find it)
            if type(turn) is not dict:
                raise validate.Bad(validate.BAD_TURN, f"turn {at} is a JSON {type(turn).__name__}, not an object")
            role, value = turn.get("from"), turn.get("value")
            if role != expected:
                if role not in ("human", "gpt"):
                    raise validate.Bad(validate.UNKNOWN_ROLE if type(role) is str else validate.BAD_TURN,
                                f"turn {at}: 'from' is {role!r} (expected 'human' or 'gpt')")
                raise validate.Bad(validate.NOT_ALTERNATING, f"turn {at} is from {role!r}, expected {expected!r}")
            if type(value) is not str:
                raise validate.Bad(validate.BAD_TURN, f"turn {at}: 'value' is {type(value).__name__}, not a string")
            if not value or value.isspace():
                raise validate.Bad(validate.EMPTY_VALUE, f"turn {at} ({role}) has an empty value")
            if expected == "gpt" and IMAGE_TOKEN in value:
                raise validate.Bad(validate.TOKEN_IN_GPT, f"turn {at} (gpt) contains {IMAGE_TOKEN}")
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


class _Checked:
    """The checks of ``Normaliser.add`` on a whole batch of Records at once, as passes over its
    columns (C-level maps, numpy; what is asked of the text, of its Arrow column's bytes:
    text_scan), and the columns of the rows the Records make. ``good[i]``:
    record i needs no check's message and no fix but a missing ``<image>`` (the one fix made
    here); any other is left to ``add``, which finds what is wrong with it.

    Per record, the passes do what ``add`` does: an id that is a non-empty string (an int id is
    made one, and kept in record_extra); 2 to ``_LONGEST`` turns, an even number, human and gpt
    alternating from human (msgspec decoded each turn's role as its type, so a role is a type to
    compare); no value empty or blank; ``<image>``
    tokens: none without an image, with one image either one token in the first turn or none
    (then ``<image>\\n`` is put before the first turn); the image path cleaned (with the prefix).
    """

    def __init__(self, recs: list[Record], prefix: str, keep_text: bool) -> None:
        n = len(recs)
        convs = [r.conversations for r in recs]
        self.n_turns = nt = np.fromiter(map(len, convs), np.int64, n)
        self.starts = starts = np.zeros(n + 1, np.int64)
        np.cumsum(nt, out=starts[1:])
        turns = list(chain.from_iterable(convs))
        total = len(turns)
        self.values = values = [t.value for t in turns]
        self.text = text_column(values)  # (written anyway; its bytes answer the checks on text below)
        offsets, data = text_scan.buffers(self.text)
        good = (nt >= 2) & (nt % 2 == 0) & (nt <= _LONGEST)
        owner = np.repeat(np.arange(n), nt)  # the record of each turn
        tokens = text_scan.token_counts(offsets, data)  # <image> tokens per value
        first_turn = np.minimum(starts[:-1], max(total - 1, 0))  # (a record with no turn: any index, masked)
        in_first = np.where(nt > 0, tokens[first_turn], 0) if total else np.zeros(n, np.int64)
        if tokens.any():  # (a good record's tokens are all in its first turn)
            good &= np.bincount(owner, weights=tokens, minlength=n) == in_first
        # Roles and blank values are checked for the whole batch at once; only a batch where one of
        # them fails is checked turn by turn, to find its records.
        if not (good.all() and list(map(type, turns)) == [Human, Gpt] * (total // 2)):
            gpt = np.fromiter(map(is_, map(type, turns), repeat(Gpt)), bool, total)
            odd = ((np.arange(total) - starts[:-1][owner]) & 1).astype(bool)  # (a turn's place in its record)
            good &= np.bincount(owner, weights=gpt != odd, minlength=n) == 0
        maybe = text_scan.maybe_blank(offsets, data).tolist()
        if maybe:
            blank = [i for i in maybe if not values[i] or values[i].isspace()]
            good[owner[blank]] = False

        ids = self.ids = raw_ids = [r.id for r in recs]
        is_str = np.fromiter(map(is_, map(type, ids), repeat(str)), bool, n)
        int_ids: list[int] = []  # the records whose id is an int: made a string, as add does
        if not is_str.all():
            int_ids = [i for i in np.flatnonzero(~is_str).tolist() if type(ids[i]) is int]
            ids = self.ids = list(ids)
            for i in int_ids:
                ids[i] = str(ids[i])
            is_str[int_ids] = True
        good &= is_str & np.fromiter(map(bool, ids), bool, n)
        images = [r.image for r in recs]
        self.has = has = np.fromiter(map(is_not, images, repeat(_UNSET)), bool, n)
        fix = has & (in_first == 0)  # (a good record's tokens are all in its first turn)
        good &= np.where(has, in_first <= 1, in_first == 0)
        self.paths = paths = list(compress(images, has))  # the images, in record order
        self.image_at = np.zeros(n + 1, np.int64)  # record i's image (if any) is paths[image_at[i]]
        np.cumsum(has, out=self.image_at[1:])
        if paths and not _all_plain(paths):
            owners = np.flatnonzero(has).tolist()
            clean, bad = validate.clean_image_path, validate.Bad
            for k, path in enumerate(paths):
                try:
                    paths[k] = clean(path)
                except bad:
                    good[owners[k]] = False
        if prefix:
            self.paths = list(map(prefix.__add__, paths))
        self.fixes = np.zeros(n, np.int64)
        for i in np.flatnonzero(fix & good).tolist():
            values[starts[i]] = _TOKEN_PREFIX + values[starts[i]]
            self.fixes[i] = _FIX_TOKEN
        if self.fixes.any():  # (rare: LLaVA's own JSONs put the token in every record with an image)
            self.text = text_column(values)
        self.kept: list[str | None] | None = None
        if keep_text:
            models = [r.model for r in recs]
            extras = np.fromiter(map(is_not, models, repeat(_UNSET)), bool, n)
            extras[int_ids] = True
            with_extra = np.flatnonzero(extras & good)
            if len(with_extra):  # (a good Record's only keys to keep: extra.of_struct is its of_record)
                self.kept = [None] * n
                for i in with_extra.tolist():
                    rid = raw_ids[i]
                    self.kept[i] = extra.of_struct(rid if type(rid) is int else None,
                                                   None if models[i] is _UNSET else models[i])
        self.good = good

    def to_piece(self, out: RowBuffer, first: int) -> None:
        """Every record (all good) onto ``out`` as one piece."""
        n = len(self.ids)
        out.add_piece(self.ids, self.has, self.paths, self.n_turns, self.text, self.kept,
                      np.arange(first, first + n, dtype=np.int64), self.fixes)

    def extend(self, out: RowBuffer, a: int, b: int, first: int) -> None:
        """Records ``a:b`` (all good) onto ``out``."""
        out.ids += self.ids[a:b]
        out.n_images += self.has[a:b].astype(np.int64).tolist()
        out.images += self.paths[self.image_at[a]:self.image_at[b]]
        out.n_turns += self.n_turns[a:b].tolist()
        out.values += self.values[self.starts[a]:self.starts[b]]
        out.index += range(first + a, first + b)
        out.fixes += self.fixes[a:b].tolist()
        out.kept += self.kept[a:b] if self.kept is not None else [None] * (b - a)


def _all_plain(paths: list[str]) -> bool:
    """Whether ``validate.clean_image_path`` returns every one of ``paths`` as it is: none empty,
    none starting with '/' or '.', none with ':' second, '\\', '//' or '/.' in it. Tested on the
    paths joined by newlines, in C: a newline in a path can only make this answer False, and then
    each path is cleaned on its own."""
    text = "\n".join(paths)
    return bool(text) and text[0] not in "/.\n" and text[-1] != "\n" and not any(
        bit in text for bit in ("\n\n", "\n/", "\n.", "\\", "//", "/.", ":"))
