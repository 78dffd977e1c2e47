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
from typing import Any, Iterator

import torch

from vlmtrain.config import ConfigError, TrainConfig, check_inputs

log = logging.getLogger("vlmtrain")

# ---------------------------------------------------------------------------------------------
# Tokenizer and image processor
# ---------------------------------------------------------------------------------------------

def _corpus(cfg: TrainConfig) -> Iterator[str]:
    """The dataset's text (streamed from Arrow) plus the template's fixed strings."""
    from vlmtrain.data import VICUNA_SYSTEM
    from vlmtrain.data.dataset import open_blend

    for _ in range(8):
        yield f"{VICUNA_SYSTEM} USER: hello ASSISTANT: hi</s>USER: thanks ASSISTANT: bye</s>"
    ds, _, _ = open_blend(cfg.dataset_dir, cfg.image_root)
    for batch in ds.select_columns(["conversations"]).iter(batch_size=1000):
        for conv in batch["conversations"]:
            for turn in conv:
                yield turn["value"].replace(cfg.image_token, " ")


def load_tokenizer(cfg: TrainConfig):
    """The tokenizer, with ``<image>`` added when absent and a pad token set like LLaVA's (unk)."""
    from transformers import AutoTokenizer

    if cfg.tokenizer_train_vocab_size:
        workdir = Path(cfg.output_dir) / "tokenizer"
        if (workdir / "tokenizer.model").is_file():  # a resumed run keeps the same vocabulary
            from transformers import LlamaTokenizer

            tok = LlamaTokenizer.from_pretrained(str(workdir), legacy=cfg.tokenizer_legacy)
        else:
            from vlmtrain.data.tokenizers import train_llama_sentencepiece

            tok = train_llama_sentencepiece(_corpus(cfg), cfg.tokenizer_train_vocab_size, legacy=cfg.tokenizer_legacy,
                                            workdir=workdir)
    else:
        name = cfg.tokenizer_name_or_path or cfg.model_name_or_path
        try:
            tok = AutoTokenizer.from_pretrained(name, padding_side="right", trust_remote_code=cfg.trust_remote_code)
        except (OSError, ValueError) as e:
            if "trust_remote_code" in str(e) and not cfg.trust_remote_code:  # e.g. Qwen-1_8B's tiktoken tokenizer
                raise ConfigError(f"the tokenizer {name!r} is remote code (its tokenizer_config.json names its own "
                                  "Python class)", hint="`trust_remote_code` is off by default; set "
                                  "`trust_remote_code: true` to run the publisher's tokenizer code") from None
            raise ConfigError(f"cannot load the tokenizer {name!r}: {str(e).splitlines()[0]}",
                              hint="check the path / Hub id and the network, or set `tokenizer_train_vocab_size` "
                                   "to train one on the dataset's text") from None
    tok.padding_side = "right"
    tok.model_max_length = cfg.model_max_length
    if cfg.image_token not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [cfg.image_token]})
    if cfg.template in ("plain", "vicuna_v1") and tok.unk_token is not None:
        tok.pad_token = tok.unk_token  # LLaVA's train(): pad = unk for v1 / plain
    elif tok.pad_token is None:
        tok.pad_token = tok.unk_token if tok.unk_token is not None else tok.eos_token
    return tok


def build_image_processor(cfg: TrainConfig, vc):
    """The tower's own processor when it is on disk / the Hub; else one made from the tower's config."""
    import transformers

    from vlmtrain.model.towers import image_processor

    own = image_processor(cfg.vision_tower if not cfg.random_init else None, vc)  # InternViT / ConvNeXt
    if own is not None:
        return own
    if cfg.vision_tower and not cfg.random_init:
        try:
            return transformers.AutoImageProcessor.from_pretrained(cfg.vision_tower)
        except (OSError, ValueError):
            log.warning("no image processor with %s; using CLIP/SigLIP defaults at %d px", cfg.vision_tower, vc.image_size)
    s = vc.image_size
    if vc.model_type == "siglip_vision_model":
        cls = getattr(transformers, "SiglipImageProcessorPil", None) or transformers.SiglipImageProcessor
        return cls(size={"height": s, "width": s})
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(size={"shortest_edge": s}, crop_size={"height": s, "width": s})


