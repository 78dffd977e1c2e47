"""The driver's one progress view of a fetch that runs on many machines.

It is fed two ways: each finished task's result (files fetched, failures, which node), and live
counters the nodes report while they work (bytes received, images handled, per node). Every
``interval`` seconds it prints one line: tasks done of planned, files, bytes and their rate,
images and images/s, failures, and each node's rates. On a terminal the same line is a bar's
postfix. Everything goes to stderr, like a local fetch's progress.
"""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

from vlmdata.fetch.progress import write_line
from vlmdata.units import human_bytes

if TYPE_CHECKING:
    from vlmdata.fetch.worker import TaskResult


class ClusterView:
    def __init__(self, *, stream: TextIO | None = None, tty: bool | None = None, interval: float = 5.0,
                 quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = (self.stream.isatty() if tty is None else tty) and not quiet
        self.interval = interval
        self.started = time.monotonic()
        self._last = self.started
        self.planned = self.done = self.fetched = self.failed = 0
        self.nodes: dict[str, list[float]] = {}  # node -> [bytes, images] reported so far
        self._bar = None

    def plan(self, tasks: int) -> None:
        """``tasks`` more tasks are on their way (a phase, or a URL list's chunks as they are read)."""
        self.planned += tasks
        if self._bar is not None:
            self._bar.total = self.planned
            self._bar.refresh()

    def result(self, r: "TaskResult") -> None:
        self.done += 1
        o = r.outcome
        if o.state == "fetched" and r.kind in ("file", "join"):
            self.fetched += 1
            self.say(f"done {r.key} on {r.node} in {o.seconds:.1f} s")
        elif o.state in ("failed", "cancelled"):
            self.failed += 1
            self.say(f"FAILED {r.key} on {r.node}: {o.error}")
        if self._bar is not None:
            self._bar.update(1)
        self.tick()

    def live(self, counters: dict[str, list[float]]) -> None:
        """What every node has reported so far (bytes, images)."""
        self.nodes = {k: list(v) for k, v in counters.items()}
        self.tick()

    def line(self) -> str:
        secs = max(1e-6, time.monotonic() - self.started)
        b = sum(v[0] for v in self.nodes.values())
        img = sum(v[1] for v in self.nodes.values())
        per = ", ".join(f"{k} {human_bytes(int(v[0] / secs))}/s {v[1] / secs:.0f} img/s"
                        for k, v in sorted(self.nodes.items()))
        return (f"[{secs:.0f} s] tasks {self.done}/{self.planned}, {self.fetched} file(s) placed, {self.failed} failed; "
                f"{human_bytes(int(b))} ({human_bytes(int(b / secs))}/s), {int(img):,} img ({img / secs:.0f} img/s)"
                + (f"; nodes: {per}" if per else ""))

    def tick(self, force: bool = False) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if not force and now - self._last < (0.5 if self.tty else self.interval):
            return
        self._last = now
        if self.tty:
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(total=self.planned, desc="tasks", unit="task", file=self.stream, dynamic_ncols=True)
                self._bar.update(self.done)
            self._bar.set_postfix_str(self.line().split("; ", 1)[-1], refresh=True)
        else:
            self.say(self.line())

    def say(self, msg: str) -> None:
        if not self.quiet:
            write_line(self.stream, msg, over_bars=self._bar is not None)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if not self.quiet and self.done:
            self.say(self.line())
