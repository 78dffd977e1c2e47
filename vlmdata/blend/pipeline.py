"""`vlmdata blend` and `vlmdata report`: scan the inputs, sample, check the images, write.

1. scan (scan.py): every input is read once (in parallel byte ranges when large); good rows are
   written as Arrow files in the output's format, bad records listed with index, line and reason.
2. sample (recipe.sample_mask) over the records read, deterministic for the recipe's seed.
3. images: the distinct paths the sampled rows use, one stat each (images_index.check_files);
   ``--deep`` decodes them; missing/corrupt follow ``--missing``.
   Then each entry's ``weight`` (weights.py): how many times each kept record is written.
4. ids: made unique across the blend (``<source>:<id>``, then ``#<index>`` within a source;
   copies from a weight above 1 add ``#rep<k>``).
5. write (writer.py): the kept rows in recipe order then file order into a temporary folder
   swapped into place with blend.json at the end; a scanned file in which nothing changed is
   moved in as a shard, the others are rewritten batch by batch; a weight's extra copies follow
   their source's rows.

`report` runs 1-3 without the conversation text and without writing a dataset.

Why one file of ~700 lines: the steps hand each other Arrow tables and numpy masks over the same
rows (keep, ids, fixes, image drops); split across modules they would pass a dozen arrays through
every signature. Scanning, sampling, the image index, the ids (ids.py) and the writer are their own modules.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import vlmdata
from vlmdata.blend import drop_limit
from vlmdata.blend import validate
from vlmdata.blend.extra import keep_original_ids
from vlmdata.blend.ids import IdCodes, assign_ids, encode_soon
from vlmdata.blend.weights import copies
from vlmdata.blend.writer import DatasetWriter, abandon, begin, commit, write_json
from vlmdata.contract import BLEND_JSON, BLEND_SCHEMA, IMAGE_TYPE, RECORD_EXTRA, SCHEMA_VERSION, arrow_schema
from vlmdata.blend.images_index import (EMPTY, EMPTY_FILE, MISSING, check_files, inspect_images, other_extensions,
                                       split_paths)
from vlmdata.blend.recipe import Input, Resolved, sample_limit, sample_mask
from vlmdata.blend.scan import PARALLEL_MIN_BYTES, BadRecord, InputScan, Task, cleanup, scan_inputs
from vlmdata.errors import OperationError, UserError

MISSING_POLICIES = ("drop", "fail", "keep")
EXAMPLES = 20  # dropped records / missing images shown per reason in reports


@dataclass
class Options:
    missing: str = "drop"  # drop | fail | keep: rows whose images are missing or corrupt
    deep: bool = False  # decode every image
    strict: bool = False  # the first bad record is an error
    image_sizes: bool = False  # add image_widths / image_heights
    embed_images: bool = False  # add image_bytes
    jobs: int = 0  # processes / threads; 0 = the machine's cores
    max_drop: float = drop_limit.DEFAULT_MAX_DROP  # percent of an entry's records it may lose; more stops the blend
    progress: bool = True
    parallel_min_bytes: int = PARALLEL_MIN_BYTES

    def workers(self) -> int:
        return self.jobs if self.jobs > 0 else (os.cpu_count() or 1)


@dataclass
class ImageStats:
    needed: int = 0
    present: int = 0
    missing: int = 0
    corrupt: int = 0


@dataclass
class Source:
    """One recipe entry after scanning, sampling and the image check."""

    input: Input
    scan: InputScan
    table: pa.Table  # its good rows, memory-mapped from the scan's files (only the columns used are read)
    index: np.ndarray  # per row of `table`: its index in the input
    keep: np.ndarray  # per row of `table`: written to the output
    sampled: int = 0
    bad: list[BadRecord] = field(default_factory=list)  # sampled records dropped while reading
    image_drops: list[dict[str, Any]] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    bad_image_rows: int = 0  # sampled rows using a missing or corrupt image
    images: ImageStats = field(default_factory=ImageStats)
    fixes: dict[str, int] = field(default_factory=dict)
    ids: pa.Array | None = None  # final ids of the kept rows
    renamed: np.ndarray | None = None  # per kept row: its id was changed
    ids_renamed: int = 0
    checked: int = 0  # records that passed every check, before the weight
    reps: np.ndarray | None = None  # per row of `table`: copies written (the weight); None: `keep` once each

    @property
    def name(self) -> str:
        return self.input.name

    @property
    def kept(self) -> int:
        return int(self.keep.sum())

    @property
    def rows(self) -> int:
        """Rows written for this source: its kept records, each as often as the weight says."""
        return int(self.reps.sum()) if self.reps is not None else self.kept

    def copies_of(self, mask: np.ndarray) -> int:
        """Rows written for the table rows in ``mask``."""
        return int(self.reps[mask].sum()) if self.reps is not None else int((mask & self.keep).sum())


@dataclass
class Analysis:
    resolved: Resolved
    options: Options
    sources: list[Source]
    folders: dict[str, ImageStats]
    image_info: dict[str, tuple[int, int] | str]  # path -> size, or why it is corrupt (deep / sizes)
    missing_examples: list[str]
    missing: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))  # every missing image path
    elsewhere: dict[str, str] = field(default_factory=dict)  # missing path -> its stem's file under another extension
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step
    id_codes: Future[IdCodes] | None = None  # every row's id, hashed (ids.encode_soon)


# ---------------------------------------------------------------- progress


def _bar(opts: Options, **kw: Any) -> Any:
    """A tqdm bar; without progress (not a terminal, --json, --quiet) one that does nothing, and
    tqdm is not imported (25-47 ms here, before the reading processes start)."""
    if not opts.progress:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(leave=False, dynamic_ncols=True, mininterval=0.5, **kw)


class _NoBar:
    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None


# ---------------------------------------------------------------- analysis (steps 1-4)


def analyse(resolved: Resolved, opts: Options, work: Path, *, keep_text: bool,
            for_output: bool = False) -> tuple[Analysis, dict[str, dict[str, Any]]]:
    """Scan, sample and check; returns the analysis and, ``for_output`` (a blend, not a report),
    each input's sha256/size, with the row files (most become shards) sent to disk as they are read."""
    if opts.missing not in MISSING_POLICIES:
        raise UserError(f"--missing must be one of {', '.join(MISSING_POLICIES)}, got {opts.missing!r}")
    inputs = resolved.inputs
    tasks = [Task(i.name, i.path, i.entry.image_prefix, work / f"rows-{n}.arrow", limit=sample_limit(i.entry.sample),
                  keep_text=keep_text, stop_on_bad=opts.strict) for n, i in enumerate(inputs)]
    hashes: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    total = sum(i.path.stat().st_size if sample_limit(i.entry.sample) is None else 0 for i in inputs)
    with _bar(opts, total=total or None, unit="B", unit_scale=True, desc="parse") as bar:
        scans = scan_inputs(tasks, jobs=opts.workers(), on_bytes=bar.update, parallel_min_bytes=opts.parallel_min_bytes,
                            while_waiting=(lambda: _meanwhile(inputs, hashes, _schema(opts))) if for_output else None,
                            sync_rows=for_output)
    t1 = time.perf_counter()
    _refuse_empty(inputs, scans, resolved.recipe.origin)
    if opts.strict:
        _fail_on_first_bad(scans)
    sources = [_sample(i, s, resolved.recipe.seed) for i, s in zip(inputs, scans)]
    t2 = time.perf_counter()
    id_codes = encode_soon(sources) if for_output else None  # (ids.py: beside the image check's hashing)
    analysis = _check_images(resolved, opts, sources)
    analysis.id_codes = id_codes
    _apply_weights(sources, resolved.recipe.seed)
    analysis.timings.update(parse=t1 - t0, sample=t2 - t1, images=time.perf_counter() - t2)
    return analysis, hashes


