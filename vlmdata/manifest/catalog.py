"""The catalog: every dataset, layout and blend recipe, shipped and user-supplied.

Shipped manifests live in the repository's ``manifests/`` folder (or, for a non-editable install,
under ``<prefix>/share/vlmdata/manifests``). Extra folders given with ``--manifests`` /
``VLMDATA_MANIFESTS`` add to them; a manifest with the same name as a shipped one replaces it.
"""
from __future__ import annotations

import os
import posixpath
import sys
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import msgspec

from vlmdata.errors import UserError
from vlmdata.manifest.cache import cached
from vlmdata.manifest.clashes import check_placements
from vlmdata.manifest.reader import Table
from vlmdata.manifest.schema import Blend, Dataset, FileSpec, Layout, parse_blend, parse_dataset, parse_layout

T = TypeVar("T")
KINDS = ("datasets", "layouts", "blends")


def shipped_manifest_dir() -> Path:
    """The manifests that come with the package."""
    repo = Path(__file__).resolve().parents[2] / "manifests"
    if (repo / "datasets").is_dir():
        return repo
    return Path(sys.prefix) / "share" / "vlmdata" / "manifests"


def read_toml(path: Path) -> Table:
    # only when a manifest is parsed (not when the catalog comes from the cache); Python 3.10 has no
    # tomllib: tomli is the same parser (a dependency there only)
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib

    try:
        with open(path, "rb") as fh:
            return Table(tomllib.load(fh), path)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"not valid TOML: {e}", where=str(path), hint="fix the syntax; see docs/manifests.md") from e
    except OSError as e:
        raise UserError(f"cannot read manifest: {e.strerror}", where=str(path)) from e


