"""`profile_steps: [FIRST, LAST]`: torch.profiler over those optimizer steps of a run, as a table per rank.

The file (``output_dir/profile-rank<R>.txt``) starts with the profiled steps' wall time and, on a GPU,
how much of it the GPU was running kernels: the rest it waited for the host (Python, kernel launches,
syncs, batches). Then a table of operators and kernels by their own time on the device (CPU time where
there is no GPU), so a run that is slower than expected says where its steps go: GEMMs, attention,
elementwise kernels, the optimizer; on a GPU a second table by host time says what kept the host busy
(``data_wait_s`` in metrics.jsonl says how long the loop waited for batches). Steps are counted as the
logs count them (1 = the first optimizer step); profiling costs time, so the rows of those steps in
metrics.jsonl run slower than the others. A run that ends before LAST writes what it has.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterable

import torch
from transformers import TrainerCallback

log = logging.getLogger("vlmtrain")

ROWS = 60
HOST_ROWS = 25


def profile_path(output_dir: str | Path, rank: int) -> Path:
    return Path(output_dir) / f"profile-rank{rank}.txt"


class StepProfiler(TrainerCallback):
    """Starts torch.profiler before step ``first`` and writes its table after step ``last``."""

    def __init__(self, first: int, last: int, output_dir: str | Path, rank: int = 0) -> None:
        self.first, self.last = first, last
        self.path = profile_path(output_dir, rank)
        self.prof: torch.profiler.profile | None = None
        self.started_at = 0
        self.t0 = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        if self.prof is None and self.first <= state.global_step + 1 <= self.last:
            acts = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                acts.append(torch.profiler.ProfilerActivity.CUDA)
                torch.cuda.synchronize()  # (the window's wall time starts with nothing queued from before)
            self.prof = torch.profiler.profile(activities=acts)
            self.prof.__enter__()
            self.started_at = state.global_step + 1
            self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.prof is not None and state.global_step >= self.last:
            self._write(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.prof is not None:  # (the run ended before LAST)
            self._write(state.global_step)

    def _write(self, last_done: int) -> None:
        from vlmdata.atomic import write_text

        on_gpu = torch.cuda.is_available()
        if on_gpu:
            torch.cuda.synchronize()
        wall_s = time.perf_counter() - self.t0
        prof, self.prof = self.prof, None
        prof.__exit__(None, None, None)
        steps = max(last_done - self.started_at + 1, 1)
        text = (f"# torch.profiler over optimizer steps {self.started_at}-{last_done}: "
                f"{1000 * wall_s / steps:.1f} ms of wall time a step (the profiler slows them)\n")
        key = "self_cuda_time_total" if on_gpu else "self_cpu_time_total"
        if on_gpu:
            try:  # (the events' fields are the profiler's own and have moved between torch releases)
                busy_s = busy_seconds(_kernel_intervals(prof.events()))
                text += (f"# GPU running kernels {1000 * busy_s / steps:.1f} ms a step ({100 * busy_s / wall_s:.1f}% "
                         f"of the wall time); the rest it waited for the host\n")
            except (AttributeError, TypeError) as e:
                text += f"# GPU busy time not found in this torch's profiler events ({e})\n"
        averages = prof.key_averages()
        text += f"\n# rows by {key}, top {ROWS}\n" + averages.table(sort_by=key, row_limit=ROWS) + "\n"
        if on_gpu:
            text += (f"\n# rows by self_cpu_time_total (the host's time), top {HOST_ROWS}\n"
                     + averages.table(sort_by="self_cpu_time_total", row_limit=HOST_ROWS) + "\n")
        write_text(self.path, text)
        log.info("profile of steps %d-%d written to %s", self.started_at, last_done, self.path)


def _kernel_intervals(events) -> list[tuple[float, float]]:
    """(start, end) in microseconds of what ran on a GPU: kernels, copies, memsets. Annotations (a range
    named around an optimizer step) span the gaps between their kernels, so they are left out."""
    from torch.autograd import DeviceType

    return [(e.time_range.start, e.time_range.end) for e in events
            if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]


def busy_seconds(intervals: Iterable[tuple[float, float]]) -> float:
    """Seconds covered by the union of these (start, end) microsecond intervals (streams may overlap)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total / 1e6
