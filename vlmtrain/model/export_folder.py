"""An export folder for a reference repo's loader (MoE-LLaVA's, LLaVA's): where it may go, and how it is
written. The weights, config.json, generation_config.json and the tokenizer's files (both loaders read the
tokenizer from the model's folder, slow, on transformers 4.37) are written into a folder beside OUT and
renamed into place, replacing an earlier export whole: weights of one run next to the config or tokenizer
of another cannot happen, even when killed."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import torch


def renamed(key: str, parts: list[tuple[str, str]]) -> str:
    """``key`` with the first of ``parts``' prefixes it starts with replaced (ours -> the reference's); a tower
    key saved under CLIPVisionModel's wrapper prefix is taken without it first."""
    if key.startswith("model.vision_tower.vision_model."):
        key = "model.vision_tower." + key[len("model.vision_tower.vision_model."):]
    for ours, theirs in parts:
        if key.startswith(ours):
            return theirs + key[len(ours):]
    return key


def check_export_target(run_dir: Path, out: Path, name: str, *, is_export: Callable[[Path], bool],
                        loader: str, command: str) -> None:
    """A ConfigError, before any weights are read, when writing ``out`` would lose something: ``out``
    is a file, is the run or holds it (replacing it whole would delete the run), or is a non-empty
    folder other than an earlier export (``is_export``). ``name``: the folder name the hint suggests."""
    from vlmtrain.config import ConfigError

    run, target = Path(run_dir).resolve(), Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file, not a folder; nothing was written",
                          hint="give a folder path for the export (it is created)")
    if target == run or target in run.parents:
        raise ConfigError(f"{out} holds the run {run_dir}: the export replaces its folder whole; nothing was written",
                          hint=f"give a new folder named as {loader}'s loader wants, e.g. "
                               f"{Path(run_dir).parent / name}, beside the run")
    if out.is_dir() and any(out.iterdir()) and not is_export(out):
        raise ConfigError(f"{out} is a folder that is not empty and holds no earlier {loader} export; nothing was written",
                          hint=f"give a new folder (it is created), or an earlier `vlmtrain {command}` "
                               "output to replace it")


def architecture_of(folder: Path) -> str:
    """config.json's first architecture in ``folder`` ("" when there is none to read)."""
    try:
        arch = json.loads((Path(folder) / "config.json").read_text()).get("architectures") or [""]
    except (OSError, ValueError, AttributeError):
        return ""
    return str(arch[0])


def write_export(out_dir: str | Path, state: dict[str, torch.Tensor], config: dict, model: Any,
                 tokenizer: Any = None, extra: Callable[[Path], None] | None = None) -> Path:
    """``out_dir/pytorch_model.bin`` (``state``), ``config.json`` (``config``), ``generation_config.json``
    (MoE-LLaVA's builder reads it for Qwen: a missing file fails its load) and the tokenizer's files;
    ``extra(folder)`` writes what else belongs in it (ConvLLaVA's ``vision_tower/``) before the one rename.
    Returns the weights file."""
    from vlmdata.atomic import atomic_open, replace_dir, temp_dir_beside, write_text

    out = Path(out_dir)
    tmp = temp_dir_beside(out)
    try:
        with atomic_open(tmp / "pytorch_model.bin") as fh:  # (fsynced: the folder is renamed into place next)
            torch.save(state, fh)
        write_text(tmp / "config.json", json.dumps(config, indent=2, default=str) + "\n")
        write_text(tmp / "generation_config.json", model.generation_config.to_json_string(use_diff=True))
        if tokenizer is not None:
            from vlmtrain.data.slow_tokenizer_files import save_tokenizer
            from vlmtrain.model.legacy_tokenizer import write_legacy_tokenizer_files

            save_tokenizer(tokenizer, tmp)  # (with the SentencePiece model the tokenizer came from)
            write_legacy_tokenizer_files(tmp)  # transformers 4.37 loads it slow, from these
        if extra is not None:
            extra(tmp)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "pytorch_model.bin"
