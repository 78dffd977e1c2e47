"""`vlmdata list` and `vlmdata info`: what the catalog knows."""
from __future__ import annotations

from typing import Any, Literal, Optional

import msgspec.structs
from vlmdata.cli.echo import echo
from vlmdata.cli.params import Argument, Option
from vlmdata.cli.settings import Settings
from vlmdata.errors import UserError
from vlmdata.manifest import Dataset
from vlmdata.sources import describe
from vlmdata.units import human_bytes


def list_cmd(settings: Settings) -> None:
    """Every dataset, layout and blend recipe, one line each.

    Datasets are what `fetch` downloads, layouts the folder trees training scripts expect, blend recipes what `blend` turns into a training dataset.

    Examples:
      vlmdata list
      vlmdata list --json
      vlmdata list --manifests ./my-manifests     # your own datasets/recipes too
    """
    cat = settings.catalog
    if settings.json:
        settings.emit_json({
            "datasets": [{"name": d.name, "title": d.title, "files": len(d.files),
                          "download_bytes": _total(d)} for d in cat.datasets.values()],
            "layouts": [{"name": lay.name, "title": lay.title} for lay in cat.layouts.values()],
            "blends": [{"name": b.name, "title": b.title, "layout": b.layout} for b in cat.blends.values()],
        })
        return
    width = max([20, *(len(n) for n in (*cat.datasets, *cat.layouts, *cat.blends))])  # (one column for all three)
    echo("Datasets:")
    for d in sorted(cat.datasets.values(), key=lambda x: x.name):
        echo(f"  {d.name:<{width}} {human_bytes(_total(d), approx=True):>10}  {d.title}")
    echo("Layouts:")
    for lay in sorted(cat.layouts.values(), key=lambda x: x.name):
        echo(f"  {lay.name:<{width}} {lay.title}")
    echo("Blend recipes:")
    for b in sorted(cat.blends.values(), key=lambda x: x.name):
        echo(f"  {b.name:<{width}} {b.title}")


def _total(d: Dataset) -> int | None:
    sizes = [f.download_bytes for f in d.default_files]
    return None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[arg-type]


_KIND_OF = {"dataset": "dataset", "layout": "layout", "blend": "recipe"}  # (Catalog.find's words -> --kind's)


def info_cmd(name: str = Argument(..., help="Dataset, layout or blend recipe name."),
             kind: Optional[Literal["dataset", "layout", "recipe"]] = Option(
                 None, "--kind", help="Which one, for a name that is two things (sharegpt4v: a dataset and a "
                                      "layout; vflan: a dataset and a recipe). [default: dataset, then layout, then recipe]"),
             settings: Settings = None) -> None:
    """Everything known about one dataset, layout or blend recipe.

    For a dataset: files, sources, sizes, checksums, known problems, and where it lands in each layout; what the manifest leaves unknown is filled in from --root's vlmdata.lock once a fetch has pinned it (no request is sent).

    Examples:
      vlmdata info coco
      vlmdata info llava            # a layout
      vlmdata info llava-665k --json
      vlmdata info sharegpt4v --kind layout
    """
    cat = settings.catalog
    kind, found = _lookup(cat, name, kind)
    # (a name that is also another kind: said, or the other one passes unseen behind the one shown)
    tables = {"dataset": cat.datasets, "layout": cat.layouts, "recipe": cat.blends}
    also = [k for k, table in tables.items() if k != kind and found.name in table]
    for k in also:
        settings.info(f"note: {found.name} is also a {k}: `vlmdata info {found.name} --kind {k}`")
    extra: dict[str, Any] = {"also": also} if also else {}
    if kind == "dataset":
        _dataset_info(settings, found, extra)
    elif kind == "layout":
        lay = found
        if settings.json:
            settings.emit_json({"layout": lay.name, "title": lay.title, "image_folder": lay.image_folder,
                                "entries": [msgspec.structs.asdict(e) for e in lay.entries], **extra})
            return
        echo(f"{lay.name}: {lay.title}\n  --image_folder {lay.image_folder}")
        for e in lay.entries:
            cnt = f"{e.count} files" if e.count is not None else ""
            echo(f"  {e.path:<45} <- {e.dataset or '(created empty)'}:{e.store}  {cnt}{' (optional)' if e.optional else ''}")
    else:
        b = found
        if settings.json:
            settings.emit_json({"blend": b.name, "title": b.title, "stage": b.stage, "layout": b.layout,
                                "seed": b.seed, "description": b.description, "references": list(b.references),
                                "entries": [msgspec.structs.asdict(e) for e in b.entries], **extra})
            return
        echo(f"{b.name}: {b.title}\n  stage: {b.stage or '-'}  layout: {b.layout}  seed: {b.seed}")
        for e in b.entries:
            src = f"{e.dataset}:{e.file}" if e.dataset else e.path
            # (the image prefix is what a missing-image hunt needs: the paths are looked up under it)
            echo(f"  {e.name:<24} {src}  sample={e.sample}" + (f" weight={e.weight}" if e.weight else "")
                 + (f"  images under {e.image_prefix}" if e.image_prefix else ""))
        for line in ([b.description] if b.description else []) + [f"follows: {r}" for r in b.references]:
            echo(f"  {line}")


