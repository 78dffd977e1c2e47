"""The run config: one YAML per stage, LLaVA's flag names, typed and checked before anything is built.

    cfg = load_config("configs/llava-1.5-7b-finetune.yaml", overrides=["learning_rate=1e-5"])

Keys use the reference LLaVA trainer's names where one exists (``model_name_or_path``,
``vision_tower``, ``mm_projector_type``, ``tune_mm_mlp_adapter``, ``version``, ...), so a
``finetune.sh`` translates line for line. MoE-LLaVA's spellings (``image_tower``,
``image_projector_type``) and ``data_path`` / ``image_folder`` are accepted as aliases.

Every problem a user can fix is a :class:`ConfigError` (exit code 2) that names the key and the
file: unknown keys (with a did-you-mean), wrong types, values out of range, stage settings that
contradict each other, a dataset folder that is not there. All of it is checked before a tokenizer
or a model is touched.

Why one file of ~450 lines: the keys (one dataclass with every type and default), their aliases
and the checks that read several keys at once belong together; split up, a key's type and its
check would live in different files.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from vlmdata.errors import UserError
from vlmtrain.data.templates import ALIASES as TEMPLATE_ALIASES, TEMPLATES
from vlmtrain import yaml_strict
from vlmtrain.config_compat import COMPAT_KEYS, llava_keys


class ConfigError(UserError):
    """A run config that cannot be used as written. Exit code 2."""


@dataclass
class FreezeSpec:
    """Which parts are frozen. ``None`` means "what the stage says" (see :meth:`TrainConfig.frozen`)."""

    vision: Optional[bool] = None
    projector: Optional[bool] = None
    llm: Optional[bool] = None


@dataclass
class TrainConfig:
    # --- stage -------------------------------------------------------------------------------
    stage: int = 2                                  # 1: feature alignment (projector only); 2: instruction tuning; 3: MoE-tuning
    freeze: FreezeSpec = field(default_factory=FreezeSpec)
    tune_mm_mlp_adapter: Optional[bool] = None      # LLaVA's stage-1 flag; implied by stage 1
    tune_vit_from_layer: Optional[int] = None       # ConvLLaVA's flag: the tower trains from this block (ViT) / stage (ConvNeXt) on

    # --- model -------------------------------------------------------------------------------
    model_name_or_path: Optional[str] = None        # the LLM (local path or Hub id), or a whole LLaVA checkpoint
    text_config: Union[dict, str, None] = None      # LLM config fields, or a JSON file of them (offline dry-run, random init)
    vision_tower: Optional[str] = None              # CLIP / SigLIP vision model (local path or Hub id)
    vision_config: Union[dict, str, None] = None    # vision config fields, or a JSON file of them
    random_init: bool = False                       # build from the configs with random weights (tests, tiny runs, benchmarks)
    mm_projector_type: str = "mlp2x_gelu"           # linear | mlp{N}x_gelu | identity
    mm_vision_select_layer: int = -2
    mm_vision_select_feature: str = "patch"         # patch (drop CLS) | cls_patch
    pretrain_mm_mlp_adapter: Optional[str] = None   # stage 2: the stage-1 mm_projector.bin
    mm_use_im_start_end: bool = False               # LLaVA-1.5 turns these off; vlmtrain does not support them
    mm_use_im_patch_token: bool = False
    image_token: str = "<image>"
    tokenizer_name_or_path: Optional[str] = None    # default: model_name_or_path
    tokenizer_train_vocab_size: Optional[int] = None  # train a SentencePiece tokenizer on the dataset's text (offline runs)
    tokenizer_legacy: bool = False                  # for the tokenizer trained on the fly
    tokenizer_train_kind: str = "auto"              # auto (the LLM's family: llama/mistral sentencepiece, phi bytelevel, qwen2/stablelm tiktoken) | sentencepiece | bytelevel | tiktoken
    trust_remote_code: bool = False
    attn_implementation: str = "auto"               # auto (flash_attention_2 when installed on a GPU, else sdpa) | sdpa | eager | flash_attention_2

    # --- LoRA (stage 2) -----------------------------------------------------------------------
    lora_enable: bool = False
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_bias: str = "none"
    lora_target_modules: Optional[list] = None      # default: every Linear of the LLM except lm_head

    # --- MoE-tuning (stage 3; MoE-LLaVA's flag names) -------------------------------------------
    moe_enable: Optional[bool] = None               # implied by stage 3
    num_experts: Union[int, list] = 4               # per MoE layer (MoE-LLaVA takes a one-element list too)
    top_k_experts: int = 2                          # 1 or 2
    capacity_factor: float = 1.0                    # training capacity factor (MoE-LLaVA's scripts pass 1.5)
    eval_capacity_factor: float = 2.0
    min_capacity: int = 0                           # MoE-LLaVA's scripts never pass it: 0
    moe_mode: Union[str, list] = "second_half"      # sparse | dense | first_half | second_half, or a list of layer indices
    moe_layers_idx: Optional[list] = None           # MoE-LLaVA's explicit layer list (overrides moe_mode)
    use_residual: bool = False                      # Residual-MoE
    router_aux_loss_coef: float = 0.01
    router_aux_loss_gradient: bool = True           # false: the aux loss is in the loss's value only, no gradient (as MoE-LLaVA's runs)
    train_modules: Optional[list | str] = None      # parameter-name substrings that train (fc1 fc2 wg for phi), or all
    ep_size: int = 1                                # expert parallelism: only 1 (every rank holds every expert)
    moe_second_expert_sampling: bool = True         # DeepSpeed's top2_2nd_expert_sampling (Gumbel noise), seeded
    moe_random_token_selection: bool = True         # DeepSpeed's use_rts (top-1)
    moe_drop_tokens: bool = True                    # drop routes past the capacity (DeepSpeed's default)
    save_moellava_checkpoint: bool = False          # also write output_dir/moe-llava-<family or template>/ in MoE-LLaVA's key names

    # --- data --------------------------------------------------------------------------------
    dataset_dir: Optional[str] = None               # a `vlmdata blend` output folder
    image_root: Optional[str] = None                # overrides blend.json's image root
    version: str = "vicuna_v1"                      # template: plain | vicuna_v1 (alias v1) | chat_template | phi | qwen | stablelm | openchat | mistral
    image_aspect_ratio: str = "pad"                 # pad | square
    image_backend: str = "pil"                      # pil (LLaVA's pixels) | torchvision (faster; opt-in)
    group_by_modality_length: bool = False
    model_max_length: int = 2048                    # counts the image tokens
    bad_samples: str = "fail"                       # fail | skip
    dataloader_num_workers: int = 0
    data_num_proc: int = 1
    lazy_preprocess: bool = True                    # accepted for LLaVA scripts; vlmtrain is always lazy

    # --- optimisation ------------------------------------------------------------------------
    output_dir: str = "runs/run"
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-5
    mm_projector_lr: Optional[float] = None
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lr_scheduler_type: str = "cosine"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0
    loss_mean: str = "tokens"                       # tokens (the global batch's supervised tokens weigh the same) | micro_batch (the original repos')
    bf16: bool = False
    fp16: bool = False
    tf32: Optional[bool] = None
    gradient_checkpointing: bool = False
    deepspeed: Optional[str] = None                 # a DeepSpeed JSON (configs/deepspeed/zero2.json, zero3.json)
    seed: int = 42

    # --- throughput (docs/throughput.md; all off by default) ----------------------------------
    packing: bool = False                           # several samples per row up to model_max_length, attention per sample
    compile: str = "none"                           # none | layers (each decoder layer torch.compile'd) | model
    compile_backend: str = "inductor"               # torch.compile's backend (aot_eager: no code generation)
    kernels: str = "none"                           # none | liger (liger-kernel's fused kernels; needs a GPU and the [gpu] extra)
    image_decode: str = "exact"                     # exact (LLaVA's pixels) | draft (JPEG draft decoding of large images; opt-in)
    profile_steps: list = field(default_factory=list)  # [FIRST, LAST]: torch.profiler table of those steps in output_dir

    # --- checkpoints and logging -------------------------------------------------------------
    save_strategy: str = "steps"                    # steps | epoch | no (LLaVA's scripts pass "steps")
    save_steps: int = 500
    save_total_limit: Optional[int] = 1
    logging_steps: int = 1
    report_to: list = field(default_factory=lambda: ["tensorboard"])  # a plain string (`wandb`) is accepted too
    sample_log: bool = False                        # each rank's trained sample ids per step: output_dir/samples/

    # --- launch ------------------------------------------------------------------------------
    num_gpus: int = 1                               # per node; >1 re-launches through deepspeed / torchrun
    num_nodes: int = 1
    hostfile: Optional[str] = None                  # multi-node (deepspeed launcher)
    launcher: str = "auto"                          # auto | deepspeed | torchrun
    master_port: int = 29500
    ddp_timeout: int = 1800                         # seconds a rank waits for the others (start, collectives) before it fails

    # Filled in by load_config, not keys of the YAML.
    _source: Optional[str] = field(default=None, repr=False)
    _notes: list = field(default_factory=list, repr=False)  # keys accepted and mapped or ignored (config_compat)

    # ----------------------------------------------------------------------------------------
    def frozen(self) -> dict[str, bool]:
        """The freeze spec with the stage's defaults filled in."""
        # Stage 3: the LLM's trainable parameters are chosen by `train_modules` (vlmtrain.model.moe);
        # the projector trains, as MoE-LLaVA's initialize_vision_modules turns it back on.
        defaults = {1: {"vision": True, "projector": False, "llm": True},
                    2: {"vision": True, "projector": False, "llm": False},
                    3: {"vision": True, "projector": False, "llm": False}}[self.stage]
        spec = dataclasses.asdict(self.freeze)
        if self.tune_vit_from_layer is not None and spec["vision"] is None:
            defaults["vision"] = False  # part of the tower trains (vlmtrain.model.build.apply_freeze)
        if self.lora_enable:
            defaults["llm"] = True  # the base weights stay frozen; the adapters train
        return {k: defaults[k] if v is None else v for k, v in spec.items()}

    @property
    def template(self) -> str:
        return TEMPLATE_ALIASES.get(self.version, self.version)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if not k.startswith("_")}


