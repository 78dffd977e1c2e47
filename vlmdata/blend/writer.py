"""Write the blend's output folder: a `datasets.load_from_disk`-able dataset plus blend.json.

Everything goes into a temporary folder beside the output, which is swapped into place at the
very end (vlmdata.atomic.replace_dir): a blend killed at any point leaves the previous output
as it was. The temporary folder is named after the writer's pid, so the next blend can tell a
dead run's leftovers from a live run's folder and remove only the former.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from vlmdata import atomic
from vlmdata.contract import features
from vlmdata.errors import UserError



def _libc_sync_file_range() -> Callable[[int], None]:
    """``start_writeback(fd)``: ask Linux to start writing a file's dirty pages to the disk now,
    without waiting (sync_file_range(SYNC_FILE_RANGE_WRITE)), so the fsync before the swap finds
    little left to do. A no-op where the call does not exist."""
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.sync_file_range
        fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    except (OSError, AttributeError):
        return lambda fd: None

    def start(fd: int) -> None:
        fn(fd, 0, 0, 2)  # 2 = SYNC_FILE_RANGE_WRITE; a failure (odd filesystem) is ignored: it is a hint

    return start


start_writeback = _libc_sync_file_range()


def start_writeback_of(sink: Any) -> None:
    """``start_writeback`` on a pyarrow file. pyarrow 22 and older break ``OSFile.fileno()`` (an
    AttributeError inside it); the hint is skipped there, and the fsync before the swap does the work."""
    try:
        fd = sink.fileno()
    except AttributeError:
        return
    start_writeback(fd)


class DatasetWriter:
    """Arrow IPC stream shards (``data-0000i-of-0000n.arrow``) + state.json + dataset_info.json,
    the files ``Dataset.save_to_disk`` writes, so ``datasets.load_from_disk`` memory-maps them.

    A shard is either a finished file moved in as is (``add_file``: the scan's rows when nothing
    was dropped or renamed), or written batch by batch (``begin_shard`` / ``write`` / ``end_shard``).
    Each finished shard is fsynced in the background while the next one is made."""

    def __init__(self, folder: Path, schema: pa.Schema) -> None:
        self.folder = Path(folder)
        self.schema = schema
        self.shards: list[Path] = []
        self.rows = 0
        self._sink: Any = None
        self._writer: Any = None
        self._syncs: list[Future] = []

    def _next_path(self) -> Path:
        path = self.folder / f"data-{len(self.shards):05d}.arrow"
        self.shards.append(path)
        return path

    def add_file(self, path: Path, rows: int) -> None:
        dest = self._next_path()
        os.replace(path, dest)
        self.rows += rows
        self._syncs.append(_SYNC.submit(_fsync, dest))

    def begin_shard(self) -> None:
        self._sink = pa.OSFile(str(self._next_path()), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self.schema)

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=self.schema))
        start_writeback_of(self._sink)
        self.rows += batch.num_rows

    def end_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None
            self._syncs.append(_SYNC.submit(_fsync, self.shards[-1]))

    def close(self, fingerprint: str) -> list[str]:
        """Finish the shards, name them ``-of-N`` and write the `datasets` metadata files."""
        if not self.shards:  # an empty dataset still has one (empty) shard
            self.begin_shard()
        self.end_shard()
        for f in self._syncs:
            f.result()
        n = len(self.shards)
        names = []
        for i, p in enumerate(self.shards):
            name = f"data-{i:05d}-of-{n:05d}.arrow"
            os.replace(p, self.folder / name)
            names.append(name)
        state = {
            "_data_files": [{"filename": name} for name in names],
            "_fingerprint": fingerprint,
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        (self.folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        (self.folder / "dataset_info.json").write_text(dataset_info_text(self.schema), encoding="utf-8")
        return names


def dataset_info_text(schema: pa.Schema) -> str:
    """``dataset_info.json`` for ``schema``, as ``save_to_disk`` writes it. It depends only on the
    schema and the installed `datasets`, whose import costs ~1 CPU-second (a tenth of a blend of the
    665k mix): the text is remembered in the cache folder per installed datasets, schema and
    contract code (a cache that cannot be read or written is ignored), so only the first blend
    after an upgrade imports `datasets`."""
    cached = _info_cache(schema)
    if cached is not None:
        try:
            return cached.read_text(encoding="utf-8")
        except OSError:
            pass
    from vlmdata.pandas_hidden import allowed

    with allowed():  # datasets imports pandas
        import datasets
        from datasets import arrow_dataset

        info = arrow_dataset.asdict(datasets.DatasetInfo(features=features(schema)))
    text = json.dumps({k: info[k] for k in sorted(info)}, indent=2)
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(cached, text)
        except OSError:
            pass
    return text


def datasets_needed(schema: pa.Schema) -> bool:
    """Whether writing ``schema``'s metadata will import `datasets` (not remembered yet)."""
    cached = _info_cache(schema)
    return cached is None or not cached.is_file()