def _apply_weights(sources: list[Source], seed: int) -> None:
    """Each entry's weight over its kept records (weights.py); a record drawn out by a weight
    below 1 is not written, and is not a dropped record either."""
    for s in sources:
        s.checked = s.kept
        kept = np.flatnonzero(s.keep)
        reps = copies(len(kept), s.input.entry.weight, seed, s.name)
        if reps is None:
            continue
        s.reps = np.zeros(len(s.keep), dtype=np.int32)
        s.reps[kept] = reps
        s.keep = s.reps > 0


def _meanwhile(inputs: list[Input], hashes: dict[str, dict[str, Any]], schema: pa.Schema) -> None:
    """While the workers read: import `datasets` in a thread when the writer will need it at the
    end (~1 s; only until its metadata for this schema is remembered: writer.dataset_info_text),
    and hash the inputs here."""
    import threading

    from vlmdata.blend.writer import datasets_needed

    if datasets_needed(schema):
        threading.Thread(target=_import_datasets, daemon=True).start()
    hashes.update(_hash_all(inputs))


def _import_datasets() -> None:
    import importlib

    from vlmdata.pandas_hidden import allowed

    with allowed():  # datasets imports pandas
        importlib.import_module("datasets")


def _hash_all(inputs: list[Input]) -> dict[str, dict[str, Any]]:
    """Each input's sha256 and size (remembered while the file is unchanged: digest_cache)."""
    from vlmdata.digest_cache import sha256_of

    return {i.name: dict(zip(("sha256", "size"), sha256_of(i.path))) for i in inputs}


