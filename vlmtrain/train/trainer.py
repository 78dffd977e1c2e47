"""transformers' Trainer, with what LLaVA training needs on top.

Why Trainer and not a loop of our own: it already does DeepSpeed ZeRO-2/3 (through accelerate),
gradient accumulation, bf16, LoRA models, and exact resume (optimizer, scheduler, RNG states,
``skip_first_batches`` over a deterministic sampler). What this subclass adds:

- the sampler: LLaVA's modality-and-length grouping on true token counts (vlmtrain.data), or a
  seeded random order; both are functions of (seed, epoch), so a resumed run sees the same order;
- batches carry the data report's bookkeeping (``ids``, ``skipped``), which is popped and counted
  before the forward;
- throughput in the logs: samples/s, tokens/s (true tokens, image tokens included), model TFLOP/s
  and MFU (vlmtrain.train.mfu), the share of the batch positions that are padding, and the time the
  loop waited for the next batch (``data_wait_s``, ``data_wait_frac``; the run's total in the final
  summary row), written to tensorboard and to ``metrics.jsonl``, all counted without a host sync in
  the step; NaN or inf micro-batch losses are counted on the device (``nonfinite_steps``,
  vlmtrain.train.nonfinite) in place of the Trainer's NaN filter, which synced every step;
- stage 1 saves the projector alone as ``mm_projector.bin`` in the reference repo's key names, and
  resumes from it;
- a stage 2 / 3 checkpoint carries the slow-tokenizer files the final output has (tokenizer.model etc.,
  vlmtrain.data.slow_tokenizer_files), so it loads on its own in MoE-LLaVA / LLaVA like the final output;
- a SIGTERM (preemption, ``scancel``) or Ctrl-C finishes the current step, saves a checkpoint and stops
  (vlmtrain.train.signals);
- ``sample_log``: each rank's sample ids per step (vlmtrain.train.sample_log);
- LLaVA's ``mm_projector_lr`` (the projector's own parameter groups, DeepSpeed or not), stage 3's
  aux loss, and a resume from the last step's checkpoint that trains no step past max_steps;
- what the Trainer's checkpoint leaves out of an exact resume: each rank's logging window (the loss sum,
  throughput counts and routing stats since the last log row) and its data report (samples skipped).

Why one file of ~510 lines: each of these is a short override of one Trainer method, and they share
the Trainer's state; split, each part would be a mixin a reader has to find.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path
import torch
from torch.utils.data import Sampler
from transformers import Trainer, TrainerCallback

from vlmtrain.data.slow_tokenizer_files import keep_sentencepiece_model
from vlmtrain.model.projector import from_reference, projector_module, save_mm_projector, write_mm_projector
from vlmtrain.train.mfu import FlopModel, device_name, mfu, peak_flops
from vlmtrain.train.nonfinite import NonFiniteLosses
from vlmtrain.train.rundir import saves_projector_only
from vlmtrain.train.signals import StopOnSignal

log = logging.getLogger("vlmtrain")
MM_PROJECTOR = "mm_projector.bin"
METRICS = "metrics.jsonl"
# What a logging window sums (all-reduced over ranks at log time).
WINDOW_KEYS = ("tokens", "positions", "samples", "flops", "data_wait")


class _TimedIterator:
    """Wraps an iterator and adds up the seconds spent in its ``next()``."""

    def __init__(self, it) -> None:
        self.it, self.waited = it, 0.0

    def __iter__(self):
        return self

    def __next__(self):
        t0 = time.perf_counter()
        try:
            return next(self.it)
        finally:
            self.waited += time.perf_counter() - t0


class SeededRandomSampler(Sampler[int]):
    """A random order that is a function of (seed, epoch): the same after a resume."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class VlmTrainer(Trainer):
    def __init__(self, *args, vlm_cfg, train_data, flop_model: FlopModel, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.vlm_cfg = vlm_cfg
        self.train_data = train_data
        if vlm_cfg.loss_mean == "micro_batch":
            # The original repos' weighting (transformers < 4.46): each micro-batch's token mean, divided by the
            # accumulation steps and averaged over the ranks. Without num_items_in_batch the model takes its
            # micro-batch mean, the Trainer divides by the steps, and nothing scales by the world size.
            self.model_accepts_loss_kwargs = False
        self.flop_model = flop_model
        self._window = dict.fromkeys(WINDOW_KEYS, 0.0)
        self._window_start: float | None = None
        self._window_before = 0.0  # seconds of the window a resume restored, spent before the checkpoint
        self._data_wait_total = 0.0
        self._peak = peak_flops(device_name())
        # Stage 3's routing stats, made now rather than at the first MoE loss: every rank must join their
        # all-reduce at each log, also one whose first micro-batches were all skipped (_zero_loss)
        self._moe: MoeWindow | None = None
        if vlm_cfg.stage == 3:
            from vlmtrain.model.moe import moe_blocks

            blocks = moe_blocks(self.model)
            if blocks:
                self._moe = MoeWindow([i for i, _ in blocks], blocks[0][1].settings.num_experts)
        self._window_restored = False
        self._nonfinite = NonFiniteLosses()  # (the Trainer's own NaN filter is off: vlmtrain.train.nonfinite)
        self._samples = None
        if vlm_cfg.sample_log:
            from vlmtrain.train.sample_log import SampleLog, global_rank

            self._samples = SampleLog(self.args.output_dir, global_rank())

    # -- data ---------------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset=None) -> Sampler:
        from vlmtrain.data import make_length_grouped_sampler

        if self.vlm_cfg.group_by_modality_length:
            # LLaVA passes world_size * grad_accum: one megabatch spans every batch of an optimizer step.
            sampler = make_length_grouped_sampler(
                self.train_data.lengths, self.args.per_device_train_batch_size,
                self.args.world_size * self.args.gradient_accumulation_steps, self.args.seed, group_by_modality=True)
        else:
            sampler = SeededRandomSampler(len(self.train_data.lengths), self.args.seed)
        self._train_sampler = sampler  # (its epoch is set by _run_epoch)
        return sampler

    # -- optimizer ----------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with LLaVA's ``mm_projector_lr``: the projector in parameter groups of
        their own at that rate (llava_trainer.create_optimizer), with DeepSpeed too (which takes the
        optimizer made here when its config names none, as ours do). Weight decay as the Trainer decides
        it (not on biases or norms)."""
        if self.optimizer is not None or self.vlm_cfg.mm_projector_lr is None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[bool, bool], list] = {}
        for name, p in opt_model.named_parameters():
            if p.requires_grad:
                groups.setdefault(("multi_modal_projector" in name, name in decay), []).append(p)
        param_groups = [{"params": params, "weight_decay": self.args.weight_decay if has_decay else 0.0,
                         **({"lr": self.vlm_cfg.mm_projector_lr} if projector else {})}
                        for (projector, has_decay), params in groups.items()]
        # (the projector comes first in the model's order; the logged rate is the LLM's, as in LLaVA's logs)
        self._logged_group = next((i for i, (projector, _) in enumerate(groups) if not projector), 0)
        optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(param_groups, **kwargs)
        return self.optimizer

    def _get_learning_rate(self) -> float:
        """The rate logged as ``learning_rate``: with ``mm_projector_lr``, the LLM's group's, not the first
        group's (the projector's, whose rate the Trainer logged: 10x off in LLaVA's LoRA recipe)."""
        lr = super()._get_learning_rate()
        group = getattr(self, "_logged_group", 0)
        if group:
            try:
                return self.lr_scheduler.get_last_lr()[group]
            except (AssertionError, IndexError, AttributeError):  # (DeepSpeed before its first step: as the Trainer)
                return lr
        return lr

    def _run_epoch(self, *args, **kwargs):
        # The order of an epoch is a function of its number. The Trainer's set_epoch does not reach the
        # sampler of a resumed loader on several ranks (accelerate's SkipBatchSampler around its
        # BatchSamplerShard): that rank went on in epoch 0's order (found in review). Set here, always.
        sampler = getattr(self, "_train_sampler", None)
        if sampler is not None and "epoch" in kwargs:
            sampler.set_epoch(kwargs["epoch"])
        ckpt = kwargs.get("resume_from_checkpoint")
        if ckpt is not None and not self._window_restored:  # (the Trainer has just zeroed its loss sum)
            self._window_restored = True
            self._load_log_window(ckpt)
        # A run resumed from a checkpoint of its last step (stopped right after it) has nothing left to
        # train; the Trainer's loop checks max_steps only after a step, so it would train one more.
        if 0 < self.state.max_steps <= self.state.global_step:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The Trainer's fetch of the next batches, timed: how long the loop waited for data.

        Only the ``next()`` calls are timed (DataLoader workers, collation, the copy to the device).
        The loop does not wait for the GPU within a step (no NaN filter, counts taken on the CPU), so
        the GPU may still be running queued kernels while it waits here: this bounds the GPU's wait
        for data from above."""
        if self._window_start is None:
            self._window_start = time.perf_counter() - self._window_before
        clock = _TimedIterator(epoch_iterator)
        out = super().get_batch_samples(clock, num_batches, device)
        self._window["data_wait"] += clock.waited
        self._data_wait_total += clock.waited
        return out

    def training_step(self, model, inputs, num_items_in_batch=None):
        return self._nonfinite.add(super().training_step(model, inputs, num_items_in_batch))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from vlmtrain.data import pop_batch_meta

        meta = pop_batch_meta(inputs)
        if meta:
            self.train_data.report.record_batch(meta)
            if self._samples is not None and model.training:
                self._samples.write(self.state.global_step + 1, meta.get("ids") or [])
        if inputs["input_ids"].numel() == 0:  # every sample of the batch was skipped (bad_samples: skip)
            loss = self._zero_loss(model, inputs)
            return (loss, None) if return_outputs else loss
        # The collators count lengths and supervised labels on the CPU: counted here, from the batch on the
        # device, they would make the host wait for the GPU before every forward.
        lens = meta["sample_lengths"]
        pix = inputs.get("pixel_values")
        n_images = 0 if pix is None else (pix.shape[0] if torch.is_tensor(pix) else len(pix))
        if self._window_start is None:
            self._window_start = time.perf_counter()
        self._window["tokens"] += sum(lens)
        self._window["positions"] += inputs["input_ids"].numel()
        self._window["samples"] += len(lens)
        self._window["flops"] += self.flop_model.step_flops(lens, n_images, meta["supervised"])
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if self.vlm_cfg.stage != 3:
            return out
        loss, outputs = out if return_outputs else (out, None)
        loss = loss + self._moe_loss(model, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def _zero_loss(self, model, inputs) -> torch.Tensor:
        """A zero loss for a micro-batch whose samples were all skipped, from a forward of one unlabelled token
        (and the batch's black stand-in image): every module runs as in any batch, so under ZeRO-3 this rank's
        parameter gathers pair with the other ranks', and each trainable parameter gets a zero gradient."""
        device = inputs["input_ids"].device
        one = {"input_ids": torch.zeros((1, 1), dtype=torch.long, device=device),
               "labels": torch.full((1, 1), -100, dtype=torch.long, device=device),
               "attention_mask": torch.ones((1, 1), dtype=torch.long, device=device)}
        if "image_stand_in" in inputs:
            one["image_stand_in"] = inputs["image_stand_in"]
        return model(**one).loss * 0.0

    # -- MoE (stage 3) ------------------------------------------------------------------------
    def _moe_loss(self, model, num_items_in_batch) -> torch.Tensor:
        """router_aux_loss_coef x the layers' load-balancing losses, scaled like the LM loss.

        MoE-LLaVA adds the aux loss to each micro-batch's loss, which is then divided by the
        accumulation steps. The LM loss here is already normalised over the whole accumulated batch
        (num_items_in_batch) and the Trainer will not divide it again, so the aux term is divided here.
        With ``router_aux_loss_gradient: false`` the term is in the loss's value only: in MoE-LLaVA's runs
        the layers' aux losses come out of reentrant gradient checkpointing inside a list, computed
        without grad, so they never reach the routers' gradients (the MoE-LLaVA recipe configs say so).
        """
        from vlmtrain.model.moe import moe_blocks

        blocks = moe_blocks(self.accelerator.unwrap_model(model))
        aux = torch.stack([b.last.aux_loss for _, b in blocks]).sum()
        self._moe.add(blocks)
        scaled_for_ga = self.model_accepts_loss_kwargs and num_items_in_batch is not None
        steps = self.current_gradient_accumulation_steps if scaled_for_ga else 1
        if not self.vlm_cfg.router_aux_loss_gradient:
            aux = aux.detach()
        return self.vlm_cfg.router_aux_loss_coef * aux / steps

    # -- logging ------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            self._nonfinite.log_row(logs, self.args.device, self.state.global_step)
        if "loss" in logs and self._window_start is not None:
            counts = torch.tensor([self._window[k] for k in WINDOW_KEYS], dtype=torch.float64)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                counts = counts.to(self.args.device)
                torch.distributed.all_reduce(counts)
                counts = counts.cpu()
            dt = max(time.perf_counter() - self._window_start, 1e-9)
            w = dict(zip(WINDOW_KEYS, counts.tolist()))
            logs["samples_per_s"] = round(w["samples"] / dt, 3)
            logs["tokens_per_s"] = round(w["tokens"] / dt, 1)
            logs["model_tflops_per_s"] = round(w["flops"] / dt / 1e12, 3)
            m = mfu(w["flops"] / dt, self.args.world_size, self._peak)
            if m is not None:
                logs["mfu"] = round(m, 4)
            logs["padding_frac"] = round(1 - w["tokens"] / max(w["positions"], 1.0), 4)
            wait = w["data_wait"] / self.args.world_size  # mean over ranks
            logs["data_wait_s"] = round(wait, 4)
            logs["data_wait_frac"] = round(wait / dt, 4)
            self._window = dict.fromkeys(WINDOW_KEYS, 0.0)
            self._window_start = time.perf_counter()
        if "train_runtime" in logs:  # the run's summary row
            self._nonfinite.summary_row(logs, self.args.device)
            runtime = float(logs["train_runtime"])
            # (its train_loss is the mean over this process's steps only: after a resume, say which ones)
            logs["train_loss_first_step"] = getattr(self, "_initial_global_step", 0) + 1
            logs["data_wait_s"] = round(self._data_wait_total, 3)
            logs["data_wait_frac"] = round(self._data_wait_total / max(runtime, 1e-9), 4)
            log.info("data wait: the training loop waited %.2f s for batches of %.1f s (%.1f%%)",
                     self._data_wait_total, runtime, 100 * logs["data_wait_frac"])
        if "loss" in logs and self._moe is not None:
            logs.update(self._moe.flush(self.args))
        super().log(logs, start_time)
        if self.args.should_save:
            row = {"step": self.state.global_step, **logs}
            if "loss" in logs and "mfu" not in logs:
                row["mfu"] = None  # CPU or a device without a known peak: n/a
            with open(Path(self.args.output_dir) / METRICS, "a") as fh:
                fh.write(json.dumps(row) + "\n")

    # -- saving -------------------------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if not saves_projector_only(self.vlm_cfg):
            super()._save(output_dir, state_dict)
            self._keep_slow_tokenizer_files(output_dir or self.args.output_dir)
            return
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        if state_dict is not None:  # gathered by the Trainer (DeepSpeed): take the projector's entries
            key = "multi_modal_projector."
            write_mm_projector({k.split(key, 1)[1]: v for k, v in state_dict.items() if key in k},
                               Path(output_dir) / MM_PROJECTOR)
        else:
            save_mm_projector(model, Path(output_dir) / MM_PROJECTOR)
        model.config.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _keep_slow_tokenizer_files(self, output_dir: str) -> None:
        """The slow-tokenizer files (tokenizer.model, added_tokens.json, the slow config fields) beside the
        tokenizer Trainer._save just wrote (processing_class), as run.py's final save_tokenizer adds them:
        without them a ``checkpoint-N`` (periodic or the SIGTERM / Ctrl-C stop's, both saved through here)
        has tokenizer.json only, which MoE-LLaVA's / LLaVA's slow loaders (4.37, use_fast=False) cannot
        build from. Written here, inside the checkpoint save, rather than in a callback's on_save: before
        trainer_state.json marks the checkpoint complete (vlmtrain.train.rundir), and while a second Ctrl-C
        still waits for the save (vlmtrain.train.signals)."""
        if self.args.should_save and self.processing_class is not None:
            keep_sentencepiece_model(self.processing_class, Path(output_dir))

    def _save_rng_state(self, output_dir: str | None) -> None:
        # Beside each rank's RNG state, before trainer_state.json marks the checkpoint complete, what a resume
        # restores of this rank: its data report so far (samples skipped before the checkpoint) and the
        # logging window the checkpoint cuts (vlmtrain.train.rundir).
        super()._save_rng_state(output_dir)
        if output_dir is None:
            return
        from vlmtrain.train.rundir import save_log_window, save_report_state

        if hasattr(self.train_data, "report"):
            save_report_state(self.train_data, output_dir, self.args.process_index)
        save_log_window(self._log_window(), output_dir, self.args.process_index)
        # Every rank's files are written before rank 0 marks the checkpoint complete (trainer_state.json,
        # next) and deletes the older one (save_total_limit 1): without this wait a kill between left the
        # only checkpoint "complete" without a slower rank's RNG state and window (found in review).
        if self.args.world_size > 1:
            self.accelerator.wait_for_everyone()

    def _log_window(self) -> dict:
        """What the next log row sums since the last one: the Trainer's loss sum and the step it last logged,
        the throughput counts, stage 3's routing stats. With logging_steps > 1 a checkpoint can fall inside
        a window; the resumed run's first row then covers the whole window, as the uninterrupted run's does."""
        since = time.perf_counter() - self._window_start if self._window_start is not None else 0.0
        return {"tr_loss": getattr(self, "_tr_loss", None), "last_logged": getattr(self, "_globalstep_last_logged", None),
                "window": dict(self._window), "seconds": since,
                "moe": self._moe.state() if self._moe is not None else None,
                # (NaN / inf losses the window has seen: its resumed row says NaN as the uninterrupted one does)
                "nonfinite": self._nonfinite.state()}

    def _load_log_window(self, checkpoint: str) -> None:
        from vlmtrain.train.rundir import load_log_window

        saved = load_log_window(checkpoint, self.args.process_index)
        if saved is None or saved["last_logged"] is None or not hasattr(self, "_tr_loss"):
            return  # a checkpoint of an older vlmtrain: the first row covers the steps since the resume
        self._tr_loss = saved["tr_loss"].to(self._tr_loss.device)
        self._globalstep_last_logged = int(saved["last_logged"])
        # the counts with the seconds they took, so the first row's rates (tokens/s, data_wait_frac) are the window's
        self._window.update({k: v for k, v in saved["window"].items() if k in self._window})
        self._window_before = float(saved.get("seconds") or 0.0)
        if self._moe is not None and saved["moe"] is not None:
            self._moe.load_state(saved["moe"], self.args.device)
        if saved.get("nonfinite") is not None:  # (a checkpoint of an older vlmtrain has none)
            self._nonfinite.load_state(saved["nonfinite"], self.args.device)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            lr_from_this_schedule(self.optimizer, self.lr_scheduler)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        ckpt = Path(resume_from_checkpoint)
        target = self.accelerator.unwrap_model(model or self.model)
        if saves_projector_only(self.vlm_cfg) and (ckpt / MM_PROJECTOR).is_file():
            weights = torch.load(ckpt / MM_PROJECTOR, map_location="cpu", weights_only=True)
            module = projector_module(target)
            module.load_state_dict(from_reference(weights, module))
            return
        state = _read_safetensors(ckpt)
        if state is not None and not hasattr(target, "peft_config"):
            # transformers v5 renames Llava keys on save (legacy layouts such as language_model.model.*;
            # the exact form depends on the class and version) and from_pretrained renames them back, but
            # Trainer's resume loads the file's keys as they are, so nothing would load: map them here,
            # and refuse (rather than train from random weights) if anything is left unmatched.
            own = target.state_dict()
            renamed = {_llava_key(k, own): v for k, v in state.items()}
            missing = [k for k in own if k not in renamed and not _tied(target, k)]
            unexpected = [k for k in renamed if k not in own]
            if missing or unexpected:
                from vlmtrain.config import ConfigError
                from vlmtrain.model.build import is_lm_head_bias

                if not missing and all(is_lm_head_bias(k) for k in unexpected):
                    raise ConfigError(f"{ckpt}: the checkpoint has an lm_head.bias: an older vlmtrain's, whose stages "
                                      "1-2 kept the LLM's output bias; this one drops it, as MoE-LLaVA does, so the "
                                      "run cannot continue from it", hint="start the run again in a new output_dir "
                                      "(or finish it with the vlmtrain that started it)")
                raise ConfigError(f"{ckpt}: checkpoint does not match the model (missing {missing[:5]}, "
                                  f"unexpected {unexpected[:5]})",
                                  hint="was the config changed since the run started? resume with the same one")
            target.load_state_dict(renamed, strict=False)
            return
        return super()._load_from_checkpoint(resume_from_checkpoint, model)


def lr_from_this_schedule(optimizer, scheduler) -> None:
    """After a resume, give each parameter group the rate this run's schedule has at the step reached.

    The optimizer's saved state carries the rate the checkpoint's schedule had reached, and the next
    step runs at it before the scheduler steps again. Resuming with the same schedule this sets the
    same numbers; with a longer one (max_steps raised to train a finished run further) the first new
    step ran at the old schedule's end, 0 for cosine and linear, and moved nothing."""
    if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        return
    lrs = [base * fn(scheduler.last_epoch) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs


class MoeWindow:
    """Per-layer aux loss and expert load over a logging window (summed on device, read at log time).

    Logged as flat scalars, so tensorboard and metrics.jsonl take them as they are:
    ``moe/aux_loss`` (sum over layers, mean over forwards), ``moe/L{i}/aux``, ``moe/L{i}/load_e{j}``
    (share of layer i's routes that chose expert j, before the capacity cut) and ``moe/L{i}/dropped``
    (share of layer i's routes dropped for capacity), ``moe/dropped`` over all layers.
    """

    def __init__(self, layers: list[int], num_experts: int) -> None:
        self.layers, self.num_experts = layers, num_experts
        self._reset()

    def _reset(self) -> None:
        self.aux: torch.Tensor | float = 0.0        # [layers], on the device: no host sync per step
        self.counts: torch.Tensor | float = 0.0     # [layers, experts]
        self.routes = [0] * len(self.layers)
        self.kept = [0] * len(self.layers)
        self.forwards = 0

    def state(self) -> dict:
        return {"aux": self.aux, "counts": self.counts, "routes": list(self.routes), "kept": list(self.kept),
                "forwards": self.forwards}

    def load_state(self, state: dict, device) -> None:
        self.aux, self.counts = ((t.to(device) if torch.is_tensor(t) else t) for t in (state["aux"], state["counts"]))
        self.routes, self.kept, self.forwards = list(state["routes"]), list(state["kept"]), int(state["forwards"])

    def add(self, blocks) -> None:
        stats = [b.last for _, b in blocks]
        self.aux = self.aux + torch.stack([s.aux_loss.detach().double() for s in stats])
        self.counts = self.counts + torch.stack([s.exp_counts.double() for s in stats])
        self.routes = [a + s.routes for a, s in zip(self.routes, stats)]
        self.kept = [a + s.kept for a, s in zip(self.kept, stats)]
        self.forwards += 1

    def flush(self, args) -> dict[str, float]:
        n, e = len(self.layers), self.num_experts
        aux = self.aux if torch.is_tensor(self.aux) else torch.zeros(n, dtype=torch.float64)
        counts = self.counts if torch.is_tensor(self.counts) else torch.zeros(n, e, dtype=torch.float64)
        packed = torch.cat([aux.cpu(), counts.cpu().flatten(), torch.tensor(self.routes + self.kept + [self.forwards],
                                                                            dtype=torch.float64)])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            packed = packed.to(args.device)
            torch.distributed.all_reduce(packed)
            packed = packed.cpu()
        aux, counts = packed[:n], packed[n:n + n * e].view(n, e)
        routes, kept, forwards = packed[n + n * e:2 * n + n * e], packed[2 * n + n * e:3 * n + n * e], max(float(packed[-1]), 1.0)
        out = {"moe/aux_loss": round(float(aux.sum()) / forwards, 6),
               "moe/dropped": round(float(1 - kept.sum() / routes.sum().clamp(min=1)), 6)}
        for row, layer in enumerate(self.layers):
            out[f"moe/L{layer}/aux"] = round(float(aux[row]) / forwards, 6)
            total = float(counts[row].sum()) or 1.0
            for j in range(e):
                out[f"moe/L{layer}/load_e{j}"] = round(float(counts[row, j]) / total, 4)
            out[f"moe/L{layer}/dropped"] = round(float(1 - kept[row] / max(float(routes[row]), 1.0)), 6)
        self._reset()
        return out


_LEGACY = [("model.language_model.model.", "model.language_model."), ("language_model.model.", "model.language_model."),
           ("language_model.lm_head.", "lm_head."), ("vision_tower.", "model.vision_tower."),
           ("multi_modal_projector.", "model.multi_modal_projector.")]


def _llava_key(key: str, own: dict) -> str:
    if key in own:
        return key
    for old, new in _LEGACY:
        if key.startswith(old) and new + key[len(old):] in own:
            return new + key[len(old):]
    return key


def _tied(model, key: str) -> bool:
    return key == "lm_head.weight" and bool(getattr(model.config, "tie_word_embeddings", False))


def _read_safetensors(ckpt: Path) -> dict | None:
    from safetensors.torch import load_file

    single = ckpt / "model.safetensors"
    if single.is_file():
        return load_file(single)
    index = ckpt / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict = {}
        for f in files:
            state.update(load_file(ckpt / f))
        return state
    return None


# Kept under its old name for callers of this module; the class lives in vlmtrain.train.signals.
SigtermCheckpoint = StopOnSignal
