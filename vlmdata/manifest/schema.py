"""The manifest schema: datasets, layouts and blend recipes, parsed strictly from TOML.

The format is documented key by key in docs/manifests.md. Facts nobody published are written
"unknown" in the TOML and become ``None`` here; code treats ``None`` as "check against the lock
file, or record the first verified value there".

Why one file of ~400 lines: each class sits beside the parser that fills it, one pair per
section of docs/manifests.md, so the format is read in one place and checked against the docs.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import msgspec

from vlmdata.manifest.reader import Table, check_relpath

PLACE_KINDS = ("extract", "file", "images", "repo")
ARCHIVE_FORMATS = ("auto", "zip", "tar", "tar.gz", "split-zip")
LAYOUT_ENTRY_KINDS = ("dir", "file", "mkdir")


class Source(msgspec.Struct, frozen=True):
    """One place a file can come from. Sources of a file are tried in order."""

    kind: str
    url: str | None = None  # http; urllist: where the list itself can be downloaded
    repo_type: str | None = None  # hf
    repo_id: str | None = None  # hf
    revision: str | None = None  # hf: a commit sha where known, else a branch
    path: str | None = None  # hf: file in the repo; urllist/linkfile: list file under the root; manual: what to save where
    list_format: str | None = None  # urllist: "json-dict" (OCR-VQA) or "tsv"
    url_key: str | None = None  # urllist: the field holding each image URL
    name_column: str | None = None  # linkfile: column with the file name
    url_column: str | None = None  # linkfile: column with the URL
    include: tuple[str, ...] = ()  # hfrepo: globs of the repo's files to fetch (empty: all)
    exclude: tuple[str, ...] = ()  # hfrepo: globs of files to leave out
    note: str | None = None

    # how each kind is described, planned and fetched: vlmdata.sources (one module per kind)


class Placement(msgspec.Struct, frozen=True):
    """Where a file's content lands in the store (relative to the root)."""

    kind: str  # extract | file | images | repo (a Hub repo's files at their paths under `to`)
    to: str
    inner: str | None = None  # extract: the archive's top folder; "" = none; None = unknown
    format: str = "auto"  # extract
    flatten: bool = False  # extract: drop member folders (ALLaVA's `unzip -j`)
    count: int | None = None  # files expected after placement (None = unknown)
    unpacked_size: int | None = None  # bytes after unpacking, approximate (None = use the archive size)
    ext: str | None = None  # images: force this extension (OCR-VQA: jpg)
    include: tuple[str, ...] = ()  # extract: keep only members matching these globs (SAM: *.jpg)


class Part(msgspec.Struct, frozen=True):
    """A piece of a file published split in several parts (joined by plain concatenation)."""

    name: str
    size: int | None
    size_approx: int | None
    sha256: str | None
    sources: tuple[Source, ...]


class FileSpec(msgspec.Struct, frozen=True):
    """One published file of a dataset."""

    dataset: str
    name: str
    size: int | None  # exact bytes, None = unknown
    size_approx: int | None  # rounded publisher figure in bytes, for plans only
    sha256: str | None
    md5: str | None
    optional: bool
    description: str | None
    sources: tuple[Source, ...]
    parts: tuple[Part, ...]
    place: Placement

    @property
    def key(self) -> str:
        """The name used in the journal and the lock file: ``dataset:file``."""
        return f"{self.dataset}:{self.name}"

    @property
    def download_bytes(self) -> int | None:
        """Exact size if known, else the approximate one, else None."""
        if self.parts:
            sizes = [p.size if p.size is not None else p.size_approx for p in self.parts]
            return None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[arg-type]
        return self.size if self.size is not None else self.size_approx

    @property
    def size_is_exact(self) -> bool:
        if self.parts:
            return all(p.size is not None for p in self.parts)
        return self.size is not None


class Dataset(msgspec.Struct, frozen=True):
    name: str
    title: str
    license: str
    homepage: str | None
    description: str | None
    notes: tuple[str, ...]
    references: tuple[str, ...]
    files: tuple[FileSpec, ...]
    origin: Path  # the TOML it came from

    def file(self, name: str) -> FileSpec | None:
        return next((f for f in self.files if f.name == name), None)

    @property
    def default_files(self) -> tuple[FileSpec, ...]:
        return tuple(f for f in self.files if not f.optional)


class LayoutEntry(msgspec.Struct, frozen=True):
    path: str  # inside the layout
    store: str  # inside the store (the root)
    dataset: str | None  # None only for kind "mkdir"
    kind: str  # dir | file | mkdir (an empty folder the tool expects, e.g. an output folder)
    count: int | None
    optional: bool


class Layout(msgspec.Struct, frozen=True):
    name: str
    title: str
    description: str | None
    references: tuple[str, ...]
    image_folder: str  # what to pass as --image_folder, relative to the layout's folder
    entries: tuple[LayoutEntry, ...]
    origin: Path


