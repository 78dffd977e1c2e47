"""Phase 1 of a blend: read each input once, normalise and check every record, and write the good
rows to an Arrow file in the output's own format (bad ones are listed with index, line and reason).
A range's rows are cut into files of ``FILE_ROWS`` rows: a file in which nothing is dropped or
renamed afterwards becomes a shard of the output as is, so a handful of renamed ids rewrites a few
tens of MB, not the whole input.

A large input is read by several processes at once, each over a byte range that starts on a
record (vlmdata.jsonstream.cut_near); if a range turns out not to line up, that input is read
again in one piece, so the result never depends on the split. Memory stays at one text window and
one batch of rows per process: never a whole-file list of records.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import numpy.ma  # noqa: F401  (pa.array of an ndarray imports it on first use, 25-40 ms: here, once, before the readers fork)
import pyarrow as pa

from vlmdata.blend import validate
from vlmdata.contract import BLEND_SCHEMA
from vlmdata.blend.records import Normaliser, Record, RowBuffer, record_id
from vlmdata.blend.writer import start_writeback_of, sync_soon
from vlmdata.errors import OperationError, UserError
from vlmdata.gcpause import gc_paused
from vlmdata.heap import keep_freed_memory
from vlmdata.jsonstream import LineCounter, RecordReader, SegmentMismatch, cut_near
from vlmdata.orphans import die_with_parent

BATCH_ROWS = 4096
FILE_ROWS = 8 * BATCH_ROWS  # a range's rows go to files of this many: each becomes a shard of the output
PARALLEL_MIN_BYTES = 48 << 20  # smaller inputs are read in one piece
# Ranges shrink as the input runs out (each a 1/(SHARE * jobs) of what is left, at least
# PARALLEL_MIN_BYTES // LEAST_SHARE): a process that finishes early takes the next, and the last
# ranges are small, so no process waits long for the slowest. (Eight equal ranges of the 665k mix
# on two cores left one process idle for 0.0-1.25 s at the end: a range took 0.8-1.4 s on this
# shared machine; with last ranges of 24-48 MB, 0.2-0.33 s; a range costs ~10 ms to start.)
SHARE = 2
LEAST_SHARE = 6
_PROGRESS_EVERY = 2048  # records between progress reports


@dataclass
class BadRecord:
    index: int  # in the input, from 0
    line: int | None  # 1-based line in the input file
    id: str | None  # the record's own id, when it has one
    reason: str  # a key from vlmdata.blend.validate
    detail: str


@dataclass
class RowFile:
    """The good rows of one range: an Arrow IPC stream file, and per row its index in the input
    and the fixes applied to it (bit i: validate.FIXES[i])."""

    path: Path
    index: np.ndarray  # int64
    fixes: np.ndarray  # int8

    @property
    def rows(self) -> int:
        return len(self.index)


@dataclass
class RangeResult:
    """What one process found in one byte range of one input."""

    rows: list[RowFile]  # in order; none when the range has no good rows
    n_read: int
    bad: list[BadRecord]  # lines within the range


@dataclass
class InputScan:
    """One input, read: its good rows (in one or more files) and its bad records."""

    name: str
    path: Path
    n_read: int = 0
    row_files: list[RowFile] = field(default_factory=list)  # in input order; indexes are input-wide
    bad: list[BadRecord] = field(default_factory=list)
    ranges: int = 1  # how many ranges it was read in


@dataclass(frozen=True)
class Task:
    name: str
    path: Path
    image_prefix: str
    out: Path
    start: int = 0
    end: int | None = None
    limit: int | None = None  # first:N
    keep_text: bool = True
    stop_on_bad: bool = False


# -- one range, in whichever process runs it

_progress: Any = None  # a shared counter of bytes read (set in pool workers), or a callable


def _report(n: int) -> None:
    p = _progress
    if p is None:
        return
    if callable(p):
        p(n)
    else:
        with p.get_lock():
            p.value += n


@gc_paused()  # records die young and hold no cycles; the collector only costs time here
def scan_range(task: Task) -> RangeResult:
    """Read records of ``task.path`` in ``[start, end)``; write good rows to ``task.out`` (and,
    past ``FILE_ROWS`` rows, to ``task.out`` + ``.part1``, ``.part2`` ...)."""
    reader = RecordReader(task.path, task.start, task.end, record_type=Record)
    norm = Normaliser(task.name, task.image_prefix)
    buf = RowBuffer(keep_text=task.keep_text)
    bad: list[BadRecord] = []
    out = _RowFiles(task)
    n_read = 0
    reported_n = reported = 0  # records and bytes read at the last progress report
    try:
        for records in reader.batches():
            if task.limit is not None and n_read + len(records) > task.limit:
                records = records[:task.limit - n_read]
            found = norm.add_all(records, n_read, buf, stop_on_bad=task.stop_on_bad, slow=reader.slow)
            for k, e in found:
                bad.append(BadRecord(n_read + k, reader.line(k), record_id(records[k]), e.reason, e.detail))
            stop = bool(found) and task.stop_on_bad  # (then the bad record is the list's last one read)
            n_read += found[0][0] + 1 if stop else len(records)
            if len(buf) >= BATCH_ROWS:
                out.flush(buf)
            if n_read - reported_n >= _PROGRESS_EVERY:
                done = reader.bytes_read()
                _report(done - reported)
                reported_n, reported = n_read, done
            if stop or (task.limit is not None and n_read >= task.limit):
                break
        if len(buf):
            out.flush(buf)
    finally:
        out.close()
    _report(reader.bytes_read() - reported)
    return RangeResult(out.files, n_read, bad)


class _RowFiles:
    """The Arrow files of one range's good rows, a new one every ``FILE_ROWS`` rows. Each finished
    file is handed to the disk at once (most become shards as they are, and the blend fsyncs every
    shard before the swap: this way that fsync finds little left to write)."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.files: list[RowFile] = []
        self.sink: Any = None
        self.writer: Any = None
        self.index: list[np.ndarray] = []
        self.fixes: list[np.ndarray] = []
        self.rows = 0

    def flush(self, buf: RowBuffer) -> None:
        """Write the buffer's rows, a new file after each ``FILE_ROWS``."""
        while len(buf):
            rows, index, fixes = buf.take(self.task.name, FILE_ROWS - self.rows)
            self.index.append(index)
            self.fixes.append(fixes)
            if self.writer is None:
                self.sink = pa.OSFile(str(self._path()), "wb")
                self.writer = pa.ipc.new_stream(self.sink, BLEND_SCHEMA)
            self.writer.write_table(rows)
            self.rows += rows.num_rows
            if self.rows >= FILE_ROWS:
                self.close()

    def _path(self) -> Path:
        out = self.task.out
        return out if not self.files else out.with_name(f"{out.name}.part{len(self.files)}")

    def close(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        start_writeback_of(self.sink)
        self.sink.close()
        self.files.append(RowFile(self._path(), np.concatenate(self.index), np.concatenate(self.fixes)))
        self.sink, self.writer, self.index, self.fixes, self.rows = None, None, [], [], 0


def _worker_init(counter: Any, parent: int) -> None:
    global _progress
    _progress = counter
    die_with_parent(parent)  # (a blend killed with -9 must not leave its readers waiting for good)
    keep_freed_memory()  # (vlmdata.heap: a reader's batches reuse the memory of the ones before)


# -- every input of a blend


def scan_inputs(tasks: list[Task], *, jobs: int, on_bytes: Callable[[int], None] | None = None,
                while_waiting: Callable[[], None] | None = None, sync_rows: bool = False,
                parallel_min_bytes: int = PARALLEL_MIN_BYTES) -> list[InputScan]:
    """Scan each task's input, in parallel over ``jobs`` processes when that pays.

    ``on_bytes`` receives progress (bytes read); ``while_waiting`` runs in this process while the
    workers read (the blend hashes the inputs there); ``sync_rows``: the row files will become
    the output's shards, so each range's start going to disk as soon as it is read.
    """
    done = _syncing if sync_rows else _as_is
    global _progress
    if jobs <= 1:
        keep_freed_memory()
        _progress = on_bytes
        try:
            scans = [_collect(t, [(t, done(scan_range(t)))]) for t in tasks]
        finally:
            _progress = None
        if while_waiting:
            while_waiting()
        return scans

    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    counter = ctx.Value("q", 0)
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init,
                                 initargs=(counter, os.getpid())) as pool:
            planned = [(t, [(r, pool.submit(scan_range, r)) for r in _split(t, jobs, parallel_min_bytes)])
                       for t in tasks]
            if while_waiting:
                while_waiting()
            poller = _Poller(counter, on_bytes)
            return [_collect(t, _results(pool, t, futures, poller, done)) for t, futures in planned]
    except BrokenProcessPool as e:
        raise OperationError("a process reading the inputs died (out of memory, or killed)",
                             hint="run again with fewer --jobs (each one holds a batch of rows)") from e


