"""`vlmdata fetch` without the command line: every selected file downloaded, verified, placed, journaled.

Per file, in order:
1. already placed (journal + target on disk): nothing to do, no request at all;
2. a finished download already in the downloads folder (an earlier run, ``--keep-archives``, or a
   file a person saved there for a ``manual`` source): hashed and checked instead of downloaded;
3. otherwise each source in manifest order (see ``vlmdata.fetch.sources``); a download whose size
   or hash does not match (manifest sha256 / md5, the hub's LFS sha256, else the ``vlmdata.lock``
   pin) is deleted and retried once, then the next source is tried; nothing mismatching is placed;
4. the first verified download of a file without a published sha256 is pinned in vlmdata.lock;
5. placement (``vlmdata.place.place_download``), then a journal entry.

Files run ``jobs`` at a time; per-image URL lists run after the other files (their list is often
one of those files). Ctrl-C stops every download at its next read, keeps the ``.part`` files, and
raises KeyboardInterrupt once the workers have stopped.
"""
from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from vlmdata.errors import OperationError, VlmdataError
from vlmdata.fetch import hf as hf_mod
from vlmdata.fetch.hashing import Digests, StreamHasher, hash_file
from vlmdata.fetch.http import Cancelled, Fetched, HttpEngine, SourceFailed, copy_local, discard_partial
from vlmdata.fetch.progress import FileBar, Progress
from vlmdata.fetch.sources import Candidate, candidates
from vlmdata.manifest import Catalog, FileSpec, Source
from vlmdata.net.retry import GaveUp, RetryPolicy, Transient, retry
from vlmdata.net.session import make_session
from vlmdata.plan import is_placed
from vlmdata.state import Journal, JournalEntry, LockEntry, LockFile, Root
from vlmdata.units import human_bytes


@dataclass
class FetchOptions:
    jobs: int = 4  # files at once
    connections: int = 4  # connections per file (when the server accepts ranges)
    url_jobs: int = 128  # requests in flight for per-image URL lists
    keep_archives: bool = False
    wanted: set[str] | None = None  # --only-referenced-by: basenames to keep from archives
    wanted_tag: str | None = None  # a digest of `wanted`, recorded in the journal
    mirror: str | None = None
    hf_endpoint: str | None = None
    refetch: bool = False  # ignore the journal: fetch and place again
    timeout: float = 60.0
    min_split: int = 4 << 20
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    verify_tries: int = 2  # downloads per source when the bytes do not match


@dataclass
class FileOutcome:
    key: str
    state: str  # present | fetched | failed | cancelled
    to: str
    bytes: int = 0  # received over the network by this run
    size: int | None = None
    sha256: str | None = None
    seconds: float = 0.0
    source: str | None = None
    files: int | None = None
    resumed_from: int = 0
    connections: int = 0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class FetchReport:
    outcomes: list[FileOutcome] = field(default_factory=list)
    layout: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.state == "failed"]

    @property
    def network_bytes(self) -> int:
        return sum(o.bytes for o in self.outcomes)

    def to_json(self) -> dict[str, Any]:
        return {"ok": not self.failed, "seconds": round(self.seconds, 3), "bytes": self.network_bytes,
                "files": [asdict(o) for o in self.outcomes], "layout": self.layout}


class _Mismatch(Exception):
    pass


@dataclass
class _Expect:
    size: int | None
    sha256: str | None
    md5: str | None
    pinned: bool  # sha256 comes from vlmdata.lock

    def check(self, d: Digests, hub_sha: str | None = None, hub_size: int | None = None) -> list[str]:
        bad = []
        size = self.size if self.size is not None else hub_size
        if size is not None and d.size != size:
            bad.append(f"size: expected {size:,} bytes, got {d.size:,}")
        sha = self.sha256 or hub_sha
        if sha and d.sha256 != sha:
            what = "sha256 (pinned in vlmdata.lock)" if self.pinned and self.sha256 else (
                "sha256" if self.sha256 else "sha256 (the hub's LFS hash)")
            bad.append(f"{what}: expected {sha}, got {d.sha256}")
        if self.md5 and d.md5 != self.md5:
            bad.append(f"md5: expected {self.md5}, got {d.md5}")
        return bad


