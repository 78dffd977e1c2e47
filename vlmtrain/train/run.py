"""``vlmtrain run``: config -> tokenizer -> model -> data -> Trainer -> checkpoints.

The order matters for errors: everything a user can get wrong in the YAML is checked by
vlmtrain.config before this module touches a tokenizer, a model or the dataset.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlmtrain.config import ConfigError, TrainConfig
from vlmtrain.train.tokenizer import load_tokenizer

log = logging.getLogger("vlmtrain")

# ---------------------------------------------------------------------------------------------
# Image processor (the tokenizer: vlmtrain.train.tokenizer)
# ---------------------------------------------------------------------------------------------

def build_image_processor(cfg: TrainConfig, vc):
    """The tower's own processor (InternViT / ConvNeXt: model.towers; CLIP / SigLIP: on disk / the Hub), else one
    from the tower's config; always on ``cfg.image_backend`` (PIL by default: vlmtrain.data.image_processor says why)."""
    from vlmtrain.data.image_processor import ImageBackendError, build_image_processor as build, require_backend
    from vlmtrain.model.towers import image_processor

    try:
        own = image_processor(cfg.vision_tower if not cfg.random_init else None, vc, backend=cfg.image_backend)
        if own is not None:
            return require_backend(own, cfg.image_backend, cfg.vision_tower)
        return build(cfg.vision_tower, vc, backend=cfg.image_backend, from_pretrained=not cfg.random_init)
    except ImageBackendError as e:
        raise ConfigError(str(e), where=cfg._source or "config") from None


# ---------------------------------------------------------------------------------------------
# Dry run
# ---------------------------------------------------------------------------------------------

