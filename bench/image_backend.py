"""The image processor's two backends side by side: PIL (vlmtrain's default, LLaVA's pixels) vs torchvision.

    python bench/image_backend.py --images 240 --json out.json

Runs vlmtrain's own image path (``ImageLoader`` over the processor ``vlmtrain.train.run`` builds from a
tower folder holding openai/clip-vit-large-patch14-336's preprocessor_config.json) on JPEGs of LLaVA-like
sizes, for ``image_aspect_ratio`` pad and square, one image at a time in one thread (what each
DataLoader worker does). The backends take turns pass by pass and the best pass of each counts, in
CPU seconds of this process (a shared, loaded machine steals wall time, not CPU time; wall figures are
given too). Reports per backend: images/s, and for torchvision the largest pixel
difference from PIL (in normalised units and in 0-255 steps of the input), plus whether the default
build is the PIL processor and equals the independent LLaVA reference (tests/train_data/llava_pixels.py)
bit for bit. Without torchvision only the PIL half runs.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "train_data"))

CLIP_336 = {"crop_size": 336, "do_center_crop": True, "do_normalize": True, "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 336}


def _passes(loaders: dict, folder: Path, names: list[str], repeat: int) -> tuple[dict, dict, dict]:
    """Backends in turn, ``repeat`` passes each: best images/s by CPU time and by wall time, and the pixels."""
    cpu = {k: float("inf") for k in loaders}
    wall = dict(cpu)
    pixels: dict = {}
    for _ in range(repeat):
        for k, loader in loaders.items():
            c0, w0 = time.process_time(), time.perf_counter()
            px = [loader.load(folder, [n])[0].numpy() for n in names]
            cpu[k] = min(cpu[k], time.process_time() - c0)
            wall[k] = min(wall[k], time.perf_counter() - w0)
            pixels[k] = np.stack(px)
    return ({k: len(names) / v for k, v in cpu.items()}, {k: len(names) / v for k, v in wall.items()}, pixels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: as in one DataLoader worker)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch
    import transformers
    from PIL import Image

    from llava_pixels import LLAVA_LIKE_SIZES, llava_pixels, textured_jpeg
    from vlmtrain.config import TrainConfig
    from vlmtrain.data.image_processor import backend_of
    from vlmtrain.data.images import ImageLoader
    from vlmtrain.train.run import build_image_processor

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-image-backend-"))
    tower = work / "clip-336"
    tower.mkdir()
    (tower / "preprocessor_config.json").write_text(json.dumps(CLIP_336))
    imgs = work / "img"
    imgs.mkdir()
    names = []
    for i in range(args.images):
        textured_jpeg(imgs / f"{i}.jpg", LLAVA_LIKE_SIZES[i % len(LLAVA_LIKE_SIZES)], seed=i)
        names.append(f"{i}.jpg")
    vc = transformers.CLIPVisionConfig(image_size=336, patch_size=14)
    has_tv = importlib.util.find_spec("torchvision") is not None
    res: dict = {
        "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "torchvision": __import__("torchvision").__version__ if has_tv else None,
        "images": args.images, "threads": args.threads, "repeat": args.repeat, "rows": [],
    }
    default = build_image_processor(TrainConfig(vision_tower=str(tower)), vc)
    res["default_backend"] = backend_of(default)
    res["unpinned_auto_backend"] = backend_of(transformers.AutoImageProcessor.from_pretrained(str(tower)))
    ref_names = names[:len(LLAVA_LIKE_SIZES)]
    tv = build_image_processor(TrainConfig(vision_tower=str(tower), image_backend="torchvision"), vc) if has_tv else None
    for aspect in ("pad", "square"):
        row: dict = {"aspect": aspect}
        loaders = {"pil": ImageLoader(default, aspect)}
        if tv is not None:
            loaders["torchvision"] = ImageLoader(tv, aspect)
        cpu, wall, px = _passes(loaders, imgs, names, args.repeat)
        pil_px = px["pil"]
        row["pil_images_per_cpu_s"], row["pil_images_per_wall_s"] = round(cpu["pil"], 1), round(wall["pil"], 1)
        ref = np.stack([llava_pixels(Image.open(imgs / n).convert("RGB"), aspect) for n in ref_names])
        row["pil_equals_llava_reference"] = bool(np.array_equal(pil_px[:len(ref_names)], ref))
        if tv is not None:
            row["torchvision_backend"] = backend_of(tv)
            diff = np.abs(px["torchvision"] - pil_px)
            std = np.array(CLIP_336["image_std"], dtype=np.float32).reshape(1, 3, 1, 1)
            steps = diff * std * 255  # back to 0-255 input steps
            row.update({"torchvision_images_per_cpu_s": round(cpu["torchvision"], 1),
                        "torchvision_images_per_wall_s": round(wall["torchvision"], 1),
                        "speedup_cpu": round(cpu["torchvision"] / cpu["pil"], 2),
                        "speedup_wall": round(wall["torchvision"] / wall["pil"], 2),
                        "max_abs_diff_normalised": float(diff.max()), "max_diff_0_255": float(steps.max()),
                        "mean_diff_0_255": float(steps.mean()),
                        "share_of_pixels_differing": float((steps > 0.5).mean())})
        res["rows"].append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
