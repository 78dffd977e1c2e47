"""A fetch as tasks (vlmdata.fetch.tasks) on many processes: the plan once, the phases, one report.

The driver (the Ray driver, or each ``--shard`` process for its share) goes through three phases:
files and parts; then the joins of files in parts; then the URL lists, each read once and split
into chunks as it is read. An ``Executor`` runs the tasks (Ray tasks on a cluster's nodes, or this
process's threads for a shard) and hands back each ``TaskResult`` as it finishes; the results
are folded into one outcome per file, so the report is the one a single-machine fetch prints,
plus what each machine did.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable, Iterator, Protocol

from vlmdata.errors import OperationError, VlmdataError
from vlmdata.fetch import chunks
from vlmdata.fetch.outcome import FetchOptions, FetchReport, FileOutcome, present_outcome
from vlmdata.fetch.progress import Progress
from vlmdata.fetch.shard import Shard
from vlmdata.fetch.tasks import Task, chunk_tasks, file_tasks, is_url_list, join_tasks
from vlmdata.fetch.threads import run_in_threads
from vlmdata.fetch.worker import TaskResult, TaskRunner
from vlmdata.manifest import Catalog, FileSpec
from vlmdata.net.client import Client
from vlmdata.net.errors import Cancelled
from vlmdata.sources import kind_of
from vlmdata.state import Root


class Executor(Protocol):
    def run(self, tasks: Iterable[Task], on_result: Callable[[TaskResult], None]) -> None:
        """Run every task; ``on_result`` (in the caller's thread) for each as it finishes."""


class ThreadExecutor:
    """This process's threads (``--shard``): ``jobs`` tasks at once, chunks one at a time (each keeps
    ``--url-jobs`` requests in flight already)."""

    def __init__(self, runner: TaskRunner, jobs: int) -> None:
        self.runner, self.jobs = runner, jobs

    def run(self, tasks: Iterable[Task], on_result: Callable[[TaskResult], None]) -> None:
        tasks = iter(tasks)
        first = next(tasks, None)
        if first is None:
            return
        jobs = 1 if first.kind == "chunk" else self.jobs
        run_in_threads(_chain(first, tasks), self.runner.run, jobs, self.runner.fetcher.cancel, on_result)


def _chain(first: Task, rest: Iterator[Task]) -> Iterator[Task]:
    yield first
    yield from rest


class DistributedFetch:
    """One fetch of ``specs`` (``todo``: those not placed yet) through ``executor``; ``shard``: only its share."""

    def __init__(self, specs: list[FileSpec], todo: list[FileSpec], runner: TaskRunner, executor: Executor, *,
                 shares_target: Callable[[FileSpec], bool], shard: Shard | None = None) -> None:
        self.specs, self.todo, self.runner, self.executor = specs, todo, runner, executor
        self.shares_target, self.shard = shares_target, shard
        self.results: dict[str, list[TaskResult]] = {}  # file key -> its tasks' results
        self.outcomes: dict[str, FileOutcome] = {}
        self.on_result: Callable[[TaskResult], None] = lambda r: None  # progress, set by the caller

    def run(self) -> FetchReport:
        t0 = time.monotonic()
        started = time.time()
        keys = {s.key for s in self.todo}
        phases = [self._mine(phase(self.specs, self.shares_target)) for phase in (file_tasks, join_tasks)]
        ours = {t.spec.key for tasks in phases for t in tasks} | {s.key for s in self.specs if is_url_list(s)}
        entries = self.runner.fetcher.journal.entries()
        for s in self.specs:
            if s.key not in keys and s.key in entries and s.key in ours:
                self.outcomes[s.key] = present_outcome(s, entries[s.key])
        for tasks in phases:
            self.executor.run([t for t in tasks if t.spec.key in keys], self._collect)
        for spec in (s for s in self.todo if is_url_list(s)):
            self._url_list(spec, started)
        for s in self.todo:
            if s.key not in self.outcomes and self.results.get(s.key):
                self.outcomes[s.key] = self._fold(s, self.results[s.key])
        report = FetchReport(outcomes=[self.outcomes[s.key] for s in self.specs if s.key in self.outcomes])
        report.seconds = time.monotonic() - t0
        report.nodes = self.nodes()
        return report

    def _mine(self, tasks: list[Task]) -> list[Task]:
        return self.shard.mine(tasks) if self.shard is not None else tasks

    def _collect(self, r: TaskResult) -> None:
        self.results.setdefault(r.spec, []).append(r)
        self.on_result(r)

    # ------------------------------------------------------------------ URL lists
    def _url_list(self, spec: FileSpec, started: float) -> None:
        """Its chunks (this shard's), then, when every chunk of the list is recorded, its report and entry."""
        sigs: list[chunks.Signature] = []
        try:
            self._await_list(spec)
            tasks = self._chunks(spec, sigs)
            self.executor.run(tasks, self._collect)
            done = self.runner.finish_url_list(spec, sigs, started)
        except VlmdataError as e:
            self.outcomes[spec.key] = FileOutcome(spec.key, "failed", spec.place.to, error=e.what, hint=e.hint)
            return
        except Cancelled:  # (interrupted while waiting for a claim: the list's download, its report)
            self.outcomes[spec.key] = FileOutcome(spec.key, "cancelled", spec.place.to,
                                                  error="interrupted; the next run does what is left")
            return
        except OSError as e:  # (the root's filesystem: its records, its claims)
            self.outcomes[spec.key] = FileOutcome(spec.key, "failed", spec.place.to, error=f"{spec.key}: {e}")
            return
        if done is not None:
            done.seconds = time.time() - started
            self.outcomes[spec.key] = done
        else:
            self.outcomes[spec.key] = self._fold(spec, self.results.get(spec.key, []))
            missing = chunks.missing(self.runner.root, spec, self.runner.opt.url_chunk, sigs)
            if missing and self.outcomes[spec.key].state != "failed":
                self.outcomes[spec.key].warnings.append(
                    f"{missing} of {len(sigs)} chunk(s) of the list are not recorded yet (other shards' share); the "
                    "shard that records the last one writes the list's report and journal entry")

    def _await_list(self, spec: FileSpec) -> None:
        """A shard whose list is another shard's file: fetch it here or wait for it (its claim decides)."""
        src = _list_source(spec)
        if self.shard is None or not src.path or self.runner.root.store_path(src.path).exists():
            return
        for t in file_tasks((s for s in self.specs if s.place.to == src.path), self.shares_target):
            r = self.runner.run(t)
            if r.outcome.state == "failed":
                raise OperationError(f"{spec.key}: its URL list {src.path} could not be fetched: {r.outcome.error}",
                                     hint=r.outcome.hint)

    def _chunks(self, spec: FileSpec, sigs: list[chunks.Signature]) -> Iterator[Task]:
        """The list's chunks as the list is read (each one's signature noted), less other shards' and
        those already recorded."""
        from vlmdata.fetch.urllist import iter_entries, list_file

        src = _list_source(spec)
        opt, root = self.runner.opt, self.runner.root
        session = Client(pool_size=2)
        try:
            # (under the list's claim: one process downloads it, the others wait and read what it stored)
            path = list_file(spec, src, root, session, opt.mirror, opt.retry, opt.timeout,
                             claimed=self.runner.fetcher.downloader.claimed)
        finally:
            session.close()
        for t in chunk_tasks(spec, iter_entries(path, src), self.runner.opt.url_chunk):
            sigs.append(chunks.signature(t))
            if self.shard is not None and not self.shard.has_chunk(t.chunk or 0):
                continue
            if not opt.refetch and chunks.read_record(chunks.record_path(root, t, self.runner.opt.url_chunk), sigs[-1]):
                continue
            yield t

    # ------------------------------------------------------------------ the report
    def _fold(self, spec: FileSpec, results: list[TaskResult]) -> FileOutcome:
        """One outcome for a file from its tasks' (a file's one task; a file in parts: its parts and join;
        a URL list: its chunks)."""
        whole = [r.outcome for r in results if r.kind in ("file", "join")]
        pieces = [r.outcome for r in results if r.kind in ("part", "chunk")]
        out = whole[0] if whole else FileOutcome(spec.key, "present", spec.place.to)
        if not whole:
            out.seconds = sum(p.seconds for p in pieces)
            out.files = sum(p.files or 0 for p in pieces) if is_url_list(spec) else None
            if any(p.state == "fetched" for p in pieces):
                out.state = "fetched"
                if spec.parts:
                    out.warnings.append("its parts downloaded here; the process that runs its join places it")
        out.bytes += sum(p.bytes for p in pieces)
        failed = [p for p in pieces if p.state in ("failed", "cancelled")]
        if failed and not whole:  # (a part that failed here may have been fetched by its join after all)
            out.state, out.error, out.hint = failed[0].state, failed[0].error, failed[0].hint
            if len(failed) > 1:
                out.error = f"{out.error} (and {len(failed) - 1} more of its tasks)"
        return out

    def nodes(self) -> dict[str, dict]:
        """Per machine: tasks run, bytes received, URL-list records handled, seconds busy."""
        out: dict[str, dict] = {}
        for r in (r for rs in self.results.values() for r in rs):
            n = out.setdefault(r.node, {"tasks": 0, "bytes": 0, "images": 0, "seconds": 0.0, "failed": 0})
            n["tasks"] += 1
            n["bytes"] += r.outcome.bytes
            n["images"] += r.images
            n["seconds"] = round(n["seconds"] + r.seconds, 3)
            n["failed"] += r.outcome.state == "failed"
        return out


def _list_source(spec: FileSpec):
    src = next((s for s in spec.sources if kind_of(s).lists_images), None)
    if src is None:
        raise OperationError(f"{spec.key}: placement 'images' needs a urllist source")
    return src


def run_shard(shard: Shard, specs: list[FileSpec], todo: list[FileSpec], catalog: Catalog, root: Root,
              opts: FetchOptions, progress: Progress) -> FetchReport:
    """``--shard I/N``: this process's share of the fetch, in its own threads."""
    from vlmdata.fetch.orchestrate import shares_target

    runner = TaskRunner(root, opts, progress)
    try:
        return DistributedFetch(specs, todo, runner, ThreadExecutor(runner, opts.jobs),
                                shares_target=lambda s: shares_target(catalog, s), shard=shard).run()
    finally:
        progress.close()
