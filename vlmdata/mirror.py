"""`vlmdata mirror build DIR`: what a root has fetched, laid out as a mirror (``DIR/host/path``).

On a machine that can reach the origins, ``vlmdata fetch ... --keep-archives`` then ``vlmdata
mirror build DIR`` gives a folder that ``--mirror DIR`` (or an HTTP server over it) serves to a
machine that cannot: every file sits where the ``--mirror`` rule looks for its first source
(``scheme://host/path`` -> ``DIR/host/path``; a hub file at ``DIR/huggingface.co/[datasets/]REPO/
resolve/REVISION/PATH``, a signed link without its query string, each image of a URL list at its
URL's path). Files are hard-linked where DIR is on the root's filesystem, copied (atomically)
otherwise; running it again after more fetches adds only what is new. A file already there is
kept when it is the root's own file (a hard link) or holds the right bytes: read and compared with
its sha256 where one is known (the manifest's or the root's pin), else with the root's copy; one
with other bytes (a damaged copy of the same size) is replaced. That read is the price of a rerun
over copies; it is rare, and a mirror is worth its bytes.

``DIR/vlmdata.lock`` holds the root's lock-file pins (written even when there are none, so the far
side's steps are always the same): copied into the far root, it makes every fetch there check the
bytes against the hashes this root verified. The links tables of ``linkfile`` sources
(SA-1B's signed links) are copied under ``DIR/linkfiles/`` since the far root needs them to name
its files, each link without its query string (the signature) and user:password.
``DIR/vlmdata-mirror.json`` lists what is in the mirror and what is not, and why.

Bytes come from the root, never from the network: a placed plain file (a JSON), an archive kept in
``ROOT/.vlmdata/downloads`` (fetch with ``--keep-archives``; unpacked archives cannot be rebuilt),
the placed images of a URL list. A file published in parts is not mirrored: its parts are removed
once joined.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from vlmdata import atomic
from vlmdata.digest_cache import sha256_of
from vlmdata.errors import UserError
from vlmdata.fetch.urllist import iter_entries
from vlmdata.fetch.urllist_client import target_name
from vlmdata.manifest import Catalog, FileSpec, Source
from vlmdata.net.urls import rewrite
from vlmdata.sources.hf import hub_url
from vlmdata.sources.linkfile import lookup_link
from vlmdata.state import Journal, LockFile, Root, is_placed
from vlmdata.state.root import LOCK_FILE

SUMMARY = "vlmdata-mirror.json"
LINKFILES = "linkfiles"
CHUNK = 1 << 20  # bytes read at a time to compare a mirror's file with the root's


@dataclass
class Mirrored:
    key: str  # dataset:file
    path: str  # in the mirror, relative to DIR (a URL list: the hosts its images are under)
    size: int  # bytes (a URL list: of its mirrored images together)
    how: str  # hardlink | copy | there (already in the mirror) | replaced (it was, wrong) | "N images" (a URL list)
    images: int | None = None  # a URL list: how many of its images are in the mirror


@dataclass
class Left:
    key: str
    reason: str


@dataclass
class MirrorResult:
    folder: Path
    files: list[Mirrored] = field(default_factory=list)
    images: int = 0  # per-image downloads of URL lists, mirrored
    left_out: list[Left] = field(default_factory=list)
    pins: int = 0  # hashes in DIR/vlmdata.lock (the root's pins)
    linkfiles: list[str] = field(default_factory=list)
    checked: int = 0  # files of any kind already in the mirror (not the root's own) read and found right
    replaced: int = 0  # files of any kind already in the mirror with other bytes or size, replaced

    def to_json(self) -> dict:
        files = [{k: v for k, v in asdict(m).items() if v is not None} for m in self.files]
        return {"folder": str(self.folder), "files": files, "images": self.images,
                "left_out": [asdict(x) for x in self.left_out], "pins": self.pins, "linkfiles": self.linkfiles,
                "checked": self.checked, "replaced": self.replaced}


def mirror_url(src: Source, root: Root, name: str) -> str | None:
    """The URL under which ``--mirror`` looks for the file ``name`` of this source, or None."""
    if src.kind == "http":
        return src.url
    if src.kind == "hf":
        return hub_url(src)
    if src.kind == "linkfile":
        table = root.store_path(src.path or "")
        try:
            return lookup_link(table, name, src.name_column or "", src.url_column or "") if table.is_file() else None
        except (OSError, ValueError, UnicodeDecodeError):
            return None
    return None


def _bytes_of(spec: FileSpec, root: Root) -> Path | None:
    """Where the root holds the file's published bytes: the kept download, or the placed plain file."""
    kept = root.download_path(spec.dataset, spec.name)
    if kept.is_file():
        return kept
    placed = root.store_path(spec.place.to)
    if spec.place.kind == "file" and placed.is_file():
        return placed
    return None


