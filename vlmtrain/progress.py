"""What a run prints while it works: readable log lines, and progress bars only on a terminal.

- One line per logging step (``step 3/24  loss 5.959  grad 0.585  lr 9.83e-03  1,243 tok/s ...``)
  instead of the dict Trainer prints, and one summary line at the end. Stage 3's per-layer MoE
  scalars are summed up in three numbers there; metrics.jsonl keeps every one.
- A progress bar redraws itself with carriage returns; in a file or a CI log every redraw is a
  line of noise. Off a terminal, bars (ours, transformers', datasets', the Hub's) are replaced by a
  line at each tenth of the work, or switched off for short ones.
"""
from __future__ import annotations

import importlib.util

import logging
import sys
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

log = logging.getLogger("vlmtrain")


def on_terminal() -> bool:
    return sys.stderr.isatty()


class LineProgress:
    """tqdm's ``update`` / ``close`` as a log line at each tenth of ``total`` (for non-terminals)."""

    def __init__(self, total: int, desc: str, unit: str) -> None:
        self.total, self.desc, self.unit = max(int(total), 1), desc, unit
        self.done = 0
        self._next = 1

    def update(self, n: int = 1) -> None:
        self.done += n
        tenth = min(10, self.done * 10 // self.total)
        if tenth >= self._next:
            self._next = tenth + 1
            log.info("%s: %d%% (%s of %s %ss)", self.desc, tenth * 10, f"{self.done:,}", f"{self.total:,}", self.unit)

    def close(self) -> None:
        pass


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: int, desc: str, unit: str, *, min_total: int = 0) -> Any:
    """A tqdm bar on a terminal, log lines elsewhere; nothing for work below ``min_total``."""
    if total < min_total:
        return _NoProgress()
    if on_terminal():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit)
    return LineProgress(total, desc, unit)


def quiet_library_bars() -> None:
    """Off a terminal: no tqdm frames from transformers (checkpoint shards), datasets or the Hub."""
    if on_terminal():
        return
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()  # also the Hub's
    datasets.disable_progress_bars()


def quiet_deepspeed_on_cpu() -> None:
    """On a machine with no accelerator, DeepSpeed's import prints "[WARNING] Setting accelerator to
    CPU" on stdout (a run's only line there); naming the CPU for it (DS_ACCELERATOR) is what silences
    it. Left alone where the user chose, or where torch sees any accelerator DeepSpeed would pick."""
    import os

    if os.environ.get("DS_ACCELERATOR"):
        return
    import torch

    backends = getattr(torch, "backends", None)
    seen = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()) or \
        bool(backends is not None and getattr(backends, "mps", None) and backends.mps.is_available())
    if not seen and importlib.util.find_spec("torch_npu") is None:
        os.environ["DS_ACCELERATOR"] = "cpu"


def align_special_tokens_quietly(model: Any, tokenizer: Any) -> None:
    """Give the model config the tokenizer's pad/bos/eos ids before Trainer does.

    Trainer does the same alignment and warns that "the tokenizer has new PAD/BOS/EOS tokens": in
    vlmtrain that is every run (LLaVA pads with unk; a tokenizer trained on the fly has its own ids),
    a warning a newcomer cannot act on. Done here, Trainer finds nothing to change.
    """
    from transformers.trainer_utils import align_special_tokens

    tu_log = logging.getLogger("transformers.trainer_utils")
    level = tu_log.level
    tu_log.setLevel(logging.ERROR)
    try:
        align_special_tokens(model, tokenizer)
    finally:
        tu_log.setLevel(level)


# -- the training log -----------------------------------------------------------------------------
def _num(v: float, digits: int = 4) -> str:
    return f"{v:.{digits}g}"


