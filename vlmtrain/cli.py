"""The `vlmtrain` command: `run` a stage from a YAML config, `plot` a run's curves."""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from vlmdata.errors import UserError, run_app

app = typer.Typer(
    name="vlmtrain",
    help="Train LLaVA-family models on vlmdata blends.\n\n"
         "  vlmtrain run configs/tiny-cpu.yaml\n\n"
         "  vlmtrain run configs/llava-1.5-7b-finetune.yaml --dry-run\n\n"
         "  vlmtrain run configs/llava-1.5-7b-pretrain.yaml --set learning_rate=2e-3 --resume\n\n"
         "  vlmtrain plot runs/tiny-cpu",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.command()
def run(
    config: Path = typer.Argument(..., help="Run config (YAML), e.g. configs/tiny-cpu.yaml"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a key: --set learning_rate=1e-5, "
                                             "--set freeze.vision=false, --set text_config.num_hidden_layers=2"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in output_dir."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Build the model shapes on the meta device and print "
                                 "parameter counts per part; no weights, no data, no download."),
    json_out: bool = typer.Option(False, "--json", help="With --dry-run: print the summary as JSON."),
) -> None:
    """Train one stage (1: projector; 2: projector + LLM) as the config says.

    Config errors (unknown key, wrong type, missing dataset, stage settings that contradict each other) stop with exit code 2 before any model is built. With num_gpus > 1 or a hostfile the command re-launches itself under deepspeed / torchrun. A SIGTERM saves a checkpoint and exits 143; run the same command with --resume to continue exactly where it stopped.

    Examples:
      vlmtrain run configs/tiny-cpu.yaml                      # after `make demo`, seconds on a CPU
      vlmtrain run configs/llava-1.5-7b-pretrain.yaml --dry-run
      vlmtrain run configs/llava-1.5-7b-finetune.yaml --set learning_rate=1e-5 --resume
    """
    _require_training_stack()
    from vlmtrain.config import load_config

    cfg = load_config(config, set_ or [])
    if dry_run:
        from vlmtrain.train.run import dry_run as do_dry_run

        do_dry_run(cfg, as_json=json_out)
        return
    from vlmtrain.train.launch import needs_launch, relaunch

    if needs_launch(cfg):
        from vlmtrain.config import check_inputs

        check_inputs(cfg)
        args = ["run", str(config)] + [a for s in (set_ or []) for a in ("--set", s)] + (["--resume"] if resume else [])
        raise typer.Exit(relaunch(cfg, args))
    from vlmtrain.train.run import train

    result = train(cfg, resume=resume)
    if result.stopped_at is not None:
        typer.echo(f"stopped by SIGTERM after step {result.stopped_at}; checkpoint saved in {result.output_dir}. "
                   f"Continue with: vlmtrain run {config} --resume", err=True)
        raise typer.Exit(143)
    typer.echo(f"done: {result.global_step} steps; outputs in {result.output_dir}", err=True)


TRAINING_STACK = ("torch", "transformers", "accelerate", "peft", "sentencepiece", "yaml")  # the [train] extra


def _require_training_stack() -> None:
    """`pip install vlmdata` is the data half alone: say how to get the trainer instead of an ImportError."""
    missing = [m for m in TRAINING_STACK if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"`vlmtrain run` needs the training stack; not installed: {', '.join(missing)}",
                        hint="pip install 'vlmdata[train]' (put the torch build your machine needs on the same "
                             "command line, e.g. torch==2.13.0)")


@app.command("make-tiny-data")
def make_tiny_data(
    out: Path = typer.Argument(..., help="Folder to write (a `vlmdata blend`-format dataset)."),
    n: int = typer.Option(48, "--n", help="Samples."),
    kind: str = typer.Option("instruct", "--kind", help="instruct (multi-turn, some text-only) | caption (stage 1)"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write a tiny dataset of coloured-shape images in the blend format (for tiny-cpu.yaml and smoke runs)."""
    from vlmtrain.tinydata import write_tiny_blend

    if kind not in ("instruct", "caption"):
        raise typer.BadParameter("--kind is instruct or caption")
    typer.echo(str(write_tiny_blend(out, n, kind=kind, seed=seed)))


@app.command()
def plot(
    run_dir: Path = typer.Argument(..., help="A run's output_dir (has metrics.jsonl)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default RUN_DIR/curves.png)."),
) -> None:
    """Write a PNG of loss, learning rate, tokens/s and MFU over steps.

    Examples:
      vlmtrain plot runs/tiny-cpu
    """
    from vlmtrain.plot import plot as do_plot

    path = do_plot(run_dir, out)
    typer.echo(str(path))


def main() -> None:
    """Entry point: user mistakes become a clear message and exit code 2, never a traceback."""
    logging.basicConfig(level=os.environ.get("VLMTRAIN_LOG", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    run_app(app, interrupted="interrupted; run again with --resume to continue from the last checkpoint",
            user_error=_is_data_error)


def _is_data_error(e: BaseException) -> bool:
    """The data side's user errors (a broken dataset, a bad sample with bad_samples: fail)."""
    data = sys.modules.get("vlmtrain.data")
    return data is not None and isinstance(e, (data.DataError, data.BadSampleError))


if __name__ == "__main__":
    main()