ALIASES = {
    "data_path": "dataset_dir",
    "image_folder": "image_root",
    "image_tower": "vision_tower",
    "image_projector_type": "mm_projector_type",
    "template": "version",
}

_CHOICES = {
    "mm_vision_select_feature": ("patch", "cls_patch"),
    "version": TEMPLATES + tuple(TEMPLATE_ALIASES),
    "image_aspect_ratio": ("pad", "square"),
    "image_backend": ("pil", "torchvision"),
    "save_strategy": ("steps", "epoch", "no"),
    "bad_samples": ("fail", "skip"),
    "loss_mean": ("tokens", "micro_batch"),
    "compile": ("none", "layers", "model"),
    "kernels": ("none", "liger"),
    "image_decode": ("exact", "draft"),
    "tokenizer_train_kind": ("auto", "sentencepiece", "bytelevel", "tiktoken"),
    "attn_implementation": ("auto", "sdpa", "eager", "flash_attention_2"),
    "launcher": ("auto", "deepspeed", "torchrun"),
    "lr_scheduler_type": ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"),
    "lora_bias": ("none", "all", "lora_only"),
}
PROJECTOR_RE = re.compile(r"^(linear|identity|mlp(\d+)x_gelu)$")


# ---------------------------------------------------------------------------------------------
# Typed assignment
# ---------------------------------------------------------------------------------------------

