"""`image_decode: draft` against the exact default: time per image and the pixel difference.

Images: JPEGs (quality 90) of several sizes, each a mosaic of native-resolution crops of the real
photographs on this machine (the ones bench/train_data/prepare.py uses): no upscaling, so the fine
detail that a reduced-scale decode loses is real photographic detail. Each image goes through
vlmtrain's ImageLoader with a CLIP-L/14-336 processor (the PIL backend; LLaVA-1.5's `pad`, and
`square`), exact and draft; the table gives the median time per image (decode + pad + processor) and
the difference of the pixel values the model sees, in 0-255 units (the normalised difference x std x
255): mean and max absolute, and PSNR.

    python -m bench.throughput.bench_jpeg_draft [--per-size 12] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SIZES = [(640, 480), (1024, 768), (1600, 1200), (2048, 1536), (4032, 3024)]


def mosaic(size: tuple[int, int], photos, rng):
    from PIL import Image

    w, h = size
    out = Image.new("RGB", size)
    tile = 256
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            src = rng.choice(photos)
            sx, sy = rng.randint(0, src.width - tile), rng.randint(0, src.height - tile)
            out.paste(src.crop((sx, sy, sx + tile, sy + tile)), (x, y))
    return out


def processor():
    import transformers

    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})


def run(per_size: int, seed: int) -> list[dict]:
    import random

    import torch
    from PIL import Image

    from bench.train_data.prepare import _photos
    from vlmtrain.data.images import ImageLoader

    photos = [Image.open(p).convert("RGB") for p in _photos()]
    if not photos:
        raise SystemExit("no real photographs found on this machine")
    proc = processor()
    std = torch.tensor(proc.image_std).view(1, 3, 1, 1)
    rng = random.Random(seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            names = []
            for k in range(per_size):
                name = f"{size[0]}x{size[1]}_{k}.jpg"
                mosaic(size, photos, rng).save(Path(tmp) / name, quality=90)
                names.append(name)
            for aspect in ("pad", "square"):
                exact, draft = ImageLoader(proc, aspect), ImageLoader(proc, aspect, draft=True)
                times = {"exact": [], "draft": []}
                diffs, maxes, mses = [], [], []
                for name in names:
                    out = {}
                    for label, loader in (("exact", exact), ("draft", draft)) if len(times["exact"]) % 2 else \
                            (("draft", draft), ("exact", exact)):
                        t0 = time.perf_counter()
                        out[label] = loader.load(Path(tmp), [name])
                        times[label].append(time.perf_counter() - t0)
                    d = (out["draft"] - out["exact"]) * std * 255
                    diffs.append(float(d.abs().mean()))
                    maxes.append(float(d.abs().max()))
                    mses.append(float((d ** 2).mean()))
                mse = statistics.mean(mses)
                row = {"size": f"{size[0]}x{size[1]}", "aspect": aspect, "images": per_size,
                       "exact_ms": 1000 * statistics.median(times["exact"]),
                       "draft_ms": 1000 * statistics.median(times["draft"]),
                       "mean_abs_255": statistics.mean(diffs), "max_abs_255": max(maxes),
                       "psnr_db": math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)}
                row["speedup"] = row["exact_ms"] / row["draft_ms"]
                rows.append(row)
                print(f"{row['size']:>10s} {aspect:6s} exact {row['exact_ms']:6.1f} ms  draft {row['draft_ms']:6.1f} ms "
                      f"({row['speedup']:.2f}x)  |diff| mean {row['mean_abs_255']:.2f} max {row['max_abs_255']:.0f} "
                      f"(0-255)  PSNR {row['psnr_db']:.1f} dB", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-size", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # as in a DataLoader worker
    rows = run(args.per_size, args.seed)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
