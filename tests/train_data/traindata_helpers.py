"""Helpers for the data tests: a corpus for tokenizers trained on the fly, tiny Arrow datasets with the
vlmdata blend schema (DESIGN.md), tiny image files. (A module of its own: test files import these,
and ``from conftest import ...`` would find another folder's conftest.)"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

WORDS = ("the a of and to in is what color image man woman person table shown picture there left right top "
         "bottom sign number text written building car street dog cat two three answer question describe "
         "detail background front wearing holding sitting standing USER ASSISTANT chat between curious user "
         "artificial intelligence assistant gives helpful detailed polite answers questions").split()


def sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def corpus(n: int = 2000, seed: int = 0, *, llama_like: bool = True) -> list[str]:
    """llama_like: ``USER`` only ever occurs inside words, so the vocabulary learns the piece
    ``USER`` but no ``▁U``: ``▁USER`` is then two tokens (``▁`` ``USER``) and ``USER`` one, the
    Llama-2 situation LLaVA's non-legacy "-1" was written for."""
    rng = random.Random(seed)
    ends = [".", "?", "!", ":", ",", "\n", " 12", " 3.5", " (x)"]
    out = []
    for _ in range(n):
        s = sentence(rng, 3, 30)
        if llama_like:
            s = re.sub(r"\bUSER", lambda m: rng.choice(["the", "a", "of", "to"]) + "USER", s)
        out.append(s + rng.choice(ends))
    return out


def write_image(path: Path, size=(24, 16), color=(200, 30, 30), fmt="JPEG") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def write_blend(out: Path, records: list[dict], image_root: Path | None) -> Path:
    """A dataset with exactly the DESIGN.md columns, as `vlmdata blend` writes it."""
    import datasets

    feats = datasets.Features({
        "id": datasets.Value("string"),
        "source": datasets.Value("string"),
        "images": datasets.Sequence(datasets.Value("string")),
        "conversations": [{"from": datasets.Value("string"), "value": datasets.Value("string")}],
        "n_images": datasets.Value("int32"),
        "text_chars": datasets.Value("int32"),
    })
    rows = {k: [] for k in feats}
    for r in records:
        images = r.get("images", [])
        rows["id"].append(str(r["id"]))
        rows["source"].append(r.get("source", "test"))
        rows["images"].append(images)
        rows["conversations"].append(r["conversations"])
        rows["n_images"].append(len(images))
        rows["text_chars"].append(sum(len(t["value"]) for t in r["conversations"]))
    datasets.Dataset.from_dict(rows, features=feats).save_to_disk(str(out))
    blend = {"recipe": {"name": "test"}, "schema_version": 1}
    if image_root is not None:
        blend["image_root"] = str(image_root)
    (out / "blend.json").write_text(json.dumps(blend))
    return out


def conv(*pairs: str) -> list[dict]:
    turns = []
    for i, v in enumerate(pairs):
        turns.append({"from": "human" if i % 2 == 0 else "gpt", "value": v})
    return turns


def collapse(ids, labels, token_id: int, per_image: int) -> tuple[list[int], list[int]]:
    """Our expanded image runs (``per_image`` copies of ``token_id``) -> one LLaVA IMAGE_TOKEN_INDEX (-200)
    each, as the reference's ids hold an image; the run's labels must all be -100."""
    out_ids, out_lab, i = [], [], 0
    ids, labels = list(ids), list(labels)
    while i < len(ids):
        if ids[i] == token_id:
            assert ids[i:i + per_image] == [token_id] * per_image and labels[i:i + per_image] == [-100] * per_image
            out_ids.append(-200)
            out_lab.append(-100)
            i += per_image
        else:
            out_ids.append(ids[i])
            out_lab.append(labels[i])
            i += 1
    return out_ids, out_lab
