"""Which referenced images are usable files: one stat per distinct path (it answers both "is it
there" and "is it a 0-byte file", which Visual Genome ships some of), split over processes when
there are many; and which of them decode (``--deep``, in threads: Pillow releases the GIL)."""
from __future__ import annotations

import multiprocessing as mp
import os
import stat as stat_mod
import sys
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vlmdata.orphans import die_with_parent
from vlmdata.errors import OperationError

MISSING, PRESENT, EMPTY_FILE = 0, 1, 2  # check_files' codes: absent (or not a file), a file, a 0-byte file
_STAT_CHUNK = 4096
SLOW_STAT = 20e-6  # seconds per stat above which the storage, not the CPU, is the limit
PROCESS_MIN = 1 << 16  # paths from which the stats are split over processes (each costs a fork)


def check_files(root: Path, paths: list[str], *, jobs: int,
                on_done: Callable[[int], None] | None = None) -> np.ndarray:
    """Per path (relative to ``root``, '/'-separated): MISSING, PRESENT or EMPTY_FILE.

    A stat of a relative name from an open root folder (no Path object per path: that cost more
    than the stat itself for the 665k mix's 310k images). The first chunk runs here; when its stats
    come from the kernel's cache (~2 us each) the rest is split over up to ``jobs`` forked
    processes (threads would only fight over the GIL: measured 2x slower than one thread on two
    cores), and when they wait on storage (a cold disk, a network file system) over threads.
    """
    codes = np.zeros(len(paths), dtype=np.int8)
    first = min(_STAT_CHUNK, len(paths))
    t0 = time.perf_counter()
    codes[:first] = _stat_codes(str(root), paths[:first])
    if on_done is not None:
        on_done(first)
    rest = len(paths) - first
    if rest == 0:
        return codes
    slow = (time.perf_counter() - t0) / first > SLOW_STAT
    if slow and jobs > 1:
        _in_threads(root, paths, first, codes, min(jobs * 4, 16), on_done)  # threads wait on storage, not CPU
    elif rest >= PROCESS_MIN and jobs > 1 and sys.platform.startswith("linux"):
        # at least PROCESS_MIN // 2 paths each: a fork of this process costs more than a few thousand stats
        _in_processes(root, paths, first, codes, min(jobs, os.cpu_count() or 1, rest // max(1, PROCESS_MIN // 2)), on_done)
    else:
        codes[first:] = _stat_codes(str(root), paths[first:])
        if on_done is not None:
            on_done(rest)
    return codes


def _stat_codes(root: str, paths: list[str]) -> np.ndarray:
    out = bytearray(len(paths))
    try:
        rootfd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:  # no image root: nothing is there
        return np.zeros(len(paths), dtype=np.int8)
    stat, isreg = os.stat, stat_mod.S_ISREG
    try:
        for i, p in enumerate(paths):
            try:
                st = stat(p, dir_fd=rootfd)
            except (OSError, ValueError):  # absent, a broken link, a name the OS refuses
                continue
            if isreg(st.st_mode):
                out[i] = PRESENT if st.st_size else EMPTY_FILE
    finally:
        os.close(rootfd)
    return np.frombuffer(bytes(out), dtype=np.int8)


def _in_threads(root: Path, paths: list[str], start: int, codes: np.ndarray, jobs: int,
                on_done: Callable[[int], None] | None) -> None:
    bounds = list(range(start, len(paths), _STAT_CHUNK)) + [len(paths)]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        _spread(pool, lambda ab: _stat_codes(str(root), paths[ab[0]:ab[1]]), bounds, codes, on_done)


_FORKED: tuple[str, list[str]] | None = None  # what forked workers stat: set before the fork, never pickled


def _stat_slice(ab: tuple[int, int]) -> np.ndarray:
    assert _FORKED is not None
    return _stat_codes(_FORKED[0], _FORKED[1][ab[0]:ab[1]])


def _in_processes(root: Path, paths: list[str], start: int, codes: np.ndarray, jobs: int,
                  on_done: Callable[[int], None] | None) -> None:
    """Contiguous slices (neighbours share folders, so the kernel's lookups stay warm) in forked
    processes that read the paths from this process's memory."""
    global _FORKED
    step = -(-(len(paths) - start) // jobs)
    bounds = list(range(start, len(paths), step)) + [len(paths)]
    _FORKED = (str(root), paths)
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("fork"),
                                 initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            _spread(pool, _stat_slice, bounds, codes, on_done)
    except BrokenProcessPool as e:  # (as the scan says it: a traceback would name no cause a user can act on)
        raise OperationError("a process checking the images died (out of memory, or killed)",
                             hint="run again; with --jobs 1 the images are checked in this process") from e
    finally:
        _FORKED = None


def _spread(pool: Executor, fn: Callable[[tuple[int, int]], np.ndarray], bounds: list[int], codes: np.ndarray,
            on_done: Callable[[int], None] | None) -> None:
    """``codes[a:b] = fn((a, b))`` for each slice between ``bounds``, run by ``pool``."""
    slices = list(zip(bounds, bounds[1:]))
    for (a, b), got in zip(slices, pool.map(fn, slices)):
        codes[a:b] = got
        if on_done is not None:
            on_done(b - a)


EMPTY = "empty file (0 bytes)"


def other_extensions(root: Path, folders: pa.Array, names: pa.Array) -> dict[str, str]:
    """The missing images (``folders`` / ``names``: split_paths of their paths) whose folder holds a file
    of the same stem under another extension, with that file's name: OCR-VQA's loadDataset.py saved
    covers as <id>.gif / <id>.png where every record names <id>.jpg (901 of them), which is an image to
    convert, not a dead URL. One listing per folder that misses an image and is there (a recipe whose
    images were never fetched costs one stat per folder, not a pass over its paths in Python)."""
    if not len(folders):
        return {}
    enc = folders.dictionary_encode()
    here = [os.path.isdir(root / f if f else root) for f in enc.dictionary.to_pylist()]
    if not any(here):
        return {}
    keep = pa.array(np.asarray(here, dtype=bool)[enc.indices.to_numpy()])
    wanted: dict[str, dict[str, str]] = {}  # folder -> stem -> missing name
    for folder, name in zip(folders.filter(keep).to_pylist(), names.filter(keep).to_pylist()):
        stem, dot, _ = name.rpartition(".")
        if dot and stem:
            wanted.setdefault(folder, {})[stem] = name
    out: dict[str, str] = {}
    for folder, stems in wanted.items():
        try:
            with os.scandir(root / folder if folder else root) as entries:
                for e in entries:
                    stem, dot, _ = e.name.rpartition(".")
                    name = stems.get(stem) if dot else None
                    if name is not None and e.name != name and e.is_file():
                        out.setdefault(f"{folder}/{name}" if folder else name, e.name)
        except OSError:  # (gone since, or not readable: nothing of it to say)
            continue
    return out


def split_paths(paths: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(folder, file name) of each relative path; the folder is "" for a file at the root."""
    parts = pc.split_pattern(pc.binary_join_element_wise(".", paths, "/"), "/", max_splits=1, reverse=True)
    folders = pc.utf8_slice_codeunits(pc.list_element(parts, 0), 2)  # drop the "./" added above
    return folders, pc.list_element(parts, 1)


def _decode(path: Path) -> tuple[int, int] | str:
    """(width, height) of a fully decoded image, or the reason it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            size = im.size
            im.load()
        return size
    except Exception as e:  # noqa: BLE001 - any failure to decode makes the file unusable
        return f"{type(e).__name__}: {e}"


def _header(path: Path) -> tuple[int, int] | str:
    """(width, height) from the image header only."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"


def inspect_images(root: Path, paths: list[str], *, deep: bool, jobs: int,
                   on_done: Callable[[int], None] | None = None) -> dict[str, tuple[int, int] | str]:
    """For each path: its size, or why it is unusable. ``deep`` decodes every pixel; otherwise only
    the header is read (for --image-sizes)."""
    fn = _decode if deep else _header
    chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    out: dict[str, tuple[int, int] | str] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for chunk, results in zip(chunks, pool.map(lambda c: [fn(root / r) for r in c], chunks)):
            out.update(zip(chunk, results))
            if on_done is not None:
                on_done(len(chunk))
    return out


_CHUNK = 128
