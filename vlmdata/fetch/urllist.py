"""Per-image downloads from a list of URLs (OCR-VQA's dataset.json), each saved as a real JPEG.

The list is read as a stream (207k records are never all in memory) and handed to
vlmdata.fetch.urllist_client, which keeps ``jobs`` requests in flight (asyncio), skips what is
already on disk, retries connection errors, timeouts, 5xx and 429 with backoff, records 404/410 as
dead with the record ids they affect, and sniffs and decodes every image before it is written
(GIF/PNG/WebP/... become RGB JPEGs named ``<id>.<ext>``, under a temporary name, renamed). A
report (JSON) lists dead URLs, failures and conversions.

A list that turns out to be broken half-way stops the run with an error naming the line; the
images saved before it are complete files, kept, and skipped by the next run.
"""
from __future__ import annotations

import csv
import threading
import time
from dataclasses import asdict, dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Callable, ContextManager, Iterator
from urllib.parse import urlsplit

from vlmdata import atomic
from vlmdata.errors import OperationError, UserError
from vlmdata.fetch.urllist_client import (CONNECT_TIMEOUT, UNREACHABLE_RUN, DeadUrl, FailedUrl, ImagesResult,
                                          fetch_images)
from vlmdata.manifest import FileSpec, Source
from vlmdata.net.client import Client, RequestError
from vlmdata.net.retry import (OFFLINE_HINT, GaveUp, RetryPolicy, Transient, is_transient_status, retry,
                               retry_after_seconds, transient_request)
from vlmdata.net.urls import is_local, rewrite, scrub, shown
from vlmdata.state import Root

__all__ = ["DeadUrl", "FailedUrl", "UrlListResult", "check_online", "fetch_url_list", "finish", "iter_entries",
           "list_claim_key", "list_file", "list_path", "report_path", "write_report"]


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


def list_file(spec: FileSpec, source: Source, root: Root, session: Client, mirror: str | None,
              policy: RetryPolicy, timeout: float,
              claimed: Callable[[str], ContextManager[object]] | None = None) -> Path:
    """The list on disk: ``source.path`` under the root, else ``source.url`` downloaded first.

    A list downloaded earlier (it appears whole, by a rename) is used as it is. ``claimed``: a fetch
    that other processes share the root with (``--shard``, ``--ray``) downloads the list under its
    claim (``list_claim_key``), so one of them downloads it and the others wait for that one and read
    the stored list; a one-machine fetch takes the same claim, as it may share the root with them.
    """
    if source.path:
        p = root.store_path(source.path)
        if p.is_file():
            return p
    if source.url:
        dest = list_path(spec, source, root)
        if dest.is_file():
            return dest
        if claimed is None:
            atomic.write_bytes(dest, _get_list(source.url, session, mirror, policy, timeout))
            return dest
        with claimed(list_claim_key(spec, source)):
            if not dest.is_file():  # (not stored by the process whose claim this one waited for)
                # (a holder killed while writing it left its temporary; the claim says no one writes it now)
                atomic.cleanup_temporaries(dest.parent, of=dest.name)
                atomic.write_bytes(dest, _get_list(source.url, session, mirror, policy, timeout))
        return dest
    raise OperationError(
        f"{spec.key}: the URL list {source.path} is not under the root {root.path}",
        hint=(source.note or "download it first") + f"; it must be at {root.store_path(source.path or '')}")


def list_path(spec: FileSpec, source: Source, root: Root) -> Path:
    """Where a list named by ``source.url`` is stored: the root's downloads folder of its dataset."""
    return root.download_path(spec.dataset, _list_name(source))


def list_claim_key(spec: FileSpec, source: Source) -> str:
    """The claim its download is made under (``ocr_vqa:dataset.json#list``): one per stored list, apart
    from the file's own claim and its chunks' (``ocr_vqa:images#000003``)."""
    return f"{spec.dataset}:{_list_name(source)}#list"


def _list_name(source: Source) -> str:
    return Path(urlsplit(source.url or "").path).name or "urllist"


def _get_list(url: str, session: Client, mirror: str | None, policy: RetryPolicy, timeout: float) -> bytes:
    where = rewrite(url, mirror) if mirror else url
    said = shown(where)  # (the request keeps a signed query and a mirror's user:password; messages do not)
    if mirror and is_local(mirror):
        try:
            return Path(where).read_bytes()
        except OSError as e:
            raise OperationError(f"cannot read the URL list {where}: {e.strerror}") from e

    def attempt() -> bytes:
        try:
            r = session.get(where, timeout=(CONNECT_TIMEOUT, timeout))
        except RequestError as e:
            again = transient_request(e, where)
            if again is not None:
                raise again from None
            raise OperationError(f"cannot download the URL list {said}: {scrub(str(e))}") from None
        # (a redirect from https to plain http is refused by the Client: no hash vouches for a list)
        if r.status_code == 200:
            try:
                return r.read_all()
            except (OSError, HTTPException) as e:
                raise Transient(f"the list was cut short: {type(e).__name__}: {scrub(str(e))}") from None
        r.close()
        if is_transient_status(r.status_code):
            raise Transient(f"HTTP {r.status_code}", retry_after_seconds(r.headers.get("Retry-After")))
        raise OperationError(f"cannot download the URL list {said}: HTTP {r.status_code}")

    try:
        return retry(attempt, policy)
    except GaveUp as e:
        if e.unreachable:
            raise OperationError(f"cannot download the URL list {said}: {e.last}", hint=OFFLINE_HINT) from None
        raise OperationError(f"cannot download the URL list {said}: {e}") from None


