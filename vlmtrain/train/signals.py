"""Stopping a run without losing it: SIGTERM or Ctrl-C -> finish the step, save a checkpoint, stop.

- SIGTERM (preemption, ``scancel``, ``kill``) and a first Ctrl-C (SIGINT) do the same: the step
  that is running finishes, a checkpoint is saved, training stops; the caller prints the command
  that continues. Exit codes 143 / 130, as a shell reports a process those signals ended.
- A second Ctrl-C stops at once (KeyboardInterrupt), except while a checkpoint is being written:
  then it waits for the save, so no half-written checkpoint is left behind.
- Every rank must stop at the same step, so the flag is max-reduced across ranks each step (one scalar).
- DataLoader workers are forked with the handler installed; in them it does nothing (the main
  process decides), so a Ctrl-C in a terminal, which reaches the whole process group, does not
  kill the workers mid-epoch.

Tests stop a run at an exact step with ``VLMTRAIN_SIGNAL_AT_STEP=3:INT`` (``TERM``, or ``INT+INT``
for a double Ctrl-C); ``VLMTRAIN_SIGTERM_AT_STEP=k`` is the older spelling of ``k:TERM``.

A checkpoint cut short anyway (SIGKILL, power loss) is skipped on resume: vlmtrain.train.rundir.
"""
from __future__ import annotations

import logging
import os
import signal
import sys

import torch
from transformers import TrainerCallback

log = logging.getLogger("vlmtrain")

NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C (SIGINT)"}
EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}


def _test_plan() -> tuple[int, list[int]]:
    spec = os.environ.get("VLMTRAIN_SIGNAL_AT_STEP", "")
    if not spec and os.environ.get("VLMTRAIN_SIGTERM_AT_STEP"):
        spec = os.environ["VLMTRAIN_SIGTERM_AT_STEP"] + ":TERM"
    if not spec:
        return 0, []
    step, _, sigs = spec.partition(":")
    return int(step), [getattr(signal, "SIG" + s.strip().upper()) for s in (sigs or "TERM").split("+")]


class StopOnSignal(TrainerCallback):
    """``requested``: the signal that asked to stop; ``stopped_at``: the step whose checkpoint was saved."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self.stopped_at: int | None = None
        self.saving = False
        self._pid = os.getpid()
        self._test_step, self._test_signals = _test_plan()
        self._previous = {s: signal.signal(s, self._handler) for s in (signal.SIGTERM, signal.SIGINT)}

    @property
    def signal_name(self) -> str | None:
        return NAMES.get(self.requested) if self.requested is not None else None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.requested, 1)

    def _handler(self, signum: int, frame) -> None:
        if os.getpid() != self._pid:  # a forked DataLoader worker: the main process handles it
            return
        if signum == signal.SIGINT and self.requested is not None:
            if self.saving:
                print("vlmtrain: writing the checkpoint; stopping as soon as it is complete", file=sys.stderr,
                      flush=True)
                return
            self.restore()
            raise KeyboardInterrupt
        if self.requested is None:
            self.requested = signum
            if signum == signal.SIGINT:
                print("\nvlmtrain: Ctrl-C: finishing this step and saving a checkpoint (Ctrl-C again to stop at "
                      "once, without one)", file=sys.stderr, flush=True)

    def restore(self) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous if previous is not None else signal.SIG_DFL)

    def on_step_begin(self, args, state, control, **kwargs):
        self.saving = False

    def on_step_end(self, args, state, control, **kwargs):
        if self._test_step and state.global_step == self._test_step:
            for s in self._test_signals:
                os.kill(os.getpid(), s)
        flag = self.requested is not None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            t = torch.tensor([1.0 if flag else 0.0], device=args.device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            flag = bool(t.item())
            if flag and self.requested is None:  # another rank was signalled
                self.requested = signal.SIGTERM
        if flag:
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        self.saving = bool(control.should_save)
        return control

    def on_save(self, args, state, control, **kwargs):
        self.saving = False
        return control

