"""Many small images from their URLs into one folder: an asyncio client with a bounded number in flight.

``fetch_images(entries, folder, ...)`` is one chunk of a URL list (any iterable of ``(record
id, URL)``, read lazily), so a whole list and a few thousand ids of it on a cluster node run the
same code; the returned ``ImagesResult`` of several chunks merge into one report.

One event loop (uvloop's: _run_loop) keeps ``jobs`` requests in flight over aiohttp's keep-alive
connections (proxies and netrc credentials come from the environment, as with requests, looked up
once per host: vlmdata.net.env_access). A JPEG whose marker structure proves it whole (vlmdata.place.jpegscan)
is written by the loop itself, a few microseconds; anything that needs a decode or a conversion
(a GIF named .jpg, a JPEG the scan cannot judge, a local mirror's files) goes to saver threads
beside the loop, one per core, through a bounded queue. Handing every image to a thread cost more
than writing it: the queue, and the loop waiting for the GIL after each of its socket calls. A
folder where writes are slow (a network file system: a moving average over about SLOW_WRITES
writes above SLOW_WRITE seconds) goes back to the threads for every image, so the loop never
waits on the disk for long.

Per record: a file already in ``folder`` (non-empty) is skipped; an id that is no safe file name, a
URL that is not http(s) and one ``--mirror`` cannot place fail at once, for good (the record's failure,
not the run's); 404/410 are dead (with the ids that point at them); other 4xx fail, and so does an
https address redirected to plain http at any hop; timeouts,
dropped connections, 5xx and 429 are tried again with vlmdata.net.retry's policy, honouring
Retry-After; a host that cannot be reached at all gets one short retry, and UNREACHABLE_RUN such
records in a row stop the run (``offline``). Each image is proven whole before it is written
(vlmdata.place.images: empty and truncated ones fail), converted to JPEG when asked, and given its
name only once written whole.

Why one file of ~400 lines: the loop's requests, the saver threads and the per-record outcomes all
update one ImagesResult under one lock; split, each part would take the others' state as arguments.
"""
from __future__ import annotations

import asyncio
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from vlmdata import atomic
from vlmdata.errors import UserError
from vlmdata.net.retry import (GaveUp, RetryPolicy, Transient, aretry, is_transient_status, is_unreachable,
                               retry_after_seconds, unreachable_reason)
from vlmdata.net.env_access import EnvAccess
from vlmdata.net.client import USER_AGENT, tls_context
from vlmdata.net.urls import host_of, is_local, rewrite, scrub, shown
from vlmdata.place.images import ImageProblem, quick_save, save_image

DEAD_STATUS = frozenset({404, 410})
UNREACHABLE_RUN = 64  # images in a row whose host cannot be reached: the network is gone, stop
SLOW_WRITE, SLOW_WRITES = 0.002, 64  # writes slower than this on average over about this many: a slow folder
CONNECT_TIMEOUT = 10.0  # seconds; the read timeout is the caller's (`vlmdata fetch --timeout`)
# An image's body is held in memory until it is saved: a URL that streams without end (or a
# hostile one) must not fill it. Real list images are kB to a few MB.
MAX_IMAGE_BYTES = 64 << 20
LEFTOVER_AGE = 600.0  # seconds: an image's temporary file older than this is a killed run's leftover
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Bytes in an image's name: 255 in one name (ext4, xfs, btrfs), less room for the temporary name
# it may be written under first (place.images: ".tmp-NAME.THREAD").
NAME_LIMIT = 255 - 32
# Failures another run cannot fix (FailedUrl.again False), besides bytes that are no usable image:
BAD_ID = f"record id is not a safe file name (letters, digits, '._-', at most {NAME_LIMIT} bytes with the extension)"
NOT_HTTP = "not an http(s) URL"
_FOR_GOOD = (BAD_ID, NOT_HTTP, "larger than", "cannot mirror")


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
    again: bool = True  # a later try may get it (network, server); False: the bytes served are no usable image


