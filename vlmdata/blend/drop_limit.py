"""How much a blend may lose: ``--max-drop``, and what to fetch when it loses more.

A blend of a recipe whose images were never fetched keeps the few text-only records and drops
the rest; writing that as a dataset (exit 0) is a silent bad result that a trainer then trains
on. So a blend whose recipe entry loses more than ``max_drop`` percent of its sampled records
stops before writing anything (exit 1, the previous output untouched) and says which datasets
the missing images belong to, as a command. The default (1%) lets known losses pass: OCR-VQA's
dead URLs cost about 355 of mix665k's 665k records.
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vlmdata.blend import validate as v

if TYPE_CHECKING:  # the pipeline imports this module
    from vlmdata.blend.pipeline import Analysis

DEFAULT_MAX_DROP = 1.0  # percent of each recipe entry's sampled records
IMAGE_REASONS = (v.MISSING_IMAGE, v.CORRUPT_IMAGE)


@dataclass
class Loss:
    source: str
    sampled: int
    dropped: int
    reasons: dict[str, int]

    @property
    def percent(self) -> float:
        return 100.0 * self.dropped / self.sampled if self.sampled else 0.0


@dataclass
class Verdict:
    """Why a blend refuses to write: the entries over the limit, and what to do."""

    over: list[Loss]
    max_drop: float
    kept: int
    message: str
    hint: str

    def to_json(self) -> dict[str, Any]:
        return {"max_drop": self.max_drop, "kept": self.kept, "message": self.message, "hint": self.hint,
                "over": [dict(vars(x), percent=round(x.percent, 2)) for x in self.over]}


def losses(an: "Analysis") -> list[Loss]:
    return [Loss(s.name, s.sampled, sum(s.dropped.values()), dict(s.dropped)) for s in an.sources]


def check(an: "Analysis", max_drop: float, *, in_report: bool = False) -> Verdict | None:
    """None when every entry keeps enough; else what is wrong and what to do. (An input file with
    no records never gets here: the pipeline refuses it after reading.)"""
    kept = sum(s.kept for s in an.sources)
    over = [x for x in losses(an) if x.dropped and x.percent > max_drop]
    if not over:
        return None
    name = recipe_ref(an.resolved.recipe)
    lines = [f"{an.resolved.recipe.name} would drop more than --max-drop {max_drop:g}% of its records"
             + ("" if kept else " (nothing would be kept)") + ":"]
    for x in over:
        why = ", ".join(f"{r}: {n:,}" for r, n in sorted(x.reasons.items(), key=lambda kv: -kv[1]))
        lines.append(f"  {x.source}: {x.dropped:,} of {x.sampled:,} dropped ({x.percent:.1f}%): {why}")
    image_drops = sum(n for x in over for r, n in x.reasons.items() if r in IMAGE_REASONS)
    hints = []
    if image_drops:
        folders, todo = _what_to_fetch(an, in_report)
        missing = sum(st.missing + st.corrupt for st in an.folders.values())
        shown = ", ".join(f"{f} ({n:,})" for f, n in folders[:8]) + (" ..." if len(folders) > 8 else "")
        lines.append(f"  {missing:,} image(s) missing or corrupt under {an.resolved.image_root.path}: {shown}")
        hints += todo
        if an.elsewhere:  # (OCR-VQA's loadDataset.py: .gif / .png where the records name .jpg)
            path = min(an.elsewhere)
            hints.append(f"{len(an.elsewhere):,} of the missing images are there under another extension (e.g. "
                         f"{path}: {an.elsewhere[path]} is there): `vlmdata normalize DATASET FOLDER` converts them "
                         f"to the .jpg the records name (docs/place.md)")
    other = sum(x.dropped for x in over) - image_drops
    if other:
        hints.append(f"{other:,} record(s) cannot be used as they are (not for want of an image): "
                     + ("the examples above show some with their line" if in_report else
                        f"`vlmdata report {name}` shows them with their line"))
    hints.append(f"to write the blend anyway: --max-drop {_ceil_percent(over)}")
    return Verdict(over, max_drop, kept, "\n".join(lines), "\n     ".join(hints))


def recipe_ref(recipe: Any) -> str:
    """How a command names the recipe: its name when it comes from a manifests folder, else its path."""
    from pathlib import Path

    origin = Path(recipe.origin)
    return recipe.name if origin.parent.name == "blends" else str(origin)


def _ceil_percent(over: list[Loss]) -> str:
    worst = max(x.percent for x in over)
    return f"{min(100, int(worst) + 1)}"


def _what_to_fetch(an: "Analysis", in_report: bool = False) -> tuple[list[tuple[str, int]], list[str]]:
    """The folders with missing images (most first), and what brings them: a fetch of the datasets
    whose folders are not in the store, a layout build when the store has images the view the
    blend reads lacks (fetched after the view was built)."""
    r = an.resolved
    folders = sorted(((f, st.missing + st.corrupt) for f, st in an.folders.items() if st.missing + st.corrupt),
                     key=lambda x: (-x[1], x[0]))
    root = r.root
    fetch: list[str] = []
    rebuild = lost = unknown = False
    missing_in = _group(an.missing.to_pylist())
    for folder, _ in folders:
        entry = _layout_entry(r.layout, folder) if root is not None and r.image_root.origin != "--image-root" else None
        if entry is None or entry.dataset is None:
            unknown = True
            continue
        store = root.store_path(_store_folder(r.layout, entry, folder))
        names = _listing(store)
        if not names and not _has_files(root.store_path(entry.store)):
            if entry.dataset not in fetch:
                fetch.append(entry.dataset)
        elif names & missing_in.get(folder, set()):
            rebuild = True
        else:
            lost = True
    order = {e.dataset: i for i, e in reversed(list(enumerate(r.layout.entries)))}
    fetch.sort(key=lambda d: order.get(d, len(order)))
    where = f" --root {root.path}" if root is not None else ""
    out = []
    if fetch:
        out.append(f"fetch the images: vlmdata fetch {' '.join(fetch)} --layout {r.layout.name}{where}")
    if rebuild:
        out.append(f"the store has images the {r.layout.name} view lacks (fetched after the view was built): "
                   f"vlmdata layout build --layout {r.layout.name}{where}")
    if lost:
        out.append("some images are in no fetched file (dead URLs, or a dataset fetched in part): "
                   + ("the examples above are some" if in_report else f"`vlmdata report {recipe_ref(r.recipe)}` lists them")
                   + "; `vlmdata status` shows what is partial or damaged")
    if unknown:
        out.append(f"some images are not under the image root {r.image_root.path}: "
                   + ("the examples above are some" if in_report else f"`vlmdata report {recipe_ref(r.recipe)}` lists them")
                   + "; pass the right --image-root")
    return folders, out


def _group(paths: list[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for p in paths:
        folder, _, name = p.rpartition("/")
        out.setdefault(folder or ".", set()).add(name)
    return out


def _store_folder(layout: Any, entry: Any, folder: str) -> str:
    """Where ``folder`` (relative to the image root, inside ``entry``) lies in the store."""
    path = posixpath.normpath(posixpath.join(layout.image_folder, folder or "."))
    rest = path[len(entry.path):].lstrip("/")
    return posixpath.join(entry.store, rest) if rest else entry.store


def _listing(folder: Any) -> set[str]:
    try:
        return {e.name for e in os.scandir(folder) if e.is_file()}
    except OSError:
        return set()


def _layout_entry(layout: Any, folder: str) -> Any:
    """The layout entry whose folder holds ``folder`` (a folder relative to the image root)."""
    path = posixpath.normpath(posixpath.join(layout.image_folder, folder or "."))
    best = None
    for e in layout.entries:
        if e.kind == "dir" and (path == e.path or path.startswith(e.path + "/")):
            if best is None or len(e.path) > len(best.path):
                best = e
    return best


def _has_files(folder: Any) -> bool:
    try:
        return folder.is_dir() and any(True for _ in folder.iterdir())
    except OSError:
        return False
