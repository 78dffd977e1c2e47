"""Safe, fast extraction of zip and tar archives into the store.

Everything is unpacked into a temporary folder beside the target (same filesystem), then moved
into place in one rename (or, when several archives fill one folder, one rename per file), so a
kill at any moment leaves no half-filled folder under the final name.

Zips are unpacked by our own reader: the central directory is parsed once (zipfile), then worker
threads take each member as a slice of one read-only map of the archive, inflate it with zlib in
one call (small members) or in chunks (large ones, output bounded by the declared size), and
create its file by name relative to an open folder (``dir_fd``), with plain ``os.write``; zlib
and the syscalls release the GIL. No read() call, copy or path walk per member beyond that. CRC
and size are checked for every member; the folder, not each file, is fsynced. Tars (plain or compressed) are read in stream mode, so the same
code serves a file on disk and an HTTP response body that is never stored whole.

Why one file of ~650 lines: it has one job (safe extraction), and the zip reader, the tar reader
and the final move share the member mapping, the bomb guard and the link checks; the
hostile-archive tests patch its internals (CHUNK, SMALL_MEMBER, _extract_member) in one place.
"""
from __future__ import annotations

import fnmatch
import mmap
import os
import posixpath
import shutil
import stat
import struct
import tarfile
import threading
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, BinaryIO, Iterable

from vlmdata import atomic
from vlmdata.errors import OperationError, UserError
from vlmdata.manifest import Placement
from vlmdata.place.safety import BombGuard, check_link, refuse, safe_parts

CHUNK = 1 << 20  # bytes of input per inflate call for large members, per read of a tar
SMALL_MEMBER = 8 << 20  # members up to this size (packed and unpacked) are inflated in one call
IGNORED_TOPS = ("__MACOSX",)  # macOS resource forks some zips carry


