"""The image processor's two backends side by side: PIL (vlmtrain's default, LLaVA's pixels) vs torchvision.

    python bench/image_backend.py --images 240 --json out.json

Runs vlmtrain's own image path (``ImageLoader`` over the processor ``vlmtrain.train.run`` builds from a
tower folder holding openai/clip-vit-large-patch14-336's preprocessor_config.json) on JPEGs of LLaVA-like
sizes, for ``image_aspect_ratio`` pad and square, one image at a time in one thread (what each
DataLoader worker does). Reports per backend: images/s, and for torchvision the largest pixel
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


def _time(loader, folder: Path, names: list[str], repeat: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        px = [loader.load(folder, [n])[0].numpy() for n in names]
        best = min(best, time.perf_counter() - t0)
        out = np.stack(px)
    return len(names) / best, out


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
    for aspect in ("pad", "square"):
        row: dict = {"aspect": aspect}
        pil_ips, pil_px = _time(ImageLoader(default, aspect), imgs, names, args.repeat)
        row["pil_images_per_s"] = round(pil_ips, 1)
        ref = np.stack([llava_pixels(Image.open(imgs / n).convert("RGB"), aspect) for n in ref_names])
        row["pil_equals_llava_reference"] = bool(np.array_equal(pil_px[:len(ref_names)], ref))
        if has_tv:
            tv = build_image_processor(TrainConfig(vision_tower=str(tower), image_backend="torchvision"), vc)
            row["torchvision_backend"] = backend_of(tv)
            tv_ips, tv_px = _time(ImageLoader(tv, aspect), imgs, names, args.repeat)
            diff = np.abs(tv_px - pil_px)
            std = np.array(CLIP_336["image_std"], dtype=np.float32).reshape(1, 3, 1, 1)
            steps = diff * std * 255  # back to 0-255 input steps
            row.update({"torchvision_images_per_s": round(tv_ips, 1), "speedup": round(tv_ips / pil_ips, 2),
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
