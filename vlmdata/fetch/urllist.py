"""Per-image downloads from a list of URLs (OCR-VQA's dataset.json), each saved as a real JPEG.

Hundreds of requests are in flight at once (``jobs`` threads sharing one keep-alive connection
pool); what is already on disk is skipped; connection errors, timeouts, 5xx and 429 are retried
with backoff; 404/410 are recorded as dead with the record ids they affect. Every image is sniffed
and decoded before it is written; GIF/PNG/WebP/... become RGB JPEGs named ``<id>.<ext>``. Each file
is written under a temporary name and renamed, so a kill never leaves a half image under its final
name. A report (JSON) lists dead URLs, failures and conversions.
"""
from __future__ import annotations

import csv
import json
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

import requests

from vlmdata import atomic
from vlmdata.errors import OperationError, UserError
from vlmdata.fetch.urllist_http import CONNECT_TIMEOUT, ImageClient, Outcome, get_image
from vlmdata.manifest import FileSpec, Source
from vlmdata.net.retry import (OFFLINE_HINT, GaveUp, RetryPolicy, Transient, is_transient_error, is_transient_status,
                               is_unreachable, retry, retry_after_seconds, unreachable_reason)
from vlmdata.net.urls import is_local, rewrite
from vlmdata.place.images import ImageProblem, save_image
from vlmdata.state import Root

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class DeadUrl:
    """A URL the server says is gone (404/410), or a mirror file that is absent."""

    url: str
    status: int | None  # HTTP status; None for a local-mirror file that does not exist
    ids: list[str] = field(default_factory=list)  # the list's record ids that point at it


@dataclass
class FailedUrl:
    """A record whose image could not be saved this time (retries spent, bad content, ...)."""

    id: str
    url: str
    error: str


@dataclass
class UrlListResult:
    saved: int  # images written this run
    skipped: int  # already there
    converted: int  # saved after conversion to JPEG (counted in `saved` too)
    dead: list[DeadUrl]
    failed: list[FailedUrl]
    report_path: Path
    total: int = 0  # records in the list


def report_path(root: Root, dataset: str) -> Path:
    return root.state_dir / "reports" / f"{dataset}-urllist.json"


# ----------------------------------------------------------------- the list


def list_file(spec: FileSpec, source: Source, root: Root, session: requests.Session, mirror: str | None,
              policy: RetryPolicy, timeout: float) -> Path:
    """The list on disk: ``source.path`` under the root, else ``source.url`` downloaded first."""
    if source.path:
        p = root.store_path(source.path)
        if p.is_file():
            return p
    if source.url:
        dest = root.download_path(spec.dataset, Path(urlsplit(source.url).path).name or "urllist")
        if dest.is_file():
            return dest
        data = _get_list(source.url, session, mirror, policy, timeout)
        atomic.write_bytes(dest, data)
        return dest
    raise OperationError(
        f"{spec.key}: the URL list {source.path} is not under the root {root.path}",
        hint=(source.note or "download it first") + f"; it must be at {root.store_path(source.path or '')}")


def _get_list(url: str, session: requests.Session, mirror: str | None, policy: RetryPolicy, timeout: float) -> bytes:
    where = rewrite(url, mirror) if mirror else url
    if mirror and is_local(mirror):
        try:
            return Path(where).read_bytes()
        except OSError as e:
            raise OperationError(f"cannot read the URL list {where}: {e.strerror}") from e

    def attempt() -> bytes:
        try:
            r = session.get(where, timeout=(CONNECT_TIMEOUT, timeout))
        except requests.RequestException as e:
            if is_unreachable(e):
                raise Transient(f"cannot reach {urlsplit(where).netloc}: {unreachable_reason(e)}", unreachable=True) from None
            if is_transient_error(e):
                raise Transient(f"{type(e).__name__}: {e}") from None
            raise OperationError(f"cannot download the URL list {where}: {type(e).__name__}: {e}") from None
        if r.status_code == 200:
            return r.content
        if is_transient_status(r.status_code):
            raise Transient(f"HTTP {r.status_code}", retry_after_seconds(r.headers.get("Retry-After")))
        raise OperationError(f"cannot download the URL list {where}: HTTP {r.status_code}")

    try:
        return retry(attempt, policy)
    except GaveUp as e:
        if e.unreachable:
            raise OperationError(f"cannot download the URL list {where}: {e.last}", hint=OFFLINE_HINT) from None
        raise OperationError(f"cannot download the URL list {where}: {e}") from None