class BlendEntry(msgspec.Struct, frozen=True):
    """One input of a recipe: a JSON/JSONL file and how to sample it."""

    name: str  # goes into the `source` column
    dataset: str | None  # with `file`: a file of a dataset manifest
    file: str | None
    path: str | None  # or a path (relative to the root, or absolute)
    image_prefix: str  # prepended to each record's image paths to make them relative to the image root
    sample: str  # all | first:N | random:N | a fraction like 0.25
    weight: float | None


class Blend(msgspec.Struct, frozen=True):
    name: str
    title: str
    stage: str | None
    description: str | None
    references: tuple[str, ...]
    layout: str
    seed: int
    entries: tuple[BlendEntry, ...]
    origin: Path = Path(".")


# ---------------------------------------------------------------- parsing


# One parser per source kind: the kind's schema. What a kind means to plan/fetch/info is in vlmdata.sources.


def _http_source(t: Table) -> Source:
    note = t.str("note", None)
    url = t.str("url")
    if not url.startswith(("http://", "https://")):
        raise t.fail("url", f"must start with http:// or https://, got {url!r}")
    return Source("http", url=url, note=note)


def _hf_source(t: Table) -> Source:
    note = t.str("note", None)
    return Source("hf", repo_type=t.str("repo_type", choices=("dataset", "model")), repo_id=t.str("repo_id"),
                  revision=t.str("revision"), path=t.str("path"), note=note)


def _hfrepo_source(t: Table) -> Source:
    note = t.str("note", None)
    return Source("hfrepo", repo_type=t.str("repo_type", choices=("dataset", "model")), repo_id=t.str("repo_id"),
                  revision=t.str("revision"), include=tuple(t.str_list("include")),
                  exclude=tuple(t.str_list("exclude")), note=note)


def _urllist_source(t: Table) -> Source:
    note = t.str("note", None)
    path, url = t.str("path", None), t.str("url", None)
    if not path and not url:
        raise t.fail(None, "a urllist source needs `path` (under the root) or `url` (of the list)")
    return Source("urllist", path=path, url=url, list_format=t.str("list_format", choices=("json-dict", "tsv")),
                  url_key=t.str("url_key"), note=note)


def _linkfile_source(t: Table) -> Source:
    note = t.str("note", None)
    return Source("linkfile", path=check_relpath(t, "path", t.str("path")), name_column=t.str("name_column"),
                  url_column=t.str("url_column"), note=note)


def _manual_source(t: Table) -> Source:
    path = t.str("path", None)
    return Source("manual", url=t.str("url", None), note=t.str("note"),
                  path=check_relpath(t, "path", path) if path is not None else None)


_SOURCE_PARSERS: dict[str, Callable[[Table], Source]] = {
    "http": _http_source, "hf": _hf_source, "hfrepo": _hfrepo_source, "urllist": _urllist_source, "linkfile": _linkfile_source,
    "manual": _manual_source,
}
SOURCE_KINDS = tuple(_SOURCE_PARSERS)


def _source(t: Table) -> Source:
    src = _SOURCE_PARSERS[t.str("kind", choices=SOURCE_KINDS)](t)
    t.done()
    return src


def _placement(t: Table) -> Placement:
    kind = t.str("kind", choices=PLACE_KINDS)
    to = check_relpath(t, "to", t.str("to"))
    inner = None
    if kind == "extract":
        raw = t.str("inner")
        inner = None if raw == "unknown" else (check_relpath(t, "inner", raw) if raw else "")
    p = Placement(
        kind=kind,
        to=to,
        inner=inner,
        format=t.str("format", "auto", choices=ARCHIVE_FORMATS) if kind == "extract" else "auto",
        flatten=t.bool("flatten") if kind == "extract" else False,
        count=t.int_or_unknown("count", None),
        unpacked_size=t.int("unpacked_size", None) if kind != "file" else None,
        ext=t.str("ext", None) if kind == "images" else None,
        include=tuple(t.str_list("include")) if kind == "extract" else (),
    )
    t.done()
    return p


def _sources(t: Table, required: bool) -> tuple[Source, ...]:
    return tuple(t.parse_each("sources", _source, required=required))


def _part(t: Table) -> Part:
    part = Part(
        name=t.str("name"),
        size=t.int_or_unknown("size"),
        size_approx=t.int("size_approx", None),
        sha256=t.hexdigest("sha256", "sha256"),
        sources=_sources(t, True),
    )
    t.done()
    return part


