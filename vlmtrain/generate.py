"""``vlmtrain generate``: load any stage's output and answer a question about an image, greedily.

What each stage leaves in its output_dir, and how it is loaded back:

- stage 1: ``mm_projector.bin`` (+ config): the model is rebuilt as the run built it (the same
  LLM and tower, or the same seeded random weights for ``random_init`` runs) and the projector loaded;
- stage 2: the whole model and its tokenizer (``from_pretrained``);
- stage 2 with LoRA: the adapter on the rebuilt base, merged;
- stage 3: the whole MoE model (its ``moe`` config rebuilds the experts before the weights load).

The prompt is the run's template, asking for the assistant's turn, tokenised the way training
tokenised it; decoding is greedy. MoE layers route the way they trained (DeepSpeed's gate draws the
second expert with noise in eval too), so ``seed`` fixes that draw.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlmtrain.config import ConfigError, TrainConfig, load_config


@dataclass
class LoadedRun:
    cfg: TrainConfig
    model: Any
    tokenizer: Any
    image_processor: Any
    per_image: int


def _run_config(run_dir: Path) -> TrainConfig:
    path = run_dir / "vlmtrain_config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a vlmtrain run folder (no vlmtrain_config.json)",
                          hint="give the output_dir of a finished `vlmtrain run`")
    try:
        raw = json.loads(path.read_text())
    except ValueError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    raw["output_dir"] = str(run_dir)
    return load_config(None, raw=raw)


DEFAULT_MAX_NEW_TOKENS = 512  # LLaVA's run_llava.py and serve/cli.py (MoE-LLaVA's cli too)


def resolve_device(device: str) -> torch.device:
    """``auto``: the first GPU when there is one, else the CPU; a GPU that is not there is a ConfigError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a device name", hint="auto, cpu, cuda or cuda:N") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: torch sees no CUDA GPU here", hint="--device cpu (or auto)")
    return chosen


def load_run(run_dir: str | Path, *, device: str = "cpu") -> LoadedRun:
    from transformers import set_seed

    from vlmtrain.model.build import build_model, load_pretrain_adapter, model_class, tokens_per_image
    from vlmtrain.train.run import build_image_processor
    from vlmtrain.train.tokenizer import load_tokenizer
    from vlmtrain.train.trainer import MM_PROJECTOR

    run_dir = Path(run_dir)
    cfg = _run_config(run_dir)
    whole = (run_dir / "model.safetensors").is_file() or (run_dir / "model.safetensors.index.json").is_file()
    if cfg.stage == 1 or cfg.lora_enable:
        if not (run_dir / MM_PROJECTOR).is_file() and not (run_dir / "adapter_config.json").is_file():
            raise ConfigError(f"{run_dir} has no {MM_PROJECTOR} or adapter: did the run finish?",
                              hint="a run stopped early keeps its weights in checkpoint-*; finish it with --resume")
        set_seed(cfg.seed)  # random-init runs rebuild the weights they started from
        tokenizer = load_tokenizer(cfg)
        built = build_model(cfg, vocab_size=len(tokenizer),
                            image_token_id=tokenizer.convert_tokens_to_ids(cfg.image_token))
        model = built.model
        if cfg.lora_enable:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(run_dir)).merge_and_unload()
        else:
            load_pretrain_adapter(model, run_dir / MM_PROJECTOR)
    elif whole:
        from transformers import AutoTokenizer

        from vlmtrain.data.templates import get_template
        from vlmtrain.train.tokenizer import set_pad_token

        tokenizer = AutoTokenizer.from_pretrained(str(run_dir))
        set_pad_token(tokenizer, get_template(cfg.template))
        mm_type = json.loads((run_dir / "config.json").read_text()).get("mm_projector_type", "mlp2x_gelu")
        model = model_class(mm_type).from_pretrained(str(run_dir))
    else:
        raise ConfigError(f"{run_dir} has no model weights (model.safetensors): did the run finish?",
                          hint="a run stopped early keeps its weights in checkpoint-*; finish it with --resume")
    where = resolve_device(device)
    # on a GPU in half precision, as LLaVA's load_pretrained_model (fp16) and our training (bf16) run it
    half = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if where.type == "cuda" else None
    model.to(device=where, dtype=half).eval()  # (dtype None: as loaded)
    vc = model.config.vision_config
    return LoadedRun(cfg, model, tokenizer, build_image_processor(cfg, vc),
                     tokens_per_image(vc, cfg.mm_vision_select_feature))


def answer(run: LoadedRun, question: str, image: str | Path | None = None, *,
           max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
           min_new_tokens: int = 0, seed: int = 0) -> dict:
    """Greedy answer to ``question`` (about ``image``, if given) with the run's template."""
    from vlmtrain.data import Encoder, ImageTokens
    from vlmtrain.data.images import ImageLoader, open_rgb
    from vlmtrain.data.templates import generation_prompt

    cfg, tok = run.cfg, run.tokenizer
    n_images = 1 if image is not None else 0
    if n_images and cfg.image_token not in question:
        question = cfg.image_token + "\n" + question
    try:
        text = generation_prompt(cfg.template, question, n_images, cfg.image_token, tok)
    except Exception as e:
        raise ConfigError(f"cannot build a {cfg.template!r} prompt from this question: {e}") from None
    image_id = tok.convert_tokens_to_ids(cfg.image_token)
    enc = Encoder(tok, cfg.template, ImageTokens(cfg.image_token, image_id, run.per_image), cfg.model_max_length)
    ids = torch.from_numpy(enc.encode_prompt(text, special=cfg.template != "chat_template")).unsqueeze(0)
    device = next(run.model.parameters()).device
    inputs: dict[str, Any] = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}
    if n_images:
        loader = ImageLoader(run.image_processor, cfg.image_aspect_ratio)
        inputs["pixel_values"] = loader.process([open_rgb(Path(image))]).to(device, run.model.dtype)
    stop = [t for t in (tok.eos_token_id,) if t is not None]
    # stage-1 captions end with a newline, not an eos: stop there, as LLaVA's plain template (sep "\n") does
    strings = {"stop_strings": ["\n"], "tokenizer": tok} if cfg.template == "plain" else {}
    torch.manual_seed(seed)
    with torch.no_grad():
        out = run.model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None,
                                 do_sample=False, eos_token_id=stop or None, pad_token_id=tok.pad_token_id, **strings)
    new = out[0, ids.shape[1]:].tolist()
    reply = tok.decode(new, skip_special_tokens=True)
    ended = bool(new) and (new[-1] in stop or (bool(strings) and "\n" in reply))
    if cfg.template == "plain":
        reply = reply.split("\n")[0]
    return {"answer": reply.strip(), "prompt": text, "new_tokens": len(new),
            "stopped": "eos" if ended else "max_new_tokens", "stage": cfg.stage}
