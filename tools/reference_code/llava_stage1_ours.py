"""Our half of the LLaVA stage-1 comparison: a vlmtrain stage-1 run handed to its pretrain as pretrain.sh
hands it its inputs (``hand_over_stage1``), its child run (``run_llava_stage1``, llava_stage1_side.py), and
the model a vlmtrain stage 2 starts from when its ``pretrain_mm_mlp_adapter`` is the ``mm_projector.bin``
LLaVA's save wrote (``stage2_start``, ``stage2_forward``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tools.reference_code.build_env import paths
from tools.reference_code.our_side import run_side


def hand_over_stage1(run_dir: Path, work: Path, processor: Path, *, captions: list,
                     finetune_conversations: list) -> dict[str, Any]:
    """``work/`` as pretrain.sh finds its inputs (a Vicuna-like folder, a CLIP folder with the original CLIP
    folder's ``processor`` json: sharegpt4v_ours.hand_over, which writes the same pair), the projector it
    starts from being the run's own ``mm_projector.bin`` file (not a copy), and the conversations of the
    finetune forward."""
    from tools.reference_code.sharegpt4v_ours import hand_over

    spec = hand_over(run_dir, work, "pretrain", processor, conversations=captions)
    run_cfg = json.loads((Path(run_dir) / "vlmtrain_config.json").read_text())
    spec.update(mm_projector_type=run_cfg["mm_projector_type"], projector=str(Path(run_dir) / "mm_projector.bin"), finetune_conversations=finetune_conversations)
    (work / "spec.json").write_text(json.dumps(spec))
    return spec


def run_llava_stage1(env: Path, work: Path, *, timeout: float = 300) -> dict[str, Any]:
    """llava_stage1_side.py on ``work`` in a child Python on LLaVA's path, its transformers 4.37.2."""
    run_side("llava_stage1_side.py", [str(work)], paths(env, overlay="site4372"), "LLaVA's", timeout=timeout)
    return torch.load(work / "theirs.pt", weights_only=False)


def batched_step(run_dir: Path, work: Path) -> dict[str, Any]:
    """One forward with labels and a backward of our stage 1 on the spec's conversations as one micro-batch:
    the run's encoder, our Collator's right padding and attention mask, the run's freeze applied, the loss
    the model computes (the trainer's on one GPU without accumulation); the gradients in LLaVA's names."""
    from vlmtrain.data import Collator, pop_batch_meta
    from vlmtrain.data.images import ImageLoader, open_rgb
    from vlmtrain.generate import load_run
    from vlmtrain.model.build import apply_freeze
    from vlmtrain.model.llava_export import llava_state_dict

    from tools.reference_code.our_side import encoder

    spec = json.loads((work / "spec.json").read_text())
    run = load_run(run_dir)
    model, cfg = run.model, run.cfg
    apply_freeze(model, cfg.frozen(), cfg.tune_vit_from_layer)
    pixels = ImageLoader(run.image_processor, cfg.image_aspect_ratio).process([open_rgb(work / spec["image"])])
    encoded = encoder(run, per_image=run.per_image).encode_many([(c, 1) for c in spec["conversations"]],
                                                                 check_reference=True)
    items = [{"id": str(i), "input_ids": torch.from_numpy(e.input_ids), "labels": torch.from_numpy(e.labels),
              "pixel_values": pixels} for i, e in enumerate(encoded)]
    batch = Collator(run.tokenizer.pad_token_id)(items)
    pop_batch_meta(batch)
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return {"batch": batch, "loss": out.loss.detach(), "grads": llava_state_dict(grads)}


def stage2_start(config: Path) -> tuple[Any, Any, Any]:
    """A stage-2 config's model as ``vlmtrain run`` builds it before its first step (train/run.py: the
    seed, the tokenizer, build_model, then ``pretrain_mm_mlp_adapter`` read and loaded): cfg, tokenizer, built."""
    from transformers import set_seed

    from vlmtrain.config import load_config
    from vlmtrain.model.build import build_model, load_pretrain_adapter, read_pretrain_adapter
    from vlmtrain.train.tokenizer import load_tokenizer

    cfg = load_config(config)
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg)
    built = build_model(cfg, vocab_size=len(tokenizer), image_token_id=tokenizer.convert_tokens_to_ids(cfg.image_token))
    load_pretrain_adapter(built.model, read_pretrain_adapter(cfg.pretrain_mm_mlp_adapter))
    return cfg, tokenizer, built


def stage2_forward(config: Path, work: Path) -> dict[str, Any]:
    """``stage2_start``'s projector (LLaVA's names) and one training forward with labels on each of the
    spec's ``finetune_conversations``: ids, labels, pixels, logits, loss."""
    from vlmtrain.data import Encoder, ImageTokens
    from vlmtrain.data.images import ImageLoader, open_rgb
    from vlmtrain.model.llava_export import llava_state_dict
    from vlmtrain.train.run import build_image_processor

    spec = json.loads((work / "spec.json").read_text())
    cfg, tok, built = stage2_start(config)
    model = built.model
    processor = build_image_processor(cfg, model.config.vision_config)
    pixels = ImageLoader(processor, cfg.image_aspect_ratio).process([open_rgb(work / spec["image"])])
    image = ImageTokens(cfg.image_token, tok.convert_tokens_to_ids(cfg.image_token), built.tokens_per_image)
    encoded = Encoder(tok, cfg.template, image, cfg.model_max_length).encode_many(
        [(c, 1) for c in spec["finetune_conversations"]], check_reference=True)
    model.train()
    steps = []
    for enc in encoded:
        ids, labels = torch.from_numpy(enc.input_ids)[None], torch.from_numpy(enc.labels)[None]
        mask = torch.ones_like(ids)
        with torch.no_grad():  # (with labels our forward computes the loss without the logits: both, apart)
            logits = model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits[0]
            loss = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels).loss
        steps.append({"ids": ids[0], "labels": labels[0], "pixel_values": pixels, "logits": logits, "loss": loss})
    projector = {k: v.detach().clone() for k, v in llava_state_dict(model.state_dict()).items()
                 if k.startswith("model.mm_projector.")}
    return {"projector": projector, "steps": steps}