def default_jobs() -> int:
    """One thread per core this process may run on: the per-member Python work holds the GIL, so
    more threads than cores only fight over it (measured: 4 threads on 2 cores cost 3x the CPU)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


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


_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_BAD_MODES = (stat.S_ISCHR, stat.S_ISBLK, stat.S_ISFIFO, stat.S_ISSOCK)


@dataclass
class _ZipItem:
    info: zipfile.ZipInfo
    dest: str  # relative to the output folder


def extract_zip(path: Path, out: Path, *, label: str, place: Placement, wanted: set[str] | None,
                guard: BombGuard, jobs: int | None = None, stop: threading.Event | None = None,
                open_zip: Callable[[Path], zipfile.ZipFile] | None = None) -> tuple[int, list[str]]:
    """Unpack a zip into ``out`` (which exists). Returns (files written, warnings). ``open_zip``: how
    to read its directory (a split zip's, vlmdata.place.splitzip); members are read from ``path``."""
    try:
        zf = (open_zip or zipfile.ZipFile)(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise OperationError(f"{label} is not a readable zip: {e}", where=str(path),
                             hint="the download is probably damaged; fetch it again") from e
    with zf:
        infos = zf.infolist()
        guard.check_declared(sum(i.file_size for i in infos), len(infos))
        files: list[tuple[zipfile.ZipInfo, list[str]]] = []
        links: list[tuple[zipfile.ZipInfo, list[str]]] = []
        for info in infos:
            parts = safe_parts(label, info.filename)
            mode = info.external_attr >> 16 if info.create_system == 3 else 0
            if any(check(mode) for check in _BAD_MODES):
                raise refuse(label, info.filename, "device file, fifo or socket")
            if info.flag_bits & 0x1:
                raise refuse(label, info.filename, "encrypted member", hint="vlmdata cannot unpack encrypted zips")
            if not parts or info.is_dir() or stat.S_ISDIR(mode):
                continue
            (links if stat.S_ISLNK(mode) else files).append((info, parts))
        prefix, warnings = resolve_inner(label, place.inner, (p for _, p in files + links))
        mapper = Mapper(prefix, place.flatten, place.include, wanted)
        macos = 0
        dups: list[str] = []
        items: dict[str, _ZipItem] = {}
        for info, parts in files:
            if parts[0] in IGNORED_TOPS:
                macos += 1
                continue
            dest = mapper.map(parts)
            if dest is None or not mapper.keep(parts):
                continue
            key = "/".join(dest)
            if key in items:
                dups.append(key)
            items[key] = _ZipItem(info, key)
        link_items = _zip_links(zf, label, links, prefix, mapper, warnings)
        warnings += mapper.warnings(label) + _dup_warning(label, dups)
        if macos:
            warnings.append(f"{label}: skipped {macos} macOS resource-fork member(s) (__MACOSX/)")
        _make_dirs(out, list(items) + [d for d, _ in link_items])
        ordered = sorted(items.values(), key=lambda it: it.info.header_offset)
        _run_parallel(path, zf, out, label, ordered, guard, jobs or default_jobs(), stop or threading.Event())
        for dest, value in link_items:
            os.symlink(value, out / dest)
    return len(items) + len(link_items), warnings


def _zip_links(zf: zipfile.ZipFile, label: str, links, prefix: list[str], mapper: Mapper,
               warnings: list[str]) -> list[tuple[str, str]]:
    out = []
    for info, parts in links:
        if info.file_size > 4096:
            raise refuse(label, info.filename, "symlink with an implausibly long target")
        target = zf.read(info).decode("utf-8", "surrogateescape")
        tparts = check_link(label, info.filename, target, hard=False)
        dest = mapper.map(parts)
        if dest is None or not mapper.keep(parts):
            continue
        out.append(_link_value(label, info.filename, dest, tparts, prefix, mapper.flatten, warnings))
    return [x for x in out if x is not None]


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


def _make_dirs(out: Path, rels: Iterable[str]) -> None:
    dirs = {posixpath.dirname(r) for r in rels}
    dirs.discard("")
    for d in sorted(dirs):
        os.makedirs(out / d, exist_ok=True)


class _DirFds:
    """Open folders of the output tree, so members are created by name relative to their folder
    (the kernel walks one path component per file instead of the whole path)."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.fds: dict[str, int] = {}

    def fd(self, rel_dir: str) -> int:
        fd = self.fds.get(rel_dir)
        if fd is None:
            fd = os.open(os.path.join(self.out, rel_dir) if rel_dir else self.out,
                         os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
            self.fds[rel_dir] = fd
        return fd

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _run_parallel(path: Path, zf: zipfile.ZipFile, out: Path, label: str, items: list[_ZipItem],
                  guard: BombGuard, jobs: int, stop: threading.Event) -> None:
    if not items:
        return
    n_batches = min(len(items), jobs * 8)
    size = -(-len(items) // n_batches)
    batches = [items[i:i + size] for i in range(0, len(items), size)]
    outs = str(out)
    # The archive is read through one read-only map shared by the threads: a member is a slice of
    # it, handed to zlib without a read() call or a copy.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    src = memoryview(mapped)

    def work(batch: list[_ZipItem]) -> None:
        dirs = _DirFds(outs)
        try:
            for it in batch:
                if stop.is_set():
                    return
                _extract_member(src, zf, it, dirs, label, guard)
        except BaseException:
            stop.set()
            raise
        finally:
            dirs.close()

    try:
        if jobs <= 1 or len(batches) == 1:
            for b in batches:
                work(b)
            return
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="vlmdata-unzip") as ex:
            futures = [ex.submit(work, b) for b in batches]
            try:
                for f in futures:
                    f.result()
            finally:
                stop.set()
    finally:
        src.release()
        try:
            mapped.close()
        except BufferError:  # a slice still held by a traceback: the map goes when it does
            pass


def _write_all(fd: int, data: bytes | memoryview) -> None:
    n = os.write(fd, data)
    if n < len(data):
        view = memoryview(data)[n:]
        while view:
            view = view[os.write(fd, view):]


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


def _extract_member(src: memoryview, zf: zipfile.ZipFile, it: _ZipItem, dirs: _DirFds, label: str,
                    guard: BombGuard) -> None:
    """One member, read from the mapped archive ``src``, into its file (size and CRC checked)."""
    info = it.info
    name = info.filename
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return _extract_member_slow(zf, it, dirs.out, label, guard)
    off = info.header_offset
    if off + _LOCAL.size > len(src) or src[off:off + 4] != b"PK\x03\x04":
        raise OperationError(f"{label}: member {name!r} has no local header at offset {off}",
                             hint="the zip is damaged; fetch it again")
    fields = _LOCAL.unpack_from(src, off)
    pos = off + _LOCAL.size + fields[9] + fields[10]
    csize, usize = info.compress_size, info.file_size
    if pos + csize > len(src):
        raise OperationError(f"{label}: member {name!r} is cut short", hint="the zip is damaged; fetch it again")
    parent, _, base = it.dest.rpartition("/")
    dfd = os.open(base, _CREATE, 0o644, dir_fd=dirs.fd(parent))
    try:
        if info.compress_type == zipfile.ZIP_STORED:
            produced, crc = _stored(dfd, src[pos:pos + csize], usize, name, label, guard)
        elif csize <= SMALL_MEMBER and usize <= SMALL_MEMBER:
            produced, crc = _inflate_whole(dfd, src[pos:pos + csize], usize, name, label, guard)
        else:
            produced, crc = _inflate_chunks(dfd, src, pos, csize, usize, name, label, guard)
    finally:
        os.close(dfd)
    if produced != usize:
        raise OperationError(f"{label}: member {name!r} unpacked to {produced} bytes, its header says {usize}",
                             hint="the zip is damaged; fetch it again")
    if crc != info.CRC:
        raise OperationError(f"{label}: member {name!r} fails its CRC check", hint="the zip is damaged; fetch it again")


def _too_big(label: str, name: str, usize: int) -> UserError:
    return refuse(label, name, f"member unpacks past the {usize} bytes its header declares (an archive bomb?)")


def _stored(fd: int, data: memoryview, usize: int, name: str, label: str, guard: BombGuard) -> tuple[int, int]:
    if len(data) > usize:
        raise _too_big(label, name, usize)
    crc = 0
    for a in range(0, len(data), CHUNK):
        piece = data[a:a + CHUNK]
        guard.add(len(piece), name)
        crc = zlib.crc32(piece, crc)
        _write_all(fd, piece)
    return len(data), crc


def _inflate_whole(fd: int, data: memoryview, usize: int, name: str, label: str, guard: BombGuard) -> tuple[int, int]:
    """A small member in one call; at most ``usize + 1`` bytes are ever produced."""
    inflater = zlib.decompressobj(-15)
    try:
        out = inflater.decompress(data, usize + 1)
    except zlib.error as e:
        raise OperationError(f"{label}: member {name!r} does not inflate: {e}", hint="the zip is damaged; fetch it again") from e
    if len(out) > usize:
        raise _too_big(label, name, usize)
    if not inflater.eof:
        raise OperationError(f"{label}: member {name!r} unpacked to {len(out)} bytes, its header says {usize}",
                             hint="the zip is damaged; fetch it again")
    guard.add(len(out), name)
    if out:
        _write_all(fd, out)
    return len(out), zlib.crc32(out)


def _inflate_chunks(fd: int, src: memoryview, pos: int, csize: int, usize: int, name: str, label: str,
                    guard: BombGuard) -> tuple[int, int]:
    """A large member: CHUNK bytes of input at a time, output bounded by what the header declares."""
    inflater = zlib.decompressobj(-15)
    crc = produced = 0
    end = pos + csize
    tail = b""
    while not inflater.eof:
        if tail:
            buf, tail = tail, b""
        elif pos < end:
            buf = src[pos:min(end, pos + CHUNK)]
            pos += len(buf)
        else:
            buf = b""  # all input given: what zlib still holds back
        try:  # (output per call bounded too: a few input bytes can inflate to a thousand times more)
            data = inflater.decompress(buf, min(usize - produced + 1, 4 * CHUNK))
        except zlib.error as e:
            raise OperationError(f"{label}: member {name!r} does not inflate: {e}",
                                 hint="the zip is damaged; fetch it again") from e
        tail = inflater.unconsumed_tail
        if not data and not buf:
            break  # no input left and nothing more comes out: the stream is cut short
        if data:
            produced += len(data)
            if produced > usize:
                raise _too_big(label, name, usize)
            guard.add(len(data), name)
            crc = zlib.crc32(data, crc)
            _write_all(fd, data)
    if not inflater.eof:
        raise OperationError(f"{label}: member {name!r} unpacked to {produced} bytes, its header says {usize}",
                             hint="the zip is damaged; fetch it again")
    return produced, crc


def _extract_member_slow(zf: zipfile.ZipFile, it: _ZipItem, out: str, label: str, guard: BombGuard) -> None:
    """bzip2 / lzma members, through zipfile (thread-safe: its shared file takes a lock per read)."""
    try:
        with zf.open(it.info) as src, open(os.path.join(out, it.dest), "wb") as dst:
            while chunk := src.read(CHUNK):
                guard.add(len(chunk), it.info.filename)
                dst.write(chunk)
    except (zipfile.BadZipFile, NotImplementedError, EOFError, zlib.error) as e:
        raise OperationError(f"{label}: member {it.info.filename!r} cannot be unpacked: {e}",
                             hint="the zip is damaged or uses an unsupported compression; fetch it again") from e


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
    symlinks: list[tuple[str, list[str], list[str]]] = []
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
            _ensure_parent(raw, key, made_dirs)
            if ti.issym():
                symlinks.append((key, parts, tparts))
                continue
            target = raw / key
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
    for key, parts, tparts in symlinks:
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


def _ensure_parent(base: Path, key: str, made: set[str]) -> None:
    d = posixpath.dirname(key)
    if d and d not in made:
        p = base / d
        if p.is_symlink() or (p.exists() and not p.is_dir()):
            raise refuse(str(base), key, "a member path runs through a link or file")
        p.mkdir(parents=True, exist_ok=True)
        made.add(d)


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
            _write_all(fd, chunk)
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