class Catalog(msgspec.Struct):
    datasets: dict[str, Dataset] = msgspec.field(default_factory=dict)
    layouts: dict[str, Layout] = msgspec.field(default_factory=dict)
    blends: dict[str, Blend] = msgspec.field(default_factory=dict)

    # -- lookups with errors a user can act on
    def dataset(self, name: str) -> Dataset:
        found = _find(self.datasets, name)
        if found is not None:
            return found
        lay, blend = _find(self.layouts, name), _find(self.blends, name)
        if lay is not None:
            raise UserError(f"{name!r} is a layout, not a dataset: it arranges the datasets "
                            f"{', '.join(self.layout_datasets(lay))} into {lay.title}",
                            hint=f"fetch what it needs: `vlmdata fetch --layout {lay.name}`" + self._alike(name))
        if blend is not None:
            raise UserError(f"{name!r} is a blend recipe, not a dataset: `vlmdata blend {blend.name}` turns its JSONs "
                            f"into a dataset once they and their images are fetched",
                            hint=f"fetch what it needs: `vlmdata fetch --recipe {blend.name}` (`vlmdata plan --recipe "
                                 f"{blend.name}` shows the bill), then `vlmdata blend {blend.name}`")
        return _lookup(self.datasets, name, "dataset")

    def layout(self, name: str) -> Layout:
        return _lookup(self.layouts, name, "layout")

    def _alike(self, name: str) -> str:
        alike = [d for d in sorted(self.datasets) if d.startswith(_norm(name).split("_")[0])]
        return f" (datasets named like it: {', '.join(alike)})" if alike else ""

    @staticmethod
    def fetch_command(names: list[str], layout: str) -> str:
        return f"`vlmdata fetch {' '.join(names)} --layout {layout}`"

    def layout_datasets(self, lay: Layout) -> list[str]:
        """The datasets a layout needs (its entries that are not optional), in the layout's order."""
        return list(dict.fromkeys(e.dataset for e in lay.entries if e.dataset and not e.optional))

    def recipe_needs(self, b: Blend) -> list[str]:
        """What `fetch` needs for a recipe: its JSON files (DATASET:FILE) and the datasets whose
        folders hold its images (those under an entry's image_prefix, else every folder the layout
        needs). A dataset fetched whole covers its own default JSON."""
        lay = self.layouts[b.layout]
        files: list[str] = []
        datasets: list[str] = []
        for e in b.entries:
            if e.dataset and e.file:
                files.append(f"{e.dataset}:{e.file}")
            if e.image_prefix:
                prefix = posixpath.normpath(posixpath.join(lay.image_folder, e.image_prefix))
                datasets += [x.dataset for x in lay.entries if x.dataset and x.kind == "dir"
                             and (x.path == prefix or x.path.startswith(prefix + "/") or prefix.startswith(x.path + "/"))]
            else:
                datasets += [x.dataset for x in lay.entries if x.dataset and x.kind == "dir" and not x.optional]
        datasets = list(dict.fromkeys(datasets))
        defaults = {f.key for d in datasets for f in self.datasets[d].default_files}
        return list(dict.fromkeys(f for f in files if f not in defaults)) + datasets

    def blend(self, name_or_path: str) -> Blend:
        """A recipe by name, or a recipe TOML given as a path (``./my-mix.toml``)."""
        p = Path(name_or_path).expanduser()  # (~ as in every path: vlmdata.cli.common.expand_home)
        if name_or_path.endswith(".toml") or p.is_file():
            if not p.is_file():
                raise UserError(f"recipe file {name_or_path} does not exist", hint="give a recipe name from `vlmdata list` or a path to a .toml")
            b = parse_blend(read_toml(p))
            self._check_blend(b)
            return b
        blend = _find(self.blends, name_or_path)
        if blend is None and _find(self.datasets, name_or_path) is not None:
            raise UserError(f"{name_or_path!r} is a dataset, not a blend recipe",
                            hint="recipes that use it: " + (", ".join(self._recipes_using(name_or_path)) or "none")
                                 + " (`vlmdata list` shows every recipe)")
        if blend is None and _find(self.layouts, name_or_path) is not None:
            lay = _find(self.layouts, name_or_path)
            raise UserError(f"{name_or_path!r} is a layout, not a blend recipe",
                            hint="recipes on it: " + (", ".join(b.name for b in self.blends.values()
                                                                if b.layout == lay.name) or "none"))  # type: ignore[union-attr]
        return _lookup(self.blends, name_or_path, "blend recipe")

    def _recipes_using(self, dataset: str) -> list[str]:
        ds = _find(self.datasets, dataset)
        return sorted(b.name for b in self.blends.values()
                      if ds is not None and any(n.split(":")[0] == ds.name for n in self.recipe_needs(b)))

    def find(self, name: str) -> tuple[str, Dataset | Layout | Blend] | None:
        """("dataset" | "layout" | "blend", the entry) for a name, in that order of precedence."""
        for kind, table in (("dataset", self.datasets), ("layout", self.layouts), ("blend", self.blends)):
            if name in table:
                return kind, table[name]
        for kind, table in (("dataset", self.datasets), ("layout", self.layouts), ("blend", self.blends)):
            found = _find(table, name)
            if found is not None:
                return kind, found
        return None

    def select_files(self, selectors: Iterable[str]) -> list[FileSpec]:
        """``NAME`` (the dataset's default files) or ``NAME:FILE`` (one file, optional ones too)."""
        out: list[FileSpec] = []
        for sel in selectors:
            name, colon, fname = sel.partition(":")
            ds = self.dataset(name)
            if colon and not fname.strip():  # `coco:` is a file name left out, not "all of coco"
                raise UserError(f"{sel!r} names no file after the colon",
                                hint=f"give NAME for its default files or NAME:FILE; {name}'s files: "
                                     f"{', '.join(x.name for x in ds.files)}")
            if not fname:
                out.extend(ds.default_files)
                continue
            f = ds.file(fname)
            if f is None:
                raise UserError(
                    f"dataset {name!r} has no file {fname!r}",
                    hint=f"its files: {', '.join(x.name for x in ds.files)}",
                )
            out.append(f)
        seen: set[str] = set()
        return [f for f in out if not (f.key in seen or seen.add(f.key))]

    # -- cross-references
    def validate(self) -> None:
        check_placements(self.datasets.values())  # (after overrides: the datasets a fetch will use)
        for lay in self.layouts.values():
            for e in lay.entries:
                if e.dataset is None:
                    continue
                if e.dataset not in self.datasets:
                    raise UserError(f"layout entry {e.path!r} names unknown dataset {e.dataset!r}", where=str(lay.origin))
                ds = self.datasets[e.dataset]
                targets = [f.place.to for f in ds.files]
                if not any(e.store == t or e.store.startswith(t + "/") for t in targets):
                    raise UserError(
                        f"layout entry {e.path!r}: store path {e.store!r} is not placed by dataset {e.dataset!r}",
                        where=str(lay.origin),  # (the dataset may be another folder's, overriding the shipped one)
                        hint=f"that dataset, as {ds.origin} defines it, places: {', '.join(sorted(set(targets)))}")
        for b in self.blends.values():
            self._check_blend(b)

    def _check_blend(self, b: Blend) -> None:
        if b.layout not in self.layouts:
            raise UserError(f"recipe names unknown layout {b.layout!r}", where=str(b.origin),
                            hint=f"known layouts: {', '.join(sorted(self.layouts))}")
        for e in b.entries:
            if e.dataset is None:
                continue
            ds = self.datasets.get(e.dataset)
            if ds is None:
                raise UserError(f"entry {e.name!r} names unknown dataset {e.dataset!r}", where=str(b.origin))
            if ds.file(e.file or "") is None:
                raise UserError(f"entry {e.name!r}: dataset {e.dataset!r} has no file {e.file!r}", where=str(b.origin),
                                hint=f"its files: {', '.join(f.name for f in ds.files)}")


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _find(table: dict[str, T], name: str) -> T | None:
    """The entry called ``name``, or the one entry whose name differs only in case or '-' vs '_'
    (`COCO`, `ocr-vqa`)."""
    if name in table:
        return table[name]
    alike = [k for k in table if _norm(k) == _norm(name)]
    return table[alike[0]] if len(alike) == 1 else None