@dataclass
class ImagesResult:
    """What became of the records of one or more chunks."""

    total: int = 0  # records seen
    saved: int = 0  # images written
    skipped: int = 0  # already there
    converted: int = 0  # saved after conversion to JPEG (counted in `saved` too)
    converted_from: dict[str, int] = field(default_factory=dict)
    conversions: list[dict[str, str]] = field(default_factory=list)  # {"id", "from"}
    dead: dict[str, DeadUrl] = field(default_factory=dict)  # by URL
    failed: list[FailedUrl] = field(default_factory=list)
    offline: str | None = None  # why the run stopped early: UNREACHABLE_RUN images in a row could not be reached

    def merge(self, other: "ImagesResult") -> None:
        self.total += other.total
        self.saved += other.saved
        self.skipped += other.skipped
        self.converted += other.converted
        for k, v in other.converted_from.items():
            self.converted_from[k] = self.converted_from.get(k, 0) + v
        self.conversions += other.conversions
        for url, d in other.dead.items():
            self.dead.setdefault(url, DeadUrl(url, d.status)).ids.extend(d.ids)
        self.failed += other.failed
        self.offline = self.offline or other.offline


def existing_names(folder: Path) -> set[str]:
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


def target_name(rid: str, url: str, ext: str | None) -> str | None:
    """``<id>.<ext>`` (the URL's extension when ``ext`` is None), or None for an id unsafe as a file name."""
    if not _SAFE_ID.fullmatch(rid) or ".." in rid:
        return None
    if ext is None:
        ext = os.path.splitext(urlsplit(url).path)[1].lstrip(".").lower() or "jpg"
    name = f"{rid}.{ext}"
    # (a longer name fails every write with ENAMETOOLONG, which would stop the run at this record each time)
    return name if len(name.encode()) <= NAME_LIMIT else None


def fetch_images(entries: Iterable[tuple[str, str]], folder: Path, *, ext: str | None, jobs: int,
                 mirror: str | None, policy: RetryPolicy, timeout: float,
                 progress: Callable[[int], None] | None = None, cancel: threading.Event | None = None,
                 have: set[str] | None = None) -> ImagesResult:
    """Fetch every ``(record id, URL)`` of ``entries`` into ``folder`` as ``<id>.<ext>``.

    ``ext`` "jpg"/"jpeg" converts every image to a real JPEG; None keeps the bytes and the URL's
    extension. ``have``: names already in the folder (default: listed here). ``progress(1)`` per
    record; ``cancel`` stops taking new records. Blocks until done (runs its own event loop, so
    call it from any thread that is not running one).
    """
    folder.mkdir(parents=True, exist_ok=True)
    # what a killed run left, but not what another process (a chunk of the same list on another
    # machine) is writing right now: an image's temporary file lives for milliseconds
    atomic.cleanup_temporaries(folder, older_than=LEFTOVER_AGE)
    run = _Run(folder, ext, max(1, jobs), mirror, policy, timeout, progress or (lambda n: None),
               cancel or threading.Event(), existing_names(folder) if have is None else have)
    try:
        _run_loop(run.main(iter(entries)))
    finally:
        atomic.fsync_dir(folder)
    return run.result


def _run_loop(main: Any) -> None:
    """Run ``main`` on a new event loop: uvloop's where it is installed (a dependency on Linux and
    macOS), else asyncio's. The loop is this client's CPU: 20,000 images at 20 ms each took
    8.7-9.4 s instead of 10.0-12.0 s, 8.8 instead of 10.9 CPU-seconds (bench.peers' latency server)."""
    try:
        import uvloop
    except ImportError:  # (Windows: asyncio's own loop)
        asyncio.run(main)
        return
    uvloop.run(main)


