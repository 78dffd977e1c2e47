"""`vlmdata export`: a blend back to the JSON the original LLaVA-family repos read.

Each row becomes ``{"id", "image", "conversations"}``: ``image`` a string for one image, a list
for several, absent for a text-only record (llava/train/train.py tests ``'image' in sources[0]``).
Rows are streamed batch by batch into a temporary file renamed into place at the end.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from vlmdata import atomic
from vlmdata.blend.output import BlendOutput

FORMATS = ("llava-json", "llava-jsonl")
_COLUMNS = ["id", "images", "conversations"]


def llava_record(rid: str, images: list[str], conversations: list[dict]) -> dict:
    rec: dict = {"id": rid}
    if len(images) == 1:
        rec["image"] = images[0]
    elif images:
        rec["image"] = images
    rec["conversations"] = conversations
    return rec


def export(folder: Path, out: Path, fmt: str = "llava-json", *, on_rows: Callable[[int], None] | None = None) -> int:
    """Write every row of the blend in ``folder`` to ``out``; returns the number of records."""
    src = BlendOutput(folder)
    n = 0
    jsonl = fmt == "llava-jsonl"
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    with atomic.atomic_open(Path(out), "wb") as fh:
        if not jsonl:
            fh.write(b"[")
        for batch in src.batches(_COLUMNS, mapped=False):
            cols = [batch.column(c).to_pylist() for c in _COLUMNS]
            parts = []
            for rid, images, conv in zip(*cols):
                text = dumps(llava_record(rid, images, conv))
                parts.append(text + "\n" if jsonl else ("," if n else "") + "\n" + text)
                n += 1
            fh.write("".join(parts).encode("utf-8"))
            if on_rows is not None:
                on_rows(batch.num_rows)
        if not jsonl:
            fh.write(b"\n]\n")
    return n