def _refuse_empty(inputs: list[Input], scans: list[InputScan], recipe: Path) -> None:
    """An input file with no record at all is an error, not an empty part of the blend: it is what
    an interrupted download or a failed export leaves, and a blend of it passed as a small dataset
    (exit 0). (No recipe setting reads nothing of a file that has records: `sample` is at least 1.)"""
    for i, s in zip(inputs, scans):
        if s.n_read:
            continue
        redo = (f"check it with `vlmdata verify {i.entry.dataset}` and fetch it again "
                f"(`vlmdata fetch {i.label} --refetch`)" if i.entry.dataset else "export or copy it again")
        raise UserError(f"recipe entry {i.name!r}: the file holds no records", where=str(i.path),
                        hint=f"{redo}, or drop the entry from the recipe ({recipe}); nothing was written")


def _fail_on_first_bad(scans: list[InputScan]) -> None:
    for s in scans:
        if s.bad:
            b = min(s.bad, key=lambda x: x.index)
            where = f"{s.path}: record {b.index}" + (f" (line {b.line})" if b.line else "") + \
                    (f", id {b.id!r}" if b.id is not None else "")
            raise UserError(f"{b.reason}: {b.detail}", where=where,
                            hint="fix the record, or run without --strict to drop bad records and report them")


def _read_rows(scan: InputScan) -> pa.Table:
    """The good rows of one input, memory-mapped (only the columns used get paged in)."""
    tables = [pa.ipc.open_stream(pa.memory_map(str(p.path))).read_all() for p in scan.row_files]
    return pa.concat_tables(tables) if tables else BLEND_SCHEMA.empty_table()


def _sample(inp: Input, scan: InputScan, seed: int) -> Source:
    table = _read_rows(scan)
    index = np.concatenate([p.index for p in scan.row_files]) if scan.row_files else np.zeros(0, np.int64)
    mask = sample_mask(inp.entry.sample, scan.n_read, seed, inp.name)
    keep = np.ones(table.num_rows, dtype=bool) if mask is None else mask[index]
    src = Source(inp, scan, table, index, keep, sampled=scan.n_read if mask is None else int(mask.sum()))
    src.bad = [b for b in scan.bad if mask is None or mask[b.index]]
    src.dropped.update(b.reason for b in src.bad)
    return src


def _flat_images(src: Source) -> tuple[pa.Array, np.ndarray]:
    """All image paths of the kept rows, and the row (of src.table) each belongs to."""
    col = src.table.column("images").combine_chunks() if src.table.num_rows else pa.array([], pa.list_(pa.string()))
    parents = pc.list_parent_indices(col).to_numpy()
    flat = pc.list_flatten(col)
    if not src.keep.all():
        sel = src.keep[parents]
        flat = flat.filter(pa.array(sel))
        parents = parents[sel]
    return flat, parents