# ---------------------------------------------------------------------------------------------
# Dry run
# ---------------------------------------------------------------------------------------------

def dry_run(cfg: TrainConfig, *, as_json: bool = False) -> dict[str, Any]:
    """Model shapes on the meta device, parameter counts per part; nothing allocated or downloaded."""
    from vlmtrain.model.build import build_model, describe, param_counts, apply_freeze

    built = build_model(cfg, meta=True, dtype=torch.bfloat16 if cfg.bf16 else torch.float32)
    apply_freeze(built.model, cfg.frozen(), cfg.tune_vit_from_layer)
    counts = param_counts(built.model)
    world = cfg.num_gpus * cfg.num_nodes
    info = {
        "config": cfg._source, "stage": cfg.stage, "frozen": cfg.frozen(), "lora": cfg.lora_enable,
        "projector": cfg.mm_projector_type, "tokens_per_image": built.tokens_per_image,
        "vision_feature_layer": cfg.mm_vision_select_layer,
        "vision_feature_select_strategy": built.model.config.vision_feature_select_strategy,
        "attn_implementation": built.attn, "params": counts,
        "global_batch": cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world,
        "world_size": world, "deepspeed": cfg.deepspeed,
    }
    from vlmtrain.train.launch import launch_command, launcher_for

    if world > 1 or cfg.hostfile:
        try:
            info["launch"] = " ".join(launch_command(cfg, ["run", str(cfg._source)]))
        except ConfigError as e:
            info["launch"] = f"({launcher_for(cfg)}: {e.what})"
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return info
    print(f"{cfg._source or 'config'}: stage {cfg.stage}, projector {cfg.mm_projector_type}, "
          f"{built.tokens_per_image} tokens per image, attention {built.attn}")
    print(f"{'part':10s} {'params':>10s} {'trainable':>10s}")
    for name, total, trainable in describe(counts):
        print(f"{name:10s} {total:>10s} {trainable:>10s}")
    print(f"global batch {info['global_batch']} = {cfg.per_device_train_batch_size} per device x "
          f"{cfg.gradient_accumulation_steps} accumulation x {world} GPU(s); deepspeed: {cfg.deepspeed or 'no'}")
    if "launch" in info:
        print("launch: " + info["launch"])
    return info


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

@dataclass
class RunResult:
    output_dir: Path
    stopped_at: int | None  # the step a SIGTERM stopped the run at (a checkpoint was saved), else None
    global_step: int


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
        deepspeed=cfg.deepspeed,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        seed=cfg.seed,
        report_to=cfg.report_to or "none",
        dataloader_num_workers=cfg.dataloader_num_workers,
        remove_unused_columns=False,
        use_cpu=not on_cuda,
        disable_tqdm=not sys.stderr.isatty(),
        **extra,
    )


def _optimizer_groups(model, cfg: TrainConfig):
    """LLaVA's mm_projector_lr: the projector in its own parameter groups."""
    from transformers.trainer_pt_utils import get_parameter_names
    from transformers.pytorch_utils import ALL_LAYERNORM_LAYERS

    decay = set(get_parameter_names(model, ALL_LAYERNORM_LAYERS))
    decay = {n for n in decay if "bias" not in n}
    groups: dict[tuple[bool, bool], list] = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        groups.setdefault(("multi_modal_projector" in n, n in decay), []).append(p)
    out = []
    for (is_proj, has_decay), params in groups.items():
        g = {"params": params, "weight_decay": cfg.weight_decay if has_decay else 0.0}
        if is_proj:
            g["lr"] = cfg.mm_projector_lr
        out.append(g)
    return out


