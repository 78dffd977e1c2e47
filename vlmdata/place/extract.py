"""Safe, fast extraction of zip and tar archives into the store.

Everything is unpacked into a temporary folder beside the target (same filesystem), then moved
into place in one rename (or, when several archives fill one folder, one rename per file), so a
kill at any moment leaves no half-filled folder under the final name.

Zips: the central directory is read from a map of the archive (vlmdata.place.zipdir), every
member is checked (names, modes, links, duplicates, the declared sizes against the bomb limit)
before anything is written, and the members are then written by vlmdata.place.zip_workers, one
process per core. Tars (plain or compressed) are read in stream mode, so the same code serves a
file on disk and an HTTP response body that is never stored whole. The folder, not each file, is
fsynced.

Why one file of ~500 lines: it has one job (deciding what lands where, safely), and the zip and
tar readers and the final move share the member mapping, the bomb guard and the link checks;
writing zip members is its own module.
"""
from __future__ import annotations

import fnmatch
import mmap
import os
import posixpath
import shutil
import stat
import tarfile
import threading
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, BinaryIO, Iterable

from vlmdata import atomic
from vlmdata.errors import OperationError, UserError
from vlmdata.gcpause import gc_paused
from vlmdata.manifest import Placement
from vlmdata.place import zip_workers
from vlmdata.place.safety import BombGuard, check_link, refuse, safe_parts
from vlmdata.place.zipdir import BadZip, ZipEntry, entry_of, read_directory

CHUNK = 1 << 20  # bytes per read of a tar member or of a bzip2/lzma zip member
IGNORED_TOPS = ("__MACOSX",)  # macOS resource forks some zips carry
default_jobs = zip_workers.default_jobs  # (where it lived before the zip writers had their module)


# ----------------------------------------------------------------- format