def read_entries(path: Path, source: Source) -> list[tuple[str, str]]:
    """(record id, URL) pairs in list order."""
    key = source.url_key or "url"
    if source.list_format == "json-dict":
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError) as e:
            raise UserError(f"the URL list is not readable JSON: {e}", where=str(path),
                            hint="download it again") from e
        if not isinstance(data, dict):
            raise UserError("the URL list must be a JSON object {id: {...}}", where=str(path))
        out = []
        for rid, rec in data.items():
            url = rec.get(key) if isinstance(rec, dict) else None
            if isinstance(url, str) and url:
                out.append((str(rid), url))
        return out
    if source.list_format == "tsv":
        with open(path, encoding="utf-8", newline="") as fh:
            rows = csv.DictReader(fh, delimiter="\t")
            if not rows.fieldnames or key not in rows.fieldnames:
                raise UserError(f"the TSV list has no column {key!r}", where=str(path))
            idcol = "id" if "id" in rows.fieldnames else rows.fieldnames[0]
            return [(r[idcol], r[key]) for r in rows if r.get(key)]
    raise UserError(f"unknown list_format {source.list_format!r}", where=str(path))


# ----------------------------------------------------------------- fetching


UNREACHABLE_RUN = 64  # images in a row whose host cannot be reached: the network is gone, stop


def _save(data: bytes, final: Path, *, to_jpeg: bool) -> Outcome:
    try:
        norm = save_image(data, final, to_jpeg=to_jpeg)
    except ImageProblem as p:
        return Outcome("failed", error=f"{p.status} image ({p.detail})")
    return Outcome("converted" if norm.converted else "saved", source_format=norm.source_format)


def _existing(folder: Path) -> set[str]:
    """Names of the non-empty files already in ``folder`` (one scandir, not one stat per record)."""
    out = set()
    try:
        with os.scandir(folder) as it:
            for e in it:
                if not e.name.startswith(atomic.TMP_PREFIX) and e.is_file() and e.stat().st_size > 0:
                    out.add(e.name)
    except FileNotFoundError:
        pass
    return out


def _target_name(rid: str, url: str, ext: str | None) -> str | None:
    if not _SAFE_ID.fullmatch(rid) or ".." in rid:
        return None
    if ext is None:
        ext = os.path.splitext(urlsplit(url).path)[1].lstrip(".").lower() or "jpg"
    return f"{rid}.{ext}"