def _file(t: Table, dataset: str) -> FileSpec:
    name = t.str("name")
    parts = tuple(t.parse_each("parts", _part, required=False))
    sources = _sources(t, required=not parts)
    if parts and sources:
        raise t.fail("sources", "a file has either `sources` or `parts`, not both")
    if any(p.name == name for p in parts):  # they would share one download and one lock entry
        raise t.fail("parts", f"a part is named like the file itself ({name!r}): name the whole differently")
    spec = FileSpec(
        dataset=dataset,
        name=name,
        size=t.int_or_unknown("size", "unknown" if parts else ...),
        size_approx=t.int("size_approx", None),
        sha256=t.hexdigest("sha256", "sha256", "unknown" if parts else ...),
        md5=t.hexdigest("md5", "md5", None),
        optional=t.bool("optional"),
        description=t.str("description", None),
        sources=sources,
        parts=parts,
        place=_placement(t.table("place")),  # type: ignore[arg-type]
    )
    if spec.place.format == "split-zip" and not parts:
        raise t.fail("place.format", "a split zip (x.z01 ... x.zip) is published in parts: list them under `parts`")
    kinds = {s.kind for s in sources}
    if (spec.place.kind == "repo" and (parts or kinds != {"hfrepo"})) or ("hfrepo" in kinds and spec.place.kind != "repo"):
        raise t.fail("place", "placement `repo` goes with `hfrepo` sources only, and `hfrepo` sources with "
                              "placement `repo`")
    t.done()
    return spec


def parse_dataset(t: Table) -> Dataset:
    name = t.str("name")
    files = tuple(t.parse_each("files", lambda x: _file(x, name)))
    seen: set[str] = set()
    for f in files:
        if f.name in seen:
            raise t.fail("files", f"file name {f.name!r} appears twice")
        seen.add(f.name)
    ds = Dataset(
        name=name,
        title=t.str("title"),
        license=t.str("license"),
        homepage=t.str("homepage", None),
        description=t.str("description", None),
        notes=tuple(t.str_list("notes")),
        references=tuple(t.str_list("references")),
        files=files,
        origin=t.file,
    )
    t.done()
    return ds


def _layout_entry(t: Table) -> LayoutEntry:
    path = check_relpath(t, "path", t.str("path"))
    kind = t.str("kind", "dir", choices=LAYOUT_ENTRY_KINDS)
    e = LayoutEntry(
        path=path,
        store=check_relpath(t, "store", t.str("store", path)),
        dataset=t.str("dataset") if kind != "mkdir" else t.str("dataset", None),
        kind=kind,
        count=t.int_or_unknown("count", None),
        optional=t.bool("optional"),
    )
    t.done()
    return e


def parse_layout(t: Table) -> Layout:
    lay = Layout(
        name=t.str("name"),
        title=t.str("title"),
        description=t.str("description", None),
        references=tuple(t.str_list("references")),
        image_folder=check_relpath(t, "image_folder", t.str("image_folder", ".")),
        entries=tuple(t.parse_each("entries", _layout_entry)),
        origin=t.file,
    )
    paths = [e.path for e in lay.entries]
    dup = {p for p in paths if paths.count(p) > 1}
    if dup:
        raise t.fail("entries", f"path {sorted(dup)[0]!r} appears twice")
    t.done()
    return lay


def _blend_entry(t: Table) -> BlendEntry:
    dataset, file, path = t.str("dataset", None), t.str("file", None), t.str("path", None)
    if path is None and (dataset is None or file is None):
        raise t.fail(None, "an entry needs `dataset` and `file`, or `path`")
    if path is not None and (dataset is not None or file is not None):
        raise t.fail("path", "give either `path` or `dataset` + `file`, not both")
    sample = t.str("sample", "all")
    _check_sample(t, sample)
    prefix = t.str("image_prefix", "")
    e = BlendEntry(
        name=t.str("name"),
        dataset=dataset,
        file=file,
        path=path,
        image_prefix=check_relpath(t, "image_prefix", prefix) if prefix else "",
        sample=sample,
        weight=t.float("weight", None),
    )
    if e.weight is not None and not 0 < e.weight < math.inf:  # (TOML has nan and inf: no row count comes of them)
        raise t.fail("weight", f"must be a finite number > 0, got {e.weight}")
    t.done()
    return e


def _check_sample(t: Table, sample: str) -> None:
    if sample == "all":
        return
    if sample.startswith(("first:", "random:")):
        n = sample.split(":", 1)[1]
        if n.isdigit() and int(n) > 0:
            return
    else:
        try:
            if 0.0 < float(sample) <= 1.0:
                return
        except ValueError:
            pass
    raise t.fail("sample", f"must be all, first:N, random:N or a fraction in (0, 1]; got {sample!r}")


def parse_blend(t: Table) -> Blend:
    b = Blend(
        name=t.str("name"),
        title=t.str("title"),
        stage=t.str("stage", None),
        description=t.str("description", None),
        references=tuple(t.str_list("references")),
        layout=t.str("layout"),
        seed=t.int("seed", 0),
        entries=tuple(t.parse_each("entries", _blend_entry)),
        origin=t.file,
    )
    names = [e.name for e in b.entries]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise t.fail("entries", f"entry name {sorted(dup)[0]!r} appears twice")
    t.done()
    return b
