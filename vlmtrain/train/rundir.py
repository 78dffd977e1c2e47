"""The run's output folder: can it be written, is it this run's, which checkpoint to resume from.

- ``output_dir`` that is a file, or under one, or where nothing may be written: an error before
  anything is built (it used to be a traceback at the first mkdir).
- A finished run (its final model written, no checkpoint left to resume) is not silently
  overwritten by the same command run again.
- A fresh start over an earlier attempt that saved no checkpoint drops that attempt's
  metrics.jsonl and tokenizer, so its curves and vocabulary do not mix into the new run.
- ``--resume`` with a config that changed what the checkpoint holds (the model's shape, what is
  trained, the tokenizer) is refused before the model is built, naming the keys; other changed keys
  (learning rate, steps, ...) are allowed and listed, since the run is then no longer the one an
  uninterrupted run would have given.
- A checkpoint cut short (SIGKILL or power loss while writing it) has no ``trainer_state.json``,
  which Trainer writes last, or half of one: it is skipped, and the one before is resumed from.
- What a checkpoint adds to the Trainer's for an exact resume, per rank: the data report so far
  (``data_report_rank-R.json``: samples skipped before it) and the logging window it cuts
  (``log_window_rank-R.pt``), written by VlmTrainer, read back here.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from vlmtrain.config import ConfigError, TrainConfig

log = logging.getLogger("vlmtrain")

CONFIG_RECORD = "vlmtrain_config.json"  # the config a run started with (written by train())
FINAL_OUTPUTS = ("model.safetensors", "model.safetensors.index.json", "mm_projector.bin", "adapter_model.safetensors")
# Keys whose change makes a checkpoint's weights or vocabulary not this config's.
SHAPE_KEYS = ("stage", "freeze", "tune_mm_mlp_adapter", "model_name_or_path", "text_config", "vision_tower",
              "vision_config", "random_init", "mm_projector_type", "mm_vision_select_layer", "mm_vision_select_feature",
              "tokenizer_name_or_path", "tokenizer_train_vocab_size", "tokenizer_legacy", "image_token", "lora_enable",
              "lora_r", "lora_alpha", "lora_bias", "lora_target_modules", "bf16", "fp16")
# Keys that only say where or how often things go: no note when they change.
QUIET_KEYS = ("output_dir", "max_steps", "num_train_epochs", "save_steps", "save_total_limit", "save_strategy",
              "logging_steps", "report_to", "dataloader_num_workers", "data_num_proc", "num_gpus", "num_nodes",
              "hostfile", "launcher", "master_port", "ddp_timeout", "deepspeed")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def saves_projector_only(cfg: TrainConfig) -> bool:
    """Whether the run's final output is ``mm_projector.bin`` alone (LLaVA's stage 1) rather than the whole
    model. A stage 1 that also trains part of the tower (ConvLLaVA's, ``tune_vit_from_layer``) saves the
    whole model, so the stage after it must start from that model, not from a projector file."""
    return cfg.stage == 1 and cfg.frozen()["vision"]


# -- checkpoints ----------------------------------------------------------------------------------
def checkpoints(output_dir: str | Path) -> list[Path]:
    """``checkpoint-N`` folders, oldest first."""
    d = Path(output_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found)]


def is_complete(ckpt: Path) -> bool:
    """trainer_state.json is written last, but in place (open "w", then the JSON): a run killed in that
    write leaves it empty or cut (a cut JSON object never parses), so it must also parse."""
    try:
        state = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict)


_WARNED: set[tuple[str, tuple[str, ...]]] = set()


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest checkpoint that was written to the end; cut-short ones are named in a warning."""
    all_ = checkpoints(output_dir)
    complete = [c for c in all_ if is_complete(c)]
    partial = [c.name for c in (all_[all_.index(complete[-1]) + 1:] if complete else all_)]
    if partial and (str(output_dir), tuple(partial)) not in _WARNED:  # (the CLI and the run both ask)
        _WARNED.add((str(output_dir), tuple(partial)))
        log.warning("%s: %s %s not complete (no whole trainer_state.json; a run stopped while writing it) and %s "
                    "skipped",
                    output_dir, ", ".join(partial), "is" if len(partial) == 1 else "are",
                    "is" if len(partial) == 1 else "are")
    return complete[-1] if complete else None


# -- before anything is written -------------------------------------------------------------------
def check_writable(cfg: TrainConfig, where: str) -> None:
    """``output_dir`` is a folder, or can be made one, by this user (nothing is created here)."""
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"`output_dir` {out} is a file", where=where, hint="point output_dir at a folder (it is created)")
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"`output_dir` {out} cannot be created: {probe} is a file", where=where)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"`output_dir` {out} cannot be written: this user may not write to {probe}", where=where,
                          hint="choose an output_dir you can write to")