def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if not f.name.startswith("_")}


def _type_name(tp) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _check_value(value: Any, tp, key: str, where: str) -> Any:
    """Return ``value`` as type ``tp`` (int is accepted for float) or raise a ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _check_value(value, arg, key, where)
            except ConfigError:
                pass
        raise _type_error(key, tp, value, where)
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "2e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp in (list, dict):
        if isinstance(value, tp):
            return value
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return _build_dataclass(tp, value, where, prefix=f"{key}.")
    raise _type_error(key, tp, value, where)


def _type_error(key: str, tp, value: Any, where: str) -> ConfigError:
    """A value of the wrong type; for a key with a few choices, the choices (YAML reads `yes` as true)."""
    choices = _CHOICES.get(key)
    if choices:
        return ConfigError(f"`{key}` is {value!r} ({type(value).__name__}); choose one of {', '.join(choices)}",
                           where=where)
    return ConfigError(f"`{key}` must be {_type_name(tp)}, got {value!r} ({type(value).__name__})", where=where)


def _unknown_key(key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known + list(ALIASES), n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`?" if close else "see configs/README.md for the keys vlmtrain knows"
    return ConfigError(f"unknown key `{key}`", where=where, hint=hint)


def _build_dataclass(cls, raw: dict, where: str, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    known = list(_fields(cls))
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        name = ALIASES.get(key, key) if not prefix else key
        if name not in known:
            raise _unknown_key(prefix + str(key), [prefix + k for k in known], where)
        if name in kwargs:
            raise ConfigError(f"`{key}` given twice (once under an alias)", where=where)
        kwargs[name] = _check_value(value, hints[name], prefix + name, where)
    return cls(**kwargs)


def parse_override(text: str, where: str = "--set") -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed by YAML's rules; typed later against the field)."""
    if "=" not in text:
        raise ConfigError(f"`{text}` is not key=value", where=where, hint="e.g. --set learning_rate=1e-5")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"`{text}` has no key", where=where)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _apply_override(raw: dict, path: list[str], value: Any, where: str) -> None:
    """Merge one override into the raw mapping; the typed check happens with everything else."""
    node = raw
    for part in path[:-1]:
        part = ALIASES.get(part, part) if node is raw else part
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"`{'.'.join(path)}`: `{part}` is not a section", where=where)
        node = child
    last = path[-1]
    if node is raw:
        last = ALIASES.get(last, last)
        # an override replaces an alias spelled in the file
        for alias, name in ALIASES.items():
            if name == last:
                node.pop(alias, None)
    # `--set text_config.num_hidden_layers=2` where the YAML names a JSON file: edit its contents.
    node[last] = value


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def config_dir() -> Path:
    """The shipped configs/ folder (next to the package in a checkout)."""
    return Path(__file__).resolve().parents[1] / "configs"


def resolve_file(ref: str, base: Path | None) -> Path:
    """A file named in a config: absolute, next to the YAML, or relative to the working directory."""
    p = Path(os.path.expanduser(ref))
    if p.is_absolute():
        return p
    for root in ([base] if base else []) + [Path.cwd(), config_dir()]:
        if (root / p).exists():
            return root / p
    return (base / p) if base else p