def _check_images(resolved: Resolved, opts: Options, sources: list[Source]) -> Analysis:
    root = resolved.image_root.path
    flats = [_flat_images(s) for s in sources]
    uniques = [pc.unique(f) for f, _ in flats]
    all_paths = (uniques[0] if len(uniques) == 1 else pc.unique(pa.chunked_array(uniques, pa.string()))
                 if uniques else pa.array([], pa.string()))
    paths = all_paths.to_pylist()
    with _bar(opts, total=len(paths), unit="img", desc="check") as bar:
        codes = check_files(root, paths, jobs=opts.workers(), on_done=bar.update)
    present = codes != MISSING
    info: dict[str, tuple[int, int] | str] = {}
    if opts.deep or opts.image_sizes:  # decode each image (--deep), or read its header (--image-sizes)
        todo = [p for p, ok in zip(paths, present.tolist()) if ok]
        with _bar(opts, total=len(todo), unit="img", desc="decode" if opts.deep else "sizes") as bar:
            info = inspect_images(root, todo, deep=opts.deep, jobs=opts.workers() * (2 if opts.deep else 4),
                                  on_done=bar.update)
    else:  # the quick check: a 0-byte file is there by name but is no image
        info = {paths[i]: EMPTY for i in np.flatnonzero(codes == EMPTY_FILE).tolist()}
    gone = pa.array(~present)
    missing_arr = all_paths.filter(gone)
    # an image that does not decode (--deep), or whose header cannot be read (--image-sizes): unusable
    corrupt_arr = pa.array(sorted(p for p, r in info.items() if isinstance(r, str)), pa.string())
    folder_col, name_col = split_paths(all_paths)
    folders = _folder_stats(folder_col, ~present, _member(all_paths, corrupt_arr))

    bad_paths = pa.concat_arrays([missing_arr, corrupt_arr])
    missing_set: set[str] | None = None
    elsewhere = other_extensions(root, folder_col.filter(gone), name_col.filter(gone)) if len(missing_arr) else {}
    for src, (flat, parents), uniq in zip(sources, flats, uniques):
        m, c = _member(uniq, missing_arr), _member(uniq, corrupt_arr)
        src.images = ImageStats(len(uniq), int(len(uniq) - m.sum() - c.sum()), int(m.sum()), int(c.sum()))
        if len(bad_paths):
            rows = np.unique(parents[_member(flat, bad_paths)])
            if len(rows):
                if missing_set is None:
                    missing_set = set(missing_arr.to_pylist())
                _bad_image_rows(src, rows, missing_set, set(corrupt_arr.to_pylist()), opts.missing, elsewhere)
        fixes = np.concatenate([p.fixes for p in src.scan.row_files])[src.keep] if src.scan.row_files else np.zeros(0, np.int8)
        src.fixes = {name: int(((fixes >> i) & 1).sum()) for i, name in enumerate(validate.FIXES)}
    examples = missing_arr.slice(0, EXAMPLES).to_pylist()  # the first ones, in record order
    if opts.missing == "fail" and len(bad_paths):
        n_rows = sum(s.bad_image_rows for s in sources)
        raise OperationError(
            f"{len(missing_arr)} image(s) missing and {len(corrupt_arr)} corrupt, used by {n_rows} record(s) "
            f"under {root}; e.g. {', '.join(examples[:5] or corrupt_arr.slice(0, 5).to_pylist())}",
            hint="fetch what is missing (`vlmdata report RECIPE` lists it per folder), pass the right --image-root, "
                 "or use --missing drop / keep")
    return Analysis(resolved, opts, sources, dict(sorted(folders.items())), info, examples, missing_arr, elsewhere)


def _folder_stats(folders: pa.Array, missing: np.ndarray, corrupt: np.ndarray) -> dict[str, ImageStats]:
    """Needed / present / missing / corrupt images per folder, from the folders of the distinct paths."""
    enc = folders.dictionary_encode()
    codes = enc.indices.to_numpy()
    n = len(enc.dictionary)
    needed = np.bincount(codes, minlength=n)
    gone = np.bincount(codes, weights=missing, minlength=n).astype(int)
    bad = np.bincount(codes, weights=corrupt, minlength=n).astype(int)
    return {(f or "."): ImageStats(int(a), int(a - b - c), int(b), int(c))
            for f, a, b, c in zip(enc.dictionary.to_pylist(), needed, gone, bad)}


