"""`vlmdata export`: a blend back to the JSON the original LLaVA-family repos read.

Each row becomes ``{"id", "image", "conversations", ...}``: ``image`` a string for one image, a
list for several, absent for a text-only record (llava/train/train.py tests ``'image' in
sources[0]``), then the keys of the source record the blend does not use (``model``,
``task_name``, ...) and its own id with its own type, from the ``record_extra`` column
(vlmdata.blend.extra): the export of an unchanged blend equals its input record for record, key
order aside. ``original_ids=False`` writes the blend's unique ids instead. Rows are streamed batch
by batch into a temporary file renamed into place at the end.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from vlmdata import atomic
from vlmdata.blend.extra import restore
from vlmdata.blend.output import BlendOutput
from vlmdata.contract import RECORD_EXTRA

FORMATS = ("llava-json", "llava-jsonl")
_COLUMNS = ["id", "images", "conversations"]


def export(folder: Path, out: Path, fmt: str = "llava-json", *, on_rows: Callable[[int], None] | None = None,
           original_ids: bool = True) -> int:
    """Write every row of the blend in ``folder`` to ``out``; returns the number of records."""
    src = BlendOutput(folder)
    columns = _COLUMNS + ([RECORD_EXTRA] if RECORD_EXTRA in src.schema.names else [])
    n = 0
    jsonl = fmt == "llava-jsonl"
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    with atomic.atomic_open(Path(out), "wb") as fh:
        if not jsonl:
            fh.write(b"[")
        for batch in src.batches(columns, mapped=False):
            cols = [batch.column(c).to_pylist() for c in columns]
            if len(cols) == len(_COLUMNS):  # a blend written before record_extra existed
                cols.append([None] * batch.num_rows)
            parts = []
            for rid, images, conv, extra in zip(*cols):
                text = dumps(restore(rid, images, conv, extra, original_ids=original_ids))
                parts.append(text + "\n" if jsonl else ("," if n else "") + "\n" + text)
                n += 1
            fh.write("".join(parts).encode("utf-8"))
            if on_rows is not None:
                on_rows(batch.num_rows)
        if not jsonl:
            fh.write(b"\n]\n")
    return n
