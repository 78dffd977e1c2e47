"""Our half of the comparison: a work folder MoE-LLaVA's code can load from (``prepare``), its child run
(``run_theirs``), and what ``vlmtrain generate`` computes on the same question and image (``ours``)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from tools.reference_code.build_env import paths

IMAGE_INDEX = -200  # MoE-LLaVA's IMAGE_TOKEN_INDEX: the image's place in its input ids
# conversations as the instruction JSONs hold them, the image first (its preprocess_multimodal leaves a
# leading <image>\n in place): one round, and two
CONVERSATIONS = [[{"from": "human", "value": "<image>\nWhat is in the picture?"},
                  {"from": "gpt", "value": "A green field under a clear sky."}],
                 [{"from": "human", "value": "<image>\nWhat is in the picture?"},
                  {"from": "gpt", "value": "A green field under a clear sky."},
                  {"from": "human", "value": "What color is the field?"},
                  {"from": "gpt", "value": "Green."}]]
CONV_MODES = {"vicuna_v1": "vicuna_v1"}  # our template -> LLaVA's conv_templates key, where the names differ
TOWER = "openai-tiny-clip"  # its builder builds a CLIP tower only for names starting with "openai" / "laion"
TINY_SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 4, "max_position_embeddings": 1024}
# the MoE-LLaVA families the checks train tiny: (text config over TINY_SHAPE, template, its finetune_moe.sh's
# --train_modules)
MOELLAVA_FAMILIES = {
    "phi": ({"model_type": "phi"}, "phi", ["fc1", "fc2", "wg"]),
    "stablelm": ({"model_type": "stablelm", "partial_rotary_factor": 0.25}, "stablelm",
                 ["gate_proj", "up_proj", "down_proj", "wg"]),
    "qwen": ({"model_type": "qwen2"}, "qwen", ["mlp.w1", "mlp.w2", "mlp.c_proj", "wg"]),
    "openchat": ({"model_type": "mistral", "num_key_value_heads": 2}, "openchat",
                 ["up_proj", "down_proj", "gate_proj", "wg"]),
}


def prepare(run_dir: Path, work: Path, family: str, *, question: str = "what color?", seed: int = 0,
            max_new_tokens: int = 6, export: Path | None = None) -> dict[str, Any]:
    """Copy the run's export into ``work`` (MoE-LLaVA's from the run's folder; ``export``: another, e.g.
    LLaVA's) and put its tower beside it, as the Hub folder their CLIPVisionTower loads (their loaders take the
    tower from ``mm_image_tower`` / ``mm_vision_tower``, not from the export: a tiny random tower is on no
    Hub). ``family``: the MoE-LLaVA family, or "llava"."""
    from PIL import Image
    from safetensors.torch import save_file

    from vlmtrain.generate import load_run

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    source = export or run_dir / f"moe-llava-{family}"
    export = work / f"{source.name}-tiny"  # the name picks its class and template
    shutil.copytree(source, export)
    run = load_run(run_dir)
    tower = run.model.model.vision_tower
    (work / TOWER).mkdir()
    tower.config.save_pretrained(work / TOWER)
    run.image_processor.save_pretrained(work / TOWER)
    # transformers 4.x reads a CLIPVisionModel's weights under vision_model.
    state = {k if k.startswith("vision_model.") else "vision_model." + k: v.contiguous()
             for k, v in tower.state_dict().items()}
    save_file(state, str(work / TOWER / "model.safetensors"), metadata={"format": "pt"})
    conf = json.loads((export / "config.json").read_text())
    # what the docs tell a user to do for a tower that is not a Hub id
    conf["mm_vision_tower" if family == "llava" else "mm_image_tower"] = TOWER
    (export / "config.json").write_text(json.dumps(conf, indent=2))
    Image.new("RGB", (40, 28), (20, 200, 30)).save(work / "image.jpg")
    tok = run.tokenizer
    spec: dict[str, Any] = {"family": family, "conv_mode": CONV_MODES.get(run.cfg.template, family), "model": export.name, "question": question, "image": "image.jpg",
                            "seed": seed, "max_new_tokens": max_new_tokens, "port": _free_port(),
                            "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id, "input_ids": None,
                            "conversations": CONVERSATIONS}
    if family in ("stablelm", "qwen"):
        # its StableLM / Qwen tokenizers read arcade100k.tiktoken / qwen.tiktoken, which a tokenizer trained
        # on the fly has no counterpart of: those two get our ids, the image's place marked its way
        ids, image_id = prompt_ids(run, question, per_image=1)
        spec["input_ids"] = [IMAGE_INDEX if t == image_id else t for t in ids[0].tolist()]
        encoded = [encoder(run, per_image=1).encode(c, 1) for c in CONVERSATIONS]
        spec["train_ids"] = [[IMAGE_INDEX if t == image_id else t for t in e.input_ids.tolist()] for e in encoded]
        spec["train_labels"] = [e.labels.tolist() for e in encoded]
    (work / "spec.json").write_text(json.dumps(spec))
    return spec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_theirs(env: Path, work: Path, family: str, *, timeout: float = 300) -> dict[str, Any]:
    """MoE-LLaVA's code on ``work`` in a child Python, its transformers 4.34 for the Mistral family; for
    ``family`` "llava", LLaVA's code under its transformers 4.37.2."""
    overlay = {"openchat": "site434", "llava": "site4372"}.get(family)
    script, *args = ["llava_side.py", "--model"] if family == "llava" else ["moellava_side.py"]
    run_side(script, [*args, str(work)], paths(env, overlay=overlay), "MoE-LLaVA's", timeout=timeout)
    return torch.load(work / "theirs.pt", weights_only=False)