def iter_entries(path: Path, source: Source) -> Iterator[tuple[str, str]]:
    """(record id, URL) pairs in list order, read as they are needed."""
    key = source.url_key or "url"
    if source.list_format == "json-dict":
        from vlmdata.jsonstream import iter_json_object

        try:
            for rid, rec in iter_json_object(path):
                url = rec.get(key) if isinstance(rec, dict) else None
                if isinstance(url, str) and url:
                    yield str(rid), url
        except UserError as e:
            raise UserError(f"the URL list is not a readable JSON object {{id: {{...}}}}: {e.what}",
                            where=e.where or str(path), hint="download it again") from e
        except OSError as e:
            raise UserError(f"the URL list cannot be read: {e.strerror}", where=str(path)) from e
        return
    if source.list_format == "tsv":
        yield from _tsv_entries(path, key)
        return
    raise UserError(f"unknown list_format {source.list_format!r}", where=str(path))


def _tsv_entries(path: Path, key: str) -> Iterator[tuple[str, str]]:
    """(id, url) of each row of a TSV list with a URL; a short row's missing id is "" (a record that
    fails as unsafe, as a bad id does), a row that cannot be read an error naming its line."""
    rows = None
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = csv.DictReader(fh, delimiter="\t")
            if not rows.fieldnames or key not in rows.fieldnames:
                raise UserError(f"the TSV list has no column {key!r}", where=str(path))
            idcol = "id" if "id" in rows.fieldnames else rows.fieldnames[0]
            for r in rows:
                url = r.get(key)
                if isinstance(url, str) and url:
                    rid = r.get(idcol)
                    yield (rid if isinstance(rid, str) else ""), url
    except csv.Error as e:
        raise UserError(f"the TSV list cannot be read: {e}", where=f"{path}:{rows.line_num if rows else 0}",
                        hint="download it again, or fix that line") from None
    except UnicodeDecodeError as e:  # (the file is decoded a block at a time: the line is where it had got to)
        raise UserError(f"the TSV list is not UTF-8 ({e.reason} at byte {e.start} of a block)",
                        where=f"{path}, after line {rows.line_num if rows else 0}",
                        hint="download it again, or convert it to UTF-8") from None
    except OSError as e:
        raise UserError(f"the TSV list cannot be read: {e.strerror}", where=str(path)) from e


# ----------------------------------------------------------------- fetching


def fetch_url_list(spec: FileSpec, source: Source, root: Root, *, session: Client, jobs: int,
                   mirror: str | None, progress: Callable[[int], None] | None = None,
                   policy: RetryPolicy | None = None, timeout: float = 60.0,
                   cancel: threading.Event | None = None,
                   claimed: Callable[[str], ContextManager[object]] | None = None) -> UrlListResult:
    """Download every image of the list into ``root/spec.place.to`` as ``<id>.<place.ext>``.

    ``progress`` is called with 1 for each record handled (saved, skipped, dead or failed), so it
    can drive a bar counted in images. ``policy`` says how often a transient failure (timeout,
    5xx, 429) is tried again, ``timeout`` how many seconds without data end a try; ``session``
    downloads the list itself when it is not on disk (under ``claimed``: see list_file); ``cancel``
    stops taking new records. Returns
    counts and the dead/failed records; the same goes into the report JSON at
    ROOT/.vlmdata/reports/<dataset>-urllist.json.
    """
    policy = policy or RetryPolicy()
    started = time.time()
    entries = iter_entries(list_file(spec, source, root, session, mirror, policy, timeout, claimed), source)
    res = fetch_images(entries, root.store_path(spec.place.to), ext=spec.place.ext, jobs=jobs, mirror=mirror,
                       policy=policy, timeout=timeout, progress=progress, cancel=cancel)
    check_online(spec.key, res)
    return finish(res, spec=spec, source=source, root=root, mirror=mirror, started=started)


def check_online(what: str, res: ImagesResult) -> None:
    """A run that stopped because the network went away is an error (its images are kept)."""
    if res.offline is not None:
        raise OperationError(f"{what}: stopped after {UNREACHABLE_RUN} images in a row could not be reached "
                             f"({res.offline}); {res.saved:,} saved, the rest is left for the next run",
                             hint=OFFLINE_HINT)


def finish(res: ImagesResult, *, spec: FileSpec, source: Source, root: Root, mirror: str | None,
           started: float) -> UrlListResult:
    """The list's report written, and what came of it (one run's result, or the chunks of many merged)."""
    rpath = report_path(root, spec.dataset)
    write_report(rpath, res, spec=spec, source=source, mirror=mirror, started=started)
    return UrlListResult(saved=res.saved, skipped=res.skipped, converted=res.converted,
                         dead=sorted(res.dead.values(), key=lambda d: d.url),
                         failed=sorted(res.failed, key=lambda f: f.id), report_path=rpath, total=res.total)


def write_report(path: Path, res: ImagesResult, *, spec: FileSpec, source: Source, mirror: str | None,
                 started: float) -> None:
    """The run's report (atomically): counts, conversions, each dead URL with its ids, each failure."""
    dead = sorted(res.dead.values(), key=lambda d: d.url)
    for d in dead:
        d.ids.sort()
    atomic.write_json(path, {
        "dataset": spec.dataset,
        "file": spec.name,
        "to": spec.place.to,
        "list": source.path or shown(source.url or ""),
        "mirror": shown(mirror) if mirror else None,  # (without a user:password the mirror URL has)
        "started": started,
        "seconds": round(time.time() - started, 3),
        "total": res.total,
        "saved": res.saved,
        "skipped": res.skipped,
        "converted": res.converted,
        "converted_from": res.converted_from,
        "conversions": sorted(res.conversions, key=lambda c: c["id"]),
        "dead": [asdict(d) for d in dead],
        "dead_records": sum(len(d.ids) for d in dead),
        "failed": [asdict(f) for f in sorted(res.failed, key=lambda f: f.id)],
    })
