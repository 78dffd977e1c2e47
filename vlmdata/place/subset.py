"""Subset fetch: which images a set of LLaVA-style JSONs actually references.

ShareGPT4V needs a few thousand SAM images out of ~500 GB of tars; with the referenced base names
the tar stream is filtered member by member (``wanted`` in extract_tar_stream / place_download).
"""
from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

from vlmdata.jsonstream import iter_json_records


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str) and v]
    return []


def referenced_names(json_paths: list[Path]) -> set[str]:
    """Base names of every image the records reference (``image``: a path or a list of paths)."""
    out: set[str] = set()
    for path in json_paths:
        for _i, rec in iter_json_records(path):
            if not isinstance(rec, dict):
                continue
            for key in ("image", "images"):
                for p in _names(rec.get(key)):
                    out.add(posixpath.basename(p.replace("\\", "/")))
    return out