def prepare(cfg: TrainConfig, last: Path | None, *, resume: bool, where: str) -> None:
    """Fresh start: refuse to overwrite a finished run, clear an earlier attempt's leftovers. Resume: same model?"""
    out = Path(cfg.output_dir)
    if resume:
        check_same_run(cfg, out, where)
        return
    finished = [f for f in FINAL_OUTPUTS if (out / f).is_file()]
    if finished:
        raise ConfigError(f"{out} holds a finished run ({finished[0]}); running again would overwrite it",
                          where=where, hint="choose another output_dir or delete that folder to train anew; to train "
                                            f"it further: vlmtrain run {out / CONFIG_RECORD} --set max_steps=MORE "
                                            "--resume (the config it was trained with, a chain's links included)")
    if last is not None:
        return  # train() refuses: "already has checkpoint-N, pass --resume"
    stale = [p for p in (out / "metrics.jsonl", out / "tokenizer") if p.exists()]
    if stale:
        log.warning("%s: an earlier attempt stopped before its first checkpoint; starting over (its %s replaced)",
                    out, " and ".join(p.name for p in stale))
        for p in stale:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def _changed(old: dict[str, Any], new: dict[str, Any], keys: tuple[str, ...] | None, skip: tuple[str, ...] = ()):
    names = keys if keys is not None else tuple(k for k in new if k not in skip)
    return [(k, old.get(k), new.get(k)) for k in names if k in old and old.get(k) != new.get(k)]


def check_same_run(cfg: TrainConfig, out: Path, where: str) -> None:
    """--resume: the checkpoint was made by a config with the same model; list what else changed."""
    record = out / CONFIG_RECORD
    try:
        old = json.loads(record.read_text())
    except (OSError, ValueError):
        return  # an older run without the record: the checkpoint loader still refuses a shape mismatch
    new = json.loads(json.dumps(cfg.to_dict(), default=str))  # the same JSON round trip the record went through
    shape = _changed(old, new, SHAPE_KEYS)
    if shape:
        shown = "; ".join(f"`{k}` {a!r} -> {b!r}" for k, a, b in shape[:4])
        raise ConfigError(f"--resume: the checkpoints in {out} were made with another model or tokenizer: {shown}",
                          where=where, hint=f"resume with the config the run started with ({record}), or start a "
                                            f"new run in another output_dir")
    other = _changed(old, new, None, skip=SHAPE_KEYS + QUIET_KEYS)
    if other:
        log.warning("resuming %s with changed settings (%s): it continues, but is no longer the run an uninterrupted "
                    "one would have given", out, "; ".join(f"{k} {a!r} -> {b!r}" for k, a, b in other))


# -- on resume ------------------------------------------------------------------------------------
def forget_after(out: Path, step: int, rank: int) -> int:
    """Rows of steps after ``step`` (the checkpoint a run resumes from) leave metrics.jsonl (rank 0)
    and this rank's samples log: the resumed run writes those steps again, and a run killed
    mid-write leaves a half line. Returns the rows removed."""
    from vlmtrain.train.sample_log import SAMPLES_DIR

    paths = [out / SAMPLES_DIR / f"rank-{rank}.jsonl"] + ([out / "metrics.jsonl"] if rank == 0 else [])
    removed = 0
    for path in paths:
        if not path.is_file():
            continue
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [ln for ln in lines if _step_of(ln) is not None and _step_of(ln) <= step]  # type: ignore[operator]
        if len(kept) != len(lines):
            from vlmdata.atomic import write_text

            write_text(path, "".join(ln if ln.endswith("\n") else ln + "\n" for ln in kept))
            removed += len(lines) - len(kept)
    return removed


