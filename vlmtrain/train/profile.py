"""`profile_steps: [FIRST, LAST]`: torch.profiler over those optimizer steps of a run, as a table per rank.

The table (``output_dir/profile-rank<R>.txt``) lists operators and kernels by their own time on the
device (CPU time where there is no GPU), so a run that is slower than expected says where its steps go:
GEMMs, attention, elementwise kernels, the optimizer (``data_wait_s`` in metrics.jsonl says how long
the loop waited for batches). Steps are counted as the
logs count them (1 = the first optimizer step); profiling costs time, so the rows of those steps in
metrics.jsonl run slower than the others. A run that ends before LAST writes what it has.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import TrainerCallback

log = logging.getLogger("vlmtrain")

ROWS = 60


def profile_path(output_dir: str | Path, rank: int) -> Path:
    return Path(output_dir) / f"profile-rank{rank}.txt"


class StepProfiler(TrainerCallback):
    """Starts torch.profiler before step ``first`` and writes its table after step ``last``."""

    def __init__(self, first: int, last: int, output_dir: str | Path, rank: int = 0) -> None:
        self.first, self.last = first, last
        self.path = profile_path(output_dir, rank)
        self.prof: torch.profiler.profile | None = None
        self.started_at = 0

    def on_step_begin(self, args, state, control, **kwargs):
        if self.prof is None and self.first <= state.global_step + 1 <= self.last:
            acts = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                acts.append(torch.profiler.ProfilerActivity.CUDA)
            self.prof = torch.profiler.profile(activities=acts)
            self.prof.__enter__()
            self.started_at = state.global_step + 1

    def on_step_end(self, args, state, control, **kwargs):
        if self.prof is not None and state.global_step >= self.last:
            self._write(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.prof is not None:  # (the run ended before LAST)
            self._write(state.global_step)

    def _write(self, last_done: int) -> None:
        from vlmdata.atomic import write_text

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        prof, self.prof = self.prof, None
        prof.__exit__(None, None, None)
        on_gpu = torch.cuda.is_available()
        key = "self_cuda_time_total" if on_gpu else "self_cpu_time_total"
        head = (f"# torch.profiler over optimizer steps {self.started_at}-{last_done} "
                f"({'GPU' if on_gpu else 'CPU'}; rows by {key}, top {ROWS})\n")
        write_text(self.path, head + prof.key_averages().table(sort_by=key, row_limit=ROWS) + "\n")
        log.info("profile of steps %d-%d written to %s", self.started_at, last_done, self.path)
