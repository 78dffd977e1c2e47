"""A URL list fetched in chunks by many processes: each chunk's result on the root, then one report.

A chunk task (vlmdata.fetch.tasks) that finishes writes a record of what became of its records
(saved, skipped, converted, dead, failed) to ``ROOT/.vlmdata/chunks/<list>/<size>/<index>.json``,
atomically, with its first and last record id and its length, so a record only counts for the
same slice of the same list. A rerun skips chunks that have a record. When every chunk of the list
has one, whoever sees that first (the Ray driver, or the ``--shard`` process that finished last)
merges them into the list's report and its one journal entry, exactly as a single run writes
them, and removes the records.
"""
from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from vlmdata import atomic
from vlmdata.fetch.tasks import Task, chunk_key
from vlmdata.fetch.urllist_client import DeadUrl, FailedUrl, ImagesResult
from vlmdata.manifest import FileSpec
from vlmdata.state import Root
from vlmdata.state.claims import SUFFIX, Holder, claim_name, live_holder

Signature = tuple[str, str, int]  # a chunk's first id, last id, length


def signature(task: Task) -> Signature:
    return task.entries[0][0], task.entries[-1][0], len(task.entries)


def records_dir(root: Root, spec: FileSpec, size: int) -> Path:
    return root.state_dir / "chunks" / quote(spec.key, safe="") / str(size)


def record_path(root: Root, task: Task, size: int) -> Path:
    return records_dir(root, task.spec, size) / f"{task.chunk:06d}.json"


def write_record(root: Root, task: Task, size: int, res: ImagesResult, node: str) -> None:
    first, last, n = signature(task)
    atomic.write_json(record_path(root, task, size), {"key": task.key, "first": first, "last": last, "n": n,
                                                      "node": node, "at": time.time(), "result": to_json(res)},
                      indent=None)


def read_record(path: Path, sig: Signature) -> ImagesResult | None:
    """The result recorded at ``path`` for the chunk with signature ``sig``; None when there is none."""
    try:
        data = json.loads(path.read_text("utf-8"))
        if (data["first"], data["last"], data["n"]) != sig:
            return None  # another slice (the list changed): not this chunk's
        return from_json(data["result"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def merged(root: Root, spec: FileSpec, size: int, sigs: list[Signature]) -> ImagesResult | None:
    """Every chunk's record merged, in chunk order; None while any is missing."""
    folder = records_dir(root, spec, size)
    out = ImagesResult()
    for i, sig in enumerate(sigs):
        res = read_record(folder / f"{i:06d}.json", sig)
        if res is None:
            return None
        out.merge(res)
    return out


def missing(root: Root, spec: FileSpec, size: int, sigs: list[Signature]) -> int:
    folder = records_dir(root, spec, size)
    return sum(read_record(folder / f"{i:06d}.json", sig) is None for i, sig in enumerate(sigs))


def running(root: Root, spec: FileSpec, timeout: float) -> Holder | None:
    """A live process working on a chunk of ``spec``'s list right now, if any."""
    prefix = claim_name(chunk_key(spec, 0))[: -len("000000" + SUFFIX)]
    for p in root.claims_dir.glob(prefix + "*" + SUFFIX):
        holder = live_holder(p, timeout)
        if holder is not None:
            return holder
    return None


def wait_for_chunks(root: Root, spec: FileSpec, timeout: float, cancel: threading.Event,
                    say: Callable[[str], None]) -> None:
    """A fetch of the whole list, holding the list's claim: first let the chunks already running finish
    (a chunk that starts now sees the list's claim and waits instead), so no image is fetched twice."""
    told = False
    while not cancel.is_set():
        holder = running(root, spec, timeout)
        if holder is None:
            return
        if not told:
            say(f"waiting for the chunks of {spec.key} that are being fetched: {holder.describe()} is on one")
            told = True
        time.sleep(0.5)


def forget(root: Root, spec: FileSpec) -> None:
    """The records of ``spec``'s chunks, once merged into its report and journal entry."""
    shutil.rmtree(root.state_dir / "chunks" / quote(spec.key, safe=""), ignore_errors=True)


def to_json(res: ImagesResult) -> dict:
    d = asdict(res)
    d["dead"] = [asdict(x) for x in res.dead.values()]
    return d


def from_json(d: dict) -> ImagesResult:
    return ImagesResult(total=d["total"], saved=d["saved"], skipped=d["skipped"], converted=d["converted"],
                        converted_from=dict(d["converted_from"]), conversions=list(d["conversions"]),
                        dead={x["url"]: DeadUrl(**x) for x in d["dead"]},
                        failed=[FailedUrl(**x) for x in d["failed"]], offline=d.get("offline"))