def run_side(script: str, args: list[str], path: list[Path], who: str, *, timeout: float = 300) -> None:
    """``script`` (a file of this folder) with ``args`` in a child Python whose path is ``path`` (the reference
    repo and the versions it pins); RuntimeError with the end of its stderr when it fails."""
    child = subprocess.run([sys.executable, str(Path(__file__).with_name(script)), *args],
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in path)},
                           capture_output=True, text=True, timeout=timeout)
    if child.returncode != 0:
        raise RuntimeError(f"{who} side failed ({child.returncode}):\n{child.stderr[-4000:]}")


def noise_image(path: Path, size: tuple[int, int], seed: int) -> None:
    """A lossless non-square image of noise: padding, resizing and cropping all show in the pixels."""
    import numpy as np
    from PIL import Image

    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def encoder(run: Any, *, per_image: int) -> Any:
    """The run's training encoder, the image as ``per_image`` image tokens."""
    from vlmtrain.data import Encoder, ImageTokens

    cfg, tok = run.cfg, run.tokenizer
    image_id = tok.convert_tokens_to_ids(cfg.image_token)
    return Encoder(tok, cfg.template, ImageTokens(cfg.image_token, image_id, per_image), cfg.model_max_length)


def prompt_ids(run: Any, question: str, *, per_image: int) -> tuple[torch.Tensor, int]:
    """The prompt's ids as ``vlmtrain generate`` builds them, the image as ``per_image`` image tokens."""
    from vlmtrain.data.templates import generation_prompt

    cfg, tok = run.cfg, run.tokenizer
    text = generation_prompt(cfg.template, cfg.image_token + "\n" + question, 1, cfg.image_token, tok)
    enc = encoder(run, per_image=per_image)
    return torch.from_numpy(enc.encode_prompt(text, special=True)).unsqueeze(0), enc.image_tokens.token_id


def ours(run_dir: Path, work: Path) -> dict[str, Any]:
    """What vlmtrain computes on the spec's question and image: prompt, ids, pixels, logits, answer."""
    from vlmtrain.data.images import ImageLoader, open_rgb
    from vlmtrain.data.templates import generation_prompt
    from vlmtrain.generate import answer, load_run

    spec = json.loads((work / "spec.json").read_text())
    run = load_run(run_dir)
    cfg = run.cfg
    ids, image_id = prompt_ids(run, spec["question"], per_image=run.per_image)
    pixels = ImageLoader(run.image_processor, cfg.image_aspect_ratio).process([open_rgb(work / spec["image"])])
    torch.manual_seed(spec["seed"])
    with torch.no_grad():
        logits = run.model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels).logits[0]
    reply = answer(run, spec["question"], work / spec["image"], max_new_tokens=spec["max_new_tokens"],
                   seed=spec["seed"])
    prompt = generation_prompt(cfg.template, cfg.image_token + "\n" + spec["question"], 1, cfg.image_token,
                               run.tokenizer)
    return {"prompt": prompt, "input_ids": ids[0], "image_id": image_id, "per_image": run.per_image,
            "pixel_values": pixels, "logits": logits, "answer": reply["answer"], "tokenizer": run.tokenizer}