def _member(values: pa.Array, value_set: pa.Array) -> np.ndarray:
    if len(value_set) == 0 or len(values) == 0:
        return np.zeros(len(values), dtype=bool)
    return pc.is_in(values, value_set=value_set).to_numpy(zero_copy_only=False)


def _bad_image_rows(src: Source, rows: np.ndarray, missing: set[str], corrupt: set[str], policy: str,
                    elsewhere: dict[str, str]) -> None:
    src.bad_image_rows = len(rows)
    if policy != "drop":
        return
    take = pa.array(rows)
    cols = [src.table.column(c).take(take).to_pylist() for c in ("id", "images")]
    for rid, imgs, idx in zip(*cols, src.index[rows].tolist()):
        gone = [p for p in imgs if p in missing]
        reason, first = (validate.MISSING_IMAGE, gone[0]) if gone else (validate.CORRUPT_IMAGE, next(p for p in imgs if p in corrupt))
        src.dropped[reason] += 1
        src.image_drops.append({"index": idx, "id": rid, "reason": reason, "detail": _where_else(first, elsewhere)})
    src.keep[rows] = False


def _where_else(path: str, elsewhere: dict[str, str]) -> str:
    """A missing image's path, and the file of its stem that is there under another extension, if any."""
    other = elsewhere.get(path)
    if other is None:
        return path
    fix = (f": `vlmdata normalize` makes it the {path.rpartition('/')[2]} the record names (docs/place.md)"
           if path.lower().endswith(".jpg") else "")
    return f"{path} ({other} is there, under another extension{fix})"


# ---------------------------------------------------------------- blend (step 5)


@dataclass
class BlendResult:
    out: Path
    rows: int
    meta: dict[str, Any]
    dropped_file: Path | None
    timings: dict[str, float]


def run_blend(resolved: Resolved, opts: Options, out: Path) -> BlendResult:
    out = Path(out).absolute()
    tmp = begin(out)
    try:
        work = tmp / ".work"
        work.mkdir()
        analysis, hashes = analyse(resolved, opts, work, keep_text=True, for_output=True)
        verdict = drop_limit.check(analysis, opts.max_drop)
        if verdict is not None:  # before anything is written: the previous output stays as it was
            raise OperationError(verdict.message, hint=verdict.hint + (
                f"\n     nothing was written; {out} is as it was" if out.exists() else "\n     nothing was written"))
        t0 = time.perf_counter()
        assert analysis.id_codes is not None  # (analyse started it: for_output)
        assign_ids(analysis.sources, analysis.id_codes.result())
        t1 = time.perf_counter()
        meta, shards = _write(analysis, hashes, tmp)
        t2 = time.perf_counter()
        for s in analysis.sources:
            s.table = None  # type: ignore[assignment]  # unmap the row files before removing them
        cleanup([s.scan for s in analysis.sources])
        shutil.rmtree(work, ignore_errors=True)
        commit(tmp, out, synced=tuple(shards))
        analysis.timings.update(ids=t1 - t0, write=t2 - t1, commit=time.perf_counter() - t2)
    except BaseException:
        abandon(tmp)
        raise
    dropped = out / "dropped.jsonl"
    return BlendResult(out, meta["totals"]["rows"], meta, dropped if dropped.exists() else None, analysis.timings)


def _write(an: Analysis, hashes: dict[str, dict[str, Any]], tmp: Path) -> tuple[dict[str, Any], list[str]]:
    opts = an.options
    writer = DatasetWriter(tmp, _schema(opts))
    with _bar(opts, total=sum(s.rows for s in an.sources), unit="row", desc="write") as bar:
        for s in an.sources:
            _write_source(s, writer, an, bar.update)
    fingerprint = hashlib.sha256(json.dumps([an.resolved.recipe_toml, hashes, _options_json(opts, output_only=True)],
                                            sort_keys=True).encode()).hexdigest()[:16]
    files = writer.close(fingerprint)
    dropped = _write_dropped(an, tmp / "dropped.jsonl")
    meta = _metadata(an, hashes, files, dropped)
    write_json(tmp / BLEND_JSON, meta)
    return meta, files


