"""Unpacking a zip of 20,000 JPEGs: vlmdata's place_download vs `unzip -q`, same machine, same run.

    python -m bench.place.bench_unzip [--files 20000] [--repeat 3] [--stored]

Builds (once, cached under bench/out/place/) a zip of N small real JPEGs (distinct images of
varied sizes, deflated like `zip` does by default), then alternates runs of `unzip -q -d OUT` and
`place_download` (keep_archive=True, merge=False: the archive's top folder is mapped into the
target, unpacked in a temporary folder beside it and renamed into place). The median of the runs
is reported. Outputs are removed and the page cache's dirty pages flushed (`sync`) between runs
(not timed); neither tool fsyncs each file, so the times are to the page cache. Prints one JSON line per tool.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from bench.common.jpegs import photo_jpegs

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "bench" / "out" / "place"


def ensure_unzip() -> str:
    exe = shutil.which("unzip")
    if exe:
        return exe
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", "unzip"], check=True)
    exe = shutil.which("unzip")
    if not exe:
        raise SystemExit("unzip could not be installed")
    return exe


def distinct_jpegs(n: int, seed: int = 0) -> list[bytes]:
    """n distinct, photo-like JPEGs (gradient + noise), 120-480 px wide: 10-80 kB each."""
    return photo_jpegs(n, seed=seed, width=(120, 480), height=(90, 360), noise=(20, 60), blend=0.5, quality=(80, 95))


def build_zip(path: Path, files: int, stored: bool) -> Path:
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    pool = distinct_jpegs(500)
    tmp = path.with_suffix(".tmp")
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(tmp, "w", method, compresslevel=6) as zf:
        zf.writestr("train2017/", b"")
        for i in range(files):
            zf.writestr(f"train2017/{i:012d}.jpg", pool[i % len(pool)])
    os.replace(tmp, path)
    return path


def settle() -> None:
    """Start each run from the same state: earlier runs' dirty pages written back (not timed)."""
    os.sync()
    time.sleep(1.0)


def run_unzip(unzip: str, archive: Path, dest: Path) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    settle()
    t = time.perf_counter()
    subprocess.run([unzip, "-q", str(archive), "-d", str(dest)], check=True)
    return time.perf_counter() - t


def run_vlmdata(archive: Path, root_dir: Path, files: int) -> float:
    sys.path.insert(0, str(REPO))
    from vlmdata.manifest import FileSpec, Placement
    from vlmdata.place import place_download
    from vlmdata.state import Root

    shutil.rmtree(root_dir, ignore_errors=True)
    root = Root(root_dir)
    root.ensure_writable()
    spec = FileSpec("coco", "train2017.zip", None, None, None, None, False, None, (), (),
                    Placement("extract", "coco/train2017", inner="train2017", count=files))
    settle()
    t = time.perf_counter()
    res = place_download(spec, archive, root, merge=False, keep_archive=True)
    dt = time.perf_counter() - t
    assert res.files == files, res
    return dt


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--stored", action="store_true", help="store members instead of deflating them")
    ap.add_argument("--dir", type=Path, default=None,
                    help="where both tools unpack (default bench/out/place; e.g. /dev/shm to take the disk out)")
    a = ap.parse_args(argv)
    unzip = ensure_unzip()
    archive = build_zip(OUT / f"jpegs-{a.files}-{'stored' if a.stored else 'deflated'}.zip", a.files, a.stored)
    work = a.dir or OUT
    if work != OUT:  # the archive is read from the same place the files are written to
        work.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive, work / archive.name)
        archive = work / archive.name
    times: dict[str, list[float]] = {"unzip -q": [], "vlmdata place_download": []}
    for _ in range(a.repeat):
        times["unzip -q"].append(run_unzip(unzip, archive, work / "unzip-out"))
        times["vlmdata place_download"].append(run_vlmdata(archive, work / "vlmdata-root", a.files))
    shutil.rmtree(work / "unzip-out", ignore_errors=True)
    shutil.rmtree(work / "vlmdata-root", ignore_errors=True)
    archive_bytes = archive.stat().st_size
    if work != OUT:
        archive.unlink()
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "bench": "unzip",
        "files": a.files,
        "archive_bytes": archive_bytes,
        "method": "stored" if a.stored else "deflated",
        "dir": str(work),
        "runs": times,
        "median_s": med,
        "ratio_vlmdata_over_unzip": med["vlmdata place_download"] / med["unzip -q"],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
