"""`layout check`: does a folder have every path a layout needs, non-empty, with the right counts?

Meant for CI: the result is a list of precise problems (exit 1) or nothing (exit 0).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlmdata.manifest import Layout, LayoutEntry


@dataclass
class EntryResult:
    path: str
    kind: str
    dataset: str | None
    optional: bool
    status: str  # ok | missing | empty | empty_files | not_a_dir | not_a_file | broken_link | count_mismatch | skipped
    expected: int | None = None
    found: int | None = None
    message: str = ""
    empty_files: list[str] = field(default_factory=list)  # 0-byte files under a folder entry


@dataclass
class CheckResult:
    layout: str
    folder: str
    entries: list[EntryResult] = field(default_factory=list)

    @property
    def problems(self) -> list[EntryResult]:
        return [e for e in self.entries if e.status not in ("ok", "skipped")]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"layout": self.layout, "folder": self.folder, "ok": self.ok,
                "problems": len(self.problems), "entries": [asdict(e) for e in self.entries]}


def count_files(folder: Path, empty: list[str] | None = None) -> int:
    """Regular files (or links to them) anywhere under ``folder``; one scandir per folder. With
    ``empty``, the paths of 0-byte files are appended to it (one stat per file)."""
    n = 0
    stack = [folder]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=True):
                    stack.append(Path(e.path))
                elif e.is_file(follow_symlinks=True):
                    n += 1
                    if empty is not None and e.stat(follow_symlinks=True).st_size == 0:
                        empty.append(e.path)
    return n


EMPTY_SHOWN = 5  # empty files named in a message (the JSON has them all)


def _check_entry(folder: Path, e: LayoutEntry, counts: bool) -> EntryResult:
    p = folder / e.path
    r = EntryResult(e.path, e.kind, e.dataset, e.optional, "ok", expected=e.count if counts else None)
    if p.is_symlink() and not p.exists():
        r.status, r.message = "broken_link", f"{p} is a link to {os.readlink(p)}, which does not exist"
    elif not p.exists():
        r.status = "skipped" if e.optional else "missing"
        r.message = f"{p} does not exist" + (" (optional)" if e.optional else "")
    elif e.kind == "file":
        if not p.is_file():
            r.status, r.message = "not_a_file", f"{p} should be a file"
        elif p.stat().st_size == 0:
            r.status, r.message = "empty", f"{p} is empty"
    elif not p.is_dir():
        r.status, r.message = "not_a_dir", f"{p} should be a folder"
    elif e.kind == "dir":
        empty: list[str] = []
        r.found = count_files(p, empty)
        if r.found == 0:
            r.status, r.message = "empty", f"{p} has no files"
        elif empty:  # a 0-byte image is there by name but no image (Visual Genome ships some)
            r.status, r.empty_files = "empty_files", sorted(empty)
            shown = ", ".join(os.path.relpath(x, p) for x in r.empty_files[:EMPTY_SHOWN])
            r.message = (f"{p} has {len(empty)} empty (0-byte) file(s): {shown}"
                         + (" ..." if len(empty) > EMPTY_SHOWN else ""))
        elif counts and e.count is not None and r.found != e.count:
            r.status = "count_mismatch"
            diff = e.count - r.found
            r.message = (f"{p} has {r.found} files, expected {e.count} "
                         f"({abs(diff)} {'missing' if diff > 0 else 'extra'})")
    return r


def check_layout(layout: Layout, folder: Path, *, counts: bool = True) -> CheckResult:
    folder = Path(folder)
    result = CheckResult(layout.name, str(folder))
    for e in layout.entries:
        result.entries.append(_check_entry(folder, e, counts))
    return result