def sniff_archive(path: Path, declared: str = "auto") -> tuple[str, list[str]]:
    """The archive's real format from its first bytes: zip, tar, tar.gz, tar.bz2 or tar.xz."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    fmt = sniff_archive_bytes(head)
    warnings: list[str] = []
    if fmt is None:
        if declared in ("tar",):  # an old v7 tar has no magic at all
            return "tar", warnings
        raise OperationError(f"{path.name} is neither a zip nor a tar archive (first bytes {head[:8]!r})",
                             where=str(path), hint="the download may be an HTML error page; fetch it again")
    if declared not in ("auto", fmt) and not (declared == "tar" and fmt.startswith("tar")):
        warnings.append(f"{path.name}: the manifest says format {declared!r} but the bytes are {fmt}; unpacked as {fmt}")
    return fmt, warnings


def sniff_archive_bytes(head: bytes) -> str | None:
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if head[:3] == b"BZh":
        return "tar.bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "tar.xz"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


# ----------------------------------------------------------------- mapping


@dataclass
class Mapper:
    """Turns member paths into paths under the target: inner folder, include, wanted, flatten."""

    prefix: list[str]
    flatten: bool
    include: tuple[str, ...]
    wanted: set[str] | None
    skipped_outside: int = 0
    skipped_filtered: int = 0
    examples_outside: list[str] = field(default_factory=list)

    def keep(self, parts: list[str]) -> bool:
        """Whether a file member passes include and wanted (on its name and base name)."""
        base = parts[-1]
        if self.wanted is not None and base not in self.wanted:
            self.skipped_filtered += 1
            return False
        if self.include:
            full = "/".join(parts)
            if not any(fnmatch.fnmatchcase(base, g) or fnmatch.fnmatchcase(full, g) for g in self.include):
                self.skipped_filtered += 1
                return False
        return True

    def map(self, parts: list[str]) -> list[str] | None:
        """Target path components, or None for a member outside the inner folder."""
        if self.flatten:
            return [parts[-1]]
        n = len(self.prefix)
        if parts[:n] != self.prefix or len(parts) == n:
            self.skipped_outside += 1
            if len(self.examples_outside) < 3:
                self.examples_outside.append("/".join(parts))
            return None
        return parts[n:]

    def warnings(self, label: str) -> list[str]:
        out = []
        if self.skipped_outside:
            out.append(f"{label}: {self.skipped_outside} member(s) outside the inner folder "
                       f"'{'/'.join(self.prefix)}' were not placed (e.g. {', '.join(self.examples_outside)})")
        return out


def resolve_inner(label: str, inner: str | None, file_parts: Iterable[list[str]]) -> tuple[list[str], list[str]]:
    """The folder prefix whose content lands in the target, and warnings saying how it was chosen.

    ``inner`` is the manifest's word: a folder name, "" (no top folder) or None (unknown).
    """
    tops: dict[str, bool] = {}  # top-level name -> is a folder
    has_prefix = False
    want = inner.split("/") if inner else []
    for parts in file_parts:
        if parts[0] in IGNORED_TOPS:
            continue
        tops[parts[0]] = tops.get(parts[0], False) or len(parts) > 1
        has_prefix = has_prefix or (bool(want) and len(parts) > len(want) and parts[:len(want)] == want)
    if inner == "":
        return [], []
    listing = ", ".join(sorted(tops)[:5]) + (", ..." if len(tops) > 5 else "")
    if inner is not None:
        if has_prefix:
            return want, []
        guess = _detect(tops)
        how = f"its top folder '{guess[0]}'" if guess else "its members as they are"
        return guess, [f"{label}: the manifest says the inner folder is '{inner}', but the archive's top entries "
                       f"are: {listing or '(none)'}; placed {how} instead (fix place.inner)"]
    guess = _detect(tops)
    if guess:
        return guess, [f"{label}: inner folder unknown; the archive has one top folder '{guess[0]}', "
                       f"its content was placed (set place.inner = \"{guess[0]}\" to say so)"]
    return [], [f"{label}: inner folder unknown; the archive has {len(tops)} top-level entries ({listing}), "
                f"placed as they are (set place.inner = \"\" to say so)"]


def _detect(tops: dict[str, bool]) -> list[str]:
    """The single top folder as a prefix, or [] when there is not exactly one."""
    if len(tops) == 1:
        (name, is_dir), = tops.items()
        if is_dir:
            return [name]
    return []


# ----------------------------------------------------------------- zip


_BAD_TYPES = frozenset({stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK})


@gc_paused()  # (tens of thousands of members' tuples and lists, no cycles: also in the forked writers)
def extract_zip(path: Path, out: Path, *, label: str, place: Placement, wanted: set[str] | None,
                guard: BombGuard, jobs: int | None = None, stop: threading.Event | None = None,
                open_zip: Callable[[Path], zipfile.ZipFile] | None = None) -> tuple[int, list[str]]:
    """Unpack a zip into ``out`` (which exists). Returns (files written, warnings). ``open_zip``: how
    to read its directory (a split zip's, vlmdata.place.splitzip); members are read from ``path``.

    Every check runs on the whole directory before the first member is written; the members are
    then written by vlmdata.place.zip_workers (one process per core)."""
    entries = _zip_entries(path, label, open_zip)
    guard.check_declared(sum(e.usize for e in entries), len(entries))
    files: list[tuple[ZipEntry, list[str]]] = []
    links: list[tuple[ZipEntry, list[str]]] = []
    for e in entries:
        parts = safe_parts(label, e.name)
        mode = e.mode
        if stat.S_IFMT(mode) in _BAD_TYPES:
            raise refuse(label, e.name, "device file, fifo or socket")
        if e.flags & 0x1:
            raise refuse(label, e.name, "encrypted member", hint="vlmdata cannot unpack encrypted zips")
        if not parts or e.is_dir() or stat.S_ISDIR(mode):
            continue
        (links if stat.S_ISLNK(mode) else files).append((e, parts))
    prefix, warnings = resolve_inner(label, place.inner, (p for _, p in files + links))
    mapper = Mapper(prefix, place.flatten, place.include, wanted)
    macos = 0
    dups: list[str] = []
    items: dict[str, ZipEntry] = {}
    for e, parts in files:
        if parts[0] in IGNORED_TOPS:
            macos += 1
            continue
        dest = mapper.map(parts)
        if dest is None or not mapper.keep(parts):
            continue
        key = "/".join(dest)
        if key in items:
            dups.append(key)
        items[key] = e
    link_items = _zip_links(path, label, links, prefix, mapper, warnings, dups)
    folders = _zip_folders(label, items, link_items)
    warnings += mapper.warnings(label) + _dup_warning(label, dups)
    if macos:
        warnings.append(f"{label}: skipped {macos} macOS resource-fork member(s) (__MACOSX/)")
    for d in sorted(folders):
        os.makedirs(out / d, exist_ok=True)
    fast = [zip_workers.Member(e.name, k, e.offset, e.csize, e.usize, e.crc, e.method) for k, e in items.items()
            if e.method in (zip_workers.STORED, zip_workers.DEFLATED)]
    fast.sort(key=lambda m: m.offset)
    zip_workers.write_members(path, out, label, fast, guard, jobs or zip_workers.default_jobs(), stop)
    slow = {k: e for k, e in items.items() if e.method not in (zip_workers.STORED, zip_workers.DEFLATED)}
    if slow:
        _extract_slow(path, open_zip, out, label, slow, guard)
    for dest, (value, _member) in link_items.items():
        os.symlink(value, out / dest)
    return len(items) + len(link_items), warnings


def _zip_entries(path: Path, label: str, open_zip: Callable[[Path], zipfile.ZipFile] | None) -> list[ZipEntry]:
    """The central directory: read from a map of the file, or through ``open_zip``'s ZipFile."""
    try:
        if open_zip is not None:
            with open_zip(path) as zf:
                return [entry_of(i) for i in zf.infolist()]
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise BadZip("File is not a zip file")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return read_directory(mapped)
    except (BadZip, zipfile.BadZipFile, UnicodeDecodeError, OSError) as e:
        raise OperationError(f"{label} is not a readable zip: {e}", where=str(path),
                             hint="the download is probably damaged; fetch it again") from e


def _zip_links(path: Path, label: str, links: list[tuple[ZipEntry, list[str]]], prefix: list[str], mapper: Mapper,
               warnings: list[str], dups: list[str]) -> dict[str, tuple[str, str]]:
    """Link path -> (relative link value, member name); the last of several links at one path wins, as for files."""
    if not links:
        return {}
    out: dict[str, tuple[str, str]] = {}
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        src = memoryview(mapped)
        try:
            for e, parts in links:
                if e.usize > 4096 or e.method not in (zip_workers.STORED, zip_workers.DEFLATED):
                    raise refuse(label, e.name, "symlink with an implausibly long target")
                m = zip_workers.Member(e.name, "", e.offset, e.csize, e.usize, e.crc, e.method)
                target = zip_workers.member_bytes(src, m, label).decode("utf-8", "surrogateescape")
                tparts = check_link(label, e.name, target, hard=False)
                dest = mapper.map(parts)
                if dest is None or not mapper.keep(parts):
                    continue
                lv = _link_value(label, e.name, dest, tparts, prefix, mapper.flatten, warnings)
                if lv is not None:
                    if lv[0] in out:
                        dups.append(lv[0])
                    out[lv[0]] = (lv[1], e.name)
        finally:
            src.release()
    return out


def _zip_folders(label: str, files: dict[str, ZipEntry], links: dict[str, tuple[str, str]]) -> set[str]:
    """The folders the members go into (made with their parents). A path that is both a file (or link) and
    such a folder, or both a file and a link, is refused: unpacked, one would fail on the other (or a write
    go through a link)."""
    parents = {k.rpartition("/")[0] for k in files} | {k.rpartition("/")[0] for k in links}
    parents.discard("")
    folders: set[str] = set()
    for d in parents:
        while d and d not in folders:
            folders.add(d)
            d = d.rpartition("/")[0]
    for key in folders:
        member = files[key].name if key in files else links[key][1] if key in links else None
        if member is not None:
            raise refuse(label, member, f"'{key}' is a file or link here and the folder of other members")
    for key, (_value, member) in links.items():
        if key in files:
            raise refuse(label, member, f"a symlink and a file are both placed at '{key}'")
    return parents


def _link_value(label: str, member: str, dest: list[str], tparts: list[str], prefix: list[str], flatten: bool,
                warnings: list[str]) -> tuple[str, str] | None:
    """(link path, relative link value) in target coordinates, or None when it cannot be kept."""
    if flatten:
        warnings.append(f"{label}: symlink {member} not placed (flatten drops folders, its target would dangle)")
        return None
    n = len(prefix)
    if tparts[:n] != prefix:
        raise refuse(label, member, f"symlink pointing outside the target folder ('{'/'.join(tparts)}')")
    rel_target = "/".join(tparts[n:]) or "."
    return "/".join(dest), posixpath.relpath(rel_target, posixpath.dirname("/".join(dest)) or ".")


def _dup_warning(label: str, dups: list[str]) -> list[str]:
    if not dups:
        return []
    return [f"{label}: {len(dups)} name(s) appear more than once (e.g. {', '.join(dups[:3])}); the last copy was kept"]


def _extract_slow(path: Path, open_zip: Callable[[Path], zipfile.ZipFile] | None, out: Path, label: str,
                  items: dict[str, ZipEntry], guard: BombGuard) -> None:
    """bzip2 / lzma members, through zipfile (which checks their CRC), in this process."""
    with (open_zip or zipfile.ZipFile)(path) as zf:
        infos = {i.header_offset: i for i in zf.infolist()}
        for dest, e in items.items():
            try:
                with zf.open(infos[e.offset]) as src, open(out / dest, "wb") as dst:
                    while chunk := src.read(CHUNK):
                        guard.add(len(chunk), e.name)
                        dst.write(chunk)
            except (zipfile.BadZipFile, NotImplementedError, EOFError, zlib.error) as err:
                raise OperationError(f"{label}: member {e.name!r} cannot be unpacked: {err}",
                                     hint="the zip is damaged or uses an unsupported compression; fetch it again") from err


# ----------------------------------------------------------------- tar


@dataclass
class TarOutcome:
    out: Path  # the folder whose content is the placement (inside the temp folder)
    files: int
    warnings: list[str]


def extract_tar(stream: BinaryIO, work: Path, *, label: str, place: Placement, wanted: set[str] | None,
                guard: BombGuard) -> TarOutcome:
    """Unpack a tar (any compression) read strictly sequentially from ``stream`` into ``work``.

    Members keep their full paths under ``work/raw`` while streaming; once the whole member list
    is known the inner folder is resolved and its folder is what gets placed.
    """
    raw = work / "raw"
    raw.mkdir()
    flatten = place.flatten
    mapper = Mapper([], flatten, place.include, wanted)
    seen_parts: list[list[str]] = []
    written: set[str] = set()
    symlinks: dict[str, tuple[list[str], list[str]]] = {}  # made last (nothing is written through one): key -> parts
    warnings: list[str] = []
    made_dirs: set[str] = set()
    dups: list[str] = []
    macos = 0
    try:
        tf = tarfile.open(fileobj=stream, mode="r|*")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise OperationError(f"{label} is not a readable tar: {e}", hint="the download is probably damaged; fetch it again") from e
    try:
        for ti in tf:
            guard.member_seen()
            parts = safe_parts(label, ti.name)
            if ti.isdir() or not parts:
                continue
            if ti.ischr() or ti.isblk() or ti.isfifo() or not (ti.isfile() or ti.issym() or ti.islnk()):
                raise refuse(label, ti.name, "device file, fifo or other special member")
            if ti.issym() or ti.islnk():
                tparts = check_link(label, ti.name, ti.linkname, hard=ti.islnk())
            if parts[0] in IGNORED_TOPS:
                macos += 1
                continue
            seen_parts.append(parts)
            if not mapper.keep(parts):
                continue
            dest = [parts[-1]] if flatten else parts
            key = "/".join(dest)
            _ensure_parent(raw, key, made_dirs, label, ti.name, () if flatten else symlinks)
            if not flatten and (key in made_dirs or key in (written if ti.issym() else symlinks)):
                # (unpacked, one would fail on the other, or a later member be written through the link)
                before = "folder" if key in made_dirs else "file" if ti.issym() else "symlink"
                raise refuse(label, ti.name, f"'{key}' is placed twice, as a {before} and as a "
                                             f"{'symlink' if ti.issym() else 'file'}")
            target = raw / key
            if ti.issym():
                if key in symlinks:
                    dups.append(key)
                symlinks[key] = (parts, tparts)
                continue
            if target.exists() or target.is_symlink():
                if key in written:
                    dups.append(key)
                target.unlink()
            if ti.islnk():
                src = "/".join([tparts[-1]] if flatten else tparts)
                if src not in written:
                    warnings.append(f"{label}: hardlink {ti.name} not placed (its target {ti.linkname} was not kept)")
                    continue
                os.link(raw / src, target)
            else:
                _copy_member(tf, ti, target, label, guard)
            written.add(key)
    except tarfile.TarError as e:
        raise OperationError(f"{label}: the tar is damaged: {e}", hint="fetch it again") from e
    except (EOFError, zlib.error) as e:
        raise OperationError(f"{label}: the tar ends early or does not decompress: {e}", hint="fetch it again") from e
    finally:
        tf.close()
    if macos:
        warnings.append(f"{label}: skipped {macos} macOS resource-fork member(s) (__MACOSX/)")
    if flatten:
        prefix: list[str] = []
    else:
        prefix, w = resolve_inner(label, place.inner, seen_parts)
        warnings += w
    mapper.prefix = prefix
    kept = 0
    for key in written:
        if mapper.map(key.split("/")) is not None:
            kept += 1
    for parts, tparts in symlinks.values():
        dest = mapper.map(parts)
        if dest is None:
            continue
        lv = _link_value(label, "/".join(parts), dest, tparts, prefix, flatten, warnings)
        if lv is not None:
            os.symlink(lv[1], raw.joinpath(*prefix, *dest))
            kept += 1
    warnings += mapper.warnings(label) + _dup_warning(label, dups)
    out = raw.joinpath(*prefix)
    if not out.is_dir():
        out.mkdir(parents=True)
    return TarOutcome(out, kept, warnings)


def _ensure_parent(base: Path, key: str, made: set[str], label: str, member: str,
                   links: dict[str, object] | tuple = ()) -> None:
    """``key``'s folder under ``base``, made; refused when its path runs through a file or one of ``links``
    (the archive's symlinks, made only at the end)."""
    d = posixpath.dirname(key)
    if not d:
        return
    if d not in made:
        p = base / d
        try:
            if p.is_symlink() or (p.exists() and not p.is_dir()):
                raise FileExistsError(d)
            p.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise refuse(label, member, "a member path runs through a file of the archive") from None
        up = d
        while up and up not in made:  # (its parents too: a later member of one of their names is refused)
            made.add(up)
            up = posixpath.dirname(up)
    if links:
        while d:
            if d in links:
                raise refuse(label, member, f"a member path runs through the archive's symlink '{d}'")
            d = posixpath.dirname(d)


def _copy_member(tf: tarfile.TarFile, ti: tarfile.TarInfo, target: Path, label: str, guard: BombGuard) -> None:
    src = tf.extractfile(ti)
    if src is None:
        raise OperationError(f"{label}: member {ti.name!r} has no data")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        left = ti.size
        while left > 0:
            chunk = src.read(min(CHUNK, left))
            if not chunk:
                raise OperationError(f"{label}: member {ti.name!r} is cut short", hint="fetch the archive again")
            left -= len(chunk)
            guard.add(len(chunk), ti.name)
            atomic.write_all(fd, chunk)
    finally:
        os.close(fd)


# ----------------------------------------------------------------- into place


def move_into_place(out: Path, final: Path, *, merge: bool) -> None:
    """``out`` (a finished folder) becomes ``final``: one rename, or per-file renames when merging."""
    fsync_tree_dirs(out)
    if not merge:
        final.parent.mkdir(parents=True, exist_ok=True)
        atomic.replace_dir(out, final)
        return
    final.mkdir(parents=True, exist_ok=True)
    touched: set[Path] = {final}
    for dirpath, dirnames, filenames in os.walk(out):
        rel = os.path.relpath(dirpath, out)
        dest_dir = final if rel == "." else final / rel
        for d in list(dirnames):
            src = Path(dirpath) / d
            if src.is_symlink():  # os.walk lists links to folders here: move the link itself
                filenames.append(d)
                dirnames.remove(d)
                continue
            dd = dest_dir / d
            if dd.is_symlink() or (dd.exists() and not dd.is_dir()):
                raise UserError(f"cannot merge into {final}: {dd} exists and is not a folder",
                                hint="move it away, then run the fetch again")
            dd.mkdir(exist_ok=True)
            touched.add(dd)
        for f in filenames:
            dst = dest_dir / f
            if dst.is_dir() and not dst.is_symlink():
                raise UserError(f"cannot merge into {final}: {dst} is a folder where a file goes",
                                hint="move it away, then run the fetch again")
            os.replace(Path(dirpath) / f, dst)
    for d in touched:
        atomic.fsync_dir(d)


def fsync_tree_dirs(top: Path) -> None:
    """fsync every folder of a freshly written tree (not each file: the folder rename is the unit)."""
    for dirpath, _dirs, _files in os.walk(top):
        atomic.fsync_dir(Path(dirpath))


def remove_tree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)


__all__ = ["extract_zip", "extract_tar", "move_into_place", "sniff_archive", "resolve_inner"]