class _Run:
    def __init__(self, folder: Path, ext: str | None, jobs: int, mirror: str | None, policy: RetryPolicy,
                 timeout: float, progress: Callable[[int], None], cancel: threading.Event, have: set[str]) -> None:
        self.folder, self.ext, self.jobs, self.mirror = folder, ext, jobs, mirror
        self.policy, self.timeout, self.progress, self.cancel, self.have = policy, timeout, progress, cancel, have
        self.to_jpeg = (ext or "").lower() in ("jpg", "jpeg")
        self.folder_str = str(folder)
        self.write_in_loop, self.write_avg = True, 0.0  # (a slow file system: the saver threads write)
        self.local = mirror is not None and is_local(mirror)
        self.result = ImagesResult()
        self.lock = threading.Lock()  # the result is written by the loop and by the saver threads
        self.saving: queue.Queue[tuple | None] = queue.Queue(maxsize=2 * jobs)
        self.list_error: Exception | None = None
        self.save_error: BaseException | None = None
        self.unreachable_run = 0  # records in a row whose host could not be reached

    async def main(self, it: Any) -> None:
        import aiohttp  # here: its import (and its default TLS contexts) only when a list is fetched
        import yarl  # (aiohttp's URLs: parsed once per request, for the host's cached proxy and netrc)

        savers = [threading.Thread(target=self._saver, name=f"vlmdata-image{i}", daemon=True) for i in range(_cores())]
        for t in savers:
            t.start()
        connector = aiohttp.TCPConnector(limit=self.jobs, limit_per_host=self.jobs, ssl=tls_context(),
                                         ttl_dns_cache=600)
        timeouts = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=self.timeout)
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeouts, headers=headers,
                                             trust_env=False) as session:  # (the environment: EnvAccess)
                self.session, self.aiohttp, self.env, self.URL = session, aiohttp, EnvAccess(), yarl.URL
                await asyncio.gather(*(self._worker(it) for _ in range(self.jobs)))
        finally:
            for _ in savers:
                self.saving.put(None)
            for t in savers:
                t.join()
        if self.list_error is not None:
            raise self.list_error
        if self.save_error is not None:
            raise self.save_error

    async def _worker(self, it: Any) -> None:
        while not self._stopping():
            try:
                item = next(it, None)  # records are read from the list as they are needed
            except Exception as e:  # noqa: BLE001 - a broken list: the others finish what they hold
                self.list_error = e
                return
            if item is None:
                return
            await self._one(*item)

    def _stopping(self) -> bool:
        return self.cancel.is_set() or self.result.offline is not None or self.list_error is not None \
            or self.save_error is not None

    async def _one(self, rid: str, url: str) -> None:
        name = target_name(rid, url, self.ext)
        if name is None:
            return self._record(rid, url, ("failed", None, BAD_ID))
        if name in self.have:
            return self._record(rid, url, ("skipped", None, ""))
        if not url[:8].lower().startswith(("http://", "https://")):  # (file://, ftp://, //cdn/x, a path)
            return self._record(rid, url, ("failed", None, NOT_HTTP))
        try:
            where = rewrite(url, self.mirror) if self.mirror else url
        except UserError as e:  # (one record's odd URL is that record's failure, not the run's)
            return self._record(rid, url, ("failed", None, e.what))
        if self.local:
            return await self._hand_over((rid, url, where, f"{self.folder_str}/{name}"))
        try:
            data = await aretry(lambda: self._get(where), self.policy, wait=self._wait)
        except GaveUp as e:
            if e.unreachable:
                return self._record(rid, url, ("failed", None, str(e.last)), unreachable=True)
            data = ("failed", None, f"{e.last} after {e.tries} tries")
        if isinstance(data, tuple):
            return self._record(rid, url, data)
        final = f"{self.folder_str}/{name}"
        if not self.write_in_loop:
            return await self._hand_over((rid, url, data, final))
        t0 = time.perf_counter()
        try:  # a JPEG proven whole by its structure is written here: handing it to a thread costs more
            quick = quick_save(data, final)
            # a moving average: one write that waited for a busy core is not a slow file system
            self.write_avg += (time.perf_counter() - t0 - self.write_avg) / SLOW_WRITES
            self.write_in_loop = self.write_avg <= SLOW_WRITE
        except ImageProblem as p:
            return self._record(rid, url, ("failed", "", f"{p.status} image ({p.detail})"))
        except OSError as e:  # a disk error: the run stops and says so
            self.save_error = e
            return
        if quick is not None:
            return self._record(rid, url, ("saved", "jpeg", ""))
        await self._hand_over((rid, url, data, final))

    async def _hand_over(self, item: tuple) -> None:
        """Queue a downloaded image for the saver threads; wait (without blocking the loop) while they are behind."""
        while True:
            try:
                return self.saving.put_nowait(item)
            except queue.Full:
                await asyncio.sleep(0.002)

    def _saver(self) -> None:
        """A thread that decodes, converts and writes images, and records what became of them.

        Images reach it through a queue rather than one executor call each: the event loop hands
        an image over without being woken for the answer, so it spends its time on the network."""
        while True:
            item = self.saving.get()
            if item is None:
                return
            rid, url, data, final = item
            try:
                if isinstance(data, str):  # a local-folder mirror: the path to read
                    outcome = _from_folder(data, final, self.to_jpeg)
                else:
                    outcome = _save(data, final, self.to_jpeg)
            except BaseException as e:  # noqa: BLE001 - a disk error: the run stops and says so
                self.save_error = e
                continue
            self._record(rid, url, outcome)

    def _record(self, rid: str, url: str, outcome: tuple[str, Any, str], *, unreachable: bool = False) -> None:
        kind, detail, error = outcome
        with self.lock:
            r = self.result
            r.total += 1
            # offline: stop after a run of images whose hosts cannot be reached at all, instead of
            # failing each of 200k records (what was saved stays; the next run resumes)
            self.unreachable_run = self.unreachable_run + 1 if unreachable else 0
            if self.unreachable_run >= UNREACHABLE_RUN and r.offline is None:
                r.offline = error
            if kind == "skipped":
                r.skipped += 1
            elif kind == "dead":
                url = shown(url)  # (as the report keeps it: a signed query or a user:password are credentials)
                r.dead.setdefault(url, DeadUrl(url, detail)).ids.append(rid)
            elif kind == "failed":  # detail "": the bytes were no usable image; a bad id or a too-large body: neither
                stuck = detail == "" or error.startswith(_FOR_GOOD)
                r.failed.append(FailedUrl(rid, shown(url), error, not stuck))
            else:
                r.saved += 1
                if kind == "converted":
                    r.converted += 1
                    r.converted_from[detail] = r.converted_from.get(detail, 0) + 1
                    r.conversions.append({"id": rid, "from": detail})
        self.progress(1)

    async def _wait(self, seconds: float) -> None:
        """Sleep between tries; a cancelled run stops waiting (and its next try says so)."""
        end = asyncio.get_running_loop().time() + seconds
        while not self.cancel.is_set():
            left = end - asyncio.get_running_loop().time()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.1))

    async def _get(self, url: str) -> bytes | tuple[str, Any, str]:
        """The body, or an outcome (kind, status, error) saying why there is none; Transient to try again."""
        aiohttp = self.aiohttp
        if self.cancel.is_set() or self.result.offline is not None:
            return "failed", None, "interrupted"
        try:
            target = self.URL(url)
            async with self.session.get(target, max_redirects=5, **self.env.kwargs(target)) as resp:
                plain = [h.url for h in (*resp.history, resp) if h.url.scheme != "https"]
                if target.scheme == "https" and plain:
                    # (an image has no hash to check: after a downgrade anyone on the path could swap it,
                    # or send it on to an https host of their own: every hop is looked at, not the last)
                    return "failed", None, f"redirected to {shown(str(plain[0]))}, which is not HTTPS: refused"
                status = resp.status
                if status == 200:
                    return await _body(resp, MAX_IMAGE_BYTES)
                if status in DEAD_STATUS:
                    return "dead", status, f"HTTP {status}"
                if not is_transient_status(status):
                    return "failed", status, f"HTTP {status}"
                raise Transient(f"HTTP {status}", retry_after_seconds(resp.headers.get("Retry-After")))
        except (aiohttp.TooManyRedirects, aiohttp.InvalidURL, ValueError, aiohttp.ClientSSLError,
                aiohttp.ClientConnectorCertificateError) as e:
            # (retrying does not fix these; aiohttp quotes the URL, or the location it was sent to, whole)
            return "failed", None, scrub(f"{type(e).__name__}: {e}")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            if is_unreachable(e):  # no DNS, refused, network down: one short retry (vlmdata.net.retry)
                raise Transient(f"cannot reach {host_of(url)}: {unreachable_reason(e)}", unreachable=True) from None
            raise Transient(type(e).__name__) from None


