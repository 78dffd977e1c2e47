"""Where a file can come from: one module per source kind (http, hf, hfrepo, linkfile, urllist, manual).

Every kind answers the same questions (vlmdata.sources.base.SourceKind), asked by `plan`, `fetch`
and `info` alike: how to describe a source, where a fetch with given options would go for it,
and what concrete candidate to try (a URL, a file in a local mirror, a hub file to resolve, or
why it is unavailable). A new kind is one module here plus its TOML schema (the parser in
vlmdata/manifest/schema.py and its section in docs/manifests.md).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vlmdata.manifest import Source
from vlmdata.sources import hf, hfrepo, http, linkfile, manual, urllist
from vlmdata.sources.base import Candidate, Location, SourceKind, Unavailable
from vlmdata.sources.hf import HubAccess

if TYPE_CHECKING:
    from vlmdata.state import Root

KINDS: dict[str, SourceKind] = {k.name: k for k in (http.KIND, hf.KIND, hfrepo.KIND, linkfile.KIND, urllist.KIND,
                                                    manual.KIND)}

__all__ = ["KINDS", "Candidate", "HubAccess", "Location", "SourceKind", "Unavailable", "candidates", "describe",
           "kind_of"]


def kind_of(src: Source) -> SourceKind:
    return KINDS[src.kind]


def describe(src: Source) -> str:
    return kind_of(src).describe(src)


def candidates(name: str, sources: tuple[Source, ...], root: "Root", *, download_path: Path,
               mirror: str | None = None) -> list[Candidate]:
    """Where the published file ``name`` can come from, in manifest order."""
    return [c for s in sources
            for c in kind_of(s).candidates(s, name, root, download_path=download_path, mirror=mirror)]