REPORT_STATE = "data_report_rank-{rank}.json"  # in a checkpoint: this rank's train-time data report so far


def save_report_state(data: Any, checkpoint: str | Path, rank: int) -> None:
    """The samples skipped and images found bad up to this checkpoint (``bad_samples: skip``): the resumed
    process starts with an empty report, and data_report.json would otherwise list only what it saw. With
    them, which data the checkpoint's step counts in: a digest of the samples' lengths, which with the seed
    make the sampler's order."""
    from vlmdata.atomic import write_text

    state = {**data.report.train_time(), "data": _data_identity(data.lengths)}
    write_text(Path(checkpoint) / REPORT_STATE.format(rank=rank), json.dumps(state, default=str))


def _data_identity(lengths: list[int]) -> dict:
    import hashlib

    return {"samples": len(lengths), "lengths_sha256": hashlib.sha256(json.dumps(list(lengths)).encode()).hexdigest()}


def restore_report_state(data: Any, checkpoint: str | Path, rank: int) -> None:
    """Put the checkpoint's skipped samples and bad images back in the report, each record once; say so when
    the data is not the checkpoint's (dataset_dir blended again, another tokenizer, template or length)."""
    path = Path(checkpoint) / REPORT_STATE.format(rank=rank)
    if not path.is_file():  # a checkpoint of an older vlmtrain, or of a run with other ranks
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    data.report.absorb(saved)
    was, now = saved.get("data"), _data_identity(data.lengths)
    if rank == 0 and isinstance(was, dict) and was != now:
        log.warning("--resume: %s was trained on %d samples, now %d%s (dataset_dir blended again, or another "
                    "tokenizer, template or model_max_length): the epoch goes on from the checkpoint's step in the "
                    "new data's order, so some of its samples are trained twice and others not at all",
                    Path(checkpoint).name, was.get("samples", 0), now["samples"],
                    " of other token lengths" if was.get("samples") == now["samples"] else "")


LOG_WINDOW = "log_window_rank-{rank}.pt"  # in a checkpoint: this rank's logging window so far (VlmTrainer)


def save_log_window(window: dict, checkpoint: str | Path, rank: int) -> None:
    import io

    import torch

    from vlmdata.atomic import write_bytes

    buf = io.BytesIO()
    torch.save({k: (v.detach().cpu() if hasattr(v, "detach") else v) for k, v in window.items()}, buf)
    write_bytes(Path(checkpoint) / LOG_WINDOW.format(rank=rank), buf.getvalue())


def load_log_window(checkpoint: str | Path, rank: int) -> dict | None:
    import torch

    path = Path(checkpoint) / LOG_WINDOW.format(rank=rank)
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def _step_of(line: str) -> int | None:
    try:
        row = json.loads(line)
    except ValueError:  # a half line: the run was killed while writing it
        return None
    return row.get("step") if isinstance(row, dict) and isinstance(row.get("step"), int) else None


def agree_on_checkpoint(args, resume: bool, last: Path | None, out: Path, where: str) -> None:
    """Launched ranks (several nodes) start the same way: each says whether it resumes and from which
    checkpoint it sees, and a ConfigError on every rank when they differ. Each node reads output_dir from
    its own mount; on disks of their own, node 1 sees no complete checkpoint (trainer_state.json is rank
    0's) and would start from step 0 beside a node that resumes, which breaks in the first collective
    (or trains on from two states)."""
    import torch.distributed as dist

    _ = args.device  # (sets the process group up, as the Trainer would)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    mine = (bool(resume), None if last is None else Path(last).name)
    every: list = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    if len(set(every)) == 1:
        return
    said = "; ".join(f"rank {r}: {'--resume' if res else 'a fresh start'}, sees {ck or 'no complete checkpoint'}"
                     for r, (res, ck) in enumerate(every))
    raise ConfigError(f"the ranks do not see the same run in {out} ({said})", where=where,
                      hint="output_dir must be one folder every node shares (a network file system): a checkpoint "
                           "holds every rank's part, and trainer_state.json, which marks it complete, is written "
                           "by rank 0 only")