def _config_suggestion(p: Path) -> str:
    """The YAML the user probably meant: the name with .yaml, the shipped config of that name, a folder's YAMLs."""
    if p.is_dir():
        found = sorted(x.name for x in p.glob("*.yaml"))
        return f"give one of its YAMLs: {', '.join(found)}" if found else "give the path of a run config (YAML)"
    candidates = [p.with_name(p.name + ".yaml"), config_dir() / p.name, config_dir() / (p.name + ".yaml")]
    for c in candidates:
        if c.is_file():
            return f"did you mean {c}?"
    close = difflib.get_close_matches(p.stem, [x.stem for x in config_dir().glob("*.yaml")], n=1, cutoff=0.6)
    if close:
        return f"did you mean {config_dir() / (close[0] + '.yaml')}? (the shipped configs are in {config_dir()})"
    return f"give the path of a YAML such as configs/tiny-cpu.yaml (the shipped ones are in {config_dir()})"


def load_config(path: str | Path | None, overrides: list[str] | None = None, *, raw: dict | None = None) -> TrainConfig:
    """Read, merge ``--set`` overrides, type-check and cross-check a run config."""
    where = str(path) if path else "config"
    if raw is None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"no config file at {p}" + (" (it is a folder)" if p.is_dir() else ""),
                              hint=_config_suggestion(p))
        try:
            raw = yaml_strict.load(p.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            what = " ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or str(e)
            raise ConfigError(f"not valid YAML at {at}{what}" if at else f"not valid YAML: {what}", where=where) from None
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a mapping of key: value", where=where)
    raw = dict(raw)
    base = Path(path).resolve().parent if path else None

    # JSON files named by text_config / vision_config are read here, so --set can edit their fields.
    for key in ("text_config", "vision_config"):
        if isinstance(raw.get(key), str):
            raw[key] = _read_model_config(raw[key], base, where, key)

    given: dict[str, str] = {}  # top key -> the --set that gave it (a wrong type is blamed on that --set)
    for text in overrides or []:
        keys, value = parse_override(text)
        top = ALIASES.get(keys[0], keys[0])
        given[top] = text
        if len(keys) > 1 and top in ("text_config", "vision_config") and isinstance(raw.get(top), str):
            raw[top] = _read_model_config(raw[top], base, where, top)
        if len(keys) == 1 and top in ("text_config", "vision_config") and isinstance(value, str):
            value = _read_model_config(value, base, "--set", top)
        if top not in _fields(TrainConfig) and top not in COMPAT_KEYS:
            raise _unknown_key(keys[0], list(_fields(TrainConfig)), "--set")
        _apply_override(raw, keys, value, f"--set {text}")

    raw, notes = llava_keys(raw)
    try:
        cfg = _build_dataclass(TrainConfig, raw, where)
    except ConfigError as e:
        named = re.match(r"`([^`.]+)", e.what)
        if named is None or named.group(1) not in given:
            raise
        raise ConfigError(e.what, where=f"--set {given[named.group(1)]}", hint=e.hint) from None
    cfg._source = str(path) if path else None
    cfg._notes = notes
    for key in ("deepspeed", "hostfile"):
        value = getattr(cfg, key)
        if value:
            setattr(cfg, key, str(resolve_file(value, base)))
    validate(cfg, where)
    from vlmtrain.config_check import check_report_to

    cfg.report_to = check_report_to(cfg.report_to, where)
    return cfg


def _read_model_config(ref: str, base: Path | None, where: str, key: str) -> dict:
    import json

    f = resolve_file(ref, base)
    if not f.is_file():
        raise ConfigError(f"`{key}` names {ref}, which is not a file", where=where,
                          hint="give a JSON of config fields (see configs/model_configs/) or a mapping")
    try:
        data = json.loads(f.read_text())
    except ValueError as e:
        raise ConfigError(f"`{key}`: {f} is not valid JSON: {e}", where=where) from None
    if not isinstance(data, dict):
        raise ConfigError(f"`{key}`: {f} must hold a JSON object", where=where)
    return data


def validate(cfg: TrainConfig, where: str = "config") -> None:
    """Cross-field checks; everything here is cheap and needs no model or tokenizer."""

    def fail(msg: str, hint: str | None = None) -> None:
        raise ConfigError(msg, where=where, hint=hint)

    for key, choices in _CHOICES.items():
        value = getattr(cfg, key)
        if value not in choices:
            fail(f"`{key}` is {value!r}; choose one of {', '.join(choices)}")
    if not PROJECTOR_RE.match(cfg.mm_projector_type):
        fail(f"`mm_projector_type` is {cfg.mm_projector_type!r}; choose linear, identity or mlpNx_gelu (e.g. mlp2x_gelu)")
    m = PROJECTOR_RE.match(cfg.mm_projector_type)
    if m.group(2) is not None and int(m.group(2)) < 1:
        fail("`mm_projector_type` mlpNx_gelu needs N >= 1")

    if cfg.stage not in (1, 2, 3):
        fail(f"`stage` is {cfg.stage}; vlmtrain runs stage 1 (projector), 2 (projector + LLM) and 3 (MoE-tuning)")
    explicit = dataclasses.asdict(cfg.freeze)
    _validate_moe(cfg, fail)
    if cfg.tune_vit_from_layer is not None:
        if cfg.tune_vit_from_layer < 0:
            fail(f"`tune_vit_from_layer` is {cfg.tune_vit_from_layer}; give the first block / stage that trains (0 or more)",
                 "to train the whole tower, drop it and set `freeze.vision: false`")
        if explicit["vision"] is True:
            fail("`tune_vit_from_layer` trains part of the vision tower, but `freeze.vision` is true")
    if cfg.stage == 1:
        if cfg.tune_mm_mlp_adapter is False:
            fail("stage 1 trains the projector (`tune_mm_mlp_adapter: true`); `tune_mm_mlp_adapter: false` contradicts it",
                 "drop the key, or set `stage: 2` to train the LLM too")
        if explicit["llm"] is False or (explicit["vision"] is False and cfg.tune_vit_from_layer is None):
            fail("stage 1 trains the projector only; `freeze.llm` / `freeze.vision` must stay frozen",
                 "set `stage: 2` to train the LLM, or `tune_vit_from_layer` to train a tower stage with the projector "
                 "(ConvLLaVA's added ConvNeXt stage)")
        if explicit["projector"] is True:
            fail("stage 1 trains the projector; `freeze.projector: true` leaves nothing to train")
        if cfg.lora_enable:
            fail("`lora_enable` is a stage-2 option; stage 1 trains the projector only")
        if cfg.pretrain_mm_mlp_adapter:
            fail("`pretrain_mm_mlp_adapter` loads a stage-1 projector into stage 2; stage 1 makes one",
                 "remove it, or set `stage: 2`")
    else:
        if cfg.tune_mm_mlp_adapter:
            fail(f"`tune_mm_mlp_adapter: true` is the stage-1 flag (projector only), but `stage` is {cfg.stage}",
                 "set `stage: 1`, or drop `tune_mm_mlp_adapter`")
        if explicit["llm"] is True and not cfg.lora_enable and cfg.stage == 2:
            fail("stage 2 trains the LLM, but `freeze.llm` is true", "set `stage: 1` to train the projector only, or `lora_enable: true`")
    if cfg.stage == 3 and explicit["llm"] is not None:
        fail("in stage 3, `train_modules` chooses what of the LLM trains (as MoE-LLaVA's --train_modules); "
             "`freeze.llm` would be overridden", "drop `freeze.llm` and name the parts in `train_modules`")
    if cfg.lora_enable:
        _check_lora_freeze(cfg, explicit, fail)
    elif any(getattr(cfg, k) != getattr(TrainConfig, k) for k in ("lora_r", "lora_alpha", "lora_dropout", "lora_bias")) \
            or cfg.lora_target_modules is not None:
        cfg._notes.append("`lora_*` keys are set but `lora_enable` is not: no LoRA adapters are trained")
    if cfg.mm_use_im_start_end or cfg.mm_use_im_patch_token:
        fail("`mm_use_im_start_end` / `mm_use_im_patch_token` are LLaVA-v0 options that v1.5 turns off; vlmtrain does not build them")
    if cfg.bf16 and cfg.fp16:
        fail("`bf16` and `fp16` are both on; choose one")
    steps = cfg.profile_steps
    if steps and not (len(steps) == 2 and all(type(x) is int for x in steps) and 1 <= steps[0] <= steps[1]):
        fail(f"`profile_steps` is {steps!r}; give the first and last optimizer step to profile",
             "e.g. `profile_steps: [10, 12]` (steps count from 1), or leave it out")
    if steps and 0 < cfg.max_steps < steps[0]:
        cfg._notes.append(f"`profile_steps` {steps} starts after `max_steps` {cfg.max_steps}: nothing is profiled")
    if not str(cfg.output_dir).strip():  # (`--set output_dir=$OUT` with OUT unset: the current folder)
        fail("`output_dir` is empty (a shell variable that is not set?)", "give the folder the run writes, e.g. runs/my-run")
    if not (cfg.model_name_or_path or cfg.text_config):
        fail("no LLM: set `model_name_or_path` (local path or Hub id) or `text_config` with `random_init: true`")
    if cfg.random_init and not cfg.text_config and not cfg.model_name_or_path:
        fail("`random_init` needs `text_config` (or a `model_name_or_path` to read the config from)")
    if not (cfg.tokenizer_name_or_path or cfg.model_name_or_path or cfg.tokenizer_train_vocab_size):
        fail("no tokenizer: set `tokenizer_name_or_path`, `model_name_or_path`, or `tokenizer_train_vocab_size` "
             "(trains one on the dataset's text)")
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "model_max_length", "num_gpus",
                "num_nodes", "save_steps", "logging_steps", "lora_r", "ddp_timeout"):
        if getattr(cfg, key) < 1:
            fail(f"`{key}` must be at least 1, got {getattr(cfg, key)}")
    for key in ("learning_rate", "num_train_epochs"):
        if getattr(cfg, key) <= 0:
            fail(f"`{key}` must be positive, got {getattr(cfg, key)}")
    # (each said here, before a weight loads: AdamW, the DataLoader and set_seed would refuse them only
    # after the model is built, as tracebacks; a negative projector rate would train without a word)
    if cfg.mm_projector_lr is not None and cfg.mm_projector_lr <= 0:
        fail(f"`mm_projector_lr` must be positive, got {cfg.mm_projector_lr}",
             "leave it out for the projector to train at `learning_rate`, or freeze it with `freeze.projector: true`")
    for key in ("adam_beta1", "adam_beta2"):
        if not 0 <= getattr(cfg, key) < 1:
            fail(f"`{key}` must be in [0, 1), got {getattr(cfg, key)}")
    for key in ("weight_decay", "max_grad_norm", "dataloader_num_workers", "seed", "lora_dropout"):
        if getattr(cfg, key) < 0:
            fail(f"`{key}` must not be negative, got {getattr(cfg, key)}")
    if cfg.lora_dropout >= 1:
        fail(f"`lora_dropout` must be below 1, got {cfg.lora_dropout}")
    if not 0 <= cfg.warmup_ratio < 1:
        fail(f"`warmup_ratio` must be in [0, 1), got {cfg.warmup_ratio}")
    if cfg.tokenizer_train_vocab_size and cfg.tokenizer_name_or_path:
        cfg._notes.append(f"`tokenizer_name_or_path` ({cfg.tokenizer_name_or_path}) is not used: "
                          "`tokenizer_train_vocab_size` trains a tokenizer on the dataset's text")
    if cfg.mm_projector_lr is not None and cfg.frozen()["projector"]:
        cfg._notes.append("`mm_projector_lr` has nothing to set: the projector is frozen in this run")
    if cfg.lr_scheduler_type == "constant" and cfg.warmup_ratio > 0:
        fail(f"`lr_scheduler_type: constant` has no warmup, so `warmup_ratio` {cfg.warmup_ratio} would be ignored",
             "use `lr_scheduler_type: constant_with_warmup`, or `warmup_ratio: 0`")
    if cfg.save_moellava_checkpoint and cfg.stage != 3:
        fail(f"`save_moellava_checkpoint` writes a stage-3 (MoE) model in MoE-LLaVA's layout; this is stage {cfg.stage}",
             "drop it here (set it in the stage-3 config)")
    if cfg.tokenizer_train_vocab_size is not None and cfg.tokenizer_train_vocab_size < 64:
        fail("`tokenizer_train_vocab_size` must be at least 64")
    if cfg.deepspeed and not Path(cfg.deepspeed).is_file():
        fail(f"`deepspeed` names {cfg.deepspeed}, which is not a file", "see configs/deepspeed/zero2.json and zero3.json")
    if cfg.deepspeed:
        _check_deepspeed_json(cfg, fail)
    if cfg.hostfile and not Path(cfg.hostfile).is_file():
        fail(f"`hostfile` names {cfg.hostfile}, which is not a file")
    if cfg.launcher == "torchrun" and cfg.hostfile:
        fail("a hostfile needs the deepspeed launcher (it starts the other nodes over ssh)", "set `launcher: deepspeed`")


