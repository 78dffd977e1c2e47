"""Non-finite step losses, counted on the device: the check the Trainer's NaN filter made, without its host sync.

transformers' ``logging_nan_inf_filter`` reads every step's loss back to the host (the host then waits for
the GPU's backward before it may queue the next step) and swaps a NaN or inf for the mean of the window,
which hides a diverged run. vlmtrain turns it off and counts here instead: a non-finite micro-batch loss
adds nothing to the Trainer's loss sum and is counted in a tensor on the device; a log row whose window
had any says ``loss: NaN`` and how many (``nonfinite_steps``, summed over ranks), with an error in the
log, and the run's summary row says ``train_loss: NaN`` and the run's count. Later windows log their
own loss again (with the filter off and no count, one NaN would make every later row NaN).
"""
from __future__ import annotations

import logging
import math

import torch

log = logging.getLogger("vlmtrain")


class NonFiniteLosses:
    def __init__(self) -> None:
        self.count: torch.Tensor | None = None  # this window's, on the device
        self.total = 0  # this process's run so far, over all ranks

    def state(self) -> dict:
        """What a checkpoint keeps of it (the trainer's logging window): a resumed window counts on."""
        return {"count": None if self.count is None else self.count.detach().cpu(), "total": self.total}

    def load_state(self, state: dict, device) -> None:
        self.count = state["count"].to(device) if state["count"] is not None else None
        self.total = int(state["total"])

    def add(self, loss: torch.Tensor) -> torch.Tensor:
        """The step's (detached) loss, or 0 where it is NaN or inf; counted without a host sync."""
        finite = torch.isfinite(loss)
        bad = (~finite).to(torch.int64).sum()
        self.count = bad if self.count is None else self.count + bad
        return torch.where(finite, loss, torch.zeros_like(loss))

    def flush(self, device) -> int:
        """The window's count over all ranks (every rank must call this at the same log), then reset."""
        count = self.count if self.count is not None else torch.zeros((), dtype=torch.int64)
        self.count = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            count = count.to(device)
            torch.distributed.all_reduce(count)
        return int(count.item())

    def log_row(self, logs: dict, device, step: int) -> None:
        """Fill a log row (it has ``loss``): ``nonfinite_steps`` and, where there were any, a NaN loss."""
        bad = logs["nonfinite_steps"] = self.flush(device)
        self.total += bad
        if bad:
            logs["loss"] = math.nan
            log.error("%d micro-batch losses were NaN or inf up to step %d: the run overflowed or diverged and "
                      "its weights may be NaN now. Lower learning_rate, check these steps' samples (sample_log: "
                      "true lists them) or use bf16, and resume from a checkpoint before step %d", bad, step, step)

    def summary_row(self, logs: dict, device) -> None:
        """The run's summary row: the run's count, and a NaN train_loss where there were any."""
        self.total += self.flush(device)
        if self.total:
            logs["nonfinite_steps"] = self.total
            logs["train_loss"] = math.nan