def _write_source(s: Source, writer: DatasetWriter, an: Analysis, progress: Any) -> None:
    """One shard per scanned range: the scan's file itself when every row stays as it is, else its
    kept rows rewritten batch by batch (read into memory one batch at a time, not mapped)."""
    opts = an.options
    repeats = s.reps is not None and int(s.reps.max(initial=0)) > 1
    extra = opts.image_sizes or opts.embed_images or repeats  # (a scan file moved in could not be read again)
    assert s.ids is not None
    row = out = 0
    for row_file in s.scan.row_files:
        keep = s.keep[row:row + row_file.rows]
        row += row_file.rows
        k = int(keep.sum())
        ids = s.ids.slice(out, k)
        renamed = s.renamed is not None and bool(s.renamed[out:out + k].any())
        out += k
        if k == 0:
            continue
        if k == row_file.rows and not renamed and not extra:
            writer.add_file(row_file.path, k)
            progress(k)
            continue
        writer.begin_shard()
        done = pos = 0
        with pa.OSFile(str(row_file.path)) as f:
            for b in pa.ipc.open_stream(f):
                m = keep[pos:pos + b.num_rows]
                pos += b.num_rows
                if not m.any():
                    continue
                if not m.all():
                    b = b.filter(pa.array(m))
                new = ids.slice(done, b.num_rows)
                cols = [new] + b.columns[1:]
                if renamed:  # the record's own id stays in record_extra, for export
                    at = BLEND_SCHEMA.get_field_index(RECORD_EXTRA)
                    cols[at] = keep_original_ids(b.column(at), b.column(0), new)
                done += b.num_rows
                step = 256 if opts.embed_images else b.num_rows  # embedded bytes: keep batches small
                for off in range(0, b.num_rows, step):
                    writer.write(_with_extras(pa.RecordBatch.from_arrays(cols, schema=BLEND_SCHEMA).slice(off, step),
                                              opts, an.image_info, an.resolved.image_root.path))
                progress(b.num_rows)
        writer.end_shard()
    if repeats:
        _write_copies(s, writer, an, progress)


def _write_copies(s: Source, writer: DatasetWriter, an: Analysis, progress: Any) -> None:
    """The second, third, ... copy of the records a weight repeats: one shard per copy number, in
    file order, ids ``<id>#rep<k>``."""
    assert s.reps is not None and s.ids is not None
    pos = np.cumsum(s.keep) - 1  # table row -> its place in s.ids
    for k in range(2, int(s.reps.max()) + 1):
        want = s.reps >= k
        writer.begin_shard()
        row = 0
        for row_file in s.scan.row_files:
            base, row = row, row + row_file.rows
            if not want[base:row].any():
                continue
            at = base
            with pa.OSFile(str(row_file.path)) as f:
                for b in pa.ipc.open_stream(f):
                    m = want[at:at + b.num_rows]
                    rows = pos[at:at + b.num_rows][m]
                    at += b.num_rows
                    if not m.any():
                        continue
                    b = b.filter(pa.array(m))
                    ids = pc.binary_join_element_wise(s.ids.take(pa.array(rows)), pa.scalar(f"#rep{k}"), "")
                    batch = pa.RecordBatch.from_arrays([ids] + b.columns[1:], schema=b.schema)
                    step = 256 if an.options.embed_images else b.num_rows
                    for off in range(0, b.num_rows, step):
                        writer.write(_with_extras(batch.slice(off, step), an.options, an.image_info,
                                                  an.resolved.image_root.path))
                    progress(b.num_rows)
        writer.end_shard()


def _with_extras(b: pa.RecordBatch, opts: Options, info: dict[str, Any], root: Path) -> pa.RecordBatch:
    cols = list(b.columns)
    images = b.column("images")
    if opts.image_sizes:
        cols += _sizes(images, info)
    if opts.embed_images:
        cols.append(_embed(images, root, opts.workers() * 2))
    return pa.RecordBatch.from_arrays(cols, schema=_schema(opts))


def _schema(opts: Options) -> pa.Schema:
    return arrow_schema(extra=True, sizes=opts.image_sizes, embed=opts.embed_images)


