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
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from tools.reference_code.build_env import convllava_paths

TOWER_PREFIX = "model.vision_tower.vision_tower."  # ConvLLaVA's ConvNextModel inside its tower wrapper


def run_convllava(env: Path, work: Path, mode: str, *, timeout: float = 300) -> dict[str, Any]:
    """``convllava_side.py MODE WORK`` in a child Python on ConvLLaVA's path; what it wrote."""
    path = os.pathsep.join(str(p) for p in convllava_paths(env))
    child = subprocess.run([sys.executable, str(Path(__file__).with_name("convllava_side.py")), mode, str(work)],
                           env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, timeout=timeout)
    if child.returncode != 0:
        raise RuntimeError(f"ConvLLaVA's side failed ({child.returncode}):\n{child.stderr[-4000:]}")
    if mode == "tokenize":
        return json.loads((work / "theirs_ids.json").read_text())
    return torch.load(work / {"tower": "theirs_tower.pt", "answer": "theirs_answer.pt"}.get(mode, "theirs.pt"),
                      weights_only=False)


def convllava_names(llava_named: dict[str, Any]) -> dict[str, Any]:
    """A state dict (or gradients) in LLaVA's names (vlmtrain.model.llava_export.llava_state_dict) in
    ConvLLaVA's: its ConvNeXt sits directly in the tower wrapper, LLaVA's CLIP one level deeper."""
    clip = TOWER_PREFIX + "vision_model."
    return {(TOWER_PREFIX + k[len(clip):] if k.startswith(clip) else k): v for k, v in llava_named.items()}


def noise_image(path: Path, size: tuple[int, int], seed: int) -> None:
    """A lossless non-square image of noise: every resampling weight shows in the pixels."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


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


def our_logits(run_dir: Path, work: Path) -> list[torch.Tensor]:
    """The logits of our training forward on each spec conversation (the step itself computes its loss
    without them): the run's encoder and image loader, the model in train mode, no labels."""
    from vlmtrain.data.images import ImageLoader, open_rgb
    from vlmtrain.generate import load_run

    from tools.reference_code.our_side import encoder

    spec = json.loads((work / "spec.json").read_text())
    run = load_run(run_dir)
    pixels = ImageLoader(run.image_processor, run.cfg.image_aspect_ratio).process([open_rgb(work / spec["image"])])
    out = []
    run.model.train()
    for enc in encoder(run, per_image=run.per_image).encode_many([(c, 1) for c in spec["conversations"]]):
        ids = torch.from_numpy(enc.input_ids)[None]
        with torch.no_grad():
            out.append(run.model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels).logits[0])
    return out


def our_trainable(run_dir: Path) -> set[str]:
    """What the run's stage trains (its config's freeze, as the trainer applies it), in ConvLLaVA's names."""
    from vlmtrain.generate import load_run
    from vlmtrain.model.build import apply_freeze
    from vlmtrain.model.llava_export import llava_state_dict

    run = load_run(run_dir)
    apply_freeze(run.model, run.cfg.frozen(), run.cfg.tune_vit_from_layer)
    return set(convllava_names(llava_state_dict({n: p for n, p in run.model.named_parameters() if p.requires_grad})))
