"""`vlmdata normalize`: fix an image folder downloaded by hand so every image is a real ``.jpg``.

GIF/PNG/WebP/... under any name (also GIF bytes named ``.jpg``) become RGB JPEGs named
``<stem>.jpg``; a real JPEG under another name (``.jpeg``, ``.png``) is just renamed. Each fix
is atomic (a temporary name, fsync, rename; the original is removed only once the new file is
complete) and done one file at a time per worker, so disk use never doubles. Running it again
changes nothing.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vlmdata import atomic
from vlmdata.errors import UserError
from vlmdata.place.images import IMAGE_EXTS, ImageProblem, decode, encode_jpeg, sniff


@dataclass
class NormalizeReport:
    folder: str
    ok: int = 0  # already a real JPEG with the right name
    converted: list[dict[str, str]] = field(default_factory=list)  # {from, to, format}
    renamed: list[dict[str, str]] = field(default_factory=list)  # {from, to}: JPEG bytes, other name
    undecodable: list[dict[str, str]] = field(default_factory=list)  # {path, status, detail}
    duplicates: list[dict[str, str]] = field(default_factory=list)  # {path, kept}: target name taken
    not_images: int = 0  # files that are not images at all (left alone)

    @property
    def problems(self) -> int:
        return len(self.undecodable) + len(self.duplicates)

    def to_json(self) -> dict:
        return {"folder": self.folder, "ok": self.ok, "converted": self.converted, "renamed": self.renamed,
                "undecodable": self.undecodable, "duplicates": self.duplicates, "not_images": self.not_images}


def normalize_folder(folder: Path, *, ext: str = "jpg", jobs: int | None = None,
                     progress: Callable[[int], None] | None = None) -> NormalizeReport:
    """Normalise every image under ``folder`` (recursively) to a real JPEG named ``<stem>.<ext>``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder", hint="give the folder that holds the images")
    if ext.lower() not in ("jpg", "jpeg"):
        raise UserError(f"normalize only produces JPEG files, but the target extension is {ext!r}")
    suffix = "." + ext.lower()
    groups: dict[Path, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(atomic.TMP_PREFIX)]
        d = Path(dirpath)
        atomic.cleanup_temporaries(d)  # leftovers of an interrupted earlier run
        for name in filenames:
            if name.startswith(atomic.TMP_PREFIX):
                continue
            p = d / name
            groups.setdefault(d / (os.path.splitext(name)[0] + suffix), []).append(p)
    report = NormalizeReport(str(folder))

    def run(item: tuple[Path, list[Path]]) -> list[tuple[str, dict]]:
        target, paths = item
        # The file already named like the target goes first: it wins over its siblings.
        paths.sort(key=lambda p: (p != target, p.name))
        return [_one(p, target) for p in paths]

    with ThreadPoolExecutor(max_workers=jobs or max(2, os.cpu_count() or 2)) as ex:
        for results in ex.map(run, sorted(groups.items())):
            for kind, info in results:
                if kind == "ok":
                    report.ok += 1
                elif kind == "not_image":
                    report.not_images += 1
                else:
                    getattr(report, kind).append(info)
            if progress is not None:
                progress(len(results))
    return report


def _one(path: Path, target: Path) -> tuple[str, dict]:
    ext = path.suffix.lower()
    try:
        data = path.read_bytes()
    except OSError as e:
        return "undecodable", {"path": str(path), "status": "unreadable", "detail": e.strerror or str(e)}
    fmt = sniff(data[:16])
    if fmt is None and ext not in IMAGE_EXTS:
        return "not_image", {}
    try:
        im = decode(data)
    except ImageProblem as p:
        return "undecodable", {"path": str(path), "status": p.status, "detail": p.detail}
    if path != target and (target.exists() or target.is_symlink()):
        return "duplicates", {"path": str(path), "kept": str(target)}
    if fmt == "jpeg":
        if path == target:
            return "ok", {}
        os.rename(path, target)
        atomic.fsync_dir(target.parent)
        return "renamed", {"from": str(path), "to": str(target)}
    try:
        jpeg = encode_jpeg(im)
    except (OSError, ValueError) as e:
        return "undecodable", {"path": str(path), "status": "undecodable", "detail": f"cannot convert: {e}"}
    atomic.write_bytes(target, jpeg)  # temp name, fsync, rename (replaces a GIF named .jpg in one step)
    if path != target:
        path.unlink()
    return "converted", {"from": str(path), "to": str(target), "format": fmt or (im.format or "?").lower()}
