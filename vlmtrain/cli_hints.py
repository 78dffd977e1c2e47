"""What ``vlmtrain run`` answers when it is given LLaVA's command-line flags instead of ``--set``.

LLaVA trains with ``python train.py --data_path X --learning_rate 2e-5 ...``; a user who carries
that habit over types ``vlmtrain run CONFIG --data_path X``. click would answer "No such option";
this answers with the form that works: ``--set data_path=X``.
"""
from __future__ import annotations

import difflib
import shlex
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

# typer carries its own copy of click; its exceptions are reached through the one it exports.
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _config_keys() -> set[str]:
    from vlmtrain.config import ALIASES, TrainConfig, _fields
    from vlmtrain.config_compat import COMPAT_KEYS

    return set(_fields(TrainConfig)) | set(ALIASES) | set(COMPAT_KEYS)


def _value_after(option: str, args: list[str]) -> str | None:
    """The value the user wrote for ``option`` (``--key value`` or ``--key=value``), if any."""
    for i, a in enumerate(args):
        if a.startswith(option + "="):
            return a.split("=", 1)[1]
        if a == option and i + 1 < len(args) and not args[i + 1].startswith("--"):
            return args[i + 1]
    return None


def set_form_hint(option: str, args: list[str]) -> str | None:
    """``--data_path`` -> "use --set data_path=X"; None when the option is no config key either."""
    key = option.lstrip("-").replace("-", "_")
    if key == "resume_from_checkpoint":
        return f"`{option}` is spelled `--resume` here: it continues from the last checkpoint in output_dir"
    try:
        keys = _config_keys()
    except ImportError:  # the data-only install (no yaml): click's own message
        return None
    if key not in keys:
        close = difflib.get_close_matches(key, sorted(keys), n=1, cutoff=0.8)
        if not close:
            return None
        key = close[0]
    value = _value_after(option, args)
    shown = value if value is not None else "VALUE"
    return (f"`{option}` is a config key, not an option of `vlmtrain run`: write `--set {key}={shown}` "
            f"(or `{key}: {shown}` in the YAML)")


class RunCommand(TyperCommand):
    """``vlmtrain run`` with the hint above on an unknown option."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        original = list(args)
        try:
            return super().parse_args(ctx, args)
        except _UsageError as e:
            option = getattr(e, "option_name", None)
            hint = set_form_hint(option, original) if type(e).__name__ == "NoSuchOption" and option else None
            if hint is None:
                raise
            raise _UsageError(hint, ctx=ctx) from None


def _command(configs: list | str | Path, sets: list[str], *extra: str) -> str:
    paths = [str(c) for c in (configs if isinstance(configs, (list, tuple)) else [configs])]
    return shlex.join(["vlmtrain", "run", *paths, *[a for s in sets for a in ("--set", s)], *extra])


def resume_command(configs: list | str | Path, sets: list[str]) -> str:
    """The command that continues this run (or chain): the same configs and every --set, plus --resume (shell-quoted)."""
    return _command(configs, sets, "--resume")


def start_command(configs: list | str | Path, sets: list[str], *, chained: bool = False) -> str:
    """The command that starts this run again (a chain: continues it, its finished stages skipped)."""
    return resume_command(configs, sets) if chained else _command(configs, sets)


def interrupted_message(cfg: Any, configs: list | str | Path, sets: list[str], *, chained: bool = False) -> str:
    """After a Ctrl-C that stopped at once: what is on disk, and the command that continues (or restarts)."""
    from vlmtrain.train.rundir import last_complete_checkpoint

    last = last_complete_checkpoint(cfg.output_dir)
    if last is not None:
        return (f"stopped at once by Ctrl-C; the last checkpoint is {last}\nContinue from it with:\n  "
                f"{resume_command(configs, sets)}")
    if chained:  # the finished stages are skipped with --resume; this one starts over
        return (f"stopped by Ctrl-C before stage {cfg.stage} saved a checkpoint; continue the chain with:\n  "
                f"{resume_command(configs, sets)}")
    return f"stopped by Ctrl-C before any checkpoint was saved; nothing to resume. Start again with:\n  {_command(configs, sets)}"