def _lookup(table: dict[str, T], name: str, what: str) -> T:
    found = _find(table, name)
    if found is not None:
        return found
    import difflib

    close = difflib.get_close_matches(name, table.keys(), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(table))}"
    raise UserError(f"unknown {what} {name!r}", hint=hint + " (`vlmdata list` shows everything)")


_PARSERS: dict[str, Callable[[Table], object]] = {
    "datasets": parse_dataset,
    "layouts": parse_layout,
    "blends": parse_blend,
}


def _load_dir(folder: Path, cat: Catalog) -> None:
    for kind in KINDS:
        sub = folder / kind
        if not sub.is_dir():
            continue
        target = getattr(cat, kind)
        for path in sorted(sub.glob("*.toml")):
            obj = _PARSERS[kind](read_toml(path))
            name: str = obj.name  # type: ignore[attr-defined]
            if name != path.stem:  # (one file per name: two files of a folder cannot claim one name unseen)
                raise UserError(f"name {name!r} is not the file's name {path.stem!r}", where=str(path),
                                hint=f"name the file after its name: rename it to {name}.toml, or set "
                                     f"name = \"{path.stem}\" (docs/manifests.md)")
            target[name] = obj


def manifest_dirs(extra: Iterable[Path | str] = ()) -> list[Path]:
    dirs = [shipped_manifest_dir()]
    for d in extra:
        p = Path(d)
        if p.is_file():
            raise UserError(f"--manifests {p} is a file; it takes a folder with datasets/, layouts/ or blends/ inside",
                            hint=f"put {p.name} into FOLDER/{'blends' if 'blend' in p.name else 'datasets'}/ (or layouts/) "
                                 "and pass --manifests FOLDER")
        if not p.is_dir():
            raise UserError(f"manifest folder {p} does not exist", hint="--manifests takes a folder with datasets/, layouts/ or blends/ inside")
        if not any((p / k).is_dir() for k in KINDS):
            raise UserError(f"manifest folder {p} has no datasets/, layouts/ or blends/ subfolder")
        dirs.append(p)
    return dirs


def load_catalog(extra: Iterable[Path | str] = ()) -> Catalog:
    """Shipped manifests, then each extra folder in order (later names override earlier).

    Served from vlmdata.manifest.cache while no manifest changed (parsing them all is most of
    the start-up of a command that has little to do)."""
    dirs = manifest_dirs(extra)

    def parse() -> Catalog:
        cat = Catalog()
        for d in dirs:
            _load_dir(d, cat)
        cat.validate()
        return cat

    return cached(dirs, parse, Catalog)


def extra_dirs_from_env(value: str | None) -> list[str]:
    """VLMDATA_MANIFESTS holds one or more folders separated by os.pathsep."""
    return [os.path.expanduser(v) for v in (value or "").split(os.pathsep) if v]  # (~ as --root takes it)