def _lookup(cat, name: str, kind: str | None) -> tuple[str, Any]:
    """(--kind's word, the entry) for ``name``: of that kind when ``kind`` is given, else the first
    kind that has it (a dataset before a layout before a recipe)."""
    if kind is None:
        kind_found, found = cat.find(name) or (None, None)
        if found is None:
            import difflib

            close = difflib.get_close_matches(name, [*cat.datasets, *cat.layouts, *cat.blends], n=3)
            raise UserError(f"unknown dataset, layout or blend recipe {name!r}",
                            hint=(f"did you mean {', '.join(close)}? (`vlmdata list` shows everything)" if close
                                  else "`vlmdata list` shows every name"))
        return _KIND_OF[kind_found], found
    get = {"dataset": cat.dataset, "layout": cat.layout, "recipe": cat.blend}[kind]
    try:
        return kind, get(name)
    except UserError as e:
        other = cat.find(name)
        if other is None:
            raise
        raise UserError(f"no {kind} named {name!r}: it is a {_KIND_OF[other[0]]}",
                        hint=f"`vlmdata info {other[1].name}` shows it") from e


def _dataset_info(settings: Settings, d: Dataset, extra: dict[str, Any]) -> None:
    from vlmdata.state import LockFile

    cat = settings.catalog
    lock = LockFile(settings.data_root.lock_path)
    pins = lock.entries()  # (what the manifest leaves unknown, as a first fetch measured it)
    where = {f.key: [f"{lay.name}:{e.path}" for lay in cat.layouts.values() for e in lay.entries
                     if e.dataset == d.name and (e.store == f.place.to or e.store.startswith(f.place.to + "/")
                                                 or f.place.to.startswith(e.store + "/"))]
             for f in d.files}
    if settings.json:
        settings.emit_json({
            "name": d.name, "title": d.title, "license": d.license, "homepage": d.homepage,
            "notes": list(d.notes), "references": list(d.references),
            "files": [{"name": f.name, "size": f.size, "size_approx": f.size_approx, "sha256": f.sha256,
                       "md5": f.md5, "optional": f.optional, "sources": [describe(s) for s in f.sources],
                       "parts": [p.name for p in f.parts], "place": msgspec.structs.asdict(f.place), "layouts": where[f.key],
                       "pinned": _pin_json(pins.get(f.key))}
                      for f in d.files],
            **extra,
        })
        return
    echo(f"{d.name}: {d.title}")
    echo(f"  license: {d.license}")
    if d.homepage:
        echo(f"  homepage: {d.homepage}")
    for f in d.files:
        pin = pins.get(f.key)
        size = human_bytes(f.size) + f" ({f.size:,} bytes)" if f.size is not None else human_bytes(f.size_approx, approx=True)
        if f.size is None and pin is not None:
            size = f"{human_bytes(pin.size)} ({pin.size:,} bytes, as pinned in vlmdata.lock)"
        echo(f"\n  {f.name}{'  [optional]' if f.optional else ''}")
        echo(f"    size:    {size}")
        if f.place.kind == "repo":  # (its pin is the commit and a digest of the file list, not one file's hash)
            echo("    sha256:  each file's: the hub's LFS hash, or pinned in vlmdata.lock (files kept in git)")
            if pin is not None:
                echo(f"    pinned:  commit {pin.revision}, file list digest {pin.sha256} ({lock.path})")
        elif f.sha256 is None and pin is not None:
            echo(f"    sha256:  {pin.sha256} (pinned in {lock.path}"
                 + (f" at commit {pin.revision})" if pin.revision else ")"))
        else:
            echo(f"    sha256:  {f.sha256 or 'unknown (pinned in vlmdata.lock by the first verified download)'}")
        if f.md5:
            echo(f"    md5:     {f.md5}")
        for i, s in enumerate(f.sources or [src for p in f.parts for src in p.sources]):
            echo(f"    source{i + 1}: {describe(s)}" + (f"  ({s.note})" if s.note else ""))
        for p in f.parts:
            echo(f"    part:    {p.name} {human_bytes(p.size if p.size is not None else p.size_approx, approx=p.size is None)}")
        inner = "" if f.place.kind != "extract" else f" (archive folder: {f.place.inner if f.place.inner is not None else 'unknown'})"
        echo(f"    lands:   {f.place.to}{inner}" + (f", {f.place.count:,} files" if f.place.count else ""))
        for w in where[f.key]:
            echo(f"    layout:  {w}")
    if d.notes:
        echo("\n  Known problems / notes:")
        for n in d.notes:
            echo(f"    - {n}")


def _pin_json(pin) -> dict | None:  # (a LockEntry, or None)
    return None if pin is None else {"sha256": pin.sha256, "size": pin.size, "revision": pin.revision,
                                     "source": pin.source}


COMMANDS = {"list": list_cmd, "info": info_cmd}  # (vlmdata.cli.app)