def fetch_url_list(spec: FileSpec, source: Source, root: Root, *, session: requests.Session, jobs: int,
                   mirror: str | None, progress: Callable[[int], None] | None = None,
                   policy: RetryPolicy | None = None, timeout: float = 60.0) -> UrlListResult:
    """Download every image of the list into ``root/spec.place.to`` as ``<id>.<place.ext>``.

    ``progress`` is called with 1 for each record handled (saved, skipped, dead or failed), so it
    can drive a bar counted in images. ``policy`` says how often a transient failure (timeout,
    5xx, 429) is tried again, ``timeout`` how many seconds without data end a try. Returns counts and the dead/failed records; the same goes into the
    report JSON at ROOT/.vlmdata/reports/<dataset>-urllist.json.
    """
    policy = policy or RetryPolicy()
    jobs = max(1, jobs)
    started = time.time()
    entries = read_entries(list_file(spec, source, root, session, mirror, policy, timeout), source)
    folder = root.store_path(spec.place.to)
    folder.mkdir(parents=True, exist_ok=True)
    atomic.cleanup_temporaries(folder)
    have = _existing(folder)
    client = ImageClient(session, jobs, timeout)

    to_jpeg = (spec.place.ext or "").lower() in ("jpg", "jpeg")
    lock = threading.Lock()
    stop = threading.Event()
    counts = {"saved": 0, "skipped": 0, "converted": 0}
    conversions: dict[str, int] = {}
    converted_ids: list[dict[str, str]] = []
    dead: dict[str, DeadUrl] = {}
    failed: list[FailedUrl] = []
    work: Iterator[tuple[str, str]] = iter(entries)

    def handle(rid: str, url: str) -> None:
        name = _target_name(rid, url, spec.place.ext)
        if name is None:
            with lock:
                failed.append(FailedUrl(rid, url, "record id is not a safe file name"))
            return
        if name in have:
            with lock:
                counts["skipped"] += 1
            return
        data, outcome = get_image(url, client, mirror, policy, stop)
        if outcome is None:
            outcome = _save(data, folder / name, to_jpeg=to_jpeg)  # type: ignore[arg-type]
        with lock:
            # offline: stop after a run of images whose hosts cannot be reached at all, instead of
            # failing each of 200k records (what was saved stays; the next run resumes)
            unreachable[0] = unreachable[0] + 1 if outcome.unreachable else 0
            if unreachable[0] >= UNREACHABLE_RUN and not offline:
                offline.append(outcome.error)
                stop.set()
            if outcome.kind == "dead":
                d = dead.setdefault(url, DeadUrl(url, outcome.status))
                d.ids.append(rid)
            elif outcome.kind == "failed":
                failed.append(FailedUrl(rid, url, outcome.error))
            else:
                counts["saved"] += 1
                if outcome.kind == "converted":
                    counts["converted"] += 1
                    conversions[outcome.source_format] = conversions.get(outcome.source_format, 0) + 1
                    converted_ids.append({"id": rid, "from": outcome.source_format})

    errors: list[BaseException] = []
    unreachable = [0]  # consecutive records whose host could not be reached
    offline: list[str] = []

    def worker() -> None:
        try:
            while not stop.is_set():
                with lock:
                    item = next(work, None)
                if item is None:
                    return
                handle(*item)
                if progress is not None:
                    progress(1)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=worker, name=f"vlmdata-urllist-{i}", daemon=True)
               for i in range(min(jobs, max(1, len(entries))))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        client.close()
        atomic.fsync_dir(folder)
    if errors:
        raise errors[0]
    if offline:
        raise OperationError(f"{spec.key}: stopped after {UNREACHABLE_RUN} images in a row could not be reached "
                             f"({offline[0]}); {counts['saved']:,} saved, the rest is left for the next run",
                             hint=OFFLINE_HINT)

    rpath = report_path(root, spec.dataset)
    for d in dead.values():
        d.ids.sort()
    result = UrlListResult(saved=counts["saved"], skipped=counts["skipped"], converted=counts["converted"],
                           dead=sorted(dead.values(), key=lambda d: d.url),
                           failed=sorted(failed, key=lambda f: f.id), report_path=rpath, total=len(entries))
    atomic.write_json(rpath, {
        "dataset": spec.dataset,
        "file": spec.name,
        "to": spec.place.to,
        "list": source.path or source.url,
        "mirror": mirror,
        "started": started,
        "seconds": round(time.time() - started, 3),
        "total": len(entries),
        "saved": result.saved,
        "skipped": result.skipped,
        "converted": result.converted,
        "converted_from": conversions,
        "conversions": sorted(converted_ids, key=lambda c: c["id"]),
        "dead": [asdict(d) for d in result.dead],
        "dead_records": sum(len(d.ids) for d in result.dead),
        "failed": [asdict(f) for f in result.failed],
    })
    return result