def _sizes(images: pa.Array, info: dict[str, Any]) -> list[pa.Array]:
    images = _unsliced(images)
    offsets = images.offsets
    flat = pc.list_flatten(images).to_pylist()
    ws, hs = [], []
    for p in flat:
        r = info.get(p)
        if isinstance(r, tuple):
            ws.append(r[0])
            hs.append(r[1])
        else:  # a missing image kept with --missing keep
            ws.append(None)
            hs.append(None)
    return [pa.ListArray.from_arrays(offsets, pa.array(ws, pa.int32())),
            pa.ListArray.from_arrays(offsets, pa.array(hs, pa.int32()))]


def _embed(images: pa.Array, root: Path, jobs: int) -> pa.Array:
    from concurrent.futures import ThreadPoolExecutor

    def read(p: str) -> bytes | None:
        try:
            return (root / p).read_bytes()
        except OSError:
            return None  # a missing image kept with --missing keep

    images = _unsliced(images)
    flat = pc.list_flatten(images)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        data = list(pool.map(read, flat.to_pylist()))
    # datasets.Image values (bytes + the path relative to the image root), so load_from_disk decodes them
    absent = pa.array([d is None for d in data])
    structs = pa.StructArray.from_arrays([pa.array(data, pa.binary()), flat], fields=list(IMAGE_TYPE), mask=absent)
    return pa.ListArray.from_arrays(images.offsets, structs)


def _unsliced(images: pa.Array) -> pa.Array:
    """A list array whose offsets start at 0 (a slice's offsets point into its parent's values)."""
    return pa.concat_arrays([images]) if images.offset or images.offsets[0].as_py() else images


def dropped_records(s: Source) -> list[dict[str, Any]]:
    """The sampled records of one source that are not in the output, in input order."""
    rows = [{"index": b.index, "line": b.line, "id": b.id, "reason": b.reason, "detail": b.detail} for b in s.bad]
    rows += [{"index": d["index"], "line": None, "id": d["id"], "reason": d["reason"], "detail": d["detail"]}
             for d in s.image_drops]
    return sorted(rows, key=lambda r: r["index"])


def _write_dropped(an: Analysis, path: Path) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for s in an.sources:
            for r in dropped_records(s):
                fh.write(json.dumps({"source": s.name, "file": str(s.input.path), **r}, ensure_ascii=False) + "\n")
                n += 1
    if n == 0:
        path.unlink()
    return n


def _options_json(opts: Options, *, output_only: bool = False) -> dict[str, Any]:
    """The options as recorded; ``output_only``: those that change the rows written (the fingerprint's)."""
    out = {"missing": opts.missing, "deep": opts.deep, "strict": opts.strict, "image_sizes": opts.image_sizes,
           "embed_images": opts.embed_images}
    return out if output_only else {**out, "max_drop": opts.max_drop}


def source_counts(s: Source, opts: Options) -> dict[str, Any]:
    return {
        "read": s.scan.n_read,
        "sampled": s.sampled,
        "kept": s.checked,
        "weight": s.input.entry.weight if s.input.entry.weight is not None else 1.0,
        "rows": s.rows,
        "dropped": dict(sorted(s.dropped.items())),
        "fixed": {k: n for k, n in s.fixes.items() if n},
        "ids_renamed": s.ids_renamed,
        "kept_with_missing_or_corrupt_images": s.bad_image_rows if opts.missing == "keep" else 0,
        "images": vars(s.images).copy(),
    }


