"""Synthetic inputs shaped like the real LLaVA-family JSONs (datasets.md §7, §9) and tiny image trees."""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmdata.blend.pipeline import Options, run_blend, run_report
from vlmdata.blend.recipe import resolve
from vlmdata.manifest import load_catalog
from vlmdata.state import Root

REPO_ROOT = Path(__file__).resolve().parents[2]


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (3, 2), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()  # a real 3x2 image: --deep decodes it


def write_json(path: Path, records: list[Any], *, jsonl: bool = False, indent: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records, indent=indent), encoding="utf-8")
    return path


def touch_images(root: Path, paths: list[str], data: bytes = PNG) -> None:
    for p in paths:
        f = root / p
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)


def turns(*values: str) -> list[dict[str, str]]:
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(values)]


@dataclass
class Shape:
    """How the records of one input look; enough variety to cover each real source."""

    folders: list[str]  # image folders, relative to the JSON's own base (before image_prefix)
    n: int = 6  # image records
    text_only: int = 0  # extra text-only records
    ids: str = "str"  # str | int | none | idx | dup (every id the same)
    token: str = "mixed"  # start | end | none | mixed
    multi: bool = False  # every third image record has two images
    video: int = 0  # extra records with a `video` key (dropped)
    extra: dict[str, Any] = field(default_factory=dict)  # extra keys on every record
    ext: str = "jpg"


@dataclass
class Made:
    records: list[dict[str, Any]]
    images: list[str]  # as written in the records
    kept: int
    dropped: dict[str, int]


def make(shape: Shape, tag: str) -> Made:
    recs: list[dict[str, Any]] = []
    images: list[str] = []
    for i in range(shape.n):
        folder = shape.folders[i % len(shape.folders)]
        base = f"{folder}/{tag}_{i}" if folder else f"{tag}_{i}"
        imgs = [f"{base}.{shape.ext}"]
        if shape.multi and i % 3 == 2:
            imgs.append(f"{base}_b.{shape.ext}")
        images += imgs
        pos = shape.token if shape.token != "mixed" else ("start", "end", "none")[i % 3]
        if len(imgs) > 1:
            pos = "start"  # one token per image
        q = f"Question {i} about {tag}?"
        tok = "<image>\n" * len(imgs)
        first = {"start": tok + q, "end": q + "\n" + tok.rstrip("\n"), "none": q}[pos]
        conv = turns(first, f"Answer {i}.") + (turns(f"Follow-up {i}?", f"More {i}.") if i % 2 else [])
        rec: dict[str, Any] = {}
        _set_id(rec, shape.ids, i, tag)
        rec["image"] = imgs[0] if len(imgs) == 1 else imgs
        rec["conversations"] = conv
        rec.update(shape.extra)
        recs.append(rec)
    for j in range(shape.text_only):
        rec = {}
        _set_id(rec, shape.ids, shape.n + j, tag)
        rec["conversations"] = turns(f"Plain question {j}", f"Plain answer {j}")
        rec["model"] = ""
        recs.append(rec)
    for k in range(shape.video):
        recs.append({"id": f"{tag}_video_{k}", "video": f"videos/{k}.mp4",
                     "conversations": turns("<video>\nWhat happens?", "Nothing.")})
    dropped = {"video not supported": shape.video} if shape.video else {}
    return Made(recs, images, shape.n + shape.text_only, dropped)


def _set_id(rec: dict[str, Any], style: str, i: int, tag: str) -> None:
    if style == "str":
        rec["id"] = f"{tag}_{i:06d}"
    elif style == "int":
        rec["id"] = i
    elif style == "idx":
        rec["idx"] = f"{tag}{i}"
    elif style == "dup":
        rec["id"] = "0"


