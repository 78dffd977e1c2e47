"""One task of a fetch (vlmdata.fetch.tasks), run by whichever process gets it, on whichever machine.

Every task runs the code a single-machine fetch runs (vlmdata.fetch.orchestrate's Fetcher: the
verified download, the safe placement, the journal) under the task's claim, and first asks
whether its work is already done (the journal, a part already downloaded, a chunk already
recorded), so a task that is retried, or run again by a rerun, resumes or does nothing.
The result is plain data (``TaskResult``), for a Ray driver or the shard's own report.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from vlmdata.errors import OperationError, VlmdataError
from vlmdata.fetch import chunks
from vlmdata.fetch.orchestrate import Fetcher
from vlmdata.fetch.outcome import FetchOptions, FileOutcome
from vlmdata.fetch.progress import Progress
from vlmdata.fetch.tasks import Task
from vlmdata.manifest import FileSpec
from vlmdata.net.errors import Cancelled
from vlmdata.sources import kind_of
from vlmdata.state import Root, satisfied
from vlmdata.state.claims import live_holder


@dataclass
class TaskResult:
    key: str  # the task's
    kind: str
    spec: str  # the file's key
    outcome: FileOutcome
    node: str
    images: int = 0  # records of a URL-list chunk handled (saved, skipped, dead or failed)
    seconds: float = 0.0


class TaskRunner:
    """Runs tasks in this process (thread-safe: a shard runs several at once)."""

    def __init__(self, root: Root, opts: FetchOptions, progress: Progress | None = None, *, node: str = "") -> None:
        self.fetcher = Fetcher(None, root, opts, progress)
        self.root, self.opt, self.node = root, opts, node or _this_node()

    def run(self, task: Task) -> TaskResult:
        t0 = time.monotonic()
        if task.kind in ("file", "join"):
            out, images = self.fetcher.fetch_one(task.spec, task.merge), 0
        elif task.kind == "part":
            out, images = self._guarded(task, self._part), 0
        elif task.kind == "chunk":
            out = self._guarded(task, self._chunk)
            images = len(task.entries) if out.state in ("fetched", "present") else 0
        else:
            raise ValueError(f"unknown task kind {task.kind!r}")
        return TaskResult(task.key, task.kind, task.spec.key, out, self.node, images, time.monotonic() - t0)

    def _guarded(self, task: Task, fn) -> FileOutcome:
        """``fn(task, outcome)`` with its failures in the outcome, as the Fetcher does for whole files."""
        t0 = time.monotonic()
        out = FileOutcome(task.key, "failed", task.spec.place.to)
        try:
            fn(task, out)
        except Cancelled:
            out.state, out.error = "cancelled", "interrupted; what was downloaded is kept and the next run resumes it"
        except VlmdataError as e:
            out.error, out.hint = (f"{e.where}: {e.what}" if e.where else e.what), e.hint
        except Exception as e:  # noqa: BLE001 - one task's failure must not stop the others
            out.error, out.hint = self.fetcher.unexpected(task.key, task.spec, e)
        out.seconds = time.monotonic() - t0
        if out.state == "failed":
            self.fetcher.progress.message(f"FAILED {task.key}: {out.error}")
        return out

    def _placed(self, spec: FileSpec) -> bool:
        entries = self.fetcher.journal.entries()
        return not self.opt.refetch and satisfied(self.root, entries, spec, self.opt.wanted_tag)

    # ------------------------------------------------------------------ a part of a file in parts
    def _part(self, task: Task, out: FileOutcome) -> None:
        spec = task.spec
        whole = self.root.download_path(spec.dataset, spec.name)
        mine = self.root.download_path(spec.dataset, task.part or "")

        def done() -> bool:  # (a part already there is checked by the join, which hashes it anyway)
            return self._placed(spec) or whole.exists() or mine.exists() or self._held(spec.key)

        got = None if done() else self.fetcher.downloader.part(spec, next(p for p in spec.parts if p.name == task.part),
                                                               done=done)  # (asked again once the claim is ours)
        if got is None:
            out.state = "present"
            return
        out.state, out.bytes, out.size, out.sha256, out.source = "fetched", got.transferred, got.digests.size, \
            got.digests.sha256, got.source
        out.resumed_from, out.connections, out.warnings = got.resumed_from, got.connections, list(got.notes)

    def _held(self, key: str) -> bool:
        """A live process holds ``key``'s claim. For a part's whole file (a one-machine fetch, or this
        fetch's join): that process downloads any part still missing itself (waiting for this part's claim
        if need be), so the part is its to fetch; asked because it deletes the joined download once placed
        and only then writes the journal, and a part task looking in between would download again."""
        return live_holder(self.root.claim(key, "", self.opt.claim_timeout).path, self.opt.claim_timeout) is not None

    # ------------------------------------------------------------------ a chunk of a URL list
    def _chunk(self, task: Task, out: FileOutcome) -> None:
        """Its records into the list's folder, under its claim, unless a fetch of the whole list holds the
        list (then wait for that one instead: chunks.wait_for_chunks is the other half of this)."""
        while True:
            with self.fetcher.downloader.claimed(task.key):
                if not self._held(task.spec.key):
                    return self._chunk_claimed(task, out)
            with self.fetcher.downloader.claimed(task.spec.key):
                pass  # (outside our chunk's claim, which the whole-list fetch waits to see gone)

    def _chunk_claimed(self, task: Task, out: FileOutcome) -> None:
        from vlmdata.fetch.urllist import check_online
        from vlmdata.fetch.urllist_client import fetch_images, target_name

        spec = task.spec
        if self._placed(spec) or (not self.opt.refetch and chunks.read_record(
                chunks.record_path(self.root, task, self.opt.url_chunk), chunks.signature(task))):
            out.state = "present"
            return
        folder = self.root.store_path(spec.place.to)
        have = set()
        for rid, url in task.entries:  # one stat per record, not a listing of a folder of millions
            name = target_name(rid, url, spec.place.ext)
            if name is not None and _nonempty(folder / name):
                have.add(name)
        bar = self.fetcher.progress.file(task.key, len(task.entries), unit="img")
        try:
            res = fetch_images(task.entries, folder, ext=spec.place.ext, jobs=self.opt.url_jobs, mirror=self.opt.mirror,
                               policy=self.opt.retry, timeout=self.opt.timeout, progress=bar.update,
                               cancel=self.fetcher.cancel, have=have)
        finally:
            bar.close()
        if self.fetcher.cancel.is_set():
            raise Cancelled()
        check_online(task.key, res)
        chunks.write_record(self.root, task, self.opt.url_chunk, res, self.node)
        out.state, out.files = "fetched", res.saved + res.skipped
        if res.dead or res.failed:
            out.warnings.append(f"{len(res.dead)} dead URL(s), {len(res.failed)} image(s) not saved")

    # ------------------------------------------------------------------ the list's one entry
    def finish_url_list(self, spec: FileSpec, sigs: list[chunks.Signature], started: float) -> FileOutcome | None:
        """Every chunk recorded: the list's report and journal entry, as one run writes them (under the
        list's claim, once); None while chunks are missing, or when another process wrote them."""
        from vlmdata.fetch.urllist import finish

        src = next((s for s in spec.sources if kind_of(s).lists_images), None)
        if src is None:
            raise OperationError(f"{spec.key}: placement 'images' needs a urllist source")
        out = FileOutcome(spec.key, "fetched", spec.place.to)
        with self.fetcher.downloader.claimed(spec.key):
            if self._placed(spec):
                return None  # another process merged them first
            res = chunks.merged(self.root, spec, self.opt.url_chunk, sigs)
            if res is None:
                return None
            done = finish(res, spec=spec, source=src, root=self.root, mirror=self.opt.mirror, started=started)
            self.fetcher.record_url_list(spec, src, done, out)
        chunks.forget(self.root, spec)
        return out


def _nonempty(path) -> bool:
    try:
        return os.stat(path).st_size > 0
    except OSError:
        return False


def _this_node() -> str:
    import socket

    return socket.gethostname()
