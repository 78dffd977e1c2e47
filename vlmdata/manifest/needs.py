"""Which files of the catalog a layout or a blend recipe needs: the bill of `fetch --layout/--recipe`.

A layout entry is served by the files of its dataset whose placement lands on it: placed at the
entry's store path, inside it (``vg`` <- ``vg/VG_100K``), or around it (``coco/train2017`` inside a
folder an archive fills). Of those, the dataset's default files; only when none of them lands there,
its optional ones (an entry can exist for an optional file alone). Optional entries are skipped.
A file whose images come from a URL list brings the file that places the list.

A recipe needs its JSON files and the images its records use. The records are not read here (they
may not be fetched yet), so the images are bounded by the recipe's layout: the entries under an
input's ``image_prefix``, or, for an input without one, every required folder of the layout.
"""
from __future__ import annotations

import posixpath
from typing import Callable

from vlmdata.manifest.catalog import Catalog
from vlmdata.manifest.schema import Blend, FileSpec, Layout, LayoutEntry


def overlaps(a: str, b: str) -> bool:
    """``a`` and ``b`` are the same path, or one lies inside the other."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def entry_files(catalog: Catalog, entry: LayoutEntry) -> list[FileSpec]:
    """The files of ``entry``'s dataset that place something onto ``entry`` (see the module doc)."""
    if entry.dataset is None or entry.dataset not in catalog.datasets:
        return []
    files = [f for f in catalog.datasets[entry.dataset].files if overlaps(f.place.to, entry.store)]
    default = [f for f in files if not f.optional]
    return default or files


def _unique(specs: list[FileSpec]) -> list[FileSpec]:
    seen: set[str] = set()
    return [f for f in specs if not (f.key in seen or seen.add(f.key))]  # type: ignore[func-returns-value]


def with_lists(catalog: Catalog, specs: list[FileSpec]) -> list[FileSpec]:
    """``specs`` plus the files their per-image URL lists are read from (OCR-VQA's dataset.json),
    each before the first file that needs it."""
    out: list[FileSpec] = []
    for spec in specs:
        for src in spec.sources:
            if src.kind == "urllist" and src.path:
                out += [f for ds in catalog.datasets.values() for f in ds.files if f.place.to == src.path]
        out.append(spec)
    return _unique(out)


def layout_files(catalog: Catalog, layout: Layout, *, optional: bool = False) -> list[FileSpec]:
    """Every file the layout's required entries (and its optional ones, with ``optional``) need."""
    return with_lists(catalog, [f for e in layout.entries if optional or not e.optional for f in entry_files(catalog, e)])


def _under_prefix(layout: Layout, prefix: str) -> list[LayoutEntry]:
    """The layout's entries that hold images at ``prefix`` (relative to its image folder)."""
    at = posixpath.normpath(posixpath.join(layout.image_folder, prefix))
    return [e for e in layout.entries if e.kind == "dir" and overlaps(e.path, at)]


def recipe_files(catalog: Catalog, blend: Blend) -> list[FileSpec]:
    """The recipe's JSON files, then the files of the image folders its inputs use (module doc)."""
    layout = catalog.layout(blend.layout)
    out: list[FileSpec] = []
    entries: list[LayoutEntry] = []
    for e in blend.entries:
        if e.dataset is not None and e.file is not None:
            spec = catalog.dataset(e.dataset).file(e.file)
            if spec is not None:
                out.append(spec)
        if e.image_prefix:
            entries += _under_prefix(layout, e.image_prefix)
        else:
            entries += [x for x in layout.entries if x.kind == "dir" and not x.optional]
    for x in entries:
        out += entry_files(catalog, x)
    return with_lists(catalog, out)


def missing_entries(layout: Layout, exists: Callable[[LayoutEntry], bool]) -> list[LayoutEntry]:
    """The required entries (not ``mkdir``) for which ``exists`` says no."""
    return [e for e in layout.entries if not e.optional and e.kind != "mkdir" and not exists(e)]


def datasets_of(entries: list[LayoutEntry]) -> list[str]:
    """Their datasets, each once, in order."""
    return list(dict.fromkeys(e.dataset for e in entries if e.dataset))