def training_step(run_dir: Path, work: Path, *, trained_only: bool = False) -> list[dict[str, Any]]:
    """One forward and backward of our training on each of the spec's conversations: ids and labels from the
    run's encoder (with its replay of the reference's masking arithmetic), the loss as the trainer adds it
    (stage 3: LM loss + router_aux_loss_coef x the layers' aux losses), the gradients in the reference's
    names (MoE-LLaVA's for stage 3, LLaVA's otherwise). ``trained_only``: the run's freeze applied first, as
    its trainer applies it, so that only what the stage trains gets a gradient (stage 1: the projector)."""
    from vlmtrain.data.images import ImageLoader, open_rgb
    from vlmtrain.generate import load_run
    from vlmtrain.model.llava_export import llava_state_dict
    from vlmtrain.model.moe import moe_blocks
    from vlmtrain.model.moe.checkpoint_keys import moellava_state_dict

    spec = json.loads((work / "spec.json").read_text())
    run = load_run(run_dir)
    model, cfg = run.model, run.cfg
    if trained_only:
        from vlmtrain.model.build import apply_freeze

        apply_freeze(model, cfg.frozen(), cfg.tune_vit_from_layer)
    pixels = ImageLoader(run.image_processor, cfg.image_aspect_ratio).process([open_rgb(work / spec["image"])])
    encoded = encoder(run, per_image=run.per_image).encode_many([(c, 1) for c in spec["conversations"]],
                                                                 check_reference=True)
    steps = []
    for enc in encoded:
        ids, labels = torch.from_numpy(enc.input_ids)[None], torch.from_numpy(enc.labels)[None]
        model.train()
        model.zero_grad(set_to_none=True)
        torch.manual_seed(spec["seed"])
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels, labels=labels)
        blocks = moe_blocks(model)
        moe = cfg.router_aux_loss_coef * torch.stack([b.last.aux_loss for _, b in blocks]).sum() if blocks else 0.0
        (out.loss + moe).backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        named = (moellava_state_dict(grads, model.config.text_config.model_type) if blocks else llava_state_dict(grads))
        steps.append({"ids": ids[0], "labels": labels[0], "reference_masked": enc.reference_masked,
                      "loss": (out.loss + moe).detach(), "moe_loss": moe.detach() if blocks else None, "grads": named,
                      "pixel_values": pixels})
    return steps


def with_image(ids: list[int], fill: list[int]) -> list[int]:
    """The reference's ids (one IMAGE_INDEX per image) with the image replaced by ``fill``."""
    at = ids.index(IMAGE_INDEX)
    return ids[:at] + fill + ids[at + 1:]


def assert_same_answer(theirs: dict[str, Any], we: dict[str, Any]) -> None:
    """Its prompt, ids (its one -200 for our image tokens), tokenizer size, pixels, logits and greedy answer
    are ours."""
    assert theirs["prompt"] == we["prompt"]
    assert with_image(theirs["input_ids"].tolist(), [we["image_id"]] * we["per_image"]) == we["input_ids"].tolist()
    if theirs["vocab_len"] is not None:  # its slow tokenizer, built from the export's files alone
        assert theirs["vocab_len"] == len(we["tokenizer"])
    torch.testing.assert_close(we["pixel_values"], theirs["pixel_values"], rtol=0, atol=0)
    torch.testing.assert_close(we["logits"], theirs["logits"], rtol=1e-5, atol=1e-5)
    assert we["tokenizer"].decode(theirs["new_ids"].tolist(), skip_special_tokens=True).strip() == we["answer"]