def _metadata(an: Analysis, hashes: dict[str, dict[str, Any]], files: list[str], dropped: int) -> dict[str, Any]:
    r = an.resolved
    rows = sum(s.rows for s in an.sources)
    text_only = sum(s.copies_of(s.table.column("n_images").to_numpy() == 0) if s.table.num_rows else 0
                    for s in an.sources)
    return {
        "schema_version": SCHEMA_VERSION,
        "vlmdata_version": vlmdata.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "recipe": {"name": r.recipe.name, "title": r.recipe.title, "stage": r.recipe.stage,
                   "origin": str(r.recipe.origin), "toml": r.recipe_toml},
        "layout": r.layout.name,
        "image_root": str(r.image_root.path),
        "image_root_origin": r.image_root.origin,
        "seed": r.recipe.seed,
        "options": _options_json(an.options),
        "columns": [f.name for f in _schema(an.options)],
        "files": files,
        "inputs": [{"name": i.name, "source": i.label, "path": str(i.path), "sample": i.entry.sample,
                    "weight": i.entry.weight, "image_prefix": i.entry.image_prefix,
                    "sha256": hashes.get(i.name, {}).get("sha256"), "size": hashes.get(i.name, {}).get("size"),
                    "read_in_ranges": s.scan.ranges}
                   for i, s in zip(r.inputs, an.sources)],
        "counts": {s.name: source_counts(s, an.options) for s in an.sources},
        "mix": mix(an.sources),
        "totals": {"rows": rows, "text_only": text_only,
                   "read": sum(s.scan.n_read for s in an.sources),
                   "sampled": sum(s.sampled for s in an.sources),
                   "dropped": sum(sum(s.dropped.values()) for s in an.sources),
                   "images": sum(st.needed for st in an.folders.values()),
                   "images_missing": sum(st.missing for st in an.folders.values()),
                   "images_corrupt": sum(st.corrupt for st in an.folders.values()),
                   "images_missing_under_other_extension": len(an.elsewhere)},
        "dropped_file": "dropped.jsonl" if dropped else None,
    }


def mix(sources: list[Source]) -> dict[str, dict[str, Any]]:
    """Per source: its weight, its kept records, the rows written and their share of the blend."""
    total = sum(s.rows for s in sources) or 1
    return {s.name: {"weight": s.input.entry.weight if s.input.entry.weight is not None else 1.0,
                     "kept": s.checked, "rows": s.rows, "share": round(s.rows / total, 6)} for s in sources}


# ---------------------------------------------------------------- report


def run_report(resolved: Resolved, opts: Options) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vlmdata-report-") as d:
        an, _ = analyse(resolved, opts, Path(d), keep_text=False)
        rep = report_json(an)
        for s in an.sources:
            s.table = None  # type: ignore[assignment]
    return rep


def report_json(an: Analysis) -> dict[str, Any]:
    r = an.resolved
    sources = []
    for s in an.sources:
        examples: list[dict[str, Any]] = []
        per_reason: Counter = Counter()
        for d in dropped_records(s):
            if per_reason[d["reason"]] < EXAMPLES:
                per_reason[d["reason"]] += 1
                examples.append(d)
        sources.append({"name": s.name, "input": s.input.label, "path": str(s.input.path), **source_counts(s, an.options),
                        "dropped_examples": examples})
    folders = [{"folder": f, **vars(st)} for f, st in an.folders.items()]
    return {
        "recipe": r.recipe.name,
        "layout": r.layout.name,
        "image_root": str(r.image_root.path),
        "image_root_origin": r.image_root.origin,
        "options": _options_json(an.options),
        "sources": sources,
        "mix": mix(an.sources),
        "folders": folders,
        "totals": {
            "read": sum(s.scan.n_read for s in an.sources),
            "sampled": sum(s.sampled for s in an.sources),
            "would_keep": sum(s.checked for s in an.sources),
            "would_write": sum(s.rows for s in an.sources),
            "would_drop": sum(sum(s.dropped.values()) for s in an.sources),
            "images_needed": sum(st.needed for st in an.folders.values()),
            "images_present": sum(st.present for st in an.folders.values()),
            "images_missing": sum(st.missing for st in an.folders.values()),
            "images_corrupt": sum(st.corrupt for st in an.folders.values()),
        },
        "missing_examples": an.missing_examples,
        "missing_under_other_extension": {"count": len(an.elsewhere), "examples": [
            {"path": k, "there": an.elsewhere[k]} for k in sorted(an.elsewhere)[:EXAMPLES]]},
        "blend_would_stop": (lambda x: x.to_json() if x else None)(drop_limit.check(an, an.options.max_drop, in_report=True)),
        "corrupt_examples": sorted(p for p, x in an.image_info.items() if isinstance(x, str))[:EXAMPLES],
    }

