"""The benchmark's inputs, made once under bench/out/peers/ and reused: files nginx serves, a zip of
small JPEGs, the 665k-record mix, and the manifest that points vlmdata at them."""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

from bench.common.jpegs import photo_jpegs

GIB = 1 << 30
ZIP_MEMBERS = 20_000
LIST_IMAGES = 20_000


def random_file(path: Path, size: int) -> Path:
    if path.exists() and path.stat().st_size == size:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        left = size
        while left:
            n = min(left, 16 << 20)
            fh.write(os.urandom(n))
            left -= n
    os.replace(tmp, path)
    return path


def small_jpegs(n: int, seed: int = 0) -> list[bytes]:
    """n distinct small photo-like JPEGs (gradient + noise), ~5 kB each, like book covers or thumbnails."""
    return photo_jpegs(n, seed=seed, width=(64, 160), height=(80, 200), noise=(15, 40), blend=0.3, quality=(75, 92))


def jpeg_zip(path: Path, members: int = ZIP_MEMBERS) -> Path:
    """``train2017/<n>.jpg`` x members, deflated at level 6 like `zip` (COCO's zips are made so)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    pool = small_jpegs(500)
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        zf.writestr("train2017/", b"")
        for i in range(members):
            zf.writestr(f"train2017/{i:012d}.jpg", pool[i % len(pool)])
    os.replace(tmp, path)
    return path


def digest(path: Path, cache: Path) -> tuple[int, str]:
    """(size, sha256) of ``path``, remembered by size and mtime (hashing 1 GiB on every run is waste)."""
    st = path.stat()
    key = f"{path}:{st.st_size}:{st.st_mtime_ns}"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    if key not in known:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(8 << 20):
                h.update(block)
        known[key] = h.hexdigest()
        cache.write_text(json.dumps(known, indent=1))
    return st.st_size, known[key]


def url_list(path: Path, base: str, n: int = LIST_IMAGES) -> Path:
    """OCR-VQA's dataset.json shape: {id: {"imageURL": ..., "questions": [...], ...}}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {f"{i:07d}": {"imageURL": f"{base}/img/{i}.jpg", "title": f"book {i}", "questions": ["Who wrote this book?"],
                         "answers": ["someone"]} for i in range(n)}
    path.write_text(json.dumps(data))
    return path


def manifest(folder: Path, files: dict[str, dict]) -> Path:
    """datasets/bench.toml: one dataset, ``bench``, whose files are the given ones."""
    lines = ['name = "bench"', 'title = "bench.peers inputs"', 'license = "generated"', ""]
    for name, f in files.items():
        lines += ["[[files]]", f'name = "{name}"']
        lines.append(f"size = {f['size']}" if "size" in f else 'size = "unknown"')
        lines.append(f'sha256 = "{f.get("sha256", "unknown")}"')
        lines += [f"sources = [{f['source']}]", f"place = {f['place']}", ""]
    path = folder / "datasets" / "bench.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path