MOE_KEYS = ("num_experts", "top_k_experts", "capacity_factor", "eval_capacity_factor", "min_capacity", "moe_mode",
            "moe_layers_idx", "use_residual", "router_aux_loss_coef", "router_aux_loss_gradient", "train_modules", "ep_size",
            "moe_second_expert_sampling", "moe_random_token_selection", "moe_drop_tokens")


def _check_lora_freeze(cfg: TrainConfig, explicit: dict, fail) -> None:
    """With LoRA, PEFT freezes every weight that is no adapter and vlmtrain keeps the projector trainable
    (modules_to_save): a freeze setting that asks otherwise would not be applied."""
    asked = ["freeze.vision: false"] if explicit["vision"] is False else []  # (as the YAML says it)
    asked += [f"tune_vit_from_layer: {cfg.tune_vit_from_layer}"] if cfg.tune_vit_from_layer is not None else []
    asked += ["freeze.projector: true"] if explicit["projector"] is True else []
    asked += ["freeze.llm: false"] if explicit["llm"] is False else []
    if asked:
        fail(f"with `lora_enable`, the LLM trains through its adapters, the projector trains and the rest stays "
             f"frozen; {', '.join(asked)} would not be applied", "drop those keys, or train without LoRA")


def _check_deepspeed_json(cfg: TrainConfig, fail) -> None:
    """What a DeepSpeed JSON of the user's own would take over without a word: its optimizer section
    replaces the Trainer's (so mm_projector_lr's groups), its scheduler section lr_scheduler_type and
    warmup_ratio."""
    import json

    try:
        ds = json.loads(Path(cfg.deepspeed).read_text())
    except (OSError, ValueError) as e:
        fail(f"`deepspeed`: {cfg.deepspeed} is not a readable JSON file: {e}")
    if not isinstance(ds, dict):
        fail(f"`deepspeed`: {cfg.deepspeed} must hold a JSON object")
    if "optimizer" in ds and cfg.mm_projector_lr is not None:
        fail(f"`mm_projector_lr` has no effect with {cfg.deepspeed}: its `optimizer` section replaces the "
             "optimizer whose parameter groups carry the projector's rate",
             "remove the JSON's `optimizer` section (the Trainer's AdamW takes adam_beta1/2 and weight_decay), "
             "or drop `mm_projector_lr`")
    _check_fixed_deepspeed_values(cfg, ds, fail)
    if "scheduler" in ds:
        cfg._notes.append(f"{cfg.deepspeed}'s `scheduler` section replaces `lr_scheduler_type` "
                          f"({cfg.lr_scheduler_type}) and `warmup_ratio` ({cfg.warmup_ratio})")


