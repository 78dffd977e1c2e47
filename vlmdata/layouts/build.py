"""`layout build`: a layout's folder tree made of links into the store, never a second copy.

Files are hard-linked (same bytes, no extra space, and the view survives the store being moved
on the same filesystem); where a hard link is impossible (another filesystem, a filesystem
without them) a symbolic link to the absolute store path is made instead. Building again only
adds what is missing, so it is cheap and safe to repeat.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

from vlmdata.manifest import Layout
from vlmdata.state import Root

_CROSS_DEVICE = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


@dataclass
class BuildResult:
    folder: Path
    hardlinks: int = 0
    symlinks: int = 0
    existing: int = 0
    missing: list[str] = field(default_factory=list)  # store paths not fetched yet


def _link(src: Path, dst: Path, res: BuildResult) -> None:
    if dst.exists() or dst.is_symlink():
        if dst.exists() and os.path.samefile(src, dst):
            res.existing += 1
            return
        dst.unlink()  # a stale link from an older build: replace it
    try:
        os.link(src, dst)
        res.hardlinks += 1
    except OSError as e:
        if e.errno not in _CROSS_DEVICE:
            raise
        os.symlink(src.resolve(), dst)
        res.symlinks += 1


def _link_tree(src: Path, dst: Path, res: BuildResult) -> None:
    stack = [(src, dst)]
    while stack:
        s, d = stack.pop()
        d.mkdir(parents=True, exist_ok=True)
        with os.scandir(s) as it:
            for e in it:
                if e.is_dir(follow_symlinks=True):
                    stack.append((Path(e.path), d / e.name))
                else:
                    _link(Path(e.path), d / e.name, res)


def build_layout(layout: Layout, root: Root, out: Path | None = None) -> BuildResult:
    out = Path(out) if out is not None else root.layout_dir(layout.name)
    res = BuildResult(out)
    for e in layout.entries:
        dst = out / e.path
        if e.kind == "mkdir":
            dst.mkdir(parents=True, exist_ok=True)
            continue
        src = root.store_path(e.store)
        if not src.exists():
            res.missing.append(e.store)
            continue
        if dst.exists() and os.path.samefile(src, dst):
            res.existing += 1  # the view is the store itself here
            continue
        if e.kind == "file":
            dst.parent.mkdir(parents=True, exist_ok=True)
            _link(src, dst, res)
        else:
            _link_tree(src, dst, res)
    return res
