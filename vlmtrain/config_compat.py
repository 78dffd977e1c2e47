"""Keys that LLaVA's training scripts pass and vlmtrain reads differently: mapped, or accepted and ignored.

A user who turns ``scripts/v1_5/finetune.sh`` into a YAML line by line meets these. Each is either
mapped to what vlmtrain does (``report_to: wandb`` as a plain string, like the command line) or
accepted and ignored because vlmtrain has nothing it would change (it runs no evaluation), with
one note that says so. Keys that would change training and that vlmtrain cannot honour stay
errors (config.py).

    raw, notes = llava_keys({"report_to": "wandb", "evaluation_strategy": "no"})
    # raw == {"report_to": ["wandb"]}; notes == ["ignored: evaluation_strategy (vlmtrain runs no evaluation)"]
"""
from __future__ import annotations

from typing import Any

# Accepted and dropped: vlmtrain runs no evaluation loop, so none of these changes anything.
EVAL_KEYS = ("evaluation_strategy", "eval_strategy", "per_device_eval_batch_size", "eval_steps",
             "eval_accumulation_steps", "do_eval")
COMPAT_KEYS = EVAL_KEYS


def llava_keys(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A copy of ``raw`` with LLaVA-script spellings made vlmtrain's, and the notes to show the user."""
    out = dict(raw)
    notes: list[str] = []
    report_to = out.get("report_to")
    if isinstance(report_to, str):  # the command line's `--report_to wandb`
        out["report_to"] = [] if report_to.strip().lower() in ("none", "") else [report_to.strip()]
    elif report_to is None and "report_to" in out:
        out["report_to"] = []
    if out.get("save_strategy") is False:  # YAML 1.1 reads a bare `no` as false
        out["save_strategy"] = "no"
    dropped_eval = [k for k in EVAL_KEYS if k in out]
    for k in dropped_eval:
        out.pop(k)
    if dropped_eval:
        notes.append(f"ignored: {', '.join(dropped_eval)} (vlmtrain runs no evaluation)")
    return out, notes
