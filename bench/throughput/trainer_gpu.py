"""`vlmtrain run` itself, as a user runs it, on LLaVA-shaped data: tokens/s, MFU and data wait per step.

bench/train_throughput.py times vlmtrain's model in its own loop on synthetic tensors (bf16 weights and
AdamW states). This runs the whole command instead: ``python -m vlmtrain.cli run CONFIG`` on a blend
written here, whose samples look like the 665k mix's (one JPEG of ``--image-px`` per sample on 90% of
them, multi-turn text of 20-280 pseudo-words: ~575 tokens on average with the 4,000-piece tokenizer the
run trains, about twice the 665k mix's ~295), so the JPEG decode, pad and resize, the tokenizer, the
collator (packed or padded), the Trainer, fp32 master weights under bf16 autocast and the metrics are
all in the figure. Steady state = the logged steps after ``--skip`` warm-up steps (compile, allocator).

    python -m bench.throughput.trainer_gpu --label "1.6B packed layers" --set packing=true --set compile=layers
    python -m bench.throughput.trainer_gpu --tiny --steps 4          # CPU smoke test: tiny shapes, seconds
    python -m bench.throughput.trainer_gpu --profile 12,13 --profile-out prof.txt   # and where its steps go

Prints one JSON line: the means over the steady steps of tokens_per_s, mfu, data_wait_frac,
padding_frac, the whole command's seconds, and the config it ran; with ``--profile`` the profiled steps
(slower: the profiler records every kernel) are left out of those means.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.train_throughput import LLMS, TINY_TEXT, TINY_VISION, VISION  # the benchmark loop's shapes

STEADY_KEYS = ("tokens_per_s", "samples_per_s", "model_tflops_per_s", "mfu", "data_wait_frac", "padding_frac")


def pseudo_words(rng: random.Random, n: int = 3000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(n)]


def write_image(path: Path, px: int, rng: random.Random) -> None:
    """A photo-sized JPEG that compresses like one: a smooth low-resolution field scaled up, plus noise."""
    import numpy as np
    from PIL import Image

    h = px * 3 // 4
    g = np.random.default_rng(rng.randrange(2**32))
    base = Image.fromarray(g.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((px, h), Image.BICUBIC)
    arr = np.asarray(base, dtype=np.int16) + g.integers(-12, 13, (h, px, 3))
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def write_blend(out: Path, n: int, px: int, seed: int = 0) -> Path:
    """``n`` records in the blend contract (vlmdata.contract), images under ``out/images``."""
    from vlmtrain.tinydata import save_records

    rng = random.Random(seed)
    words = pseudo_words(rng)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        images = []
        if rng.random() < 0.9:
            images = [f"{i:06d}.jpg"]
            write_image(out / "images" / images[0], px, rng)
        budget, conv = rng.randint(20, 280), []  # pseudo-words, ~4 tokens each
        while budget > 0:
            q, a = rng.randint(6, 20), min(budget, rng.randint(10, 120))
            conv += [{"from": "human", "value": " ".join(rng.choices(words, k=q)) + "?"},
                     {"from": "gpt", "value": " ".join(rng.choices(words, k=a)) + "."}]
            budget -= q + a
        if images:
            conv[0]["value"] = "<image>\n" + conv[0]["value"]
        records.append((f"bench-{i:06d}", images, conv))
    save_records(out, records, source="bench", note="bench/throughput/trainer_gpu.py")
    return out


def run_config(args, data: Path, out: Path) -> dict:
    configs = REPO / "configs"
    return {
        "stage": 2, "random_init": True,
        "text_config": TINY_TEXT if args.tiny else str(configs / LLMS[args.llm]),
        "vision_config": TINY_VISION if args.tiny else str(configs / VISION["clip-l-336"]),
        "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "tokenizer_train_vocab_size": 4000, "version": "vicuna_v1", "dataset_dir": str(data),
        "image_aspect_ratio": "pad", "group_by_modality_length": True, "model_max_length": 2048,
        "output_dir": str(out), "per_device_train_batch_size": args.batch_size, "gradient_accumulation_steps": 1,
        "max_steps": args.steps, "learning_rate": 2.0e-5, "warmup_ratio": 0.03, "lr_scheduler_type": "cosine",
        "weight_decay": 0.0, "bf16": not args.tiny, "save_strategy": "no", "logging_steps": 1, "seed": 42,
        "report_to": [], "dataloader_num_workers": args.workers,
    }


def steady(rows: list[dict], skip: int, profiled: set[int] = frozenset()) -> dict:
    steps = [r for r in rows if "tokens_per_s" in r and r.get("step", 0) > skip and r["step"] not in profiled]
    out = {"steady_steps": len(steps)}
    for k in STEADY_KEYS:
        vals = [r[k] for r in steps if r.get(k) is not None]
        out[k] = statistics.fmean(vals) if vals else None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llm", choices=sorted(LLMS), default="stablelm-1.6b")
    ap.add_argument("--tiny", action="store_true", help="tiny random shapes, fp32 (CPU smoke test)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/vlmtrain_gpu_bench"))
    ap.add_argument("--samples", type=int, default=0, help="records in the blend (default: enough for --steps)")
    ap.add_argument("--image-px", type=int, default=640, help="image width (height 3/4 of it)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--skip", type=int, default=5, help="warm-up steps left out of the steady figures")
    ap.add_argument("--workers", type=int, default=8, help="dataloader_num_workers")
    ap.add_argument("--set", action="append", default=[], help="one more `vlmtrain run --set KEY=VALUE`")
    ap.add_argument("--profile", help="A,B: `profile_steps: [A, B]` (left out of the steady figures)")
    ap.add_argument("--profile-out", type=Path, help="copy the run's profile table here")
    ap.add_argument("--label", default="")
    ap.add_argument("--timeout", type=int, default=600)
    args = ap.parse_args(argv)

    data = args.work / f"blend-{args.image_px}"
    if not (data / "blend.json").is_file():
        write_blend(data, args.samples or args.batch_size * (args.steps + 2), args.image_px)
    out = args.work / f"run-{os.getpid()}"
    cfg_path = args.work / f"config-{os.getpid()}.json"  # JSON is YAML: vlmtrain run reads it as a config
    cfg_path.write_text(json.dumps(run_config(args, data, out), indent=1))
    sets = args.set + ([f"profile_steps=[{args.profile}]"] if args.profile else [])
    cmd = [sys.executable, "-m", "vlmtrain.cli", "run", str(cfg_path)] + [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        print(json.dumps({"label": args.label, "error": f"exit {proc.returncode}", "wall_s": round(wall, 1)}))
        return 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    first, last = map(int, args.profile.split(",")) if args.profile else (0, -1)
    profiled = set(range(first, last + 1))
    if args.profile_out and (out / "profile-rank0.txt").is_file():
        args.profile_out.write_text((out / "profile-rank0.txt").read_text())
    result = {"label": args.label, "command": "vlmtrain run", "llm": "tiny" if args.tiny else args.llm,
              "batch_size": args.batch_size, "sets": args.set, "profile": args.profile, "steps": args.steps, "skip": args.skip,
              "wall_s": round(wall, 1), **steady(rows, args.skip, profiled),
              "final": next((r for r in reversed(rows) if "train_runtime" in r), None)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