def dry_run(cfg: TrainConfig, *, as_json: bool = False, emit: bool = True,
            inherited_vocab: int | None = None) -> dict[str, Any]:
    """Model shapes on the meta device, parameter counts per part; nothing allocated or downloaded.
    ``inherited_vocab``: a chained stage's, the size of the tokenizer an earlier stage trains (chain.Stage)."""
    from vlmtrain.model.build import build_model, describe, param_counts, apply_freeze

    # a tokenizer the run (or the earlier stage it starts from) trains has about that many entries, not
    # the LLM config's vocabulary: the embedding and LM head are counted at that size (special tokens aside)
    trained = cfg.tokenizer_train_vocab_size or inherited_vocab or None
    built = build_model(cfg, meta=True, dtype=torch.bfloat16 if cfg.bf16 else torch.float32, vocab_size=trained)
    apply_freeze(built.model, cfg.frozen(), cfg.tune_vit_from_layer)
    moe = None
    if cfg.stage == 3:
        from vlmtrain.train.stage3 import prepare_moe

        moe = prepare_moe(built.model, cfg, meta=True)
    counted = built.model
    if cfg.lora_enable:  # the adapters are what trains of the LLM (the projector's trainable copy is counted too)
        from vlmtrain.model.build import add_lora

        with torch.device("meta"):
            counted = add_lora(built.model, cfg)
    counts = param_counts(counted)
    world = cfg.num_gpus * cfg.num_nodes
    info = {
        "config": cfg._source, "stage": cfg.stage, "frozen": cfg.frozen(), "lora": cfg.lora_enable,
        "projector": cfg.mm_projector_type, "tokens_per_image": built.tokens_per_image,
        "vision_feature_layer": cfg.mm_vision_select_layer,
        "vision_feature_select_strategy": built.model.config.vision_feature_select_strategy,
        "attn_implementation": built.attn, "params": counts,
        "global_batch": cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world,
        "world_size": world, "deepspeed": cfg.deepspeed, "loss_mean": cfg.loss_mean,
        "image_aspect_ratio": cfg.image_aspect_ratio, "image_backend": cfg.image_backend,
        "vocab_size": built.model.config.text_config.vocab_size,
    }
    if moe is not None:
        s = moe.settings
        info["moe"] = {"layers": moe.layers, "num_experts": s.num_experts, "top_k": s.top_k,
                       "capacity_factor": s.capacity_factor, "eval_capacity_factor": s.eval_capacity_factor,
                       "min_capacity": s.min_capacity, "use_residual": s.use_residual,
                       "router_aux_loss_coef": moe.router_aux_loss_coef, "train_modules": moe.train_modules}
    from vlmtrain.train.launch import launch_command, launcher_for

    if world > 1 or cfg.hostfile:
        try:
            info["launch"] = " ".join(launch_command(cfg, ["run", str(cfg._source)]))
        except ConfigError as e:
            info["launch"] = f"({launcher_for(cfg)}: {e.what})"
    if as_json:
        if emit:
            print(json.dumps(info, indent=2, default=str))
        return info
    print(f"{cfg._source or 'config'}: stage {cfg.stage}, projector {cfg.mm_projector_type}, "
          f"{built.tokens_per_image} tokens per image, attention {built.attn}")
    if trained:
        whose = "this run trains" if cfg.tokenizer_train_vocab_size else "an earlier stage of the chain trains"
        print(f"vocabulary: ~{info['vocab_size']:,} (the tokenizer {whose}; the exact size, with its "
              "special tokens, is known once it is trained)")
    print(f"{'part':10s} {'params':>10s} {'trainable':>10s}")
    for name, total, trainable in describe(counts):
        print(f"{name:10s} {total:>10s} {trainable:>10s}")
    print(f"global batch {info['global_batch']} = {cfg.per_device_train_batch_size} per device x "
          f"{cfg.gradient_accumulation_steps} accumulation x {world} GPU(s); deepspeed: {cfg.deepspeed or 'no'}; "
          "loss: " + ("each micro-batch's mean, averaged (loss_mean: micro_batch, the original repos')"
                      if cfg.loss_mean == "micro_batch" else "mean over the global batch's supervised tokens"))
    if moe is not None:
        m = info["moe"]
        print(f"MoE: {m['num_experts']} experts, top-{m['top_k']}, in {len(m['layers'])} of "
              f"{built.model.config.text_config.num_hidden_layers} layers {m['layers']}; capacity factor "
              f"{m['capacity_factor']} (eval {m['eval_capacity_factor']}); aux loss x{m['router_aux_loss_coef']}; "
              f"trains {' '.join(m['train_modules']) or 'the whole LLM'} (+ routers, projector)")
    from vlmtrain.data.image_processor import dry_run_line

    print(dry_run_line(cfg.image_backend, cfg.image_aspect_ratio))
    if "launch" in info:
        print("launch: " + info["launch"])
    return info


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

@dataclass
class RunResult:
    output_dir: Path
    stopped_at: int | None  # the step a SIGTERM / Ctrl-C stopped the run at (a checkpoint was saved), else None
    global_step: int
    stop_signal: str | None = None  # "SIGTERM" or "Ctrl-C (SIGINT)" when stopped_at is set
    exit_code: int = 0              # 143 / 130 when stopped by that signal


def _training_args(cfg: TrainConfig):
    from transformers import TrainingArguments

    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(Path(cfg.output_dir) / "tensorboard"))
    on_cuda = torch.cuda.is_available()
    extra: dict[str, Any] = {}
    if cfg.gradient_checkpointing:  # only when on: newer transformers renamed the flag and warn on the old name
        extra = {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}}
    return TrainingArguments(
        output_dir=cfg.output_dir,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio of the total steps
        lr_scheduler_type=cfg.lr_scheduler_type,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        max_grad_norm=cfg.max_grad_norm,
        bf16=cfg.bf16,
        fp16=cfg.fp16,
        tf32=cfg.tf32 if on_cuda else None,
        deepspeed=_deepspeed_config(cfg),
        save_strategy=cfg.save_strategy,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        # The Trainer's NaN filter reads every step's loss back (a host sync) and hides a diverged run:
        # vlmtrain.train.nonfinite counts those steps on the device instead.
        logging_nan_inf_filter=False,
        seed=cfg.seed,
        report_to=cfg.report_to or "none",
        dataloader_num_workers=cfg.dataloader_num_workers,
        remove_unused_columns=False,
        use_cpu=not on_cuda,
        # (a rank that waits longer for the others in a collective fails, with its stack, instead of hanging)
        ddp_timeout=cfg.ddp_timeout,
        disable_tqdm=not sys.stderr.isatty(),
        **extra,
    )