def _results(pool: ProcessPoolExecutor, t: Task, futures: list[tuple[Task, Future]], poller: "_Poller",
             done: Callable[[RangeResult], RangeResult]) -> list[tuple[Task, RangeResult]]:
    """The ranges' results in order; if they did not line up, the whole input read again."""
    try:
        return [(r, done(poller.wait(fut))) for r, fut in futures]
    except (SegmentMismatch, UserError):
        if len(futures) == 1:
            raise  # a real error in the file: the message names it
    for _, fut in futures:
        fut.cancel()
    return [(t, done(poller.wait(pool.submit(scan_range, t))))]


def _syncing(res: RangeResult) -> RangeResult:
    """A finished range's row files start going to disk now (writer.sync_soon)."""
    sync_soon([f.path for f in res.rows])
    return res


def _as_is(res: RangeResult) -> RangeResult:
    return res


class _Poller:
    """Waits for a worker's result while passing the shared byte counter on to the progress bar."""

    def __init__(self, counter: Any, on_bytes: Callable[[int], None] | None) -> None:
        self.counter, self.on_bytes, self.seen = counter, on_bytes, 0

    def wait(self, fut: Future) -> Any:
        while True:
            try:
                res = fut.result(timeout=0.2)
            except TimeoutError:
                self.poll()
                continue
            self.poll()
            return res

    def poll(self) -> None:
        now = self.counter.value
        if self.on_bytes is not None and now > self.seen:
            self.on_bytes(now - self.seen)
        self.seen = now