async def _body(resp: Any, limit: int) -> bytes | tuple[str, Any, str]:
    """The response's body, or a failed outcome when it is larger than ``limit`` bytes."""
    from vlmdata.units import human_bytes

    too_big = ("failed", resp.status, f"larger than {human_bytes(limit)}: not taken for an image")
    if resp.content_length is not None:  # the parser reads exactly this many bytes
        return too_big if resp.content_length > limit else await resp.read()
    chunks, total = [], 0
    async for chunk in resp.content.iter_chunked(1 << 20):
        total += len(chunk)
        if total > limit:
            return too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _cores() -> int:
    """Decode threads: one per core this process may run on (more only fight over the GIL)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _save(data: bytes, final: str, to_jpeg: bool) -> tuple[str, str, str]:
    try:
        norm = save_image(data, final, to_jpeg=to_jpeg)
    except ImageProblem as p:
        return "failed", "", f"{p.status} image ({p.detail})"
    return ("converted" if norm.converted else "saved"), norm.source_format, ""


def _from_folder(where: str, final: str, to_jpeg: bool) -> tuple[str, Any, str]:
    """A local-folder mirror: the file, or dead when it is not there."""
    try:
        data = Path(where).read_bytes()
    except FileNotFoundError:
        return "dead", None, "not in the mirror"
    except OSError as e:
        return "failed", None, f"cannot read {where}: {e.strerror}"
    return _save(data, final, to_jpeg)
