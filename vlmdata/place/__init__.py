"""Placing downloaded bytes into the store: safe extraction, plain moves, images normalised to JPEG.

Nothing here touches the network (and the extraction code is imported only when an archive is
placed: a plain file's placement is part of a command's start-up). The fetch orchestration calls:

- ``place_download``: a verified download (archive or plain file) goes to its ``place.to``;
- ``extract_tar_stream``: a tar read from a non-seekable stream (an HTTP body) is unpacked
  member by member, keeping only what is wanted, without ever storing the whole tar;
- ``vlmdata.place.images.save_image``: one image of a URL list, checked and saved as JPEG.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from vlmdata import atomic
from vlmdata.errors import UserError
from vlmdata.manifest import FileSpec
from vlmdata.place.results import PlaceResult
from vlmdata.state import Root

__all__ = ["PlaceResult", "place_download", "extract_tar_stream"]


def place_download(spec: FileSpec, downloaded: Path, root: Root, *, merge: bool, wanted: set[str] | None = None,
                   keep_archive: bool = False, jobs: int | None = None) -> PlaceResult:
    """Place a verified download at ``root/spec.place.to``.

    kind "file": an atomic move (a hard link when ``keep_archive``, so nothing is copied).
    kind "extract": safe extraction into a temporary folder beside the target, then one atomic
    rename (``merge=False``: the target is replaced as a whole) or per-file renames into the
    existing folder (``merge=True``: several archives fill one folder; nothing already there is
    deleted). ``wanted`` keeps only members with these base names. The archive is deleted
    afterwards unless ``keep_archive``.
    """
    downloaded = Path(downloaded)
    place = spec.place
    final = root.store_path(place.to)
    if place.kind == "file":
        _place_file(downloaded, final, keep=keep_archive)
        return PlaceResult(place.to, 1, [])
    if place.kind != "extract":
        raise UserError(f"{spec.key}: placement kind {place.kind!r} is not placed from one download",
                        hint="files of kind 'images' are fetched with vlmdata.fetch.urllist")
    from vlmdata.place.extract import extract_tar, extract_zip, move_into_place, remove_tree, sniff_archive
    from vlmdata.place.safety import BombGuard, limits_for

    label = downloaded.name
    opener = None
    if place.format == "split-zip":  # parts of a zip split over disks, joined: read through a rebuilt directory
        from vlmdata.place.splitzip import open_split_zip, recorded_disks

        disks = recorded_disks(downloaded)
        fmt, warnings, opener = "zip", [], (lambda p: open_split_zip(p, disks))
    else:
        fmt, warnings = sniff_archive(downloaded, place.format)
    limits = limits_for(downloaded.stat().st_size, place.unpacked_size, place.count)
    guard = BombGuard(label, limits)
    tmp = _temp_dir(final)
    try:
        if fmt == "zip":
            out = tmp / "out"
            out.mkdir()
            files, w = extract_zip(downloaded, out, label=label, place=place, wanted=wanted, guard=guard, jobs=jobs,
                                   open_zip=opener)
        else:
            with open(downloaded, "rb") as fh:
                res = extract_tar(fh, tmp, label=label, place=place, wanted=wanted, guard=guard)
            out, files, w = res.out, res.files, res.warnings
        warnings += w
        move_into_place(out, final, merge=merge)
    finally:
        remove_tree(tmp)
    warnings += _count_warning(spec, files, wanted)
    if not keep_archive:
        downloaded.unlink(missing_ok=True)
        if opener is not None:
            from vlmdata.place.splitzip import disks_path

            disks_path(downloaded).unlink(missing_ok=True)
    return PlaceResult(place.to, files, warnings)


def extract_tar_stream(stream: BinaryIO, spec: FileSpec, root: Root, *, wanted: set[str] | None,
                       merge: bool) -> PlaceResult:
    """Unpack a tar arriving on a non-seekable stream straight into ``spec.place.to``.

    Only members passing ``place.include`` and ``wanted`` are written; the tar itself is never
    stored. Same member checks as ``place_download``; the bomb limit uses the file's known or
    approximate size.
    """
    from vlmdata.place.extract import extract_tar, move_into_place, remove_tree
    from vlmdata.place.safety import BombGuard, limits_for

    place = spec.place
    final = root.store_path(place.to)
    label = spec.name
    guard = BombGuard(label, limits_for(spec.download_bytes, place.unpacked_size, place.count))
    tmp = _temp_dir(final)
    try:
        res = extract_tar(stream, tmp, label=label, place=place, wanted=wanted, guard=guard)
        move_into_place(res.out, final, merge=merge)
    finally:
        remove_tree(tmp)
    return PlaceResult(place.to, res.files, res.warnings + _count_warning(spec, res.files, wanted))


def _temp_dir(final: Path) -> Path:
    """A fresh folder beside ``final`` (same filesystem), named ``.tmp-<name>.<pid>.<random>``;
    what a killed extraction left there is removed first (vlmdata.atomic.owned_temp_dir_beside)."""
    from vlmdata.place.extract import remove_tree

    return atomic.owned_temp_dir_beside(final, remove=remove_tree)


def _count_warning(spec: FileSpec, files: int, wanted: set[str] | None) -> list[str]:
    expected = spec.place.count
    if wanted is not None or expected is None or files == expected:
        return []
    return [f"{spec.key}: placed {files:,} files, the manifest expects {expected:,} "
            f"(counts are third-party facts; `vlmdata verify --deep` checks the images themselves)"]


def _place_file(src: Path, final: Path, *, keep: bool) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.is_dir() and not final.is_symlink():
        raise UserError(f"cannot place {src.name}: {final} is a folder", hint="move it away, then fetch again")
    if keep:
        atomic.link_or_copy(src, final)
    else:
        try:
            os.replace(src, final)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            with open(src, "rb") as fh, atomic.atomic_open(final, "wb") as out:
                shutil.copyfileobj(fh, out, 1 << 20)
            src.unlink()
    atomic.fsync_dir(final.parent)
