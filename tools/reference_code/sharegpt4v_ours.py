"""Our half of the ShareGPT4V comparison: its child runs (``run_sharegpt4v``), and a vlmtrain run's weights
handed to its train.py as its scripts hand a stage its inputs (``hand_over``), so its step starts from ours.

What each of its stages loads (scripts/sharegpt4v/slurm_{pretrain,finetune}_7b.sh):

- the pretrain: ``--model_name_or_path`` a Vicuna folder (a plain Llama: config.json, weights, the SentencePiece
  tokenizer), ``--vision_tower`` a CLIP folder (CLIPVisionModel + CLIPImageProcessor), ``--pretrain_mm_mlp_adapter``
  LLaVA-1.5's stage-1 ``mm_projector.bin`` (``model.mm_projector.*``);
- the finetune: the pretrain's output, as train.py saves it under DeepSpeed (the LLM and projector in LLaVA's
  names without the tower, a config.json with the ``mm_*`` keys, the tokenizer), and ``OUT/vision_tower`` (the
  tuned CLIP: config, ``pytorch_model.bin`` in CLIPVisionModel's names, the processor).

``hand_over`` writes those from a vlmtrain run (a test's bridge, not an exporter) with the image and spec.json
``sharegpt4v_side.py train`` reads; our_side's ``our_logits`` and ``our_trainable`` are ours beside its results.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from tools.reference_code.sharegpt4v_env import sharegpt4v_paths
from tools.reference_code.our_side import noise_image, run_side

TOWER_KEY = "model.vision_tower."
PROJECTOR_KEY = "model.mm_projector."
_MM_KEYS = ("mm_", "use_mm_proj", "image_aspect_ratio", "tokenizer_", "tune_mm_mlp_adapter", "freeze_mm_mlp_adapter")


def run_sharegpt4v(env: Path, work: Path, mode: str, *, timeout: float = 300) -> dict[str, Any]:
    """``sharegpt4v_side.py MODE WORK`` in a child Python on ShareGPT4V's path; what it wrote."""
    run_side("sharegpt4v_side.py", [mode, str(work)], sharegpt4v_paths(env), "ShareGPT4V's", timeout=timeout)
    if mode == "tokenize":
        return json.loads((work / "theirs_ids.json").read_text())
    return torch.load(work / "theirs.pt", weights_only=False)


def write_tower(run: Any, folder: Path, processor: Path) -> None:
    """The run's tower as a CLIP folder (what openai/clip-vit-large-patch14-336 is, and what its train.py saves
    as ``OUT/vision_tower``): CLIPVisionConfig, weights under ``vision_model.`` (transformers 4's level), and
    ``processor`` (a preprocessor_config.json): the original CLIP folder's, which its pretrain loads and saves
    on unchanged, not the run's, so that the pixels compare our processor with the one its code builds."""
    folder.mkdir(parents=True)
    tower = run.model.model.vision_tower
    tower.config.save_pretrained(folder)
    shutil.copy(processor, folder / "preprocessor_config.json")
    state = {k if k.startswith("vision_model.") else "vision_model." + k: v.detach().clone().contiguous()
             for k, v in tower.state_dict().items()}
    torch.save(state, folder / "pytorch_model.bin")


def _plain_llama_config(config: dict) -> dict:
    """A Vicuna folder's config.json: the LLM's fields only."""
    out = {k: v for k, v in config.items() if not k.startswith(_MM_KEYS)}
    return dict(out, architectures=["LlamaForCausalLM"], model_type="llama")


def hand_over(run_dir: Path, work: Path, stage: str, processor: Path, *, conversations: list,
              seed: int = 0) -> dict[str, Any]:
    """``work/`` as the spec's ``stage`` ("pretrain" / "finetune") of its scripts finds its inputs, from the
    run's weights and the original CLIP folder's ``processor`` json; an image and ``spec.json`` for
    ``sharegpt4v_side.py train`` (and our_side.training_step)."""
    from vlmtrain.generate import load_run
    from vlmtrain.model.export_folder import write_export
    from vlmtrain.model.llava_export import llava_config, llava_state_dict

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    run = load_run(run_dir)
    model, cfg = run.model, run.cfg
    state = {k: v for k, v in llava_state_dict(model.state_dict()).items() if not k.startswith(TOWER_KEY)}
    llm = work / ("vicuna" if stage == "pretrain" else "pretrain-out")
    tower = work / "clip" if stage == "pretrain" else llm / "vision_tower"
    config = llava_config(model, str(tower), cfg.image_aspect_ratio, cfg.model_max_length)
    spec: dict[str, Any] = {"stage": stage, "llm": str(llm), "tower": str(tower), "version": cfg.version,
                            "image_aspect_ratio": cfg.image_aspect_ratio, "model_max_length": cfg.model_max_length,
                            "tune_vit_from_layer": cfg.tune_vit_from_layer, "image": "image.png",
                            "conversations": conversations, "seed": seed}
    if stage == "pretrain":
        projector = {k: v for k, v in state.items() if k.startswith(PROJECTOR_KEY)}
        state = {k: v for k, v in state.items() if k not in projector}
        torch.save(projector, work / "mm_projector.bin")
        spec["projector"] = str(work / "mm_projector.bin")
        config = _plain_llama_config(config)
    write_export(llm, state, config, model, run.tokenizer)
    write_tower(run, tower, processor)
    noise_image(work / "image.png", (90, 60), seed)
    (work / "spec.json").write_text(json.dumps(spec))
    return spec
