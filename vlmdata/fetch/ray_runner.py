"""`vlmdata fetch --ray ADDRESS`: a fetch's tasks as Ray tasks on the nodes of a cluster.

The driver (the machine the command runs on) plans once and submits each task (vlmdata.fetch.tasks)
to the cluster, a few more than it has CPUs so no node waits; each node runs it with the same code
as a local fetch (vlmdata.fetch.worker) against the shared root, which must be mounted at the same
path everywhere. Ray only schedules and retries: a task whose worker or node dies is run again
elsewhere (``RETRIES`` times), and finds its claim stale and its ``.part`` file where the dead one
left it. While they work, nodes report bytes and images to a small actor the driver reads once a
second for its progress view (vlmdata.fetch.cluster_view).

Ray is an optional extra (``pip install 'vlmdata[ray]'``); nothing here imports it before a run asks.
"""
from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from vlmdata.errors import OperationError, UserError
from vlmdata.fetch.cluster_view import ClusterView
from vlmdata.fetch.outcome import FetchOptions, FetchReport, FileOutcome
from vlmdata.fetch.progress import Progress
from vlmdata.fetch.tasks import Task
from vlmdata.fetch.worker import TaskResult, TaskRunner
from vlmdata.manifest import Catalog, FileSpec
from vlmdata.state import Root

RETRIES = 3  # runs of a task whose worker or node died, after the first
_ADDRESS = re.compile(r"(auto|local|ray://[^/\s:]+:\d+|[^/\s:]+:\d+)")


def require_ray() -> Any:
    """The ray module, or the error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray, which is not installed in this Python environment",
                        hint="pip install 'vlmdata[ray]' (on every machine of the cluster), "
                             "or split the fetch without Ray: --shard I/N (docs/distributed.md)") from None
    return ray


def check_address(address: str) -> str:
    if not _ADDRESS.fullmatch(address):
        raise UserError(f"--ray {address!r} is not a Ray cluster address",
                        hint="--ray auto (the cluster this machine joined with `ray start`), --ray HOST:6379 (its "
                             "head), --ray ray://HOST:10001 (Ray Client), or --ray local (a one-machine Ray); "
                             f"the datasets come after it: vlmdata fetch --ray auto {address}")
    return address


class Board:
    """A Ray actor: the bytes and images each node has reported, and what its tasks had to say (a
    wait for another process's claim, a download moved aside), for the driver's view."""

    def __init__(self) -> None:
        self.counters: dict[str, list[float]] = {}
        self.notes: list[str] = []

    def add(self, node: str, nbytes: int, images: int) -> None:
        c = self.counters.setdefault(node, [0, 0])
        c[0] += nbytes
        c[1] += images

    def note(self, node: str, msg: str) -> None:
        self.notes.append(f"{node}: {msg}")

    def snapshot(self) -> tuple[dict[str, list[float]], list[str]]:
        """The counters, and the notes since the last snapshot."""
        notes, self.notes = self.notes, []
        return self.counters, notes


class BoardProgress(Progress):
    """A worker's progress: silent here, its counts sent to the driver's board about once a second."""

    def __init__(self, board: Any, node: str) -> None:
        super().__init__(quiet=True)
        self.board, self.node = board, node
        self._bytes = self._images = 0
        self._sent = time.monotonic()

    def counted(self, unit: str, n: int) -> None:
        if unit == "B":
            self._bytes += n
        else:
            self._images += n
        if time.monotonic() - self._sent >= 1.0:
            self.flush()

    def message(self, msg: str) -> None:
        if msg.startswith(("done ", "FAILED ")):
            return  # the driver says so itself when the task's result comes back
        try:
            self.board.note.remote(self.node, msg)
        except Exception:  # noqa: BLE001 - the view misses a line; the fetch goes on
            pass

    def flush(self) -> None:
        with self.lock:
            if self._bytes or self._images:
                try:
                    self.board.add.remote(self.node, self._bytes, self._images)  # (no answer awaited)
                except Exception:  # noqa: BLE001 - the view misses a beat; the fetch goes on
                    pass
            self._bytes = self._images = 0
            self._sent = time.monotonic()


_RUNNERS: dict[str, tuple[TaskRunner, BoardProgress]] = {}  # per driver session, in each worker process
_RUNNERS_LOCK = threading.Lock()


def _remote_task(task: Task, root: str, opts: FetchOptions, session: str, board: Any) -> TaskResult:
    """What a node runs: one task, with a runner (HTTP sessions, ...) kept for the run's next tasks."""
    import ray

    node = f"{socket.gethostname()}:{ray.get_runtime_context().get_node_id()[:6]}"
    if not Path(session).exists():  # the driver's session claim, in the root it was given
        out = FileOutcome(task.key, "failed", task.spec.place.to,
                          error=f"{root} on node {node} is not the driver's root ({session} is not there)",
                          hint="mount the shared filesystem at the same path on every node, and pass that --root")
        return TaskResult(task.key, task.kind, task.spec.key, out, node)
    with _RUNNERS_LOCK:
        if session not in _RUNNERS:
            _RUNNERS.clear()  # (a worker kept for a later run drops the earlier run's)
            progress = BoardProgress(board, node)
            _RUNNERS[session] = (TaskRunner(Root(root), opts, progress, node=node), progress)
        runner, progress = _RUNNERS[session]
    try:
        return runner.run(task)
    finally:
        progress.flush()


class RayExecutor:
    """Runs tasks on the cluster, a bounded number submitted at a time, results as they come."""

    def __init__(self, ray: Any, root: Root, opts: FetchOptions, session: Path, view: ClusterView) -> None:
        self.ray, self.view = ray, view
        self.args = (str(root.path), ray.put(opts), str(session))  # (once: --only-referenced-by's names can be many)
        self.remote = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(_remote_task)
        # on the driver's own node where it has one (a node that dies takes its actors along), restarted if lost
        here = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                                            soft=True)
        self.board = ray.remote(num_cpus=0, max_restarts=-1, scheduling_strategy=here)(Board).remote()
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.in_flight = max(4, 2 * cpus)

    def run(self, tasks: Iterable[Task], on_result: Callable[[TaskResult], None]) -> None:
        ray, it = self.ray, iter(tasks)
        pending: dict[Any, Task] = {}
        polled = 0.0
        try:
            self._fill(pending, it)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.5, fetch_local=True)
                for ref in ready:
                    on_result(self._result(ref, pending.pop(ref)))
                self._fill(pending, it)
                if time.monotonic() - polled >= 1.0:
                    polled = time.monotonic()
                    self._poll_board()
            self._poll_board()  # (the last counts, for the view's last line)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref)
            raise

    def _poll_board(self) -> None:
        """The nodes' live counters for the view; a board that is being restarted just skips a beat."""
        try:
            counters, notes = self.ray.get(self.board.snapshot.remote(), timeout=5)
        except (self.ray.exceptions.RayError, TimeoutError):
            return
        for n in notes:
            self.view.say(n)
        self.view.live(counters)

    def _fill(self, pending: dict, it) -> None:
        while len(pending) < self.in_flight:
            task = next(it, None)
            if task is None:
                return
            pending[self.remote.remote(task, *self.args, self.board)] = task
            self.view.plan(1)

    def _result(self, ref: Any, task: Task) -> TaskResult:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as e:  # its worker or node died RETRIES + 1 times, or it was cancelled
            reason = str(e).strip().splitlines()[0][:300]
            out = FileOutcome(task.key, "failed", task.spec.place.to,
                              error=f"{task.key}: its Ray task failed {RETRIES + 1} times: {reason}",
                              hint="run the same command again: what was downloaded is kept and resumed")
            return TaskResult(task.key, task.kind, task.spec.key, out, "?")


