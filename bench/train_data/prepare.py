"""Inputs for the data-path benchmark, built once under OUT (bench/out/train_data by default).

- ``mix665k.json``: the 665k-shaped LLaVA JSON (bench/common/mix665k.py).
- ``images/``: every image path the JSON references, each a hard link to one of a pool of ~300 real
  JPEG files (random crops / rescales / flips of the real photographs found on this machine, at
  COCO / VG / TextVQA / OCR-VQA-like sizes, quality 90), so the benchmark decodes real JPEGs.
- ``arrow/``: the same records as a datasets folder with vlmdata.contract's schema + blend.json, written
  directly (streaming, in batches) because `vlmdata blend` had not landed when this was written.
- ``tokenizer/``: a Llama-style SentencePiece tokenizer (non-legacy, like Vicuna-1.5) trained on a
  sample of the records' text.
"""
from __future__ import annotations

import json
import os
import random
import time
import zlib
from pathlib import Path

PHOTOS = [
    "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
]
EXTRA_PHOTOS = ["/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/share/doc/rust/html/embedded-book/assets/f3.jpg"]
SIZES = [(640, 480), (480, 640), (640, 427), (500, 375), (640, 640), (800, 600), (1024, 768), (300, 450), (500, 333)]


def _photos() -> list[Path]:
    import matplotlib

    base = Path(matplotlib.__file__).parent.parent
    found = [base / p for p in PHOTOS] + [Path(p) for p in EXTRA_PHOTOS]
    return [p for p in found if p.is_file()]


def make_pool(pool: Path, n: int = 300, seed: int = 0) -> list[Path]:
    from PIL import Image, ImageEnhance, ImageOps

    pool.mkdir(parents=True, exist_ok=True)
    have = sorted(pool.glob("*.jpg"))
    if len(have) >= n:
        return have[:n]
    rng = random.Random(seed)
    srcs = [Image.open(p).convert("RGB") for p in _photos()]
    if not srcs:
        raise SystemExit("no real photographs found on this machine for the image pool")
    out = []
    for i in range(n):
        src = rng.choice(srcs)
        w, h = src.size
        cw, ch = rng.randint(w // 3, w), rng.randint(h // 3, h)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        im = src.crop((x, y, x + cw, y + ch)).resize(rng.choice(SIZES), Image.BICUBIC)
        if rng.random() < 0.5:
            im = ImageOps.mirror(im)
        im = ImageEnhance.Color(im).enhance(rng.uniform(0.3, 1.7))
        p = pool / f"{i:04d}.jpg"
        im.save(p, "JPEG", quality=90)
        out.append(p)
    return out


def link_images(json_path: Path, root: Path, pool: list[Path]) -> int:
    from bench.common.mix665k import referenced_images

    n = 0
    for rel in sorted(referenced_images(json_path)):
        dst = root / rel
        if dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(pool[zlib.crc32(rel.encode()) % len(pool)], dst)
        n += 1
    return n


def write_arrow(json_path: Path, out: Path, image_root: Path, batch: int = 20_000) -> None:
    import datasets
    import pyarrow as pa

    from vlmdata.jsonstream import iter_json_records

    from vlmdata import contract

    schema = contract.BASE_SCHEMA
    batches, rows = [], {k: [] for k in schema.names}

    def flush():
        if rows[contract.ID]:
            batches.append(pa.RecordBatch.from_pydict(rows, schema=schema))
            for v in rows.values():
                v.clear()

    for _, r in iter_json_records(json_path):
        images = [r["image"]] if "image" in r else []
        turns = [{"from": t["from"], "value": t["value"]} for t in r["conversations"]]
        rows[contract.ID].append(str(r["id"]))
        rows[contract.SOURCE].append(images[0].split("/")[0] if images else "sharegpt")
        rows[contract.IMAGES].append(images)
        rows[contract.CONVERSATIONS].append(turns)
        rows[contract.N_IMAGES].append(len(images))
        rows[contract.TEXT_CHARS].append(sum(len(t["value"]) for t in turns))
        if len(rows[contract.ID]) >= batch:
            flush()
    flush()
    table = pa.Table.from_batches(batches, schema=schema)
    del batches
    datasets.Dataset(table).save_to_disk(str(out), max_shard_size="256MB")
    contract.write_blend_meta(out, contract.blend_meta(image_root=image_root, recipe={"name": "bench-mix665k"},
                                                       note="written by bench/train_data/prepare.py"))


def train_tokenizer(json_path: Path, out: Path, n_texts: int = 30_000):
    from vlmdata.jsonstream import iter_json_records
    from vlmtrain.data.tokenizers import train_llama_sentencepiece

    texts = []
    for i, r in iter_json_records(json_path):
        texts += [t["value"].replace("<image>", "") for t in r["conversations"]]
        if len(texts) >= n_texts:
            break
    return train_llama_sentencepiece(texts, 4000, legacy=False, workdir=out)


def prepare(out: Path, records: int) -> dict:
    from bench.common import mix665k

    out.mkdir(parents=True, exist_ok=True)
    stamp = out / "prepared.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("records") == records:
        return json.loads(stamp.read_text())
    t = {}
    t0 = time.perf_counter()
    jp = mix665k.write(out / "mix665k.json", records)
    t["json_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pool = make_pool(out / "pool")
    linked = link_images(jp, out / "images", pool)
    t["images_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    import shutil

    shutil.rmtree(out / "arrow", ignore_errors=True)
    write_arrow(jp, out / "arrow", (out / "images").resolve())
    t["arrow_s"] = time.perf_counter() - t0
    train_tokenizer(jp, out / "tokenizer")
    info = {"records": records, "json_bytes": jp.stat().st_size, "images_linked": linked, "pool": len(pool), **t}
    stamp.write_text(json.dumps(info, indent=2))
    return info


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("bench/out/train_data"))
    ap.add_argument("--records", type=int, default=665_298)
    a = ap.parse_args()
    print(json.dumps(prepare(a.out, a.records), indent=2))