def _check_fixed_deepspeed_values(cfg: TrainConfig, ds: dict, fail) -> None:
    """A value the JSON fixes (not "auto") against the config key it must equal: transformers raises on a
    mismatch only when training starts, after the model is loaded."""
    world = cfg.num_gpus * cfg.num_nodes
    pairs = [("train_micro_batch_size_per_gpu", ds.get("train_micro_batch_size_per_gpu"), "per_device_train_batch_size",
              cfg.per_device_train_batch_size),
             ("gradient_accumulation_steps", ds.get("gradient_accumulation_steps"), "gradient_accumulation_steps",
              cfg.gradient_accumulation_steps),
             ("train_batch_size", ds.get("train_batch_size"), "per_device_train_batch_size x gradient_accumulation_steps"
              " x GPUs", cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world),
             ("gradient_clipping", ds.get("gradient_clipping"), "max_grad_norm", cfg.max_grad_norm),
             ("bf16.enabled", (ds.get("bf16") or {}).get("enabled"), "bf16", cfg.bf16),
             ("fp16.enabled", (ds.get("fp16") or {}).get("enabled"), "fp16", cfg.fp16)]
    wrong = [f"{ds_key} {value!r} vs `{key}` {ours!r}" for ds_key, value, key, ours in pairs
             if value is not None and value != "auto" and value != ours]
    if wrong:
        fail(f"{cfg.deepspeed} fixes values the config sets otherwise: {'; '.join(wrong)}",
             'set them to "auto" in the JSON (filled from the config), or make the config say the same')


