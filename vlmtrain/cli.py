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
    configs: List[Path] = typer.Argument(..., help="Run config(s) (YAML). Several: one chain of stages, each "
                                         "starting from the previous one's output."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a key (in every stage): --set learning_rate=1e-5, "
                                             "--set freeze.vision=false, --set text_config.num_hidden_layers=2"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in output_dir (a chain: "
                                "skip the finished stages, resume the interrupted one)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Build the model shapes on the meta device and print "
                                 "parameter counts per part; no weights, no data, no download."),
    json_out: bool = typer.Option(False, "--json", help="With --dry-run: print the summary as JSON."),
) -> None:
    """Train one stage (1: projector; 2: projector + LLM; 3: MoE-tuning) as the config says, or a chain of stages.

    Config errors (unknown key, wrong type, missing dataset, stage settings that contradict each other) stop with exit code 2 before any model is built. With num_gpus > 1 or a hostfile the command re-launches itself under deepspeed / torchrun. A SIGTERM saves a checkpoint and exits 143; run the same command with --resume to continue exactly where it stopped.

    Examples:
      vlmtrain run configs/tiny-cpu.yaml                      # after `make demo`, seconds on a CPU
      vlmtrain run configs/llava-1.5-7b-pretrain.yaml --dry-run
      vlmtrain run configs/llava-1.5-7b-finetune.yaml --set learning_rate=1e-5 --resume
      vlmtrain run configs/tiny-moe-cpu-stage1.yaml configs/tiny-moe-cpu-stage2.yaml configs/tiny-moe-cpu-stage3.yaml
    """
    _require_training_stack()
    from vlmtrain.train.chain import plan_chain

    stages = plan_chain(configs, set_ or [])
    if dry_run:
        from vlmtrain.train.run import dry_run as do_dry_run

        for stage in stages:
            do_dry_run(stage.cfg, as_json=json_out)
        return
    for k, stage in enumerate(stages):
        _run_stage(stage, configs, set_ or [], resume, chained=len(stages) > 1)


def _run_stage(stage, configs: List[Path], overrides: List[str], resume: bool, *, chained: bool) -> None:
    from vlmtrain.config import check_inputs
    from vlmtrain.train.chain import is_done
    from vlmtrain.train.launch import needs_launch, relaunch

    cfg = stage.cfg
    again = " ".join(["vlmtrain run", *map(str, configs), *(f"--set {s}" for s in overrides), "--resume"])
    if chained and resume and is_done(cfg):
        typer.echo(f"stage {cfg.stage} ({stage.path}) already finished in {cfg.output_dir}; skipped", err=True)
        return
    if chained:
        typer.echo(f"=== stage {cfg.stage}: {stage.path} -> {cfg.output_dir}", err=True)
    stage_resume = resume and _has_checkpoint(cfg)
    if needs_launch(cfg):
        check_inputs(cfg)
        args = ["run", str(stage.path)] + [a for s in [*overrides, *stage.links] for a in ("--set", s)]
        code = relaunch(cfg, args + (["--resume"] if stage_resume else []))
        if code:
            raise typer.Exit(code)
        return
    from vlmtrain.train.run import train

    result = train(cfg, resume=stage_resume if chained else resume)
    if result.stopped_at is not None:
        typer.echo(f"stopped by SIGTERM after step {result.stopped_at}; checkpoint saved in {result.output_dir}. "
                   f"Continue with: {again}", err=True)
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


def _has_checkpoint(cfg) -> bool:
    out = Path(cfg.output_dir)
    return out.is_dir() and any(p.name.startswith("checkpoint-") for p in out.iterdir())


@app.command()
def generate(
    run_dir: Path = typer.Argument(..., help="A finished run's output_dir (stage 1, 2 or 3; LoRA is merged)."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="The question (an <image> marker is added when --image is given)."),
    image: Optional[Path] = typer.Option(None, "--image", "-i", help="An image file to ask about."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, help="Most tokens to generate."),
    min_new_tokens: int = typer.Option(0, "--min-new-tokens", min=0, help="Fewest tokens before the end token may "
                                       "end the answer (a barely trained model may end it at once)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the MoE gate's second-expert draw (stage 3)."),
    json_out: bool = typer.Option(False, "--json", help="Print {answer, prompt, new_tokens, stopped, stage} as JSON."),
) -> None:
    """Answer a question about an image with a trained run, greedily, in the run's template.

    Examples:
      vlmtrain generate runs/tiny-cpu --image photo.jpg --prompt "What is in the image?"
      vlmtrain generate demo-out/runs/stage3 -i demo-out/root/layouts/llava/coco/train2017/000000000009.jpg -p "Describe it."
    """
    import json as _json

    _require_training_stack()
    from vlmtrain.generate import answer, load_run

    if image is not None and not image.is_file():
        raise typer.BadParameter(f"{image} is not a file", param_hint="--image")
    if min_new_tokens > max_new_tokens:
        raise typer.BadParameter(f"{min_new_tokens} is more than --max-new-tokens {max_new_tokens}",
                                 param_hint="--min-new-tokens")
    out = answer(load_run(run_dir), prompt, image, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                 seed=seed)
    if json_out:
        typer.echo(_json.dumps(out, indent=2))
    elif out["answer"]:
        typer.echo(out["answer"])
    elif out["stopped"] == "eos" and out["new_tokens"] <= 1:
        typer.echo("(empty: the model ended its answer at once; --min-new-tokens N makes it write N tokens first)")
    else:
        typer.echo(f"(empty: the model wrote {out['new_tokens']} tokens of whitespace or special tokens only)")


@app.command("export-moe-llava")
def export_moe_llava(
    run_dir: Path = typer.Argument(..., help="A finished stage-3 run's output_dir."),
    out: Path = typer.Argument(..., help="Folder to write pytorch_model.bin + config.json into."),
) -> None:
    """Write a stage-3 model in MoE-LLaVA's checkpoint layout (its eval and serve code read it).

    MoE layers become model.layers.N.mlp.deepspeed_moe.gate.wg / ...experts.deepspeed_experts.E.*,
    the tower model.image_tower.image_tower.*, the projector model.mm_projector.image_spatial_proj.*.

    Examples:
      vlmtrain export-moe-llava runs/moe-llava-phi2-stage3 checkpoints/moe-llava-phi2
    """
    _require_training_stack()
    from vlmtrain.config import ConfigError
    from vlmtrain.generate import load_run
    from vlmtrain.model.moe.checkpoint_keys import write_moellava_checkpoint

    loaded = load_run(run_dir)
    if loaded.cfg.stage != 3:
        raise ConfigError(f"{run_dir} is a stage-{loaded.cfg.stage} run; MoE-LLaVA's layout is for stage-3 (MoE) models")
    try:
        path = write_moellava_checkpoint(loaded.model, out, vision_tower=loaded.cfg.vision_tower,
                                         image_aspect_ratio=loaded.cfg.image_aspect_ratio)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    typer.echo(str(path))


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
