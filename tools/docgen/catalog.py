"""docs/datasets.md and docs/recipes.md: every dataset and recipe of manifests/, as the loader reads them.

The facts (sizes, counts, sources, licences, known problems) are the manifests' own; "unknown" is
printed wherever a manifest says so. Which recipes use a dataset is worked out from the recipes:
the JSON files they read, and the folders of their layout their images can come from (``uses``).
"""
from __future__ import annotations

import posixpath
from urllib.parse import urlsplit

from vlmdata.manifest import Blend, Catalog, Dataset, FileSpec, Source
from vlmdata.sources import describe
from vlmdata.units import human_bytes

from tools.docgen.md import BANNER, cell, code, slug, table


def _size(f: FileSpec) -> str:
    if f.size_is_exact and f.download_bytes is not None:
        return human_bytes(f.download_bytes)
    return human_bytes(f.download_bytes, approx=True) if f.download_bytes is not None else "unknown"


def total_size(files: tuple[FileSpec, ...] | list[FileSpec]) -> str:
    sizes = [f.download_bytes for f in files]
    if not files:
        return "0 B"
    if any(s is None for s in sizes):
        known = sum(s for s in sizes if s is not None)
        return f"unknown (≥ {human_bytes(known, approx=True)})" if known else "unknown"
    exact = all(f.size_is_exact for f in files)
    return human_bytes(sum(sizes), approx=not exact)  # type: ignore[arg-type]


def total_count(files: tuple[FileSpec, ...]) -> str:
    counts = [f.place.count for f in files if f.place.kind != "file"]
    if not counts:
        return "-"
    if any(c is None for c in counts):
        return "unknown"
    return f"{sum(counts):,}"  # type: ignore[arg-type]


def _all_sources(f: FileSpec) -> list[Source]:
    return list(f.sources) + [s for p in f.parts for s in p.sources]


def source_summary(src: Source) -> str:
    """A source in a few words: the host of a URL, the repo of a hub file, what a person has to do."""
    if src.kind == "http" and src.url:
        return urlsplit(src.url).netloc
    if src.repo_id:
        return f"hub {src.repo_id}"
    return {"linkfile": "a links file", "urllist": "per-image URLs", "manual": "by hand"}.get(src.kind, src.kind)


def sources_cell(d: Dataset) -> str:
    seen: dict[str, None] = {}
    for f in d.files:
        for s in _all_sources(f):
            seen.setdefault(source_summary(s))
    return cell(", ".join(seen))


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def uses(catalog: Catalog) -> dict[str, list[str]]:
    """dataset -> the recipes that use it: for the JSON files they read, or for the images their records
    point at. The records are not read, so the images are bounded by the recipe's layout: the folders
    under an input's ``image_prefix``, or every required folder of the layout for an input without one."""
    out: dict[str, dict[str, None]] = {name: {} for name in catalog.datasets}
    for b in catalog.blends.values():
        layout = catalog.layouts.get(b.layout)
        folders = [e for e in layout.entries if e.kind == "dir"] if layout else []
        for e in b.entries:
            if e.dataset in out:
                out[e.dataset].setdefault(b.name)
            if e.image_prefix and layout:
                at = posixpath.normpath(posixpath.join(layout.image_folder, e.image_prefix))
                images = [x for x in folders if _overlaps(x.path, at)]
            else:
                images = [x for x in folders if not x.optional]
            for x in images:
                if x.dataset in out:
                    out[x.dataset].setdefault(b.name)
    return {k: sorted(v) for k, v in out.items()}


def layouts_of(catalog: Catalog, dataset: str) -> list[str]:
    return [lay.name for lay in catalog.layouts.values() if any(e.dataset == dataset for e in lay.entries)]


def datasets_page(catalog: Catalog) -> str:
    used = uses(catalog)
    rows = []
    for d in sorted(catalog.datasets.values(), key=lambda x: x.name):
        default = d.default_files
        optional = len(d.files) - len(default)
        files = f"{len(default)}" + (f" (+{optional} optional)" if optional else "")
        notes = f"[{len(d.notes)}](#{slug(d.name)})" if d.notes else "-"
        recipes = ", ".join(f"[{r}](recipes.md#{slug(r)})" for r in used[d.name]) or "-"
        rows.append([f"[`{d.name}`](#{slug(d.name)})", cell(d.title), files, cell(total_size(default)),
                     total_count(default), sources_cell(d), cell(d.license), notes, recipes])
    out = [BANNER.format(source="manifests/datasets/ (through vlmdata's manifest loader)"),
           "# Datasets\n",
           "Every dataset of `manifests/datasets/`. `vlmdata info NAME` prints the same facts; the format is in "
           "[manifests.md](manifests.md). Sizes are the default files' download (`~`: only a rounded figure is "
           "published); *placed* is the number of files they unpack to; \"unknown\" is what the manifest says "
           "where nobody published the fact (the first verified download is then pinned in `vlmdata.lock`). "
           "*Notes* are the known problems, listed under each dataset.\n",
           table(["dataset", "what", "files", "download", "placed", "sources", "license", "notes", "used by recipes"],
                 rows)]
    for d in sorted(catalog.datasets.values(), key=lambda x: x.name):
        out.append(dataset_section(catalog, d, used[d.name]))
    return "\n".join(out).rstrip() + "\n"