@dataclass
class _Got:
    path: Path
    digests: Digests
    source: str
    revision: str | None
    transferred: int
    resumed_from: int
    connections: int


def wanted_digest(names: set[str]) -> str:
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16]


def _is_tar(spec: FileSpec) -> bool:
    if spec.place.format in ("tar", "tar.gz"):
        return True
    return spec.place.format == "auto" and spec.name.endswith((".tar", ".tar.gz", ".tgz"))


class Fetcher:
    def __init__(self, catalog: Catalog, root: Root, options: FetchOptions | None = None,
                 progress: Progress | None = None) -> None:
        self.catalog = catalog
        self.root = root
        self.opt = options or FetchOptions()
        self.progress = progress or Progress(quiet=True)
        self.cancel = threading.Event()
        self.journal = Journal(root.state_dir)
        self.lock = LockFile(root.lock_path)
        self.session = make_session(pool_size=max(16, self.opt.jobs * 2))
        self.engine = HttpEngine(self.session, retry=self.opt.retry, connections=self.opt.connections,
                                 timeout=self.opt.timeout, min_split=self.opt.min_split, cancel=self.cancel)
        self._token = hf_mod.token_from_env()

    # ------------------------------------------------------------------ the run
    def todo(self, specs: list[FileSpec], entries: dict[str, JournalEntry] | None = None) -> list[FileSpec]:
        entries = self.journal.entries() if entries is None else entries
        return [s for s in specs if not self._already_placed(s, entries)]

    def _already_placed(self, spec: FileSpec, entries: dict[str, JournalEntry]) -> bool:
        if self.opt.refetch or not is_placed(self.root, entries, spec):
            return False
        subset = (entries[spec.key].extra or {}).get("subset")
        if spec.place.kind == "extract" and subset is not None:
            # placed from a subset: only good enough for the same subset
            return self.opt.wanted_tag == subset
        return True

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
                e = entries[s.key]
                outcomes[s.key] = FileOutcome(s.key, "present", s.place.to, size=e.size, sha256=e.sha256,
                                              source=e.source, files=e.files)
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
        if not specs:
            return []
        work: queue.Queue[FileSpec | None] = queue.Queue()
        done: queue.Queue[FileOutcome] = queue.Queue()
        for s in specs:
            work.put(s)
        n = max(1, min(self.opt.jobs, len(specs)))
        for _ in range(n):
            work.put(None)

        def worker() -> None:
            while True:
                spec = work.get()
                if spec is None:
                    return
                done.put(self._one(spec))

        threads = [threading.Thread(target=worker, name=f"vlmdata-fetch{i}", daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        results: list[FileOutcome] = []
        try:
            while len(results) < len(specs):
                try:
                    results.append(done.get(timeout=0.2))
                except queue.Empty:
                    if not any(t.is_alive() for t in threads):
                        break
        except KeyboardInterrupt:
            self.cancel.set()
            deadline = time.monotonic() + 10
            for t in threads:
                t.join(timeout=max(0.0, deadline - time.monotonic()))
            raise
        return results

    # ------------------------------------------------------------------ one file
    def _one(self, spec: FileSpec) -> FileOutcome:
        t0 = time.monotonic()
        out = FileOutcome(spec.key, "failed", spec.place.to)
        try:
            if spec.place.kind == "images":
                self._url_list(spec, out)
            elif self.opt.wanted is not None and spec.place.kind == "extract" and _is_tar(spec) and not spec.parts:
                self._stream_tar_subset(spec, out)
            else:
                got = self._obtain_file(spec)
                out.bytes, out.resumed_from, out.connections = got.transferred, got.resumed_from, got.connections
                out.size, out.sha256, out.source = got.digests.size, got.digests.sha256, got.source
                self._place(spec, got, out)
            out.state = "fetched"
        except Cancelled:
            out.state, out.error = "cancelled", "interrupted; the .part file is kept and the next run resumes it"
        except VlmdataError as e:  # a failed check, a refused archive, ...: the message is for the user
            out.error = e.render()
        except Exception as e:  # noqa: BLE001 - one file's failure must not stop the others
            out.error = f"{spec.key}: {type(e).__name__}: {hf_mod.redact(str(e), self._token)}"
        out.seconds = time.monotonic() - t0
        if out.state == "fetched":
            self.progress.message(f"done {spec.key}: {human_bytes(out.size) if out.size is not None else ''} "
                                  f"from {out.source} in {out.seconds:.1f} s".replace("  ", " "))
        elif out.state == "failed":
            self.progress.message(f"FAILED {spec.key}")
        return out

    def _merge(self, spec: FileSpec) -> bool:
        return any(f.place.to == spec.place.to and f.key != spec.key
                   for ds in self.catalog.datasets.values() for f in ds.files)

    def _expect(self, key: str, size: int | None, sha256: str | None, md5: str | None) -> _Expect:
        pin = self.lock.get(key) if sha256 is None else None
        return _Expect(size=size if size is not None else (pin.size if pin else None),
                       sha256=sha256 or (pin.sha256 if pin else None), md5=md5, pinned=pin is not None)

    def _pin(self, key: str, expect: _Expect, got: _Got) -> None:
        """No sha256 in the manifest and none pinned yet: this verified download sets the pin."""
        if expect.sha256 is None:
            self.lock.pin(key, LockEntry(sha256=got.digests.sha256, size=got.digests.size, source=got.source,
                                         revision=got.revision))

    # ------------------------------------------------------------------ download + verify
    def _obtain_file(self, spec: FileSpec) -> _Got:
        dest = self.root.download_path(spec.dataset, spec.name)
        if not spec.parts:
            return self._obtain(spec.key, spec.name, spec.sources, dest,
                                self._expect(spec.key, spec.size, spec.sha256, spec.md5))
        expect = self._expect(spec.key, spec.size, spec.sha256, spec.md5)
        if dest.exists():
            got = self._reuse(spec.key, dest, expect)
            if got is not None:
                return got
        pieces = []
        for p in spec.parts:
            key = f"{spec.dataset}:{p.name}"
            pieces.append(self._obtain(key, p.name, p.sources, self.root.download_path(spec.dataset, p.name),
                                       self._expect(key, p.size, p.sha256, None)))
        got = self._join(spec, pieces, dest, expect)
        return got

    def _join(self, spec: FileSpec, pieces: list[_Got], dest: Path, expect: _Expect) -> _Got:
        tmp = dest.with_name(dest.name + ".joining")
        hasher = StreamHasher(md5=expect.md5 is not None)
        try:
            with open(tmp, "wb") as out:
                for p in pieces:
                    with open(p.path, "rb") as fh:
                        while data := fh.read(4 << 20):
                            self._check_cancel()
                            out.write(data)
                            hasher.feed(data)
        except BaseException:
            hasher.abandon()
            tmp.unlink(missing_ok=True)  # the parts are still there: joining again is cheap
            raise
        d = hasher.finish()
        bad = expect.check(d)
        if bad:
            tmp.unlink(missing_ok=True)
            raise OperationError(f"{spec.key}: the joined parts do not match: {'; '.join(bad)}",
                                 hint="delete the parts in the downloads folder and fetch again")
        os.replace(tmp, dest)
        for p in pieces:
            p.path.unlink(missing_ok=True)
        got = _Got(dest, d, " + ".join(sorted({p.source for p in pieces})), pieces[0].revision,
                   sum(p.transferred for p in pieces), sum(p.resumed_from for p in pieces),
                   max(p.connections for p in pieces))
        self._pin(spec.key, expect, got)
        return got

    def _reuse(self, key: str, dest: Path, expect: _Expect) -> _Got | None:
        """A finished download already in the downloads folder: use it if it checks out."""
        d = hash_file(dest, md5=expect.md5 is not None)
        bad = expect.check(d)
        if bad:
            rejected = dest.with_name(dest.name + ".rejected")
            os.replace(dest, rejected)
            self.progress.message(f"{key}: {dest} does not match ({'; '.join(bad)}); moved aside to {rejected.name}")
            return None
        got = _Got(dest, d, f"{dest} (already downloaded)", None, 0, 0, 0)
        self._pin(key, expect, got)
        return got

    def _obtain(self, key: str, name: str, sources: tuple[Source, ...], dest: Path, expect: _Expect) -> _Got:
        if dest.exists():
            got = self._reuse(key, dest, expect)
            if got is not None:
                return got
        problems: list[str] = []
        manual: list[str] = []
        for cand in candidates(name, sources, self.root, download_path=dest, mirror=self.opt.mirror):
            if cand.kind == "unavailable":
                (manual if cand.manual else problems).append(f"{cand.label}: {cand.reason}")
                continue
            if cand.kind == "urllist":
                problems.append(f"{cand.label}: a URL list cannot deliver a single file")
                continue
            for attempt in range(1, self.opt.verify_tries + 1):
                self._check_cancel()
                try:
                    got = self._download(cand, dest, expect, key)
                except SourceFailed as e:
                    problems.append(hf_mod.redact(str(e), self._token))
                    break
                except _Mismatch as e:
                    problems.append(f"{cand.label}: {e}" + (" (downloaded twice)" if attempt > 1 else ""))
                    continue
                self._pin(key, expect, got)
                return got
        lines = "\n".join(f"  - {p}" for p in problems + manual)
        mism = [p for p in problems if "expected" in p]
        if mism:
            raise OperationError(f"{key}: the downloaded bytes do not match what is expected; nothing was placed:\n{lines}",
                                 hint="the server may serve a changed or corrupt file; if the publisher re-uploaded it "
                                      "on purpose, remove its entry from vlmdata.lock (for a pinned hash)")
        if manual and not problems:
            raise OperationError(f"{key} cannot be downloaded automatically:\n{lines}")
        raise OperationError(f"{key}: no source could deliver it:\n{lines}",
                             hint="check the network or the mirror (--mirror / --hf-endpoint), then run the same command again; "
                                  "finished bytes are kept")

    def _download(self, cand: Candidate, dest: Path, expect: _Expect, key: str) -> _Got:
        hub_sha = hub_size = revision = None
        bar: FileBar | None = None
        try:
            if cand.kind == "local":
                if not cand.path or not cand.path.is_file():
                    raise SourceFailed(f"{cand.label}: no such file in the mirror")
                bar = self.progress.file(key, cand.path.stat().st_size)
                f: Fetched = copy_local(cand.path, dest, md5=expect.md5 is not None, progress=bar.update,
                                        cancel=self.cancel)
                label = str(cand.path)
            else:
                url, headers, label = cand.url or "", {}, cand.label
                if cand.kind == "hf":
                    loc = hf_mod.resolve(cand.source, self.opt.hf_endpoint, self._token)
                    url, headers, label = loc.url, loc.headers, loc.label
                    hub_sha, hub_size, revision = loc.sha256, loc.size, loc.commit
                size = expect.size if expect.size is not None else hub_size
                bar = self.progress.file(key, size)
                f = self.engine.download(url, dest, headers=headers, size_hint=size, md5=expect.md5 is not None,
                                         progress=bar.update)
        finally:
            if bar is not None:
                bar.close()
        bad = expect.check(f.digests, hub_sha, hub_size)
        if bad:
            dest.unlink(missing_ok=True)
            discard_partial(dest)
            raise _Mismatch("; ".join(bad))
        return _Got(dest, f.digests, label, revision, f.transferred, f.resumed_from, f.connections)

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled()

    # ------------------------------------------------------------------ placement + journal
    def _place(self, spec: FileSpec, got: _Got, out: FileOutcome) -> None:
        from vlmdata.place import place_download

        wanted = self.opt.wanted if spec.place.kind == "extract" else None
        res = place_download(spec, got.path, self.root, merge=self._merge(spec), wanted=wanted,
                             keep_archive=self.opt.keep_archives)
        out.files, out.warnings = res.files, list(res.warnings)
        extra: dict[str, Any] = {"revision": got.revision, "warnings": out.warnings}
        if wanted is not None:
            extra["subset"] = self.opt.wanted_tag
        self.journal.record(JournalEntry(key=spec.key, size=got.digests.size, sha256=got.digests.sha256,
                                         source=got.source, to=res.to, files=res.files, extra=extra))

    def _url_list(self, spec: FileSpec, out: FileOutcome) -> None:
        from vlmdata.place import fetch_url_list

        src = next((s for s in spec.sources if s.kind == "urllist"), None)
        if src is None:
            raise OperationError(f"{spec.key}: placement 'images' needs a urllist source")
        if src.path and not self.root.store_path(src.path).exists() and not src.url:
            owner = next((f.key for ds in self.catalog.datasets.values() for f in ds.files if f.place.to == src.path), None)
            raise OperationError(f"{spec.key}: the URL list {self.root.store_path(src.path)} is not there yet",
                                 hint=f"fetch it first: vlmdata fetch {owner}" if owner else "put the list there first")
        bar = self.progress.file(spec.key, spec.place.count, unit="img")
        session = make_session(pool_size=self.opt.url_jobs)
        try:
            res = fetch_url_list(spec, src, self.root, session=session, jobs=self.opt.url_jobs, mirror=self.opt.mirror,
                                 progress=bar.update, policy=self.opt.retry, timeout=self.opt.timeout)
        finally:
            bar.close()
            session.close()
        out.files = res.saved + res.skipped
        out.source = src.describe() + (f" via mirror {self.opt.mirror}" if self.opt.mirror else "")
        if res.dead:
            out.warnings.append(f"{len(res.dead)} dead URL(s) (404/410 or absent from the mirror); see {res.report_path}")
        if res.failed:
            out.warnings.append(f"{len(res.failed)} image(s) could not be saved (bad content or retries spent); "
                                f"see {res.report_path}; run `vlmdata fetch {spec.key} --refetch` to try them again")
        self.journal.record(JournalEntry(key=spec.key, size=None, sha256=None, source=out.source or "", to=spec.place.to,
                                         files=out.files, extra={"saved": res.saved, "skipped": res.skipped,
                                                                 "converted": res.converted, "dead": len(res.dead),
                                                                 "failed": len(res.failed),
                                                                 "report": str(res.report_path)}))

    def _stream_tar_subset(self, spec: FileSpec, out: FileOutcome) -> None:
        """--only-referenced-by on a tar: extract the wanted members from the HTTP stream, store no tar."""
        from vlmdata.place import extract_tar_stream

        expect = self._expect(spec.key, spec.size, spec.sha256, spec.md5)
        dest = self.root.download_path(spec.dataset, spec.name)
        problems: list[str] = []
        for cand in candidates(spec.name, spec.sources, self.root, download_path=dest, mirror=self.opt.mirror):
            if cand.kind in ("unavailable", "urllist"):
                problems.append(f"{cand.label}: {cand.reason or 'not a file source'}")
                continue

            def attempt(cand: Candidate = cand) -> tuple[_HashingReader, str, tuple, Any]:
                self._check_cancel()
                bar = self.progress.file(spec.key + " (subset)", expect.size)
                try:
                    reader, label, hub = self._open_stream(cand, bar)
                except Transient as e:
                    bar.close()
                    raise Transient(f"{cand.label}: {e}", e.retry_after) from None
                except BaseException:
                    bar.close()
                    raise
                try:
                    res = extract_tar_stream(reader, spec, self.root, wanted=self.opt.wanted, merge=self._merge(spec))
                    reader.drain()
                except (VlmdataError, Cancelled):
                    raise  # a hostile archive or Ctrl-C: no retry
                except Exception as e:  # noqa: BLE001 - a dropped stream surfaces as many types: start over
                    raise Transient(f"{label}: {type(e).__name__}: {e}") from None
                finally:
                    reader.close()
                    bar.close()
                return reader, label, hub, res

            try:
                reader, label, hub, res = retry(attempt, self.opt.retry, wait=self.engine.wait)
            except SourceFailed as e:
                problems.append(hf_mod.redact(str(e), self._token))
                continue
            except GaveUp as e:
                problems.append(f"{e.last} (gave up after {e.tries} tries)")
                continue
            self._finish_subset(spec, expect, dest, reader.digests(), label, hub, res, out)
            return
        raise OperationError(f"{spec.key}: no source could stream it:\n" + "\n".join(f"  - {p}" for p in problems))

    def _finish_subset(self, spec: FileSpec, expect: _Expect, dest: Path, d: Digests, label: str, hub: tuple,
                       res, out: FileOutcome) -> None:
        bad = expect.check(d, *hub)
        if bad:
            raise OperationError(f"{spec.key}: the streamed tar does not match: {'; '.join(bad)}",
                                 hint="members extracted from it may be wrong; run without --only-referenced-by "
                                      "to download and check the whole tar")
        got = _Got(dest, d, label, None, d.size, 0, 1)
        self._pin(spec.key, expect, got)
        out.bytes, out.size, out.sha256, out.source, out.files = d.size, d.size, d.sha256, label, res.files
        out.warnings = list(res.warnings)
        self.journal.record(JournalEntry(key=spec.key, size=d.size, sha256=d.sha256, source=label, to=res.to,
                                         files=res.files, extra={"subset": self.opt.wanted_tag,
                                                                 "warnings": out.warnings}))

    def _open_stream(self, cand: Candidate, bar: FileBar) -> tuple["_HashingReader", str, tuple]:
        if cand.kind == "local":
            if not cand.path or not cand.path.is_file():
                raise SourceFailed(f"{cand.label}: no such file in the mirror")
            return _HashingReader(open(cand.path, "rb"), bar.update, self.cancel), str(cand.path), (None, None)
        url, headers, label, hub = cand.url or "", {}, cand.label, (None, None)
        if cand.kind == "hf":
            loc = hf_mod.resolve(cand.source, self.opt.hf_endpoint, self._token)
            url, headers, label, hub = loc.url, loc.headers, loc.label, (loc.sha256, loc.size)
        resp = self.engine.get(self.session, url, headers)  # the engine's status handling; retried by the caller
        if resp.status_code != 200:
            resp.close()
            raise SourceFailed(f"{label}: HTTP {resp.status_code}")
        resp.raw.decode_content = False
        return _HashingReader(resp.raw, bar.update, self.cancel, closer=resp), label, hub


class _HashingReader:
    """A read-only stream that hashes and counts what passes through it (for tar streaming)."""

    def __init__(self, raw: BinaryIO, progress, cancel: threading.Event, closer=None) -> None:
        self.raw = raw
        self._h = hashlib.sha256()
        self.size = 0
        self._progress = progress
        self._cancel = cancel
        self._closer = closer or raw

    def read(self, n: int = -1) -> bytes:
        if self._cancel.is_set():
            raise Cancelled()
        data = self.raw.read(n if n is not None and n >= 0 else 1 << 20)
        if data:
            self._h.update(data)
            self.size += len(data)
            self._progress(len(data))
        return data

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def digests(self) -> Digests:
        return Digests(self.size, self._h.hexdigest())

    def close(self) -> None:
        try:
            self._closer.close()
        except Exception:  # noqa: BLE001
            pass

