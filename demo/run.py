"""`make demo`: the whole pipeline, offline, on the bundled demo mirror.

Runs the real commands a user would run, as separate processes, against a small generated mirror
shaped like the real sources (COCO/GQA/VG/TextVQA zips, LLaVA-Pretrain's zip without a top folder,
an OCR-VQA URL list with GIF/PNG images, a dead URL and a corrupt image, LLaVA-style JSONs):

  fetch (with --mirror) -> layout check -> blend llava-558k / llava-665k -> report
  -> vlmtrain stage 1 (projector) -> vlmtrain stage 2 (projector + LLM)

Everything lands in ./demo-out. Running it again is cheap: fetch finds everything in place.

    python -m vlmdata.demo [--out demo-out] [--steps 24]     # what `make demo` runs; or python -m demo.run

A tool of the source checkout (it needs configs/ and the training extra), not of the library.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from demo.build_mirror import build_demo_mirror

REPO = Path(__file__).resolve().parents[1]
DATASETS = ["coco", "gqa", "ocr_vqa", "ocr_vqa:dataset.json", "ocr_vqa:images-from-urls", "textvqa", "vg",
            "llava_instruct", "llava_pretrain"]


def _tool(name: str) -> list[str]:
    exe = Path(sys.executable).parent / name
    return [str(exe)] if exe.exists() else [sys.executable, "-m", {"vlmdata": "vlmdata.cli.app", "vlmtrain": "vlmtrain.cli"}[name]]


def step(title: str, argv: list[str], *, ok_codes: tuple[int, ...] = (0,), capture: bool = False) -> str:
    """Run one real command, show it, and stop the demo with its output if it fails."""
    print(f"\n=== {title}\n$ {' '.join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv))}", flush=True)
    t0 = time.time()
    proc = subprocess.run(argv, cwd=REPO, text=True, stdout=subprocess.PIPE if capture else None)
    if proc.returncode not in ok_codes:
        if capture and proc.stdout:
            print(proc.stdout)
        raise SystemExit(f"demo step failed ({title}): exit code {proc.returncode}")
    print(f"--- ok in {time.time() - t0:.1f}s", flush=True)
    return proc.stdout or ""


def losses(run_dir: Path) -> list[float]:
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r["loss"] for r in rows if "loss" in r]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "demo-out")
    ap.add_argument("--steps", type=int, default=24, help="training steps per stage")
    ap.add_argument("--per-set", type=int, default=12, help="images per demo image set")
    args = ap.parse_args()
    out = args.out.resolve()
    vlmdata, vlmtrain = _tool("vlmdata"), _tool("vlmtrain")

    print(f"Building the demo mirror in {out / 'mirror'} (small archives shaped like the real sources) ...")
    demo = build_demo_mirror(out / "mirror", n_per_set=args.per_set)
    root = out / "root"
    common = ["--root", str(root), "--manifests", str(demo.manifests)]

    step("What would be downloaded", vlmdata + ["plan", *DATASETS, *common, "--mirror", str(demo.mirror)])
    step("Fetch: download, verify, unpack, normalise OCR-VQA to .jpg, build the LLaVA layout",
         vlmdata + ["fetch", *DATASETS, "--layout", "llava", *common, "--mirror", str(demo.mirror)])
    layout_dir = root / "layouts" / "llava"
    step("Layout check (what CI would run)", vlmdata + ["layout", "check", "--layout", "llava", str(layout_dir), *common])
    step("Status", vlmdata + ["status", *common])
    blends = root / "blends"
    step("Blend stage-1 data (llava-558k)", vlmdata + ["blend", "llava-558k", *common])
    step("Blend stage-2 data (llava-665k): records checked, missing images dropped and reported",
         vlmdata + ["blend", "llava-665k", *common])
    step("Completeness report for llava-665k", vlmdata + ["report", "llava-665k", *common])
    step("Statistics of the blended dataset", vlmdata + ["stats", str(blends / "llava-665k"), *common])

    runs = out / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    s1, s2 = runs / "stage1", runs / "stage2"
    base = ["--set", f"max_steps={args.steps}", "--set", "save_steps=1000"]
    step("Train stage 1: projector only, plain template, on llava-558k",
         vlmtrain + ["run", "configs/tiny-cpu.yaml", *base, "--set", "stage=1", "--set", "version=plain",
                     "--set", f"dataset_dir={blends / 'llava-558k'}", "--set", f"output_dir={s1}",
                     "--set", "learning_rate=1e-2"])
    step("Train stage 2: projector + LLM, vicuna_v1 template, on llava-665k, starting from stage 1's projector",
         vlmtrain + ["run", "configs/tiny-cpu.yaml", *base, "--set", f"dataset_dir={blends / 'llava-665k'}",
                     "--set", f"output_dir={s2}", "--set", f"pretrain_mm_mlp_adapter={s1 / 'mm_projector.bin'}"])
    step("Plot the stage-2 curves", vlmtrain + ["plot", str(s2)])

    print("\n=== Done. Where everything is:")
    print(f"  data store          {root}")
    print(f"  LLaVA layout        {layout_dir}   (--image_folder for the LLaVA scripts)")
    print(f"  blended datasets    {blends / 'llava-558k'}, {blends / 'llava-665k'}")
    print(f"  stage-1 projector   {s1 / 'mm_projector.bin'}")
    print(f"  stage-2 checkpoint  {s2}")
    for name, d in (("stage 1", s1), ("stage 2", s2)):
        ls = losses(d)
        if ls:
            k = max(1, len(ls) // 4)
            first, last = sum(ls[:k]) / k, sum(ls[-k:]) / k
            print(f"  {name} loss        {first:.3f} -> {last:.3f} (mean of first/last {k} steps, {len(ls)} steps)")
    print("Run it again: fetch finds everything in place and downloads nothing.")


if __name__ == "__main__":
    main()
