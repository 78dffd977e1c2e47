"""`layout build`: a layout's folder tree made of links into the store, never a second copy.

Files are hard-linked (same bytes, no extra space, and the view survives the store being moved
on the same filesystem); where a hard link is impossible (another filesystem, a filesystem
without them) a symbolic link to the absolute store path is made instead. Building again only
adds what is missing, so it is cheap and safe to repeat.

Something of the wrong kind in the way (a file where a folder goes, a folder where a file goes)
is found before anything is made for the layout's own paths; deeper inside a folder it is found
while linking, and what this build made is then removed again. Either way the view is left as it
was and the error names the path.

A file already where a link goes is replaced only when nothing is lost: a symbolic link, a file
with the store file's bytes, or any file in the root's own view (ROOT/layouts/NAME, which only
vlmdata writes: there it is a link from before a refetch). Elsewhere (``--out``, e.g. LLaVA's
playground/data) a file with other bytes is the user's own, say an edited mix665k JSON: it is in
the way, and named. (It used to be deleted without a word.)

A view goes under ROOT/layouts/NAME or outside the store: ``--out`` inside a store folder (or the
state folder) is refused before anything is made, as links there mix with what was placed, and a
view inside a folder it links would link itself. ``--out ROOT`` is a view where the store already has
the layout's shape (its paths are the store's own; only what differs is linked).
"""
from __future__ import annotations

import errno
import filecmp
import os
from dataclasses import dataclass, field
from pathlib import Path

from vlmdata.errors import UserError
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
    made: list[Path] = field(default_factory=list)  # links and folders this build created, in order
    owned: bool = False  # the root's own view: a file in it that is not the store's is a stale link


class _InTheWay(Exception):
    def __init__(self, path: Path, want: str) -> None:
        super().__init__(f"{path}: {want}")
        self.path, self.want = path, want


def _mkdir(d: Path, res: BuildResult) -> None:
    if d.is_dir():
        return
    if d.exists() or d.is_symlink():
        raise _InTheWay(d, "a file where a folder goes")
    _mkdir(d.parent, res)
    d.mkdir()
    res.made.append(d)


def _link(src: Path, dst: Path, res: BuildResult) -> None:
    if dst.exists() or dst.is_symlink():
        if dst.is_dir() and not dst.is_symlink():
            raise _InTheWay(dst, f"a folder where the link to {src} goes")
        if dst.exists() and os.path.samefile(src, dst):
            res.existing += 1
            return
        if not (res.owned or dst.is_symlink() or _same_bytes(src, dst)):
            raise _InTheWay(dst, f"a file of its own (other bytes than {src}) where the link to it goes")
        dst.unlink()  # a stale link from an older build, or a copy of the same bytes: replace it
    try:
        os.link(src, dst)
        res.hardlinks += 1
    except OSError as e:
        if e.errno not in _CROSS_DEVICE:
            raise
        os.symlink(src.resolve(), dst)
        res.symlinks += 1
    res.made.append(dst)