def _put(src: Path, dest: Path, sha256: str | None, result: MirrorResult) -> str:
    """``src`` at ``dest``: a hard link where possible, else an atomic copy; "there" if ``dest``
    already holds its bytes, "replaced" if it held others."""
    there = dest.is_file()
    if there and _holds(dest, src, sha256, result):
        return "there"
    how = atomic.link_or_copy(src, dest)
    if there:
        result.replaced += 1
        return "replaced"
    return how


def _holds(dest: Path, src: Path, sha256: str | None, result: MirrorResult) -> bool:
    """Whether the file at ``dest`` holds the bytes of ``src`` (whose sha256, when known, is ``sha256``)."""
    if dest.stat().st_size != src.stat().st_size:
        return False
    if os.path.samefile(dest, src):
        return True  # the root's own file (a hard link): the bytes fetch verified, nothing to read
    right = sha256_of(dest)[0] == sha256 if sha256 else _same_bytes(dest, src)
    result.checked += right
    return right


def _same_bytes(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(CHUNK), fb.read(CHUNK)
            if x != y:
                return False
            if not x:
                return True


def _rel(path: str, out: Path) -> str:
    return Path(path).relative_to(out).as_posix()


def placed_files(root: Root, catalog: Catalog) -> list[FileSpec]:
    """Every file of the catalog the root's journal says is placed (and still on disk)."""
    journal = Journal(root.state_dir).entries()
    return [f for d in catalog.datasets.values() for f in d.files if is_placed(root, journal, f)]


def build_mirror(root: Root, catalog: Catalog, out: Path, specs: list[FileSpec]) -> MirrorResult:
    """Lay out ``specs`` (files of the catalog) from ``root`` in the mirror folder ``out``."""
    out = Path(out).absolute()
    if out == root.path or root.path in out.parents:
        raise UserError(f"the mirror {out} is inside the root {root.path}", hint="build it in a folder of its own")
    _check_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    result = MirrorResult(out)
    journal = Journal(root.state_dir).entries()
    pins = LockFile(root.lock_path).entries()
    for spec in specs:
        if not is_placed(root, journal, spec):
            result.left_out.append(Left(spec.key, "not fetched into this root"))
        elif spec.parts:
            result.left_out.append(Left(spec.key, "published in parts, which fetch removes once joined"))
        elif spec.place.kind == "images":
            _url_list(spec, root, out, result)
        else:
            pin = pins.get(spec.key)
            _file(spec, root, out, result, spec.sha256 or (pin.sha256 if pin else None))
    atomic.write_json(out / LOCK_FILE, {"version": 1, "files": {k: v.to_json() for k, v in sorted(pins.items())}})
    result.pins = len(pins)
    atomic.write_json(out / SUMMARY, result.to_json())
    return result


def _check_folder(out: Path) -> None:
    """Refuse a mirror folder that is, or would be under, a file, before anything is written."""
    for p in (out, *out.parents):
        if p.exists() or p.is_symlink():
            if p.is_dir():
                return
            what = f"the mirror folder {p}" if p == out else f"{p}"
            after = "" if p == out else f", so the mirror folder {out} cannot be made"
            raise UserError(f"{what} is a file, not a folder{after}; nothing was written",
                            hint="give the mirror a folder: an existing one, or a new path (it is created)")


def _file(spec: FileSpec, root: Root, out: Path, result: MirrorResult, sha256: str | None) -> None:
    """The file's bytes at its first source's place; ``sha256``: theirs, where known."""
    url = next((u for s in spec.sources if (u := mirror_url(s, root, spec.name))), None)
    if url is None:
        result.left_out.append(Left(spec.key, "no source a mirror can serve (http, hf, or a links file in the root)"))
        return
    data = _bytes_of(spec, root)
    if data is None:
        result.left_out.append(Left(spec.key, "the archive was unpacked and deleted; download it again "
                                              f"and keep it: vlmdata fetch {spec.key} --refetch --keep-archives"))
        return
    dest = Path(rewrite(url, str(out)))
    how = _put(data, dest, sha256, result)
    result.files.append(Mirrored(spec.key, _rel(str(dest), out), dest.stat().st_size, how))
    for src in spec.sources:
        if src.kind == "linkfile" and src.path and root.store_path(src.path).is_file():
            if src.path not in result.linkfiles:
                _put_unsigned(root.store_path(src.path), out / LINKFILES / src.path, src.url_column or "")
                result.linkfiles.append(src.path)
            break


def _put_unsigned(table: Path, dest: Path, url_column: str) -> None:
    """A links table at ``dest`` with each link in ``url_column`` cut to ``scheme://host/path``: the far root
    needs it to name its files and the mirror rule drops the query anyway, while the signature in the query
    (and a user:password) is the licensee's credential, and a mirror is carried about and served to others."""
    with open(table, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    col = rows[0].index(url_column) if rows and url_column in rows[0] else None
    for row in rows[1:] if col is not None else ():
        if col < len(row) and row[col].strip():
            p = urlsplit(row[col].strip())
            row[col] = urlunsplit((p.scheme, p.netloc.rpartition("@")[2], p.path, "", ""))
    buf = io.StringIO()
    csv.writer(buf, delimiter="\t", lineterminator="\n").writerows(rows)  # (read back as lookup_link reads it)
    text = buf.getvalue()
    if not dest.is_file() or dest.read_text("utf-8") != text:
        atomic.write_text(dest, text)


def _url_list(spec: FileSpec, root: Root, out: Path, result: MirrorResult) -> None:
    """Each placed image of a URL list at its URL's place; the list itself too when it has a URL."""
    src = next((s for s in spec.sources if s.kind == "urllist"), None)
    listed = root.store_path(src.path) if src is not None and src.path else None
    if src is None or listed is None or not listed.is_file():
        result.left_out.append(Left(spec.key, "its URL list is not in the root"))
        return
    if src.url:
        _put(listed, Path(rewrite(src.url, str(out))), None, result)
    folder = root.store_path(spec.place.to)
    n, size, hosts = 0, 0, set()
    for rid, url in iter_entries(listed, src):
        name = target_name(rid, url, spec.place.ext)
        image = folder / name if name else None
        if image is not None and image.is_file() and image.stat().st_size > 0:
            try:
                dest = Path(rewrite(url, str(out)))
            except UserError as e:  # (a URL whose place would be outside the mirror: that image is left out)
                result.left_out.append(Left(f"{spec.key} {rid}", e.what))
                continue
            _put(image, dest, None, result)  # (no hash is published per image: compared with the root's)
            hosts.add(_rel(str(dest), out).split("/", 1)[0])
            n, size = n + 1, size + dest.stat().st_size
    result.images += n
    result.files.append(Mirrored(spec.key, ", ".join(sorted(hosts)) or "-", size, f"{n} images", images=n))
