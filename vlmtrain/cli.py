"""The `vlmtrain` command: `run` a stage from a YAML config, `plot` a run's curves.

Long, and why: every command is here with its whole help text (the reference docs are generated
from it) and the checks on its arguments; the work itself is in the modules each one imports."""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from vlmdata.errors import UserError, run_app
from vlmtrain.cli_hints import RunCommand

app = typer.Typer(
    name="vlmtrain",
    help="Train LLaVA-family models on vlmdata blends.\n\n"
         "  vlmtrain make-tiny-data runs/tiny-data\n\n"
         "  vlmtrain run configs/tiny-cpu.yaml --set dataset_dir=runs/tiny-data\n\n"
         "  vlmtrain run configs/llava-1.5-7b-finetune.yaml --dry-run\n\n"
         "  vlmtrain run configs/llava-1.5-7b-pretrain.yaml --set num_gpus=4\n\n"
         "  vlmtrain plot runs/tiny-cpu",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        def v(dist: str) -> str:
            try:
                return version(dist)
            except PackageNotFoundError:
                return "not installed"

        typer.echo(f"vlmtrain {v('vlmdata')} (torch {v('torch')}, transformers {v('transformers')}, "
                   f"deepspeed {v('deepspeed')})")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version (and torch's, transformers') and exit.")) -> None:
    """Train LLaVA-family models on vlmdata blends."""


@app.command(cls=RunCommand)
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

    Config errors (unknown key, wrong type, missing dataset, stage settings that contradict each other) stop with exit code 2 before any model is built. With num_gpus > 1 or a hostfile the command re-launches itself under deepspeed / torchrun. Ctrl-C or a SIGTERM finishes the step, saves a checkpoint, prints the command that continues exactly where it stopped (the same one with --resume) and exits 130 / 143; a second Ctrl-C stops at once.

    Config keys are set in the YAML or with --set KEY=VALUE (LLaVA's --data_path X is --set data_path=X).

    Examples:
      vlmtrain run configs/tiny-cpu.yaml          # after `make demo`; seconds
      vlmtrain run configs/llava-1.5-7b-pretrain.yaml --dry-run
      vlmtrain run configs/llava-1.5-7b-finetune.yaml --set learning_rate=1e-5
      vlmtrain run configs/tiny-cpu.yaml --set output_dir=runs/a --resume
      vlmtrain run configs/tiny-moe-cpu-stage1.yaml \\
          configs/tiny-moe-cpu-stage2.yaml configs/tiny-moe-cpu-stage3.yaml
    """
    _require_training_stack()
    from vlmtrain.progress import quiet_deepspeed_on_cpu

    quiet_deepspeed_on_cpu()
    from vlmtrain.train.chain import plan_chain

    if json_out and not dry_run:
        raise UserError("--json goes with --dry-run (a training run writes its metrics to output_dir/metrics.jsonl)")
    stages = plan_chain(configs, set_ or [])
    from vlmtrain.model.build import check_model_fields

    for stage in stages:  # nested model keys need transformers' classes: checked here, every stage before the first
        check_model_fields(stage.cfg)
    if _first_rank():
        for stage in stages:
            for note in stage.cfg._notes:
                typer.echo(f"note: {stage.path}: {note}" if len(stages) > 1 else f"note: {note}", err=True)
    if dry_run:
        from vlmtrain.train.run import dry_run as do_dry_run

        infos = [do_dry_run(stage.cfg, as_json=json_out, emit=not (json_out and len(stages) > 1),
                            inherited_vocab=stage.inherited_vocab) for stage in stages]
        if json_out and len(stages) > 1:  # one JSON document: a list of the stages' summaries
            import json as _json

            typer.echo(_json.dumps(infos, indent=2, default=str))
        return
    if len(stages) > 1:
        _check_later_stages(stages, resume)
    for k, stage in enumerate(stages):
        _run_stage(stage, configs, set_ or [], resume, chained=len(stages) > 1)
    _leave_process_group()
    if len(stages) > 1 and _first_rank():
        last = stages[-1].cfg
        typer.echo(f"chain done: stages {stages[0].cfg.stage}-{last.stage}; the model is in {last.output_dir}\n"
                   f"  try: vlmtrain generate {last.output_dir} -i IMAGE -p \"What is in the image?\"", err=True)


def _check_later_stages(stages, resume: bool) -> None:
    """A chain: every stage's dataset, image root and output folder are checked before the first
    stage starts (a missing stage-3 dataset must not surface after hours of stages 1 and 2)."""
    from vlmtrain.train.chain import is_done
    from vlmtrain.train.preflight import preflight

    for stage in stages[1:]:
        if not (resume and is_done(stage.cfg)):
            preflight(stage.cfg, linked=True)


_LEFT_GROUP = False  # this process is a launched rank that was in a process group and has left it


def _leave_process_group() -> None:
    """End a launched rank's process group once its run is done, as torch asks (a rank that failed or was
    stopped keeps it: torch warns that a group ended while another rank is in a collective can hang).
    Only at the command's end (the stages of a chain share one group), and only in a launched rank
    (WORLD_SIZE > 1), whose process ends next (_exit_launched_rank): a single process keeps its group,
    which accelerate's cached state still names, for whatever it runs after in the same interpreter."""
    from vlmtrain.train.launch import launched_rank

    global _LEFT_GROUP
    if launched_rank() and _in_process_group():
        sys.modules["torch"].distributed.destroy_process_group()
        _LEFT_GROUP = True


def _in_process_group() -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized()


def _first_rank() -> bool:
    """Under a launcher every rank runs the command: one of them speaks."""
    return os.environ.get("RANK", "0") == "0"


def _run_stage(stage, configs: List[Path], overrides: List[str], resume: bool, *, chained: bool) -> None:
    from vlmtrain.cli_hints import interrupted_message, resume_command, start_command
    from vlmtrain.train.chain import finished_step, is_done
    from vlmtrain.train.launch import needs_launch, relaunch
    from vlmtrain.train.preflight import preflight
    from vlmtrain.train.rundir import last_complete_checkpoint

    cfg = stage.cfg
    if chained and resume and is_done(cfg):
        typer.echo(f"stage {cfg.stage} ({stage.path}) already finished in {cfg.output_dir}; skipped", err=True)
        return
    if chained:
        typer.echo(f"=== stage {cfg.stage}: {stage.path} -> {cfg.output_dir}", err=True)
    if resume and not chained and (step := finished_step(cfg)) is not None:
        # (the Trainer would train a step past max_steps from the last checkpoint, and save the model again)
        typer.echo(f"{cfg.output_dir} holds this run, finished at step {step}: nothing to train. To train it "
                   "further, raise max_steps (or num_train_epochs) with --set and --resume.", err=True)
        return
    stage_resume = resume and last_complete_checkpoint(cfg.output_dir) is not None
    if needs_launch(cfg):
        preflight(cfg)
        args = ["run", str(stage.path)] + [a for s in [*overrides, *stage.links] for a in ("--set", s)]
        # a single stage keeps the user's --resume: each node would decide it from its own disk otherwise,
        # and the ranks check that they agree (rundir.agree_on_checkpoint)
        code = relaunch(cfg, args + (["--resume"] if (stage_resume if chained else resume) else []))
        if code:
            raise typer.Exit(code)
        return
    from vlmtrain.train.run import train

    try:
        result = train(cfg, resume=stage_resume if chained else resume)
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the first step
        typer.echo(interrupted_message(cfg, configs, overrides, chained=chained), err=True)
        raise typer.Exit(130) from None
    except Exception as e:  # a full disk, a rank left waiting: said as such, with the command that continues
        from vlmtrain.train.diskfull import disk_failure
        from vlmtrain.train.rank_wait import rank_timeout

        resume_it = resume_command(configs, overrides)
        err = (disk_failure(e, cfg.output_dir, resume_it, start_command(configs, overrides, chained=chained))
               or rank_timeout(e, cfg.ddp_timeout, cfg.output_dir, resume_it))
        if err is None:
            raise
        raise err from None
    if result.stopped_at is not None:
        if _first_rank():
            typer.echo(f"stopped by {result.stop_signal} after step {result.stopped_at}; checkpoint saved in "
                       f"{Path(result.output_dir) / f'checkpoint-{result.stopped_at}'}\nContinue with:\n  "
                       f"{resume_command(configs, overrides)}", err=True)
        raise typer.Exit(result.exit_code)
    if not _first_rank():
        return
    typer.echo(f"done: {result.global_step} steps; outputs in {result.output_dir}", err=True)
    from vlmtrain.progress import loss_summary

    for line in loss_summary(str(result.output_dir), cfg):
        typer.echo(line, err=True)


TRAINING_STACK = ("torch", "transformers", "accelerate", "peft", "sentencepiece", "yaml")  # the [train] extra


def _require_training_stack() -> None:
    """`pip install vlmdata` is the data half alone: say how to get the trainer instead of an ImportError."""
    missing = [m for m in TRAINING_STACK if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"`vlmtrain run` needs the training stack; not installed: {', '.join(missing)}",
                        hint="pip install 'vlmdata[train]' (put the torch build your machine needs on the same "
                             "command line, e.g. torch==2.13.0)")


@app.command()
def generate(
    run_dir: Path = typer.Argument(..., help="A finished run's output_dir (stage 1, 2 or 3; LoRA is merged)."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="The question (an <image> marker is added when --image is given)."),
    image: Optional[Path] = typer.Option(None, "--image", "-i", help="An image file to ask about."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", min=1, help="Most tokens to generate (512: LLaVA's "
                                       "run_llava and serve cli)."),
    min_new_tokens: int = typer.Option(0, "--min-new-tokens", min=0, help="Fewest tokens before the end token may "
                                       "end the answer (a barely trained model may end it at once)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the MoE gate's second-expert draw (stage 3)."),
    device: str = typer.Option("auto", "--device", help="auto (a GPU when there is one, in half precision, else "
                               "the CPU), cpu, cuda or cuda:N."),
    json_out: bool = typer.Option(False, "--json", help="Print {answer, prompt, new_tokens, stopped, stage} as JSON."),
) -> None:
    """Answer a question about an image with a trained run, greedily, in the run's template.

    The run's own tokenizer, template and image processor are used, as its training used them.

    Examples:
      vlmtrain generate runs/tiny-cpu -i photo.jpg -p "What is in the image?"
      vlmtrain generate demo-out/runs/stage3 -p "Describe it." \\
          -i demo-out/root/layouts/llava/coco/train2017/000000042459.jpg
    """
    import json as _json

    _require_training_stack()
    from vlmtrain.generate import answer, load_run
    from vlmtrain.progress import quiet_library_bars

    quiet_library_bars()
    if image is not None and not image.is_file():
        raise typer.BadParameter(f"{image} is not a file", param_hint="--image")
    if image is not None:  # before the model is loaded: a file that is no image is said at once
        from vlmtrain.data.images import BadImage, open_rgb

        try:
            open_rgb(image)
        except BadImage as e:
            raise typer.BadParameter(f"{image} is not an image this can read ({e.reason})", param_hint="--image") from None
    if min_new_tokens > max_new_tokens:
        raise typer.BadParameter(f"{min_new_tokens} is more than --max-new-tokens {max_new_tokens}",
                                 param_hint="--min-new-tokens")
    run = load_run(run_dir, device=device)
    if run.cfg.random_init and run.cfg.frozen()["llm"] and not run.cfg.lora_enable:
        typer.echo(f"note: {run_dir} trained only the projector of a random LLM (random_init, stage "
                   f"{run.cfg.stage}): expect noise, not an answer", err=True)
    out = answer(run, prompt, image, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, seed=seed)
    if json_out:
        typer.echo(_json.dumps(out, indent=2))
    elif out["answer"]:
        typer.echo(out["answer"])
        if out["stopped"] == "max_new_tokens":
            typer.echo(f"(cut at --max-new-tokens {max_new_tokens}: raise it for the rest)", err=True)
    elif out["stopped"] == "eos" and out["new_tokens"] <= 1:
        typer.echo("(empty: the model ended its answer at once; --min-new-tokens N makes it write N tokens first)")
    else:
        typer.echo(f"(empty: the model wrote {out['new_tokens']} tokens of whitespace or special tokens only)")


@app.command("export-moe-llava")
def export_moe_llava(
    run_dir: Path = typer.Argument(..., help="A finished stage-3 run's output_dir."),
    out: Path = typer.Argument(..., help="Folder to write pytorch_model.bin, config.json and the tokenizer into "
                                         "(a new folder, or an earlier export, which is replaced whole)."),
) -> None:
    """Write a stage-3 model in MoE-LLaVA's checkpoint layout (its eval and serve code read it).

    MoE layers become model.layers.N.mlp.deepspeed_moe.gate.wg / ...experts.deepspeed_experts.E.*, the tower model.image_tower.image_tower.*, the projector model.mm_projector.image_spatial_proj.*. The tokenizer's files go beside them (MoE-LLaVA's loader reads the tokenizer from the model's folder, slow: for a Llama / Mistral tokenizer from its tokenizer.model, which the run kept from the tokenizer's source; a note says so when there was none). Any other non-empty OUT is refused, and so is an OUT that holds the run. MoE-LLaVA's loader picks the model class from the folder's name ("moe", "llava" and the LLM family, e.g. moe-llava-phi2-...), and its serve/cli.py the conversation template: a note says so when OUT's name would not load there, or would chat in another template than the run's (an openchat run: moe-llava-openchat-...; a mistral one: no name picks it, pass --conv-mode mistral there).

    Examples:
      vlmtrain export-moe-llava runs/moe-llava-phi2-stage3 \\
          checkpoints/moe-llava-phi2
      vlmtrain export-moe-llava runs/moe-llava-openchat-stage3 \\
          checkpoints/moe-llava-openchat
    """
    _require_training_stack()
    from vlmtrain.config import ConfigError
    from vlmtrain.generate import _run_config
    from vlmtrain.model.moe.checkpoint_keys import (check_export_target, export_name_of_run, export_notes,
                                                    write_moellava_checkpoint)
    from vlmtrain.progress import quiet_library_bars

    quiet_library_bars()
    run_cfg = _run_config(run_dir)  # before the weights are read
    if run_cfg.stage != 3:
        raise ConfigError(f"{run_dir} is a stage-{run_cfg.stage} run; MoE-LLaVA's layout is for stage-3 (MoE) models")
    check_export_target(run_dir, out, export_name_of_run(run_dir, run_cfg.template))
    _export(run_dir, out, lambda run: write_moellava_checkpoint(
        run.model, out, vision_tower=run.cfg.vision_tower, image_aspect_ratio=run.cfg.image_aspect_ratio,
        tokenizer=run.tokenizer), lambda run: export_notes(out, run.model.config.text_config.model_type, run.cfg.template))


@app.command("export-llava")
def export_llava(
    run_dir: Path = typer.Argument(..., help="A finished stage-1 or stage-2 run's output_dir (LoRA runs merged)."),
    out: Path = typer.Argument(..., help="Folder to write pytorch_model.bin, config.json and the tokenizer into "
                                         "(a new folder, or an earlier export, which is replaced whole)."),
) -> None:
    """Write a stage-1/2 model in LLaVA's checkpoint layout, for its eval scripts and serve code (or ConvLLaVA's).

    The LLM goes to model.* / lm_head.*, the projector to model.mm_projector.*, the tower to model.vision_tower.vision_tower.*, with a config.json of LLaVA's mm_* fields and the tokenizer's files (LLaVA's loader reads them from the model's folder, slow). Llama (Vicuna) and Mistral LLMs with a CLIP tower, as LLaVA has classes for. LLaVA's loader picks the class from the folder's name ("llava" in it, "mistral" for a Mistral) and loads the tower from mm_vision_tower (a Hub id or an absolute path): a note says so when either would not load. Then, e.g., its scripts/v1_5/eval/*.sh on vlmdata's llava-eval layout, with --model-path OUT --conv-mode vicuna_v1.

    A Llama run with the ConvNeXt tower (configs/convllava-stage*.yaml) is written for ConvLLaVA's code (alibaba/conv-llava: its load_pretrained_model, as its VLMEvalKit and lmms-eval scripts use it) instead, as its train.py saves a model: the tower in OUT/vision_tower/ (ConvNext config.json with every stage, pytorch_model.bin, the run's image processor), named in config.json's mm_vision_tower by its absolute path (move the export: set it anew), with mm_vision_resolution; a note says so.

    Examples:
      vlmtrain export-llava runs/llava-1.5-7b-finetune checkpoints/llava-v1.5-7b-mine
      vlmtrain export-llava runs/convllava-stage3 checkpoints/convllava-7b-mine
    """
    _require_training_stack()
    from vlmtrain.config import ConfigError
    from vlmtrain.generate import _run_config
    from vlmtrain.model.llava_export import check_export_target, run_export_notes, write_llava_checkpoint
    from vlmtrain.progress import quiet_library_bars

    quiet_library_bars()
    run_cfg = _run_config(run_dir)  # before the weights are read
    if run_cfg.stage == 3:
        raise ConfigError(f"{run_dir} is a stage-3 (MoE) run; LLaVA has no MoE layers",
                          hint=f"`vlmtrain export-moe-llava {run_dir} OUT` writes MoE-LLaVA's layout")
    check_export_target(run_dir, out)
    _export(run_dir, out, lambda run: write_llava_checkpoint(
        run.model, out, vision_tower=run.cfg.vision_tower, image_aspect_ratio=run.cfg.image_aspect_ratio,
        model_max_length=run.cfg.model_max_length, tokenizer=run.tokenizer, image_processor=run.image_processor),
        lambda run: run_export_notes(out, run.model, run.cfg.vision_tower))


def _export(run_dir: Path, out: Path, write, notes) -> None:
    """Load the run, ``write(run)`` the export into OUT, print its path and ``notes(run)``; a read-only OUT is
    said before the weights are read, a bad model (ValueError) or a full disk as what they are."""
    from vlmtrain.config import ConfigError
    from vlmtrain.generate import load_run

    _check_export_writable(out)
    run = load_run(run_dir)
    try:
        path = write(run)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    except OSError as e:  # a disk that filled up while writing; any other error is a bug
        raise _export_write_error(out, e) or e
    typer.echo(str(path))
    for note in notes(run):
        typer.echo(f"note: {note}", err=True)


def _check_export_writable(out: Path) -> None:
    """Make and remove the temporary folder the export is written into beside OUT, as the export will."""
    from vlmdata.atomic import temp_dir_beside

    try:
        temp_dir_beside(out).rmdir()
    except OSError as e:  # any error here is about the place (e.g. a file where a folder should be)
        raise _export_write_error(out, e) or UserError(
            f"{out}: cannot write the export there ({e.strerror or e}: {e.filename}); nothing was written",
            hint="give another OUT: a new folder, in a folder this user may write to") from None


def _export_write_error(out: Path, e: OSError) -> Exception | None:
    """A permission, read-only or full-disk error as a message naming OUT, with the exit code run_app's
    os_errors gives it (2, or 1 for a full disk); None for any other OSError."""
    from vlmdata.errors import OperationError, describe_os_error, os_error_advice

    known = describe_os_error(e, option="OUT")
    if known is None:
        return None
    code, hint = known[0], known[2]
    what = f"{out}: cannot write the export there ({os_error_advice(e.errno)[0]}); nothing was written"
    if code == 2:  # read-only, permission: the place is wrong
        return UserError(what, hint="give another OUT: a folder on a writable file system that this user may write to")
    return OperationError(what, hint=hint)


class TinyKind(str, Enum):
    instruct = "instruct"
    caption = "caption"


@app.command("make-tiny-data")
def make_tiny_data(
    out: Path = typer.Argument(..., help="Folder to write (a `vlmdata blend`-format dataset)."),
    n: int = typer.Option(48, "--n", min=1, help="Samples."),
    kind: TinyKind = typer.Option(TinyKind.instruct, "--kind",
                                  help="instruct: multi-turn, a quarter text-only (stage 2); caption: one image, "
                                       "one caption each (stage 1, version: plain)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes the same dataset."),
) -> None:
    """Write a tiny dataset of coloured-shape images in the blend format (for tiny-cpu.yaml and smoke runs).

    The images go to OUT/images and blend.json names them as the image root, so the folder trains as it is (and can be moved), with no `vlmdata fetch`. An earlier tiny dataset in OUT is replaced; any other non-empty folder is refused.

    Examples:
      vlmtrain make-tiny-data runs/tiny-data
      vlmtrain run configs/tiny-cpu.yaml --set dataset_dir=runs/tiny-data
      vlmtrain make-tiny-data runs/tiny-caps --kind caption --n 16
    """
    from vlmtrain.tinydata import write_tiny_blend

    typer.echo(str(write_tiny_blend(out, n, kind=kind.value, seed=seed)))


@app.command("packing-stats")
def packing_stats(
    config: Path = typer.Argument(..., help="A run config (YAML)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a key, as with `vlmtrain run`."),
    json_out: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """How much of the run's batches would be padding, padded and with `packing: true` (no model is built).

    Reads what the run would read to measure each sample's true length: the dataset and the tokenizer (a Hub id such as lmsys/vicuna-7b-v1.5 is downloaded, or read from the Hugging Face cache; `tokenizer_train_vocab_size` trains one on the dataset). The model's shapes come from its config, on the meta device: no weights are read, so a finetune's `pretrain_mm_mlp_adapter` (stage 1's projector) need not exist yet.

    Examples:
      vlmtrain packing-stats configs/tiny-cpu.yaml          # after `make demo`; offline
      vlmtrain packing-stats configs/llava-1.5-7b-finetune.yaml --json
    """
    import json as _json

    _require_training_stack()
    from vlmtrain.config import load_config
    from vlmtrain.data.packing_stats import render
    from vlmtrain.train.packing_report import packing_stats as stats

    report = stats(load_config(config, set_ or []))
    typer.echo(_json.dumps(report, indent=2) if json_out else render(report)
               + f"\nthis config's sampler order: {report['run_order']}")


@app.command()
def plot(
    run_dir: Path = typer.Argument(..., help="A run's output_dir (has metrics.jsonl)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default RUN_DIR/curves.png)."),
) -> None:
    """Write a PNG of loss, learning rate, tokens/s and MFU over steps.

    Reads RUN_DIR/metrics.jsonl, which a run appends to at every logging step, so it can be plotted while the run goes on. Uses matplotlib when installed, else Pillow.

    Examples:
      vlmtrain plot runs/tiny-cpu
      vlmtrain plot runs/tiny-cpu --out curves/tiny.png
    """
    from vlmtrain.plot import plot as do_plot

    path = do_plot(run_dir, out)
    typer.echo(str(path))


def main() -> None:
    """Entry point: user mistakes become a clear message and exit code 2, never a traceback."""
    level = os.environ.get("VLMTRAIN_LOG", "INFO").upper()
    if not isinstance(logging.getLevelName(level), int):  # an unknown name maps to a string
        print(f"VLMTRAIN_LOG={os.environ['VLMTRAIN_LOG']} is not a log level (DEBUG, INFO, WARNING, ERROR); "
              "using INFO", file=sys.stderr)
        level = "INFO"
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # `run` answers a Ctrl-C itself (checkpoint, then the command that continues); this is for everything else.
    try:
        run_app(lambda: app(standalone_mode=False), interrupted="interrupted (Ctrl-C)", user_error=_is_data_error)
    except SystemExit as e:
        _exit_launched_rank(e.code)
        raise
    _exit_launched_rank(0)


def _exit_launched_rank(code: int | str | None) -> None:
    """A launched rank (WORLD_SIZE > 1) that joined a process group ends here, with ``code``, not through the
    interpreter's teardown, where a rank that had finished its run aborted once ('terminate called without
    an active exception', exit 134: a two-process ZeRO-3 resume, once in five full test suites). Our reading,
    not proven: objects that library module globals still hold (process groups, their gloo work) are
    destroyed there while the interpreter is half gone, as torch's issues on that message describe. What the
    teardown does for a program is done first: other non-daemon threads finish, atexit handlers run (logging,
    multiprocessing's workers), stdout and stderr are flushed; a finished run has left its group already
    (_leave_process_group). Any other process returns and exits as usual."""
    if not (_LEFT_GROUP or _in_process_group()):
        return
    from vlmtrain.train.launch import launched_rank

    if not launched_rank():
        return
    import atexit
    import threading

    if isinstance(code, str):  # sys.exit("message"): said on stderr, exit 1, as Python does
        print(code, file=sys.stderr)
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe has nothing more to say
            pass
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def _is_data_error(e: BaseException) -> bool:
    """The data side's user errors (a broken dataset, a bad sample with bad_samples: fail)."""
    data = sys.modules.get("vlmtrain.data")
    return data is not None and isinstance(e, (data.DataError, data.BadSampleError))


if __name__ == "__main__":
    main()