def _info_cache(schema: pa.Schema) -> Path | None:
    """Where the text for ``schema`` is remembered: keyed by the installed `datasets` (its
    ``__init__.py``'s path, size and mtime: an upgrade rewrites it), the contract's code and the
    schema. (Not ``importlib.metadata.version``: that imports the email parser and reads the
    package's METADATA, 40-80 ms of every blend on a slow machine; ``find_spec`` imports nothing.)"""
    from importlib.util import find_spec

    from vlmdata import contract
    from vlmdata.manifest.cache import cache_dir

    try:
        spec = find_spec("datasets")
        if spec is None or not spec.origin:
            return None
        lib = os.stat(spec.origin)
        code = os.stat(contract.__file__)
    except (ImportError, ValueError, OSError):
        return None
    key = hashlib.sha256(f"{spec.origin}|{lib.st_size}|{lib.st_mtime_ns}|{code.st_size}|{code.st_mtime_ns}|".encode()
                         + schema.serialize().to_pybytes()).hexdigest()[:20]
    return cache_dir() / f"dataset-info-{key}.json"


# -- the temporary output folder


def begin(out: Path) -> Path:
    """A fresh temporary folder beside ``out``, named after this process; what dead runs left
    beside ``out`` is removed first (a live run's folder is left alone)."""
    check_replaceable(Path(out))
    return atomic.owned_temp_dir_beside(Path(out))


def check_replaceable(out: Path) -> None:
    """The output folder is swapped in whole, so what is there now is deleted: allow that only for
    nothing, an empty folder, or an earlier blend (``--out ~/Documents`` must not delete a thesis)."""
    if not (out.exists() or out.is_symlink()):
        return
    if out.is_symlink() or not out.is_dir():
        raise UserError(f"--out {out} is a file; a blend writes a folder there and would replace it",
                        hint="choose a folder that does not exist yet (or an earlier blend's folder)")
    names = sorted(p.name for p in out.iterdir())
    if not names:
        return
    if {"blend.json", "state.json"} <= set(names):
        # an earlier blend, but a file of one's own put in it (notes, a script) would go with it
        others = [n for n in names if not _BLEND_FILE.fullmatch(n)]
        if not others:
            return
        raise UserError(f"--out {out} is an earlier blend but also holds other files ({_some(others)}); "
                        f"a blend replaces its whole output folder",
                        hint="move those files elsewhere (or choose another --out), then run it again")
    raise UserError(f"--out {out} holds other files ({_some(names)}); a blend replaces its whole output folder",
                    hint="choose a folder that does not exist yet, an empty one, or an earlier blend's folder")


# What a blend folder holds: the blend's own files, the cache files `datasets` writes beside a loaded
# dataset (Dataset.map), and vlmtrain's cache of token lengths (vlmtrain.data.dataset.CACHE_DIR_NAME).
_BLEND_FILE = re.compile(r"blend\.json|state\.json|dataset_info\.json|dropped\.jsonl|data-\d+-of-\d+\.arrow"
                         r"|cache-[0-9a-f]+\.arrow|tmp[\w-]*|\.vlmtrain-cache")


def _some(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def commit(tmp: Path, out: Path, synced: tuple[str, ...] = ()) -> None:
    """Every file's bytes reach the disk, then the folder is swapped in (``synced``: file names
    already fsynced, e.g. the shards)."""
    for f in tmp.iterdir():
        if f.is_file() and f.name not in synced:
            _fsync(f)
    atomic.fsync_dir(tmp)
    atomic.replace_dir(tmp, out)


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_if_there(path: Path) -> None:
    try:
        _fsync(path)
    except FileNotFoundError:  # moved into the dataset (synced again under its new name) or removed
        pass


def sync_soon(paths: list[Path]) -> None:
    """Start syncing files that will most likely become shards (a scan's row files, as each range
    finishes), so that the fsyncs ``close`` waits for find them already on disk: the disk works
    while the blend checks images and ids instead of after (up to 0.47 s of a 665k blend was that
    wait). Only a head start: the writer still syncs every shard it keeps."""
    for path in paths:
        _SYNC.submit(_fsync_if_there, path)


_SYNC = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlmdata-fsync")


def abandon(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=_jsonable) + "\n", encoding="utf-8")


def _jsonable(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
