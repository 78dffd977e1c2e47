"""The ``record_extra`` column: what of a source record the blend's other columns do not hold, so that
`vlmdata export` writes the record back as it was (key order aside).

Null for the common record (a non-empty string ``id``, an ``image`` string or none, ``conversations``,
nothing else). Otherwise a JSON object with, each only when needed:

- ``keys``: the record's other keys, verbatim (``model``, ``task_name``, ``idx``, ``url`` ...); also
  ``id`` when it was not a non-empty string (``5``, ``1.0``, ``null``: the ``id`` column holds it as
  a string), when the blend renamed it to keep ids unique (the original string), and ``image`` when
  it held no path (``null``, ``[]``);
- ``no_id``: true when the record had no ``id`` key (the ``id`` column then holds ``idx`` or
  ``<source>:<index>``);
- ``image_list``: true when ``image`` was a list of one path (export would write a string).

Turn-level keys other than ``from``/``value`` are not kept.
"""
from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

_HELD = ("image", "conversations")
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def of_record(rec: dict, image: Any) -> str | None:
    """The record_extra of a record that was accepted (``image`` = its ``image`` value)."""
    rid = rec.get("id")
    plain_id = type(rid) is str and bool(rid)
    if plain_id and len(rec) == 1 + ("image" in rec) + ("conversations" in rec) and (
            type(image) is str or (image is None and "image" not in rec)):
        return None  # the common record: the columns hold all of it
    out: dict[str, Any] = {}
    # (``id`` first, then the file's order: of_struct's order for the records either may take, so a
    # record's bytes do not depend on which way its batch was read, which --jobs can change)
    keys = {"id": rid} if "id" in rec and not plain_id else {}
    keys.update((k, v) for k, v in rec.items() if k not in _HELD and k != "id")
    if "image" in rec and not image:  # null or []: no path, so nothing in `images` says it was there
        keys["image"] = image
    if keys:
        out["keys"] = keys
    if "id" not in rec:
        out["no_id"] = True
    if type(image) is list and len(image) == 1:
        out["image_list"] = True
    return _dumps(out) if out else None


def of_struct(int_id: int | None, model: str | None) -> str:
    """``of_record`` of a record with an ``id`` (``int_id`` when it is an int, else a non-empty
    string), an ``image`` string or none, ``conversations`` and at most ``model`` (ShareGPT's
    text-only records), one of them given: without making the record a dict first."""
    keys: dict[str, Any] = {}
    if int_id is not None:
        keys["id"] = int_id
    if model is not None:
        keys["model"] = model
    return _dumps({"keys": keys})


def keep_original_ids(extra: pa.Array, original: pa.Array, final: pa.Array) -> pa.Array:
    """``extra`` with the original id kept in ``keys`` for the rows whose id the blend changed
    (a record whose id already sits in ``keys``, or that had none, is left as it is)."""
    changed = pc.not_equal(original, final).to_numpy(zero_copy_only=False)
    if not changed.any():
        return extra
    values = extra.to_pylist()
    origs = original.to_pylist()
    for i in changed.nonzero()[0].tolist():
        d = json.loads(values[i]) if values[i] else {}
        keys = d.setdefault("keys", {})
        if "id" not in keys and not d.get("no_id"):
            keys["id"] = origs[i]
            values[i] = _dumps(d)
    return pa.array(values, pa.string())


def restore(rid: str, images: list[str], conversations: list[dict], extra: str | None, *,
            original_ids: bool = True) -> dict:
    """The source record of a row: ``id``, ``image``, ``conversations``, then its other keys.
    ``original_ids=False`` writes the blend's (unique) id instead of the record's own."""
    d = json.loads(extra) if extra else {}
    keys = dict(d.get("keys") or {})
    rec: dict[str, Any] = {}
    if not original_ids:
        rec["id"] = rid
        keys.pop("id", None)
    elif not d.get("no_id"):
        rec["id"] = keys.pop("id") if "id" in keys else rid
    if len(images) == 1 and not d.get("image_list"):
        rec["image"] = images[0]
    elif images:
        rec["image"] = list(images)
    elif "image" in keys:
        rec["image"] = keys.pop("image")
    else:
        keys.pop("image", None)
    rec["conversations"] = conversations
    rec.update(keys)
    return rec