# The inputs of the shipped recipes, keyed by dataset:file, shaped like the real files.
SHAPES: dict[str, Shape] = {
    "llava_pretrain:blip_laion_cc_sbu_558k.json": Shape(["00453", "00000"], token="end", ids="str"),
    "llava_instruct:llava_v1_5_mix665k.json": Shape(
        ["coco/train2017", "gqa/images", "ocr_vqa/images", "textvqa/train_images", "vg/VG_100K", "vg/VG_100K_2"],
        n=12, text_only=3, ids="int"),
    "sharegpt4v:share-captioner_coco_lcs_sam_1246k_1107.json": Shape(
        ["coco/train2017", "llava/llava_pretrain/images/00001", "sam/images"], token="start"),
    "sharegpt4v:sharegpt4v_instruct_gpt4-vision_cap100k.json": Shape(
        ["coco/train2017", "sam/images", "web-celebrity/images", "web-landmark/images", "wikiart/images",
         "share_textvqa/images"], token="start"),
    "sharegpt4v:sharegpt4v_mix665k_cap23k_coco-ap9k_lcs3k_sam9k_div2k.json": Shape(
        ["coco/train2017", "gqa/images", "sam/images", "llava/llava_pretrain/images/00002"], text_only=2),
    "allava:allava_laion/ALLaVA-Caption-LAION-4V.json": Shape(
        ["allava_laion/images"], ext="jpeg", extra={"original_caption": "a photo", "url": "http://x/y.jpg"}),
    "allava:allava_laion/ALLaVA-Instruct-LAION-4V.json": Shape(
        ["allava_laion/images"], ext="jpeg", extra={"original_caption": "a photo", "url": "http://x/y.jpg"}),
    "allava:allava_vflan/ALLaVA-Caption-VFLAN-4V.json": Shape(["allava_vflan/images/images_191task_1k"], ext="png"),
    "allava:allava_vflan/ALLaVA-Instruct-VFLAN-4V.json": Shape(["allava_vflan/images/images_191task_1k"], ext="png"),
    "vflan:annotation_191-task_1k.json": Shape([""], ids="dup", extra={"task_name": "VQA-E"}),
    "moe_llava:train_json/llava_image_.json": Shape(["llava_image/00453"], token="end", ids="dup"),
    "moe_llava:train_json/la_tune_256k.json": Shape(["mimicit_tune/LA"], multi=True, video=2, ids="none"),
    "moe_llava:train_json/lrv_tune_331k.json": Shape(["lrv_tune"], ids="none"),
    "moe_llava:train_json/lvis_tune_220k_.json": Shape(["lvis_tune"], ids="none", multi=True),
    "moe_llava:train_json/svit_tune_157k.json": Shape(["svit_tune"], ids="none"),
    "moe_llava:train_json/nlp_tune.json": Shape(["unused"], n=0, text_only=4, ids="none"),
    "moe_llava:train_json/llava_image_tune_.json": Shape(["llava_image_tune/coco/train2017"], text_only=1, ids="dup"),
}


class Tree:
    """A data root with the shipped recipes' inputs placed and their images in the layout view."""

    def __init__(self, path: Path) -> None:
        self.root = Root(path)
        self.catalog = load_catalog()
        self.made: dict[str, Made] = {}

    def place(self, key: str, shape: Shape | None = None, **kw: Any) -> Made:
        dataset, _, name = key.partition(":")
        spec = self.catalog.dataset(dataset).file(name)
        assert spec is not None
        made = make(shape or SHAPES[key], name.rsplit("/", 1)[-1].split(".")[0])
        write_json(self.root.store_path(spec.place.to), made.records, **kw)
        self.made[key] = made
        return made

    def view(self, layout: str) -> Path:
        lay = self.catalog.layout(layout)
        return self.root.layout_dir(layout) / lay.image_folder

    def place_recipe(self, recipe: str, *, images: bool = True) -> dict[str, Made]:
        b = self.catalog.blend(recipe)
        out = {}
        for e in b.entries:
            key = f"{e.dataset}:{e.file}"
            made = self.made.get(key) or self.place(key)
            out[e.name] = made
            if images:
                prefix = e.image_prefix + "/" if e.image_prefix else ""
                touch_images(self.view(b.layout), [prefix + p for p in made.images])
        return out

    def resolve(self, recipe: str, **kw: Any):
        return resolve(self.catalog.blend(recipe), self.catalog, self.root, **kw)

    def blend(self, recipe: str, out: Path | None = None, image_root: Path | None = None, **opts: Any):
        opts.setdefault("progress", False)
        opts.setdefault("max_drop", 100.0)  # these tests drop records on purpose; tests/firsthour tests the limit
        res = self.resolve(recipe, image_root=image_root)
        return run_blend(res, Options(**opts), out or self.root.path / "blends" / res.recipe.name)

    def report(self, recipe: str, **opts: Any) -> dict[str, Any]:
        opts.setdefault("progress", False)
        return run_report(self.resolve(recipe), Options(**opts))


def rows(folder: Path) -> list[dict[str, Any]]:
    import datasets

    return datasets.load_from_disk(str(folder)).to_list()