def assert_same_step(t: dict[str, Any], we: dict[str, Any]) -> bool:
    """One training step's ids, aux term (stage 3), labels, loss and every gradient the reference computes are
    ours. False, after the ids and aux term, for a sample its length arithmetic masks whole (its "tokenization
    mismatch": a NaN loss there; ours trains it, and our replay of that arithmetic must say so)."""
    ids, labels = t["ids"].tolist(), t["labels"].tolist()
    n = len(we["ids"]) - len(ids) + 1  # the image's tokens in ours
    at = ids.index(IMAGE_INDEX)
    assert with_image(ids, we["ids"][at:at + n].tolist()) == we["ids"].tolist()
    if we["moe_loss"] is not None:
        torch.testing.assert_close(we["moe_loss"], t["moe_loss"], rtol=1e-5, atol=1e-6)
    masked_whole = all(x == -100 for x in labels)
    assert we["reference_masked"] == masked_whole
    if masked_whole:
        return False
    assert labels[:at] + [-100] * n + labels[at + 1:] == we["labels"].tolist()  # (its label there is -100 too)
    torch.testing.assert_close(we["loss"], t["loss"], rtol=1e-5, atol=1e-6)
    assert set(t["grads"]) <= set(we["grads"]), set(t["grads"]) - set(we["grads"])
    for k in t["grads"]:
        torch.testing.assert_close(we["grads"][k], t["grads"][k], rtol=1e-4, atol=1e-6, msg=k)
    return True


def our_logits(run_dir: Path, work: Path) -> list[torch.Tensor]:
    """The logits of our training forward on each spec conversation (a step computes its loss without
    them): the run's encoder and image loader, the model in train mode."""
    from vlmtrain.data.images import ImageLoader, open_rgb
    from vlmtrain.generate import load_run

    spec = json.loads((work / "spec.json").read_text())
    run = load_run(run_dir)
    pixels = ImageLoader(run.image_processor, run.cfg.image_aspect_ratio).process([open_rgb(work / spec["image"])])
    run.model.train()
    out = []
    for enc in encoder(run, per_image=run.per_image).encode_many([(c, 1) for c in spec["conversations"]]):
        ids = torch.from_numpy(enc.input_ids)[None]
        with torch.no_grad():
            out.append(run.model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels).logits[0])
    return out


def our_trainable(run_dir: Path) -> set[str]:
    """What the run's stage trains (its config's freeze, as our trainer applies it), in LLaVA's names
    (ConvLLaVA's: convllava_ours.convllava_names of them)."""
    from vlmtrain.generate import load_run
    from vlmtrain.model.build import apply_freeze
    from vlmtrain.model.llava_export import llava_state_dict

    run = load_run(run_dir)
    apply_freeze(run.model, run.cfg.frozen(), run.cfg.tune_vit_from_layer)
    return set(llava_state_dict({n: p for n, p in run.model.named_parameters() if p.requires_grad}))


def clip_processor_json(side: int) -> dict:
    """openai/clip-vit-large-patch14-336's preprocessor_config.json as the Hub has it (the old feature-extractor
    form, sizes as plain ints), at ``side`` px instead of 336: what a reference repo's processor is built from."""
    return {"crop_size": side, "do_center_crop": True, "do_normalize": True, "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": side}


def write_pretrained_parts(folder: Path, text: dict, vision: dict) -> tuple[Path, Path]:
    """A random LLM (``text``, a config mapping) in ``folder/llm`` and a random CLIP tower (``vision``) with
    the Hub's processor json in ``folder/clip``: the two checkpoints a stage 1 starts from, as on the Hub."""
    from transformers import AutoConfig, AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel

    AutoModelForCausalLM.from_config(AutoConfig.for_model(**text)).save_pretrained(folder / "llm")
    CLIPVisionModel(CLIPVisionConfig(**{k: v for k, v in vision.items() if k != "model_type"})).save_pretrained(
        folder / "clip")
    (folder / "clip" / "preprocessor_config.json").write_text(json.dumps(clip_processor_json(vision["image_size"])))
    return folder / "llm", folder / "clip"
