"""The demo's manifests, derived from the shipped ones so that they cannot drift from them.

For each file the demo generates, the shipped FileSpec is kept as it is (name, placement: target,
inner folder, format, include, flatten, extension; description) and only what the demo's small
files change is replaced: size, sha256 (and md5 where the shipped file has one), the file count,
no approximate or unpacked sizes, and the sources: a file whose shipped first http/hf source the
demo serves gets that one origin as an ``http`` source (the demo has no hub: the mirror serves the
hub's resolve/ path); files without one keep their shipped sources (linkfile, urllist, manual),
behind a demo stand-in URL where the demo provides one (``STAND_INS``). A demo dataset holds
only the demo's files, all of them fetched by default.

Layouts (``LAYOUTS``) are the shipped ones with the demo's file counts; entries of datasets the
demo does not have become optional.
"""
from __future__ import annotations

import json
from msgspec.structs import replace
from pathlib import Path
from typing import Any

from vlmdata.manifest import Catalog, Dataset, FileSpec, Layout, LayoutEntry, Placement, Source

LAYOUTS = ("llava", "llava-pretrain-case")
# Files whose shipped sources the demo cannot serve, and the demo URL that stands in for them.
STAND_INS = {"ocr_vqa:dataset.json": "https://ocr-vqa.github.io/demo/dataset.json"}


def origin_url(spec: FileSpec) -> str | None:
    """The URL the demo mirror serves ``spec`` under: its first http source, or its first hub file's
    resolve URL; else its stand-in; None for files reached through a links file or a URL list."""
    for src in spec.sources:
        if src.kind == "http":
            return src.url
        if src.kind == "hf":
            repo = f"datasets/{src.repo_id}" if src.repo_type == "dataset" else src.repo_id
            return f"https://huggingface.co/{repo}/resolve/{src.revision}/{src.path}"
    return STAND_INS.get(spec.key)


def demo_file(spec: FileSpec, *, size: int | None, sha256: str | None, md5: str | None, count: int | None) -> FileSpec:
    """``spec`` as the demo serves it (see the module doc for what changes)."""
    url = origin_url(spec)
    served = any(s.kind in ("http", "hf") for s in spec.sources)
    sources = (Source("http", url=url),) if served else (
        ((Source("http", url=url, note="demo stand-in"),) if url else ()) + spec.sources)
    place = replace(spec.place, count=count, unpacked_size=None)
    return replace(spec, size=size, size_approx=None, sha256=sha256, md5=md5 if spec.md5 else None, optional=False,
                   sources=sources, place=place)


def demo_layout(layout: Layout, counts: dict[str, int], datasets: set[str]) -> Layout:
    entries = []
    for e in layout.entries:
        if e.kind == "mkdir":
            entries.append(e)
        elif e.dataset not in datasets or (e.kind == "dir" and e.store not in counts):
            entries.append(replace(e, optional=True, count=None))
        else:
            entries.append(replace(e, count=counts.get(e.store) if e.kind == "dir" else None))
    return replace(layout, title=layout.title + " (demo counts)", entries=tuple(entries))


def write_manifests(folder: Path, shipped: Catalog, files: dict[str, FileSpec], counts: dict[str, int]) -> None:
    """Write ``folder/datasets/<name>.toml`` for the datasets of ``files`` and ``folder/layouts`` for LAYOUTS."""
    (folder / "datasets").mkdir(parents=True, exist_ok=True)
    (folder / "layouts").mkdir(parents=True, exist_ok=True)
    by_dataset: dict[str, list[FileSpec]] = {}
    for spec in files.values():
        by_dataset.setdefault(spec.dataset, []).append(spec)
    for name, specs in by_dataset.items():
        (folder / "datasets" / f"{name}.toml").write_text(_dataset_toml(shipped.datasets[name], specs), encoding="utf-8")
    for name in LAYOUTS:
        lay = demo_layout(shipped.layouts[name], counts, set(by_dataset))
        (folder / "layouts" / f"{name}.toml").write_text(_layout_toml(lay), encoding="utf-8")


# ---------------------------------------------------------------- TOML (the subset manifests use)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return json.dumps(str(v), ensure_ascii=False)  # a JSON string is a TOML basic string


def _inline(pairs: dict[str, Any]) -> str:
    return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in pairs.items()) + " }"


def _source(src: Source) -> str:
    fields = {k: getattr(src, k) for k in ("kind", "url", "repo_type", "repo_id", "revision", "path", "list_format",
                                            "url_key", "name_column", "url_column", "note")}
    return _inline({k: v for k, v in fields.items() if v is not None})


def _placement(p: Placement) -> str:
    out: dict[str, Any] = {"kind": p.kind}
    if p.kind == "extract":
        out["inner"] = "unknown" if p.inner is None else p.inner
        if p.format != "auto":
            out["format"] = p.format
        if p.flatten:
            out["flatten"] = True
        if p.include:
            out["include"] = list(p.include)
    if p.kind == "images" and p.ext is not None:
        out["ext"] = p.ext
    out["to"] = p.to
    if p.count is not None:
        out["count"] = p.count
    if p.unpacked_size is not None:
        out["unpacked_size"] = p.unpacked_size
    return _inline(out)


def _file_toml(f: FileSpec) -> str:
    lines = ["[[files]]", f"name = {_value(f.name)}", f"size = {_value(f.size if f.size is not None else 'unknown')}",
             f"sha256 = {_value(f.sha256 or 'unknown')}"]
    if f.md5:
        lines.append(f"md5 = {_value(f.md5)}")
    if f.optional:
        lines.append("optional = true")
    if f.description:
        lines.append(f"description = {_value(f.description)}")
    lines.append("sources = [\n" + "".join(f"    {_source(s)},\n" for s in f.sources) + "]")
    lines.append(f"place = {_placement(f.place)}")
    return "\n".join(lines) + "\n"


def _dataset_toml(shipped: Dataset, files: list[FileSpec]) -> str:
    head = (f"# Written by demo/manifests.py from {shipped.origin.name}: the shipped {shipped.name!r} with the demo\n"
            f"# mirror's small files (their sizes and sha256, served from the demo mirror).\n"
            f"name = {_value(shipped.name)}\ntitle = {_value(shipped.title + ' (demo)')}\n"
            'license = "demo data generated by vlmdata; no licence restrictions"\n'
            'description = "Small generated stand-in for the real dataset, shaped like it, for offline demos and tests."\n')
    return head + "\n" + "\n".join(_file_toml(f) for f in files)


def _entry_toml(e: LayoutEntry) -> str:
    lines = ["[[entries]]", f"path = {_value(e.path)}"]
    if e.store != e.path:
        lines.append(f"store = {_value(e.store)}")
    if e.dataset:
        lines.append(f"dataset = {_value(e.dataset)}")
    if e.kind != "dir":
        lines.append(f"kind = {_value(e.kind)}")
    if e.count is not None:
        lines.append(f"count = {e.count}")
    if e.optional:
        lines.append("optional = true")
    return "\n".join(lines) + "\n"


def _layout_toml(lay: Layout) -> str:
    head = (f"# Written by demo/manifests.py from {lay.origin.name}: the shipped {lay.name!r} layout with the demo's\n"
            f"# file counts; entries of datasets the demo does not have are optional.\n"
            f"name = {_value(lay.name)}\ntitle = {_value(lay.title)}\nimage_folder = {_value(lay.image_folder)}\n\n")
    return head + "\n".join(_entry_toml(e) for e in lay.entries)