def _validate_moe(cfg: TrainConfig, fail) -> None:
    """Stage 3's keys: each a clear error before any weight is loaded."""
    if cfg.stage != 3:
        if cfg.moe_enable:
            fail(f"`moe_enable: true` is stage 3 (MoE-tuning), but `stage` is {cfg.stage}", "set `stage: 3`")
        return
    if cfg.moe_enable is False:
        fail("stage 3 is MoE-tuning; `moe_enable: false` contradicts it", "drop `moe_enable`, or set `stage: 2`")
    experts = cfg.num_experts
    if isinstance(experts, list):
        if not experts or len(set(experts)) != 1 or not all(isinstance(e, int) for e in experts):
            fail(f"`num_experts` is {experts}; give one number (every MoE layer gets the same count)")
        experts = experts[0]
    if experts < 2:
        fail(f"`num_experts` must be at least 2, got {experts}")
    if cfg.top_k_experts not in (1, 2):
        fail(f"`top_k_experts` is {cfg.top_k_experts}; MoE-LLaVA's gating is top-1 or top-2")
    if cfg.top_k_experts > experts:
        fail(f"`top_k_experts` ({cfg.top_k_experts}) is more than `num_experts` ({experts})")
    for key in ("capacity_factor", "eval_capacity_factor"):
        if getattr(cfg, key) <= 0:
            fail(f"`{key}` must be positive, got {getattr(cfg, key)}")
    if cfg.min_capacity < 0:
        fail(f"`min_capacity` must be >= 0, got {cfg.min_capacity}")
    if cfg.router_aux_loss_coef < 0:
        fail(f"`router_aux_loss_coef` must be >= 0, got {cfg.router_aux_loss_coef}")
    mode = cfg.moe_layers_idx if cfg.moe_layers_idx is not None else cfg.moe_mode
    if isinstance(mode, list):
        if not mode or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in mode):
            fail(f"`moe_layers_idx` / `moe_mode` layer list {mode} must hold layer indices >= 0")
    elif mode not in ("sparse", "dense", "first_half", "second_half"):
        fail(f"`moe_mode` is {mode!r}; choose sparse, dense, first_half, second_half or a list of layer indices")
    if cfg.ep_size != 1:
        fail(f"`ep_size` is {cfg.ep_size}; vlmtrain's MoE layer keeps every expert on every rank (ep_size 1, "
             "what MoE-LLaVA's scripts use)")
    if cfg.train_modules is not None and cfg.train_modules != "all" and (
            not isinstance(cfg.train_modules, list) or not cfg.train_modules
            or not all(isinstance(m, str) and m for m in cfg.train_modules)):
        fail(f"`train_modules` must be a list of parameter-name substrings, or `all`, got {cfg.train_modules!r}",
             "write a list, e.g. `train_modules: [fc1, fc2, wg]` (--set 'train_modules=[fc1,fc2,wg]'); `all` trains "
             "the whole LLM, as MoE-LLaVA does when its script gives no --train_modules")
    if cfg.lora_enable:
        fail("`lora_enable` with stage 3 is not supported; MoE-tuning trains the experts' FFN weights themselves")
    if cfg.pretrain_mm_mlp_adapter:
        fail("stage 3 starts from a whole stage-2 model (`model_name_or_path`), not a projector file",
             "remove `pretrain_mm_mlp_adapter`")
    if cfg.random_init and not cfg.text_config:
        fail("stage 3 with `random_init` needs `text_config` (benchmarks only: a real run starts from stage 2)")
    if not cfg.random_init and not cfg.model_name_or_path:
        fail("stage 3 needs the stage-2 model: set `model_name_or_path` to the stage-2 run's output_dir")