PROBE_SECONDS = 5.0


def _probe(address: str) -> None:
    """An OperationError at once when nothing answers at a HOST:PORT address. ray.init given a head
    that does not listen retries for many minutes and ignores SIGINT and SIGTERM meanwhile (found by
    a new-user try: still waiting after 521 s, stopped only by SIGKILL)."""
    import socket

    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_SECONDS).close()
    except OSError as e:
        why = "the connection was refused (nothing listens there)" if isinstance(e, ConnectionRefusedError) \
            else f"no answer in {PROBE_SECONDS:.0f} s" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise OperationError(f"cannot reach the Ray cluster at {address}: {why}",
                             hint="start it first (`ray start --head` on one machine, `ray start --address=HEAD:6379` "
                                  "on the others; docs/distributed.md), or check the address") from None


def connect(ray: Any, address: str) -> None:
    """Join the cluster as its driver (``local``: start a one-machine Ray here)."""
    _probe(address)
    kw: dict[str, Any] = {"include_dashboard": False} if address == "local" else {"address": address}
    try:
        ray.init(logging_level="ERROR", log_to_driver=False, **kw)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise OperationError(f"cannot reach the Ray cluster at {address}: {e}",
                             hint="start it first (`ray start --head` on one machine, `ray start --address=HEAD:6379` "
                                  "on the others; docs/distributed.md), or check the address") from None


def run_on_ray(address: str, specs: list[FileSpec], todo: list[FileSpec], catalog: Catalog, root: Root,
               opts: FetchOptions, session: Path, *, quiet: bool) -> FetchReport:
    """The fetch of ``todo`` (of ``specs``) on the cluster at ``address``; the driver's view on stderr."""
    from vlmdata.fetch.distributed import DistributedFetch
    from vlmdata.fetch.orchestrate import shares_target

    ray = require_ray()
    connect(ray, address)
    view = ClusterView(quiet=quiet)
    try:
        runner = TaskRunner(root, opts, Progress(quiet=quiet), node="driver")
        run = DistributedFetch(specs, todo, runner, RayExecutor(ray, root, opts, session, view),
                               shares_target=lambda s: shares_target(catalog, s))
        run.on_result = view.result
        return run.run()
    finally:
        view.close()
        ray.shutdown()
