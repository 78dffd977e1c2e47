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
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator, Mapping
from urllib.parse import urlsplit
from urllib.request import getproxies

import certifi
import requests
import urllib3
from requests.adapters import HTTPAdapter

from vlmdata import atomic, mirror as mirror_mod
from vlmdata.errors import OperationError, UserError
from vlmdata.manifest import FileSpec, Source
from vlmdata.net.retry import GaveUp, RetryPolicy, Transient, is_transient_error, is_transient_status, retry, retry_after_seconds
from vlmdata.place.images import ImageProblem, Normalized, decode, normalize_bytes, sniff
from vlmdata.place.results import DeadUrl, FailedUrl, UrlListResult
from vlmdata.state import Root

DEAD_STATUS = frozenset({404, 410})
CONNECT_TIMEOUT = 10.0  # seconds; the read timeout is the caller's (`vlmdata fetch --timeout`)
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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
    where = mirror_mod.rewrite(url, mirror) if mirror else url
    if mirror and mirror_mod.is_local(mirror):
        try:
            return Path(where).read_bytes()
        except OSError as e:
            raise OperationError(f"cannot read the URL list {where}: {e.strerror}") from e

    def attempt() -> bytes:
        try:
            r = session.get(where, timeout=(CONNECT_TIMEOUT, timeout))
        except requests.RequestException as e:
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


class _Outcome:
    __slots__ = ("kind", "status", "error", "source_format")

    def __init__(self, kind: str, *, status: int | None = None, error: str = "", source_format: str = "") -> None:
        self.kind, self.status, self.error, self.source_format = kind, status, error, source_format


class _Client:
    """GETs of many small files from ``jobs`` threads.

    When no proxy is configured, requests go straight through urllib3 (the transport requests
    itself uses) with a pool of ``jobs`` keep-alive connections: requests' per-call work
    (environment, netrc, cookies, hooks) costs several times the CPU of the request itself, and
    with thousands of images per second the CPU is the limit. Certificates are verified (the
    session's CA bundle, else certifi's). With a proxy, auth or cookies on the session, the
    session is used, its pool enlarged to ``jobs``.
    """

    _RETRY = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5, raise_on_status=False)

    def __init__(self, session: requests.Session, jobs: int, timeout: float) -> None:
        self.session = session
        self.timeout = (CONNECT_TIMEOUT, timeout)
        self._timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT, read=timeout)
        self.pool: urllib3.PoolManager | None = None
        if _uses_proxy(session) or session.auth is not None or len(session.cookies) or session.verify is False:
            for prefix in ("http://", "https://"):
                adapter = session.get_adapter(prefix + "x")
                if getattr(adapter, "_pool_maxsize", 0) < jobs:
                    session.mount(prefix, HTTPAdapter(pool_connections=16, pool_maxsize=jobs, max_retries=0))
            return
        ca = session.verify if isinstance(session.verify, str) else certifi.where()
        self.pool = urllib3.PoolManager(num_pools=64, maxsize=jobs, block=False, headers=dict(session.headers),
                                        cert_reqs="CERT_REQUIRED", ca_certs=ca)

    def get(self, url: str) -> tuple[int, Mapping[str, str], bytes]:
        if self.pool is None:
            r = self.session.get(url, timeout=self.timeout)
            return r.status_code, r.headers, r.content
        r = self.pool.request("GET", url, retries=self._RETRY, timeout=self._timeout, preload_content=True)
        return r.status, r.headers, r.data

    def close(self) -> None:
        if self.pool is not None:
            self.pool.clear()


def _uses_proxy(session: requests.Session) -> bool:
    if session.proxies:
        return True
    return bool(session.trust_env and ({"http", "https", "all"} & set(getproxies())))


def _is_transient(e: BaseException) -> bool:
    if isinstance(e, requests.RequestException):
        return is_transient_error(e)
    if isinstance(e, urllib3.exceptions.MaxRetryError):
        if e.reason is None:  # too many redirects
            return False
        e = e.reason
    if isinstance(e, (urllib3.exceptions.SSLError, urllib3.exceptions.LocationValueError)):
        return False  # a certificate problem or a bad URL does not go away by retrying
    return isinstance(e, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


def _download(url: str, client: _Client, mirror: str | None, policy: RetryPolicy,
              stop: threading.Event) -> tuple[bytes | None, _Outcome | None]:
    """The body of ``url``, or an outcome saying why there is none."""
    where = mirror_mod.rewrite(url, mirror) if mirror else url
    if mirror and mirror_mod.is_local(mirror):
        try:
            return Path(where).read_bytes(), None
        except FileNotFoundError:
            return None, _Outcome("dead", status=None, error="not in the mirror")
        except OSError as e:
            return None, _Outcome("failed", error=f"cannot read {where}: {e.strerror}")

    def attempt() -> tuple[bytes | None, _Outcome | None]:
        if stop.is_set():
            return None, _Outcome("failed", error="interrupted")
        try:
            status, headers, body = client.get(where)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
            if not _is_transient(e):
                return None, _Outcome("failed", error=f"{type(e).__name__}: {e}")
            cause = e.reason if isinstance(e, urllib3.exceptions.MaxRetryError) and e.reason is not None else e
            raise Transient(type(cause).__name__) from None  # the cause (ReadTimeoutError), not the wrapper
        if status == 200:
            return body, None
        if status in DEAD_STATUS:
            return None, _Outcome("dead", status=status, error=f"HTTP {status}")
        if not is_transient_status(status):
            return None, _Outcome("failed", status=status, error=f"HTTP {status}")
        raise Transient(f"HTTP {status}", retry_after_seconds(headers.get("Retry-After")))

    try:
        return retry(attempt, policy, wait=stop.wait)
    except GaveUp as e:
        return None, _Outcome("failed", error=f"{e.last} after {e.tries} tries")


def _save(data: bytes, final: Path, *, to_jpeg: bool) -> _Outcome:
    try:
        if to_jpeg:
            norm = normalize_bytes(data)
        else:  # no forced extension: keep the bytes, but only once they decode
            decode(data)
            norm = Normalized(data, sniff(data[:16]) or "unknown", False)
    except ImageProblem as p:
        return _Outcome("failed", error=f"{p.status} image ({p.detail})")
    tmp = final.with_name(f"{atomic.TMP_PREFIX}{final.name}.{threading.get_ident()}")
    with open(tmp, "wb") as fh:
        fh.write(norm.data)
    os.replace(tmp, final)  # no fsync per image: the folder is fsynced once at the end
    return _Outcome("converted" if norm.converted else "saved", source_format=norm.source_format)


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
    client = _Client(session, jobs, timeout)

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
        data, outcome = _download(url, client, mirror, policy, stop)
        if outcome is None:
            outcome = _save(data, folder / name, to_jpeg=to_jpeg)  # type: ignore[arg-type]
        with lock:
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
