"""`make demo`: the whole pipeline, offline, on the bundled demo mirror.

Runs the real commands a user would run, as separate processes, against a small generated mirror
shaped like the real sources (COCO/GQA/VG/TextVQA zips, LLaVA-Pretrain's zip without a top folder,
an OCR-VQA URL list with GIF/PNG images, a dead URL and a corrupt image, LLaVA-style JSONs):

  fetch (with --mirror) -> layout check -> blend llava-558k / llava-665k -> report
  -> vlmtrain stages 1 -> 2 -> 3 in one command (MoE-LLaVA's recipe on a tiny phi) -> one generated answer

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


def _metric(run_dir: Path, key: str) -> list[float]:
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r[key] for r in rows if key in r]


def _moe_chain_configs(folder: Path, runs: Path, blends: Path, steps: int) -> list[Path]:
    """The shipped tiny MoE chain (configs/tiny-moe-cpu-stage*.yaml) pointed at this demo's blends and runs."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    data = {1: blends / "llava-558k", 2: blends / "llava-665k", 3: blends / "llava-665k"}
    paths = []
    for i in (1, 2, 3):
        src = REPO / "configs" / f"tiny-moe-cpu-stage{i}.yaml"
        cfg = yaml.safe_load(src.read_text())
        cfg.update(dataset_dir=str(data[i]), output_dir=str(runs / f"stage{i}"), max_steps=steps)
        dest = folder / src.name
        dest.write_text(f"# {src.relative_to(REPO)} with this demo's paths\n" + yaml.safe_dump(cfg, sort_keys=False))
        paths.append(dest)
    return paths


def _demo_image(layout_dir: Path) -> Path:
    for pattern in ("coco/**/*.jpg", "**/*.jpg"):
        found = sorted(layout_dir.glob(pattern))
        if found:
            return found[0]
    raise SystemExit(f"demo: no image found under {layout_dir}")


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
    # The demo mirror has a dead OCR-VQA URL, a corrupt image and two records whose image does not
    # exist: 4-11% of its records (the fewer images per set, the larger the share), more than the
    # 1% a blend drops by default before it stops.
    step("Blend stage-2 data (llava-665k): records checked, the demo's records with missing images dropped "
         "and reported (--max-drop 15: the default 1% stops a blend that loses more)",
         vlmdata + ["blend", "llava-665k", "--max-drop", "15", *common])
    step("Completeness report for llava-665k", vlmdata + ["report", "llava-665k", *common])
    step("Statistics of the blended dataset", vlmdata + ["stats", str(blends / "llava-665k"), *common])

    runs = out / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    stages = _moe_chain_configs(out / "configs", runs, blends, args.steps)
    step("Train MoE-LLaVA's three stages in one command (a tiny random phi): 1 projector on llava-558k, "
         "2 projector + LLM on llava-665k, 3 MoE-tuning (4 experts, top-2, every other layer)",
         vlmtrain + ["run", *map(str, stages)])
    s1, s2, s3 = (runs / f"stage{i}" for i in (1, 2, 3))
    step("Plot the stage-3 curves (loss, router load-balancing loss, expert load)", vlmtrain + ["plot", str(s3)])
    image = _demo_image(layout_dir)
    answer = step("Ask the stage-3 model about an image (at least 8 tokens: a model this small often ends "
                  "its answer at once)", vlmtrain + [
        "generate", str(s3), "--image", str(image), "--prompt", "What is in the image?", "--min-new-tokens", "8",
        "--max-new-tokens", "16"], capture=True)
    print(f"answer: {answer.strip()!r}  (a tiny model trained for seconds: expect words, not sense)")

    print("\n=== Done. Where everything is:")
    print(f"  data store          {root}")
    print(f"  LLaVA layout        {layout_dir}   (--image_folder for the LLaVA scripts)")
    print(f"  blended datasets    {blends / 'llava-558k'}, {blends / 'llava-665k'}")
    print(f"  stage configs       {' '.join(map(str, stages))}")
    print(f"  stage-1 projector   {s1 / 'mm_projector.bin'}")
    print(f"  stage-2 model       {s2}")
    print(f"  stage-3 MoE model   {s3}")
    for name, d in (("stage 1", s1), ("stage 2", s2), ("stage 3", s3)):
        ls = losses(d)
        if ls:
            k = max(1, len(ls) // 4)
            first, last = sum(ls[:k]) / k, sum(ls[-k:]) / k
            print(f"  {name} loss        {first:.3f} -> {last:.3f} (mean of first/last {k} steps, {len(ls)} steps)")
    print("  Stage 1 trains only the projector in front of a random, frozen LLM, so its loss barely moves;\n"
          "  stage 2 trains the LLM too and falls.")
    aux = _metric(s3, "moe/aux_loss")
    if aux:
        k = max(1, len(aux) // 4)
        layers = len(json.loads((s3 / "config.json").read_text())["moe"]["moe_layers_idx"])
        print(f"  stage 3 router loss {sum(aux[:k]) / k:.3f} -> {sum(aux[-k:]) / k:.3f} (load balancing, summed over "
              f"its {layers} MoE layers: {layers:.1f} is perfectly balanced)")
        print("  Stage 3 starts where stage 2 ended and trains only the experts' FFNs and the routers on the same\n"
              "  few records, so its LM loss holds rather than falls; what moves is the routers' balance.")
    print("Run it again: fetch finds everything in place and downloads nothing.")


if __name__ == "__main__":
    main()