def _deepspeed_config(cfg: TrainConfig) -> dict | None:
    """The DeepSpeed JSON as the Trainer gets it, with ``gradient_clipping`` from ``max_grad_norm`` where the
    file names none (LLaVA's own zero2/zero3.json): the Trainer fills only an "auto" one, and DeepSpeed's
    default (0 up to 0.16, 1.0 in 0.19) would clip whatever max_grad_norm says."""
    if not cfg.deepspeed:
        return None
    ds = json.loads(Path(cfg.deepspeed).read_text())
    ds.setdefault("gradient_clipping", cfg.max_grad_norm)
    return ds


def _refuse_resume_mismatch(resume: bool, last: Path | None, out: Path, where: str) -> None:
    if resume and last is None:
        from vlmtrain.train.rundir import checkpoints

        cut = [c.name for c in checkpoints(out)]
        if cut:  # only folders a run stopped while writing (named in the warning above)
            raise ConfigError(f"--resume: no complete checkpoint in {out} ({', '.join(cut)}: cut short while being "
                              "written)", where=where, hint="start without --resume: the run starts over, "
                                                            "writing those folders anew")
        raise ConfigError(f"--resume: no checkpoint-* folder in {out}", where=where,
                          hint="start without --resume, or point output_dir at the interrupted run")
    if not resume and last is not None:
        raise ConfigError(f"{out} already has {Path(last).name}", where=where,
                          hint="pass --resume to continue that run, or choose another output_dir")


def _gather_reports(report) -> None:
    """Every rank's train-time problems (samples skipped, images found bad) into rank 0's report, which
    data_report.json is written from: each rank sees only its own batches. A collective: every rank calls it."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, report.train_time())
    if dist.get_rank() == 0:
        for part in parts[1:]:
            report.absorb(part)


def _say_resumed(out: Path, last: Path, cfg: TrainConfig) -> None:
    """Which checkpoint the run continues from; the logs' rows of later steps go (they are trained again)."""
    from vlmtrain.train import rundir
    from vlmtrain.train.sample_log import global_rank

    step = int(last.name.rsplit("-", 1)[1])
    removed = rundir.forget_after(out, step, global_rank())
    log.info("resuming from %s (step %d%s)%s", last.name, step, f" of {cfg.max_steps}" if cfg.max_steps > 0 else "",
             f"; {removed} log row(s) of the steps after it removed" if removed else "")
    if 0 < cfg.max_steps < step:  # (a lowered max_steps: the Trainer cannot go back to it)
        earlier = [c.name for c in rundir.checkpoints(out) if int(c.name.rsplit("-", 1)[1]) <= cfg.max_steps]
        log.warning("%s is past max_steps %d: nothing is trained and the final model is step %d's%s", last.name,
                    cfg.max_steps, step, f" (to end at an earlier step, move the checkpoints after {earlier[-1]} "
                                         "out of output_dir and resume again)" if earlier else "")


