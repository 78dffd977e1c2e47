"""Our half of the ConvLLaVA comparison: its child runs (``run_convllava``), a vlmtrain ConvLLaVA run
handed to its code as its own stage 1 would have left it (``hand_over``), so its stage 2 starts from our
weights, and an export's spec for its ``load_pretrained_model`` (``answer_spec``).

What a ConvLLaVA stage 1 leaves (``safe_save_model_for_hf_trainer`` in its train.py, under DeepSpeed): the
LLM and projector in LLaVA's names without the tower, with a config.json of the LLM's fields and its
``mm_*`` keys, and the tower apart in ``OUT/vision_tower/`` (transformers 4.39's ConvNext config.json,
``pytorch_model.bin`` in ``ConvNextModel``'s names without the pooled norm, and the image processor). Its
stage 2 is pointed at both (``--model_name_or_path OUT --vision_tower OUT/vision_tower``). ``hand_over``
writes that pair with vlmtrain's own exporter (``vlmtrain export-llava`` on a ConvNeXt run,
vlmtrain.model.convllava_export), so the check tests the product.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from tools.reference_code.build_env import convllava_paths
from tools.reference_code.our_side import noise_image, run_side

TOWER_PREFIX = "model.vision_tower.vision_tower."  # ConvLLaVA's ConvNextModel inside its tower wrapper


def run_convllava(env: Path, work: Path, mode: str, *, timeout: float = 300) -> dict[str, Any]:
    """``convllava_side.py MODE WORK`` in a child Python on ConvLLaVA's path; what it wrote."""
    run_side("convllava_side.py", [mode, str(work)], convllava_paths(env), "ConvLLaVA's", timeout=timeout)
    if mode == "tokenize":
        return json.loads((work / "theirs_ids.json").read_text())
    return torch.load(work / {"tower": "theirs_tower.pt", "answer": "theirs_answer.pt"}.get(mode, "theirs.pt"),
                      weights_only=False)


def convllava_names(llava_named: dict[str, Any]) -> dict[str, Any]:
    """A state dict (or gradients) in LLaVA's names (vlmtrain.model.llava_export.llava_state_dict) in
    ConvLLaVA's: its ConvNeXt sits directly in the tower wrapper, LLaVA's CLIP one level deeper."""
    clip = TOWER_PREFIX + "vision_model."
    return {(TOWER_PREFIX + k[len(clip):] if k.startswith(clip) else k): v for k, v in llava_named.items()}


def hand_over(run_dir: Path, work: Path, *, conversations: list, tune_vit_from_layer: int,
              seed: int = 0) -> dict[str, Any]:
    """``work/stage1`` (LLM + projector) and ``work/stage1/vision_tower`` as vlmtrain's export writes them from
    the run, an image and ``spec.json`` for ``convllava_side.py model``."""
    from vlmtrain.generate import load_run
    from vlmtrain.model.convllava_export import TOWER_FOLDER
    from vlmtrain.model.llava_export import write_llava_checkpoint

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    run = load_run(run_dir)
    model, cfg = run.model, run.cfg
    llm = work / "stage1"
    write_llava_checkpoint(model, llm, vision_tower=cfg.vision_tower, image_aspect_ratio=cfg.image_aspect_ratio,
                           model_max_length=cfg.model_max_length, tokenizer=run.tokenizer,
                           image_processor=run.image_processor)
    noise_image(work / "image.png", (90, 60), seed)
    spec = {"llm": str(llm), "tower": str(llm / TOWER_FOLDER), "resolution": model.config.vision_config.image_size,
            "tune_vit_from_layer": tune_vit_from_layer, "model_max_length": cfg.model_max_length,
            "image": "image.png", "conversations": conversations, "seed": seed}
    (work / "spec.json").write_text(json.dumps(spec))
    return spec


def answer_spec(export: Path, work: Path, *, question: str, conv_mode: str = "vicuna_v1", seed: int = 0,
                max_new_tokens: int = 6) -> dict[str, Any]:
    """``work/spec.json`` for ``convllava_side.py answer`` (and our_side.ours): the export its
    load_pretrained_model loads, a non-square noise image (``pad`` shows), the question, greedy decoding."""
    work.mkdir(parents=True, exist_ok=True)
    noise_image(work / "image.png", (90, 60), seed)
    spec = {"model": str(export), "conv_mode": conv_mode, "question": question, "image": "image.png",
            "seed": seed, "max_new_tokens": max_new_tokens}
    (work / "spec.json").write_text(json.dumps(spec))
    return spec
