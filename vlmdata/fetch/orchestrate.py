"""`vlmdata fetch` without the command line: files run in threads, each fetched, verified, placed, journaled.

Per file, in order:
0. its claim (vlmdata.state.claims): another process, on this machine or another that shares the
   root, may be fetching the same file; this one waits for it (or takes over a dead one's claim);
1. already placed (journal + target on disk): nothing to do, no request at all;
2. a verified download (vlmdata.fetch.verified: a finished download already there, else each
   source in manifest order, checked against size and hashes, pinned when nothing is published);
   or, for ``--only-referenced-by`` on a tar, the wanted members streamed (vlmdata.fetch.subset);
   or, for placement "images", every image of a URL list (vlmdata.fetch.urllist);
3. placement (``vlmdata.place.place_download``), then a journal entry.

Files run ``jobs`` at a time; per-image URL lists run after the other files (their list is often
one of those files). One file's failure becomes its outcome and never stops the others. Ctrl-C
stops every download at its next read, keeps the ``.part`` files, and raises KeyboardInterrupt once
the workers have stopped.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from vlmdata.errors import OperationError, VlmdataError, describe_os_error
from vlmdata.fetch.http import HttpEngine
from vlmdata.fetch.outcome import FetchOptions, FetchReport, FileOutcome, present_outcome, repo_files_said
from vlmdata.fetch.progress import Progress
from vlmdata.fetch.threads import run_in_threads
from vlmdata.fetch.verified import MANIFEST_WORDS, NotTheDescribedFile, Verified, VerifiedDownloader
from vlmdata.manifest import Catalog, FileSpec, Source
from vlmdata.net.errors import Cancelled
from vlmdata.net.client import Client
from vlmdata.net.urls import shown
from vlmdata.place import place_download
from vlmdata.sources import HubAccess, describe, kind_of
from vlmdata.sources.hf import redact, token_from_env
from vlmdata.state import Journal, JournalEntry, Root, satisfied
from vlmdata.units import human_bytes

if TYPE_CHECKING:
    from vlmdata.fetch.urllist import UrlListResult


class Fetcher:
    def __init__(self, catalog: Catalog | None, root: Root, options: FetchOptions | None = None,
                 progress: Progress | None = None) -> None:
        """``catalog`` None: a task runner on a cluster node (vlmdata.fetch.worker), which is told
        whether a file shares its target folder instead of looking it up."""
        self.catalog = catalog
        self.root = root
        self.opt = options or FetchOptions()
        self.progress = progress or Progress(quiet=True)
        self.cancel = threading.Event()
        self.journal = Journal(root.state_dir)
        self.session = Client(pool_size=max(16, self.opt.jobs * 2))
        self.engine = HttpEngine(self.session, retry=self.opt.retry, connections=self.opt.connections,
                                 ramp=self.opt.ramp, timeout=self.opt.timeout, min_split=self.opt.min_split,
                                 cancel=self.cancel)
        self.hub = HubAccess(self.opt.hf_endpoint, token_from_env())
        self.downloader = VerifiedDownloader(root, self.engine, self.progress, self.cancel, hub=self.hub,
                                             mirror=self.opt.mirror, verify_tries=self.opt.verify_tries,
                                             claim_timeout=self.opt.claim_timeout, update=self.opt.update)

    # ------------------------------------------------------------------ the run
    def todo(self, specs: list[FileSpec], entries: dict[str, JournalEntry] | None = None) -> list[FileSpec]:
        entries = self.journal.entries() if entries is None else entries
        return [s for s in specs if not self._already_placed(s, entries)]

    def _already_placed(self, spec: FileSpec, entries: dict[str, JournalEntry]) -> bool:
        # a subset placement is only good enough for the same subset (state.satisfied); --update looks
        # again at every file whose Hub source follows a branch
        return not self.opt.refetch and not self.downloader.spec_moves(spec) \
            and satisfied(self.root, entries, spec, self.opt.wanted_tag)

    def run(self, specs: list[FileSpec], todo: list[FileSpec] | None = None) -> FetchReport:
        """Fetch ``specs``; ``todo`` is what ``self.todo(specs)`` returned, if the caller already asked."""
        t0 = time.monotonic()
        report = FetchReport()
        outcomes: dict[str, FileOutcome] = {}
        entries = self.journal.entries()
        todo = self.todo(specs, entries) if todo is None else todo
        pending = {s.key for s in todo}
        for s in specs:
            if s.key not in pending:
                outcomes[s.key] = present_outcome(s, entries[s.key])
        first = [s for s in todo if s.place.kind != "images"]
        later = [s for s in todo if s.place.kind == "images"]
        try:
            for batch in (first, later):
                for o in self._run_batch(batch):
                    outcomes[o.key] = o
        finally:
            self.progress.close()
        report.outcomes = [outcomes[s.key] for s in specs if s.key in outcomes]
        report.seconds = time.monotonic() - t0
        return report

    def _run_batch(self, specs: list[FileSpec]) -> list[FileOutcome]:
        results: list[FileOutcome] = []
        if specs:
            run_in_threads(specs, self.fetch_one, min(self.opt.jobs, len(specs)), self.cancel, results.append)
        return results

    # ------------------------------------------------------------------ one file
    def fetch_one(self, spec: FileSpec, merge: bool | None = None) -> FileOutcome:
        """Fetch, verify, place and journal one file under its claim; every failure becomes the
        outcome, never an exception. ``merge``: it fills a folder other files place into too
        (None: look it up in the catalog)."""
        try:
            with self.downloader.claimed(spec.key):
                entries = self.journal.entries()  # now, not when the run began: another process may have placed it
                if self._already_placed(spec, entries):
                    return present_outcome(spec, entries[spec.key])
                return self._fetch_claimed(spec, self._shares_target(spec) if merge is None else merge)
        except Cancelled:
            return FileOutcome(spec.key, "cancelled", spec.place.to,
                               error="interrupted; the .part file is kept and the next run resumes it")
        except OSError as e:  # the claim itself (a full or read-only filesystem): this file's failure only
            return FileOutcome(spec.key, "failed", spec.place.to,
                               error=f"{spec.key}: cannot claim it in {self.root.claims_dir}: {e.strerror or e}")

    def unexpected(self, key: str, spec: FileSpec, e: Exception) -> tuple[str, str | None]:
        """(error, hint) for a failure no check of ours raised, of the file or task ``key``: a full disk or
        a folder not ours said as such with what to do, anything else by its type and message, without the
        token, signed query strings or a URL's user:password (urllib3's errors quote the URL)."""
        known = describe_os_error(e, option="--root") if isinstance(e, OSError) else None
        if known is not None:
            return f"{key}: {known[1]} (placing it into {spec.place.to})", known[2]
        return f"{key}: {type(e).__name__}: {redact(str(e), self.hub.token)}", None

    def _fetch_claimed(self, spec: FileSpec, merge: bool) -> FileOutcome:
        t0 = time.monotonic()
        out = FileOutcome(spec.key, "failed", spec.place.to)
        try:
            if spec.place.kind == "images":
                self._url_list(spec, out)
            elif spec.place.kind == "repo":
                self._repo(spec, out)
            elif self.opt.wanted is not None and spec.place.kind == "extract" and not spec.parts and _is_tar(spec):
                self._subset(spec, out, merge)
            elif not self._repinned(spec, out):
                got = self.downloader.file(spec)
                out.bytes, out.resumed_from, out.connections = got.transferred, got.resumed_from, got.connections
                out.size, out.sha256, out.source = got.digests.size, got.digests.sha256, got.source
                self._place(spec, got, out, merge)
            if out.state != "repinned":
                out.state = "fetched"
        except Cancelled:
            out.state, out.error = "cancelled", "interrupted; the .part file is kept and the next run resumes it"
        except VlmdataError as e:  # a failed check, a refused archive, ...: the message is for the user
            out.error, out.hint = (f"{e.where}: {e.what}" if e.where else e.what), e.hint
            if isinstance(e, NotTheDescribedFile) and out.hint:  # (the manifest it is described in)
                ds = self.catalog.datasets.get(spec.dataset) if self.catalog is not None else None
                if ds is not None:
                    out.hint = out.hint.replace(MANIFEST_WORDS, f"{ds.origin} (the entry of {spec.name})")
        except Exception as e:  # noqa: BLE001 - one file's failure must not stop the others
            out.error, out.hint = self.unexpected(spec.key, spec, e)
        out.seconds = time.monotonic() - t0
        if out.state == "fetched":
            what = repo_files_said(out) or (human_bytes(out.size) if out.size is not None else "")
            self.progress.message(f"done {spec.key}: {what} from {out.source} in {out.seconds:.1f} s".replace("  ", " "))
        elif out.state == "failed":
            self.progress.message(f"FAILED {spec.key}")
        return out

    def _repinned(self, spec: FileSpec, out: FileOutcome) -> bool:
        """--update on a placed Hub file whose bytes at the branch's newest commit are provably the pinned
        ones: the lock and the journal name that commit, nothing is downloaded (vlmdata.fetch.repin)."""
        if not self.opt.update or self.opt.refetch:
            return False
        from vlmdata.fetch.repin import repin

        kept = repin(spec, self.downloader, self.journal, self.opt.wanted_tag)
        if kept is None:
            return False
        out.state, out.size, out.sha256, out.source = "repinned", kept.size, kept.sha256, kept.source
        moved = f"from commit {kept.previous} to {kept.revision}" if kept.previous != kept.revision else \
            f"still at commit {kept.revision}"
        self.progress.message(f"{spec.key}: --update: {moved}, the same bytes: re-pinned, not downloaded")
        return True

    def _shares_target(self, spec: FileSpec) -> bool:
        """Another file of the catalog places into the same folder: fill it, do not replace it."""
        return self.catalog is not None and shares_target(self.catalog, spec)

    # ------------------------------------------------------------------ placement + journal
    def _place(self, spec: FileSpec, got: Verified, out: FileOutcome, merge: bool) -> None:
        wanted = self.opt.wanted if spec.place.kind == "extract" else None
        res = place_download(spec, got.path, self.root, merge=merge, wanted=wanted,
                             keep_archive=self.opt.keep_archives)
        out.files, out.warnings = res.files, got.notes + list(res.warnings)
        extra: dict[str, Any] = {"revision": got.revision, "warnings": out.warnings}
        if wanted is not None:
            extra["subset"] = self.opt.wanted_tag
        self.journal.record(JournalEntry(key=spec.key, size=got.digests.size, sha256=got.digests.sha256,
                                         source=got.source, to=res.to, files=res.files, extra=extra))

    def _url_list(self, spec: FileSpec, out: FileOutcome) -> None:
        """Placement "images": every image of the file's URL list (vlmdata.fetch.urllist)."""
        src = next((s for s in spec.sources if kind_of(s).lists_images), None)
        if src is None:
            raise OperationError(f"{spec.key}: placement 'images' needs a urllist source")
        if src.path and not self.root.store_path(src.path).exists() and not src.url:
            owner = next((f.key for ds in self.catalog.datasets.values() for f in ds.files if f.place.to == src.path),
                         None) if self.catalog is not None else None
            raise OperationError(f"{spec.key}: the URL list {self.root.store_path(src.path)} is not there yet",
                                 hint=f"fetch it first: vlmdata fetch {owner}" if owner else "put the list there first")
        from vlmdata.fetch.chunks import wait_for_chunks
        from vlmdata.fetch.urllist import fetch_url_list  # (asyncio, aiohttp, Pillow: only for URL lists)

        wait_for_chunks(self.root, spec, self.opt.claim_timeout, self.cancel, self.progress.message)
        bar = self.progress.file(spec.key, spec.place.count, unit="img")
        session = Client(pool_size=self.opt.url_jobs)
        try:
            res = fetch_url_list(spec, src, self.root, session=session, jobs=self.opt.url_jobs, mirror=self.opt.mirror,
                                 progress=bar.update, policy=self.opt.retry, timeout=self.opt.timeout,
                                 cancel=self.cancel, claimed=self.downloader.claimed)
        finally:
            bar.close()
            session.close()
        self.record_url_list(spec, src, res, out)

    def record_url_list(self, spec: FileSpec, src: Source, res: UrlListResult, out: FileOutcome) -> None:
        """A finished URL list (one run, or its chunks merged): its outcome and its journal entry."""
        out.files = res.saved + res.skipped
        out.source = describe(src) + (f" via mirror {shown(self.opt.mirror)}" if self.opt.mirror else "")
        if res.dead:
            out.warnings.append(f"{len(res.dead)} dead URL(s) (404/410 or absent from the mirror); see {res.report_path}")
        retry = sum(f.again for f in res.failed)
        if retry:
            out.warnings.append(f"{retry} image(s) could not be downloaded (retries spent); see {res.report_path}; "
                                f"run `vlmdata fetch {spec.key} --refetch` to try them again")
        if len(res.failed) > retry:
            out.warnings.append(f"{len(res.failed) - retry} image(s) are served as no usable image (truncated, "
                                f"undecodable, too large, or a record id that is no file name); see "
                                f"{res.report_path}: fetching them again gets the same bytes")
        self.journal.record(JournalEntry(key=spec.key, size=None, sha256=None, source=out.source or "", to=spec.place.to,
                                         files=out.files, extra={"saved": res.saved, "skipped": res.skipped,
                                                                 "converted": res.converted, "dead": len(res.dead),
                                                                 "failed": len(res.failed),
                                                                 "report": str(res.report_path)}))

    def _repo(self, spec: FileSpec, out: FileOutcome) -> None:
        """Placement "repo": every selected file of a Hub repo (vlmdata.fetch.repo)."""
        from vlmdata.fetch.repo import fetch_repo

        res = fetch_repo(spec, self.downloader, self.journal, endpoint=self.opt.hf_endpoint, jobs=self.opt.jobs,
                         refetch=self.opt.refetch)
        out.bytes, out.resumed_from, out.connections = res.transferred, res.resumed_from, res.connections
        out.size, out.files, out.source = res.listing.size, len(res.listing.files), res.source
        out.sha256 = res.listing.digest()
        if self.downloader.spec_moves(spec):  # --update: which of its files came, which were kept as they are
            out.repo_files = {"downloaded": res.fetched, "repinned": res.present, "removed": res.removed}
            if not res.fetched and not res.removed:
                out.state = "repinned"
                self.progress.message(f"{spec.key}: --update: none of its {len(res.listing.files)} file(s) changed at "
                                      f"commit {res.listing.commit}: re-pinned, nothing downloaded")

    def _subset(self, spec: FileSpec, out: FileOutcome, merge: bool) -> None:
        """--only-referenced-by on a tar: the wanted members from the stream (vlmdata.fetch.subset)."""
        from vlmdata.fetch.subset import stream_tar_subset

        assert self.opt.wanted is not None
        res, got = stream_tar_subset(spec, self.downloader, wanted=self.opt.wanted, policy=self.opt.retry,
                                     merge=merge)
        d = got.digests
        out.bytes, out.size, out.sha256, out.source, out.files = d.size, d.size, d.sha256, got.source, res.files
        out.warnings = list(res.warnings)
        self.journal.record(JournalEntry(key=spec.key, size=d.size, sha256=d.sha256, source=got.source, to=res.to,
                                         files=res.files, extra={"subset": self.opt.wanted_tag,
                                                                 "warnings": out.warnings}))


def shares_target(catalog: Catalog, spec: FileSpec) -> bool:
    """Another file of ``catalog`` places into ``spec``'s folder: fill it, do not replace it."""
    return any(f.place.to == spec.place.to and f.key != spec.key for ds in catalog.datasets.values() for f in ds.files)


def _is_tar(spec: FileSpec) -> bool:
    from vlmdata.fetch.subset import is_tar  # (only with --only-referenced-by)

    return is_tar(spec)