def train(cfg: TrainConfig, *, resume: bool = False) -> RunResult:
    from transformers import set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from vlmtrain.data import DataArgs, ImageTokens, build_train_data
    from vlmtrain.model.build import add_lora, apply_freeze, build_model, load_pretrain_adapter, param_counts, describe
    from vlmtrain.train.mfu import flop_model
    from vlmtrain.train.trainer import MM_PROJECTOR, SigtermCheckpoint, VlmTrainer

    check_inputs(cfg)
    out = Path(cfg.output_dir)
    where = cfg._source or "config"
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if resume and last is None:
        raise ConfigError(f"--resume: no checkpoint-* folder in {out}", where=where,
                          hint="start without --resume, or point output_dir at the interrupted run")
    if not resume and last is not None:
        raise ConfigError(f"{out} already has {Path(last).name}", where=where,
                          hint="pass --resume to continue that run, or choose another output_dir")
    out.mkdir(parents=True, exist_ok=True)
    if cfg.tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    set_seed(cfg.seed)  # random-init weights are a function of the seed: a resumed run rebuilds the same ones
    tokenizer = load_tokenizer(cfg)
    image_token_id = tokenizer.convert_tokens_to_ids(cfg.image_token)
    # DeepSpeed keeps fp32 master weights itself: the model goes in as bf16. Without it the trainable
    # parts stay fp32 under bf16 autocast and only frozen parts are cast (no master copy needed).
    dtype = torch.bfloat16 if (cfg.bf16 and cfg.deepspeed) else torch.float32
    built = build_model(cfg, vocab_size=len(tokenizer), image_token_id=image_token_id, dtype=dtype)
    model = built.model
    if cfg.pretrain_mm_mlp_adapter:
        keys = load_pretrain_adapter(model, cfg.pretrain_mm_mlp_adapter)
        log.info("loaded %d projector tensors from %s", len(keys), cfg.pretrain_mm_mlp_adapter)
    frozen = cfg.frozen()
    apply_freeze(model, frozen, cfg.tune_vit_from_layer)
    if cfg.bf16 and not cfg.deepspeed:
        from vlmtrain.model.build import parts

        for name, modules in parts(model).items():
            if frozen[name]:
                for m in modules:
                    m.to(torch.bfloat16)
    if cfg.lora_enable:
        model = add_lora(model, cfg)
    if cfg.gradient_checkpointing:
        model.config.use_cache = False
    model.config.text_config.use_cache = False

    image_processor = build_image_processor(cfg, built.vision)
    data = build_train_data(
        DataArgs(dataset_dir=cfg.dataset_dir, image_root=cfg.image_root, template=cfg.template,
                 model_max_length=cfg.model_max_length, image_aspect_ratio=cfg.image_aspect_ratio,
                 bad_samples=cfg.bad_samples, group_by_modality_length=cfg.group_by_modality_length,
                 num_proc=cfg.data_num_proc),
        tokenizer, image_processor, ImageTokens(cfg.image_token, built.image_token_id, built.tokens_per_image))

    counts = param_counts(model)
    for name, total, trainable in describe(counts):
        log.info("params %-9s %10s trainable %10s", name, total, trainable)
    (out / "vlmtrain_config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))

    args = _training_args(cfg)
    optimizers = (None, None)
    if cfg.mm_projector_lr is not None and not cfg.deepspeed:
        opt = torch.optim.AdamW(_optimizer_groups(model, cfg), lr=cfg.learning_rate,
                                betas=(cfg.adam_beta1, cfg.adam_beta2))
        optimizers = (opt, None)
    sigterm = SigtermCheckpoint()
    trainer = VlmTrainer(model=model, args=args, train_dataset=data.dataset, data_collator=data.collator,
                         processing_class=tokenizer, callbacks=[sigterm], optimizers=optimizers,
                         vlm_cfg=cfg, train_data=data, flop_model=flop_model(model))
    try:
        trainer.train(resume_from_checkpoint=last if resume else None)
    finally:
        sigterm.restore()
    report = data.report.to_dict() if hasattr(data.report, "to_dict") else {}
    if trainer.args.should_save:
        (out / "data_report.json").write_text(json.dumps(report, indent=2, default=str))
    if sigterm.stopped_at is not None:
        return RunResult(out, sigterm.stopped_at, trainer.state.global_step)

    # Final weights: stage 1 -> mm_projector.bin (+ config); stage 2 -> the whole model (or adapter) + tokenizer.
    trainer.save_model(str(out))
    if cfg.lora_enable and trainer.args.should_save:
        from vlmtrain.model.projector import save_mm_projector

        save_mm_projector(trainer.accelerator.unwrap_model(trainer.model), out / MM_PROJECTOR)
    if trainer.args.should_save:
        tokenizer.save_pretrained(str(out))
    return RunResult(out, None, trainer.state.global_step)