def _split(t: Task, jobs: int, min_bytes: int) -> list[Task]:
    size = t.path.stat().st_size
    if t.limit is not None or t.stop_on_bad or size < min_bytes:
        return [t]
    cuts = cut_near(t.path, range_targets(size, jobs, range_least(min_bytes)))
    if len(cuts) <= 2:
        return [t]
    return [Task(t.name, t.path, t.image_prefix, t.out.with_name(f"{t.out.name}.{i}"), a, b, None, t.keep_text)
            for i, (a, b) in enumerate(zip(cuts, cuts[1:]))]


def range_least(min_bytes: int) -> int:
    """The smallest range an input of at least ``min_bytes`` is cut into."""
    return max(1, min_bytes // LEAST_SHARE)


def range_targets(size: int, jobs: int, least: int) -> list[int]:
    """Where the ranges of a ``size``-byte input should start (after 0): each range a
    1/(SHARE * jobs) of what is left, at least ``least`` bytes, the last one too."""
    targets: list[int] = []
    at = 0
    while True:
        at += max((size - at) // (SHARE * jobs), least)
        if size - at < least:
            return targets
        targets.append(at)


def _collect(t: Task, results: list[tuple[Task, RangeResult]]) -> InputScan:
    """Join the ranges of one input: indexes and lines become input-wide (the lines before a range
    are counted only when it holds a bad record: most inputs have none)."""
    scan = InputScan(t.name, t.path, ranges=len(results))
    lines = LineCounter(t.path)
    for r, res in results:
        base = scan.n_read
        for rows in res.rows:
            rows.index += base
        scan.row_files.extend(res.rows)
        line_base = lines.before(r.start) if res.bad else 0
        for b in res.bad:
            b.index += base
            if b.line is not None:
                b.line += line_base
        scan.bad.extend(res.bad)
        scan.n_read += res.n_read
    return scan


def cleanup(scans: list[InputScan]) -> None:
    for s in scans:
        for p in s.row_files:
            try:
                os.unlink(p.path)
            except FileNotFoundError:
                pass