def _same_bytes(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes (the sizes first: a user's own file rarely matches)."""
    return a.stat().st_size == b.stat().st_size and filecmp.cmp(a, b, shallow=False)


def _link_tree(src: Path, dst: Path, res: BuildResult) -> None:
    stack = [(src, dst)]
    while stack:
        s, d = stack.pop()
        _mkdir(d, res)
        with os.scandir(s) as it:
            for e in it:
                if e.is_dir(follow_symlinks=True):
                    stack.append((Path(e.path), d / e.name))
                else:
                    _link(Path(e.path), d / e.name, res)


def _in_the_store(layout: Layout, root: Root, out: Path) -> list[str]:
    """The layout's paths that ``out`` would put inside the store or the root's state folder: links there
    mix with what vlmdata placed (a view inside a folder it links even links itself, ever deeper). A path
    that is its store path itself is fine (``--out ROOT`` where the store has the layout's shape)."""
    base = Path(os.path.realpath(out))  # (what exists of it, resolved: a symlink into the store counts)
    home, state = Path(os.path.realpath(root.path)), Path(os.path.realpath(root.state_dir))
    zones = {state: "the root's state folder"} | {home / e.store.split("/")[0]: "a folder of the store"
                                                   for e in layout.entries if e.store}
    zone = next((z for z in zones if base.is_relative_to(z)), None)
    if zone is not None:
        return [f"{out} is " + (zones[zone] if base == zone else f"inside {zone}, {zones[zone]}")]
    found = []
    for e in layout.entries:
        dst = base / e.path
        if e.store and dst == Path(os.path.realpath(root.store_path(e.store))):
            continue
        zone = next((z for z in zones if dst.is_relative_to(z)), None)
        if zone is not None:
            found.append(f"{out / e.path} would be inside {zone}, {zones[zone]}")
    return found


def _in_the_way(layout: Layout, root: Root, out: Path) -> list[str]:
    """What stands where the layout's own paths (and their parent folders) go."""
    found: list[str] = []

    def need_dir(p: Path) -> None:
        for q in [p, *p.parents]:  # the nearest thing that exists must be a folder
            if q.exists() or q.is_symlink():
                if not q.is_dir():
                    found.append(f"{q} is a file, where a folder goes")
                return

    need_dir(out)
    for e in layout.entries:
        dst = out / e.path
        if e.kind == "file":
            need_dir(dst.parent)
            if dst.is_dir() and not dst.is_symlink() and root.store_path(e.store).exists():
                found.append(f"{dst} is a folder, where the file {e.store} goes")
        else:
            need_dir(dst)
    return list(dict.fromkeys(found))


def build_layout(layout: Layout, root: Root, out: Path | None = None) -> BuildResult:
    own = root.layout_dir(layout.name)
    out = Path(out).absolute() if out is not None else own
    # (its folder resolved, not itself: ROOT/layouts/NAME made a symlink to one's playground/data is not vlmdata's own)
    res = BuildResult(out, owned=out.resolve() == own.parent.resolve() / own.name)
    inside = _in_the_store(layout, root, out)
    if inside:
        raise UserError(f"cannot build the {layout.name} layout in {out}: " + "; ".join(inside[:3])
                        + (f" (and {len(inside) - 3} more)" if len(inside) > 3 else ""),
                        hint=f"leave out --out (the view then goes to {own}) or give a folder outside the store, "
                             "e.g. LLaVA's ./playground/data; nothing was changed")
    blocked = _in_the_way(layout, root, out)
    if blocked:
        raise UserError(f"cannot build the {layout.name} layout in {out}: " + "; ".join(blocked[:5])
                        + (f" (and {len(blocked) - 5} more)" if len(blocked) > 5 else ""),
                        hint="move those out of the way (or build elsewhere with --out), then run it again; "
                             "nothing was changed")
    try:
        for e in layout.entries:
            dst = out / e.path
            if e.kind == "mkdir":
                _mkdir(dst, res)
                continue
            src = root.store_path(e.store)
            if not src.exists():
                if e.store not in res.missing:  # (sharegpt4v links Vision-Flan's images at three paths)
                    res.missing.append(e.store)
                continue
            if dst.exists() and os.path.samefile(src, dst):
                res.existing += 1  # the view is the store itself here
                continue
            if e.kind == "file":
                _mkdir(dst.parent, res)
                _link(src, dst, res)
            else:
                _link_tree(src, dst, res)
    except _InTheWay as e:
        undo_build(res)
        raise UserError(f"cannot build the {layout.name} layout in {out}: {e.path} is {e.want}",
                        hint="move it out of the way (a link from an earlier build whose store file was fetched "
                             "again since can be deleted), then run it again; what this build had made was removed") from None
    except BaseException:
        undo_build(res)
        raise
    return res


def undo_build(res: BuildResult) -> None:
    """Remove what this build made (newest first), so a failed build leaves the view as it was."""
    for p in reversed(res.made):
        try:
            if p.is_dir() and not p.is_symlink():
                p.rmdir()
            else:
                p.unlink()
        except OSError:
            pass
    res.made.clear()