def check_inputs(cfg: TrainConfig, *, resume: bool = False, models: bool = True) -> None:
    """Checks that touch the disk for a real run (not for --dry-run): dataset, adapter file.
    ``models`` False: a later stage of a chain, whose model or adapter an earlier stage makes."""
    where = cfg._source or "config"
    if not cfg.dataset_dir:
        raise ConfigError("no dataset: set `dataset_dir` (or `data_path`) to a `vlmdata blend` output folder", where=where)
    d = Path(cfg.dataset_dir)
    if not d.is_dir():
        raise ConfigError(f"dataset folder {d} does not exist", where=where,
                          hint="make it with `vlmdata blend RECIPE --out DIR`, or fix `dataset_dir`")
    if not ((d / "dataset_info.json").exists() or (d / "state.json").exists() or (d / "dataset_dict.json").exists()):
        raise ConfigError(f"{d} is not a saved Arrow dataset (no dataset_info.json / state.json)", where=where,
                          hint="point `dataset_dir` at the folder `vlmdata blend --out` wrote")
    from vlmdata.contract import read_blend_meta

    read_blend_meta(d)  # a blend.json of a schema_version this reader does not know: ContractError, exit 2
    if cfg.image_root and not Path(cfg.image_root).is_dir():
        raise ConfigError(f"`image_root` {cfg.image_root} is not a folder", where=where)
    if not models:
        return
    if cfg.stage == 3 and not cfg.random_init:
        _check_stage2_model(cfg, where)
    if cfg.pretrain_mm_mlp_adapter and not Path(cfg.pretrain_mm_mlp_adapter).is_file():
        raise ConfigError(f"`pretrain_mm_mlp_adapter` {cfg.pretrain_mm_mlp_adapter} is not a file", where=where,
                          hint="it is the stage-1 run's output_dir/mm_projector.bin")


def _check_stage2_model(cfg: TrainConfig, where: str) -> None:
    """Stage 3 starts from a whole stage-2 model: a folder with a Llava config.json (or a Hub id)."""
    import json

    name = cfg.model_name_or_path
    p = Path(os.path.expanduser(name))
    hub_like = re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None and not Path(name.split("/")[0]).is_dir()
    if not p.exists() and hub_like:
        return  # a Hub id (a published stage-2 model): its config is checked when it is read
    if (p / "mm_projector.bin").is_file() and not any((p / w).is_file() for w in (
            "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")):
        raise ConfigError(f"stage 3 needs the stage-2 model, but {p} is a stage-1 run (its projector only)",
                          where=where, hint="point `model_name_or_path` at the stage-2 run's output_dir, or chain "
                                            "them: vlmtrain run STAGE1.yaml STAGE2.yaml STAGE3.yaml")
    if not (p / "config.json").is_file():
        raise ConfigError(f"stage 3 needs the stage-2 model, but {p} has no config.json", where=where,
                          hint="run stage 2 first (its output_dir is the stage-3 `model_name_or_path`), "
                               "or chain them: vlmtrain run STAGE1.yaml STAGE2.yaml STAGE3.yaml")
    try:
        model_type = json.loads((p / "config.json").read_text()).get("model_type")
    except ValueError:
        model_type = None
    if model_type != "llava":
        raise ConfigError(f"stage 3 needs a whole stage-2 LLaVA model, but {p}/config.json is a {model_type!r} model",
                          where=where, hint="point `model_name_or_path` at the stage-2 run's output_dir")