def train(cfg: TrainConfig, *, resume: bool = False) -> RunResult:
    from transformers import set_seed

    from vlmdata.atomic import write_text
    from vlmtrain.data import DataArgs, ImageTokens, build_train_data
    from vlmtrain.data.image_processor import describe as describe_processor
    from vlmtrain.model.build import (add_lora, apply_freeze, build_model, load_pretrain_adapter, param_counts,
                                      describe, read_pretrain_adapter)
    from vlmtrain.progress import align_special_tokens_quietly, quiet_library_bars, use_readable_logs
    from vlmtrain.train import rundir, throughput
    from vlmtrain.train.mfu import flop_model
    from vlmtrain.train.launch import join_process_group, launched_rank, world_of_one
    from vlmtrain.train.preflight import preflight, require_trainable
    from vlmtrain.train.signals import StopOnSignal
    from vlmtrain.train.trainer import MM_PROJECTOR, VlmTrainer

    quiet_library_bars()
    preflight(cfg)
    if cfg.stage == 3:  # the MoE keys against the model's shape, before a weight is read
        from vlmtrain.train.stage3 import check_against_model

        check_against_model(cfg)
    throughput.check(cfg)  # kernels, compile: what this machine cannot run stops here
    out = Path(cfg.output_dir)
    where = cfg._source or "config"
    last = rundir.last_complete_checkpoint(out)
    rundir.prepare(cfg, last, resume=resume, where=where)
    launched = launched_rank()
    if not launched:  # (launched ranks first agree on what they see: below, once they can talk)
        _refuse_resume_mismatch(resume, last, out, where)
    # read now, so a file that is no stage-1 projector stops the run before anything is written
    adapter = read_pretrain_adapter(cfg.pretrain_mm_mlp_adapter) if cfg.pretrain_mm_mlp_adapter else None
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create `output_dir` {out}: {e.strerror or e}", where=where,
                          hint="choose an output_dir in a folder you can write to") from None
    if cfg.tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    set_seed(cfg.seed)  # random-init weights are a function of the seed: a resumed run rebuilds the same ones
    try:
        tokenizer = load_tokenizer(cfg)
        image_token_id = tokenizer.convert_tokens_to_ids(cfg.image_token)
        # DeepSpeed keeps fp32 master weights itself: the model goes in as bf16. Without it the trainable
        # parts stay fp32 under bf16 autocast and only frozen parts are cast (no master copy needed).
        dtype = torch.bfloat16 if (cfg.bf16 and cfg.deepspeed) else torch.float32
        built = build_model(cfg, vocab_size=len(tokenizer), image_token_id=image_token_id, dtype=dtype)
    except ConfigError:
        if made and out.is_dir() and not any(out.iterdir()):  # (no empty output_dir left by a run that never began)
            out.rmdir()
        raise
    model = built.model
    if adapter is not None:
        keys = load_pretrain_adapter(model, adapter)
        log.info("loaded %d projector tensors from %s", len(keys), cfg.pretrain_mm_mlp_adapter)
    frozen = cfg.frozen()
    apply_freeze(model, frozen, cfg.tune_vit_from_layer)
    if cfg.bf16 and not cfg.deepspeed:
        from vlmtrain.model.build import parts

        for name, modules in parts(model).items():
            if frozen[name]:
                for m in modules:
                    m.to(torch.bfloat16)
    if cfg.stage == 3:
        from vlmtrain.train.stage3 import prepare_moe

        prepare_moe(model, cfg)
    if cfg.lora_enable:
        model = add_lora(model, cfg)
    if cfg.gradient_checkpointing:
        model.config.use_cache = False
    model.config.text_config.use_cache = False

    image_processor = build_image_processor(cfg, built.vision)
    log.info("image processor: %s, image_aspect_ratio %s", describe_processor(image_processor), cfg.image_aspect_ratio)
    data = build_train_data(
        DataArgs(dataset_dir=cfg.dataset_dir, image_root=cfg.image_root, template=cfg.template,
                 model_max_length=cfg.model_max_length, image_aspect_ratio=cfg.image_aspect_ratio,
                 bad_samples=cfg.bad_samples, group_by_modality_length=cfg.group_by_modality_length,
                 num_proc=cfg.data_num_proc, **throughput.data_args(cfg, built.attn, model)),
        tokenizer, image_processor, ImageTokens(cfg.image_token, built.image_token_id, built.tokens_per_image))
    require_trainable(data.report, cfg)

    throughput.apply(model, cfg)
    counts = param_counts(model)
    for name, total, trainable in describe(counts):
        log.info("params %-9s %10s trainable %10s", name, total, trainable)
    world_of_one(cfg)  # (a DeepSpeed run in this one process: the launcher's environment for a world of one)
    join_process_group(cfg)  # (launched ranks: before the Trainer's own set-up, which leaves ddp_timeout out on a CPU)
    args = _training_args(cfg)
    if launched:
        rundir.agree_on_checkpoint(args, resume, last, out, where)
        _refuse_resume_mismatch(resume, last, out, where)
    # (after the launched ranks' refusal: a run refused for a forgotten --resume must leave the record of
    # the run it would have replaced, which the next --resume is compared with)
    write_text(out / rundir.CONFIG_RECORD, json.dumps(cfg.to_dict(), indent=2, default=str))  # --resume compares it
    align_special_tokens_quietly(model, tokenizer)
    sigterm = StopOnSignal()
    callbacks = [sigterm]
    if cfg.profile_steps:
        from vlmtrain.train.profile import StepProfiler
        from vlmtrain.train.sample_log import global_rank

        callbacks.append(StepProfiler(*cfg.profile_steps, out, global_rank()))
    trainer = VlmTrainer(model=model, args=args, train_dataset=data.dataset, data_collator=data.collator,
                         processing_class=tokenizer, callbacks=callbacks,
                         vlm_cfg=cfg, train_data=data, flop_model=flop_model(model))
    use_readable_logs(trainer)
    if resume and last is not None:
        _say_resumed(out, Path(last), cfg)
        rundir.restore_report_state(data, last, trainer.args.process_index)
    try:
        trainer.train(resume_from_checkpoint=str(last) if resume else None)
    finally:
        sigterm.restore()
    _gather_reports(data.report)
    if trainer.args.should_save:
        write_text(out / "data_report.json", json.dumps(data.report.to_dict(), indent=2, default=str))
    if sigterm.stopped_at is not None:
        return RunResult(out, sigterm.stopped_at, trainer.state.global_step, sigterm.signal_name, sigterm.exit_code)

    # Final weights: stage 1 -> mm_projector.bin (+ config); stage 2 -> the whole model (or adapter) + tokenizer;
    # stage 3 -> the whole MoE model (+ MoE-LLaVA's layout with save_moellava_checkpoint).
    trainer.save_model(str(out))
    if cfg.lora_enable and trainer.args.should_save:
        from vlmtrain.model.projector import save_mm_projector

        save_mm_projector(trainer.accelerator.unwrap_model(trainer.model), out / MM_PROJECTOR)
    if trainer.args.should_save:
        from vlmtrain.data.slow_tokenizer_files import save_tokenizer
        from vlmtrain.train.rundir import saves_projector_only

        if saves_projector_only(cfg):  # a whole-model save_model wrote the tokenizer already (VlmTrainer._save)
            # (with its SentencePiece model: the next stage and the export take it from here)
            save_tokenizer(tokenizer, out)
        if cfg.stage == 3 and cfg.save_moellava_checkpoint:
            _save_moellava_export(trainer.accelerator.unwrap_model(trainer.model), tokenizer, cfg, out)
        from vlmtrain.train.chain import mark_done

        mark_done(cfg, trainer.state.global_step)
    # Every rank waits for the first one's writes: a chain's next stage on another node reads them
    # (the deepspeed launcher without ssh waits for its own node's ranks only)
    trainer.accelerator.wait_for_everyone()
    return RunResult(out, None, trainer.state.global_step)


def _save_moellava_export(model, tokenizer, cfg: TrainConfig, out: Path) -> None:
    """OUT/moe-llava-<family or template> in MoE-LLaVA's layout (save_moellava_checkpoint), and a note for
    what would keep MoE-LLaVA from loading or serving it as trained."""
    from vlmtrain.model.moe.checkpoint_keys import export_name, export_notes, write_moellava_checkpoint

    kind = model.config.text_config.model_type  # (its loader reads the family from the folder name)
    folder = out / export_name(kind, cfg.template)
    write_moellava_checkpoint(model, folder, vision_tower=cfg.vision_tower, image_aspect_ratio=cfg.image_aspect_ratio,
                              tokenizer=tokenizer)
    for note in export_notes(folder, kind, cfg.template):
        print(f"note: {note}", file=sys.stderr)