def format_step(logs: dict[str, Any], step: int, max_steps: int) -> str:
    """``step 3/24  loss 5.959  grad 0.585  lr 9.83e-03  1,243 tok/s  25.2 samples/s  epoch 1.00`` (+ what else came)."""
    logs = dict(logs)
    logs.pop("total_flos", None)
    if "train_runtime" in logs:  # Trainer's end-of-training summary
        parts = [f"finished at step {step} ({logs.pop('train_runtime'):.1f} s in this run)"]
        first = int(logs.pop("train_loss_first_step", 1))
        if first > step:  # (resumed from the last checkpoint: the Trainer's mean of no step reads 0)
            logs.pop("train_loss", None)
            parts.append("nothing left to train")
        elif "train_loss" in logs:
            over = f" over steps {first}-{step}" if first > 1 else ""
            parts.append(f"mean loss {_num(logs.pop('train_loss'))}{over}")
        # Trainer's train_samples_per_second counts steps x batch size, more than there were when the dataset is
        # smaller than a batch; the per-step lines above carry the true samples/s.
        for k in ("train_samples_per_second", "train_steps_per_second", "epoch"):
            logs.pop(k, None)
        return ", ".join(parts) + "".join(f", {k} {v}" for k, v in logs.items())
    parts = [f"step {step}/{max_steps}" if max_steps > 0 else f"step {step}"]
    fmt = [("loss", "loss", lambda v: f"{v:.4f}"), ("grad_norm", "grad", lambda v: _num(v, 3)),
           ("learning_rate", "lr", lambda v: f"{v:.2e}")]
    for key, name, f in fmt:
        if isinstance(logs.get(key), (int, float)):
            parts.append(f"{name} {f(logs.pop(key))}")
    if isinstance(logs.get("tokens_per_s"), (int, float)):
        parts.append(f"{logs.pop('tokens_per_s'):,.0f} tok/s")
    if isinstance(logs.get("samples_per_s"), (int, float)):
        parts.append(f"{_num(logs.pop('samples_per_s'), 3)} samples/s")
    if isinstance(logs.get("mfu"), (int, float)):
        parts.append(f"MFU {100 * logs.pop('mfu'):.1f}%")
    logs.pop("model_tflops_per_s", None)  # in metrics.jsonl; MFU says it better here
    if logs.get("nonfinite_steps") == 0:  # (said only when there were some)
        logs.pop("nonfinite_steps")
    if isinstance(logs.get("epoch"), (int, float)):
        parts.append(f"epoch {logs.pop('epoch'):.2f}")
    parts += _moe_summary(logs)
    parts += [f"{k} {_num(v) if isinstance(v, float) else v}" for k, v in logs.items()]
    return "  ".join(parts)


def _moe_summary(logs: dict[str, Any]) -> list[str]:
    """Stage 3's per-layer MoE scalars (6 per MoE layer: 96 for MoE-LLaVA's phi-2, a line of thousands
    of characters) as three numbers: the aux loss, the share of routes dropped, and the busiest expert's
    share of its layer's routes beside an even split. Popped from ``logs``; metrics.jsonl keeps them all."""
    loads: dict[tuple[str, int], float] = {}
    for key in [k for k in logs if k.startswith("moe/L")]:
        value = logs.pop(key)
        layer, _, name = key[len("moe/L"):].partition("/")
        if name.startswith("load_e") and isinstance(value, (int, float)):
            loads[(layer, int(name[len("load_e"):]))] = float(value)
    parts = []
    if isinstance(logs.get("moe/aux_loss"), (int, float)):
        parts.append(f"moe aux {_num(logs.pop('moe/aux_loss'))}")
    if isinstance(logs.get("moe/dropped"), (int, float)):
        parts.append(f"dropped {100 * logs.pop('moe/dropped'):.1f}%")
    if loads:
        (layer, expert), share = max(loads.items(), key=lambda kv: kv[1])
        experts = 1 + max(e for _, e in loads)
        parts.append(f"busiest L{layer}/e{expert} {100 * share:.0f}% (even {100 / experts:.0f}%)")
    return parts


class StepLog(TrainerCallback):
    """One readable line per logging step, on stderr (no bar: not a terminal)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            print(format_step(logs, state.global_step, state.max_steps), file=sys.stderr, flush=True)


class StepBar(ProgressCallback):
    """Trainer's progress bar, with the readable line written above it instead of a dict."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.write(format_step(logs, state.global_step, state.max_steps))


def use_readable_logs(trainer: Any) -> None:
    """Swap Trainer's dict-printing callbacks for StepLog / StepBar."""
    handler = trainer.callback_handler
    if any(isinstance(cb, ProgressCallback) for cb in handler.callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(StepBar)
    if any(isinstance(cb, PrinterCallback) for cb in handler.callbacks):
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(StepLog)


# -- the end of a run -----------------------------------------------------------------------------
def loss_summary(output_dir: str, cfg: Any = None) -> list[str]:
    """How the loss moved (from metrics.jsonl), and, where a newcomer would read a flat curve as broken, why it is flat."""
    import json
    from pathlib import Path

    path = Path(output_dir) / "metrics.jsonl"
    by_step: dict[int, float] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row.get("loss"), (int, float)):
                by_step[int(row["step"])] = float(row["loss"])
    if not by_step:
        return []
    losses = [by_step[s] for s in sorted(by_step)]
    k = max(1, len(losses) // 4)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    lines = [f"loss {first:.3f} -> {last:.3f} (mean of the first and last {k} of {len(losses)} logged steps)"]
    frozen = cfg.frozen() if cfg is not None else {}
    if cfg is not None and cfg.random_init and frozen.get("llm") and not cfg.lora_enable:
        trainable = "the projector" if not frozen.get("projector") else "nothing but adapters"
        lines.append(
            f"why it barely moves: this stage trains only {trainable}, and the LLM it feeds is frozen and random "
            f"(random_init: true). Whatever the projector outputs, a random LLM cannot predict the captions, so the "
            f"loss can only fall a little. With a pretrained LLM (LLaVA's stage 1) it falls steadily; a stage that "
            f"trains the LLM (stage 2) learns visibly even from random weights.")
    return lines