def dataset_section(catalog: Catalog, d: Dataset, recipes: list[str]) -> str:
    out = [f"## {d.name}\n", f"**{cell(d.title)}**. License: {cell(d.license)}."
           + (f" Homepage: <{d.homepage}>." if d.homepage else "") + "\n"]
    if d.description:
        out.append(cell(d.description) + "\n")
    rows = []
    for f in d.files:
        srcs = "; ".join(code(describe(s)) + (f" ({cell(s.note)})" if s.note else "") for s in _all_sources(f))
        if f.parts:
            srcs = f"{len(f.parts)} parts: " + srcs
        sha = "known" if f.sha256 else "unknown"
        count = "unknown" if f.place.count is None and f.place.kind != "file" else (
            f"{f.place.count:,}" if f.place.count is not None else "")
        rows.append([code(f.name) + (" (optional)" if f.optional else ""), _size(f), sha, srcs,
                     f"{f.place.kind} → {code(f.place.to)}", count])
    out.append(table(["file", "size", "sha256", "sources, in the order tried", "placed", "files"], rows))
    lays = layouts_of(catalog, d.name)
    out.append("Layouts: " + (", ".join(f"[{x}](layouts.md#{slug(x)})" for x in lays) or "none") + ". Recipes: "
               + (", ".join(f"[{r}](recipes.md#{slug(r)})" for r in recipes) or "none") + ".\n")
    if d.notes:
        out.append("Known problems and notes:\n\n" + "\n".join(f"- {cell(n)}" for n in d.notes) + "\n")
    if d.references:
        out.append("Sources of these facts: " + "; ".join(cell(r) for r in d.references) + ".\n")
    return "\n".join(out)


def _input(e) -> str:
    src = code(f"{e.dataset}:{e.file}") if e.dataset else code(e.path)
    extra = [f"sample {e.sample}"] if e.sample != "all" else []
    if e.weight is not None:
        extra.append(f"weight {e.weight:g}")
    if e.image_prefix:
        extra.append(f"images under {code(e.image_prefix)}")
    return f"{e.name}: {src}" + (f" ({', '.join(extra)})" if extra else "")


def recipes_page(catalog: Catalog) -> str:
    rows = []
    for b in sorted(catalog.blends.values(), key=lambda x: x.name):
        rows.append([f"[`{b.name}`](#{slug(b.name)})", cell(b.title), cell(b.stage or "-"),
                     f"[{b.layout}](layouts.md#{slug(b.layout)})", "<br>".join(_input(e) for e in b.entries)])
    out = [BANNER.format(source="manifests/blends/ (through vlmdata's manifest loader)"),
           "# Blend recipes\n",
           "Every recipe of `manifests/blends/`: `vlmdata blend NAME` turns its inputs into one checked Arrow "
           "dataset ([blend.md](blend.md)); `vlmdata info NAME` prints the same. Images are looked up in the "
           "recipe's layout.\n",
           table(["recipe", "what", "stage", "layout", "inputs"], rows)]
    for b in sorted(catalog.blends.values(), key=lambda x: x.name):
        out.append(recipe_section(b))
    return "\n".join(out).rstrip() + "\n"


def recipe_section(b: Blend) -> str:
    out = [f"## {b.name}\n", f"**{cell(b.title)}**. Stage: {cell(b.stage or '-')}. Layout: "
           f"[{b.layout}](layouts.md#{slug(b.layout)}). Seed: {b.seed}.\n"]
    if b.description:
        out.append(cell(b.description) + "\n")
    out.append("\n".join(f"- {_input(e)}" for e in b.entries) + "\n")
    if b.references:
        out.append("Follows: " + "; ".join(cell(r) for r in b.references) + ".\n")
    return "\n".join(out)
