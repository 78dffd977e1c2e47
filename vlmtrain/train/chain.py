"""Several stages in one command: ``vlmtrain run STAGE1.yaml STAGE2.yaml STAGE3.yaml``.

Each stage starts from the previous stage's output: stage 2 loads stage 1's ``mm_projector.bin``
(``pretrain_mm_mlp_adapter``), or its whole model when stage 1 also trained part of the tower and so
saved the whole model (ConvLLaVA's stage 1, ``tune_vit_from_layer``); stage 3 starts from stage 2's
whole model and tokenizer (``model_name_or_path``), and so does a stage 2 that follows a stage 2
(ShareGPT4V's pretrain, which trains the LLM and part of the tower, then its finetune: the tuned
tower travels in the model). Those keys are set here, whatever the YAML says (a different value is
reported). Every config is loaded and checked before the first stage starts, so a typo in stage 3
does not surface after hours of stage 1.

Resumable as a whole: a finished stage leaves ``vlmtrain_done.json`` (written by vlmtrain.train.run)
and is skipped when the chain runs again with ``--resume``; the interrupted stage resumes from its
last checkpoint; later stages start fresh. ``--set`` overrides apply to every stage.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from vlmtrain.config import ConfigError, TrainConfig, load_config
from vlmtrain.train.rundir import saves_projector_only

log = logging.getLogger("vlmtrain")
DONE = "vlmtrain_done.json"


@dataclass
class Stage:
    path: Path
    cfg: TrainConfig
    links: list[str]          # `key=value` overrides the chain added (passed on to a relaunch)
    # The size of the tokenizer an earlier stage trains (its tokenizer_train_vocab_size), which this stage
    # starts from: --dry-run counts the embedding at that size, the tokenizer being on no disk yet.
    inherited_vocab: int | None = None


def _link(cfg: TrainConfig, key: str, value: str, links: list[str]) -> None:
    old = getattr(cfg, key)
    if old not in (None, value):
        log.info("%s: `%s` set to the previous stage's output %s (the config said %s)", cfg._source, key, value, old)
    setattr(cfg, key, value)
    links.append(f"{key}={value}")


def plan_chain(paths: list[Path], overrides: list[str]) -> list[Stage]:
    """Load every stage, link each to the previous one, check the order and the output folders."""
    stages = [Stage(Path(p), load_config(p, overrides), []) for p in paths]
    outs = [Path(s.cfg.output_dir).resolve() for s in stages]
    if len(set(outs)) != len(outs):
        same = next(o for o in outs if outs.count(o) > 1)
        told = any(o.split("=", 1)[0].strip() == "output_dir" for o in overrides)
        raise ConfigError(f"two stages of the chain write the same output_dir ({same})",
                          hint="a --set applies to every stage: set output_dir in each stage's YAML instead"
                               if told else "give each stage its own output_dir in its YAML")
    for prev, cur in zip(stages, stages[1:]):
        p, c = prev.cfg, cur.cfg
        if c.stage < p.stage:
            raise ConfigError(f"stage {c.stage} ({cur.path}) comes after stage {p.stage} ({prev.path})",
                              hint="list the configs in training order: stage 1, then 2, then 3")
        if p.stage == 1 and c.stage == 2 and saves_projector_only(p):
            _link(c, "pretrain_mm_mlp_adapter", str(Path(p.output_dir) / "mm_projector.bin"), cur.links)
        elif (p.stage == 1 and c.stage == 2) or (p.stage == 2 and c.stage in (2, 3)):
            _continue_from(prev, cur)
        else:
            raise ConfigError(f"cannot chain stage {p.stage} ({prev.path}) into stage {c.stage} ({cur.path})",
                              hint="a chain runs 1 -> 2 -> 3 (or a contiguous part of it); a stage 2 may also "
                                   "follow a stage 2 (ShareGPT4V's pretrain -> finetune)")
    return stages


def _continue_from(prev: Stage, cur: Stage) -> None:
    """``cur`` starts from ``prev``'s whole model and tokenizer (its tower and projector as ``prev`` left them)."""
    p, c = prev.cfg, cur.cfg
    if c.stage == 2 and c.pretrain_mm_mlp_adapter:
        raise ConfigError(f"this stage starts from the whole model of {prev.path}, projector included; "
                          "`pretrain_mm_mlp_adapter` would replace the projector that stage trained",
                          where=str(cur.path), hint="remove `pretrain_mm_mlp_adapter` from it")
    if p.lora_enable:
        raise ConfigError(f"{prev.path} trains LoRA adapters, so its output is an adapter, not the whole model "
                          f"{cur.path} starts from", where=str(prev.path),
                          hint="train that stage without `lora_enable`: a later stage starts from a whole model")
    _link(c, "model_name_or_path", p.output_dir, cur.links)
    cur.inherited_vocab = p.tokenizer_train_vocab_size or prev.inherited_vocab
    if c.tokenizer_name_or_path not in (None, p.output_dir) or c.tokenizer_train_vocab_size:
        log.info("%s: the tokenizer comes from the previous stage's output", cur.path)
    _link(c, "tokenizer_name_or_path", p.output_dir, cur.links)
    # (as links too: a stage re-launched under torchrun / deepspeed reads its config again, with the links
    # as --set; without these two it trained from random weights and a new tokenizer there)
    c.tokenizer_train_vocab_size = None
    c.random_init = False
    cur.links += ["tokenizer_train_vocab_size=null", "random_init=false"]
    # Shapes for --dry-run before the previous stage has written its model: that stage's own.
    for key in ("text_config", "vision_config"):
        if getattr(c, key) is None and isinstance(getattr(p, key), dict):
            setattr(c, key, dict(getattr(p, key)))


def is_done(cfg: TrainConfig) -> bool:
    """The stage finished with this same config (a different one is an error, not a skip)."""
    changed = _changes_since_done(cfg)
    if changed:
        raise ConfigError(f"{cfg.output_dir} holds a finished stage trained with other settings ({', '.join(changed[:6])})",
                          where=cfg._source, hint="choose another output_dir, or delete that folder to train it again")
    return changed is not None


def finished_step(cfg: TrainConfig) -> int | None:
    """The last step of a run that finished in output_dir with this same config; None when it did not
    (or with other settings: a raised max_steps trains it further with --resume)."""
    if _changes_since_done(cfg) != []:
        return None
    return int(json.loads((Path(cfg.output_dir) / DONE).read_text()).get("global_step", 0))


def _changes_since_done(cfg: TrainConfig) -> list[str] | None:
    """The config keys that differ from the finished run's record; None when no run finished there."""
    marker = Path(cfg.output_dir) / DONE
    if not marker.is_file():
        return None
    recorded = json.loads(marker.read_text()).get("config", {})
    now = json.loads(json.dumps(cfg.to_dict(), default=str))
    # a key added to vlmtrain after the run was recorded counts as changed only when set to another value
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    before = {k: recorded[k] if k in recorded else json.loads(json.dumps(defaults.get(k), default=str)) for k in now}
    return sorted(k for k in set(recorded) | set(now) if before.get(k, recorded.get(k)) != now.get(k))


def mark_done(cfg: TrainConfig, global_step: int) -> None:
    from vlmdata.atomic import write_text

    write_text(Path(cfg.output_dir) / DONE, json.dumps({"global_step": global_step, "config": cfg.to_dict()},
                                                      indent=2, default=str) + "\n")
