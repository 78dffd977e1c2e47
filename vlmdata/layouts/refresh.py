"""Views already built in a root follow the store: after a fetch placed files again (``--refetch``,
a repaired or newly fetched dataset), a hard link in ``ROOT/layouts/NAME`` would still hold the
old bytes (a hard link is the old inode, not the path), and training would read them. The views
that use what was placed are built again, which links only what is missing or no longer the
store's file (vlmdata.layouts.build)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

from vlmdata.layouts.build import BuildResult, build_layout
from vlmdata.manifest import Layout
from vlmdata.state import Root


@dataclass
class Refreshed:
    layout: str
    folder: Path
    links: int  # links made or renewed


def _overlaps(a: str, b: str) -> bool:
    """One store path inside the other (or the same)."""
    pa, pb = PurePosixPath(a), PurePosixPath(b)
    return pa == pb or pa in pb.parents or pb in pa.parents


def views_using(layouts: Iterable[Layout], root: Root, placed: Iterable[str]) -> list[Layout]:
    """The layouts with a view in ``root`` that links a store path among ``placed`` (relative to the root)."""
    placed = [p for p in placed if p]
    return [lay for lay in layouts if root.layout_dir(lay.name).is_dir()
            and any(e.kind != "mkdir" and _overlaps(e.store, p) for e in lay.entries for p in placed)]


def refresh_views(layouts: Iterable[Layout], root: Root) -> list[Refreshed]:
    """Build each view again in place; the ones where something changed are returned."""
    out = []
    for lay in layouts:
        res: BuildResult = build_layout(lay, root)
        links = res.hardlinks + res.symlinks
        if links:
            out.append(Refreshed(lay.name, res.folder, links))
    return out
