"""Benchmark: `vlmdata blend` vs `json.load` + `datasets.Dataset.from_list` vs `datasets.load_dataset("json")`
on a generated 665,298-record JSON shaped like llava_v1_5_mix665k.json (bench/common/mix665k.py).

Each peer runs in its own subprocess, side by side in one run (interleaved when repeated); wall time
and the peak memory of its whole process tree (RSS summed, and PSS) are sampled from outside.
Every peer ends with a `datasets.load_from_disk`-able folder, so they produce the same thing:

- ours:        `vlmdata blend RECIPE --image-root IMAGES --out DIR` (the CLI, imports included),
               every image path checked against a tree of tiny image files (one listing per folder).
- from_list:   json.load, str(id) for every record (without it from_list raises ArrowTypeError on
               the mixed int/str ids, LLaVA issue #1535), Dataset.from_list, save_to_disk.
- load_dataset: datasets.load_dataset("json", data_files=..., cache_dir=fresh) (it writes its Arrow
               cache; no further save).

    python -m bench.blend.bench_blend [--records 665298] [--repeats 1] [--out bench/out/blend]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

from bench.blend.monitor import measure
from bench.common import mix665k

REPO = Path(__file__).resolve().parents[2]
PEERS = ("ours", "from_list", "load_dataset")


def prepare(out: Path, records: int) -> tuple[Path, Path, Path]:
    """The input JSON, a tree of (tiny) image files it references, and a recipe for it."""
    out.mkdir(parents=True, exist_ok=True)
    src = out / f"mix665k-{records}.json"
    if not src.exists():
        t = time.time()
        mix665k.write(src.with_suffix(".tmp"), records, seed=0)
        src.with_suffix(".tmp").rename(src)
        print(f"generated {src} ({src.stat().st_size / 1e6:.0f} MB) in {time.time() - t:.0f} s", flush=True)
    images = out / f"images-{records}"
    done = images / ".complete-v2"
    if not done.exists():
        # Every referenced path is a hard link to one of a few tiny real JPEGs: blend's quick check
        # refuses 0-byte images (an ext4 inode takes at most 65,000 links, hence several sources).
        import shutil

        from PIL import Image

        t = time.time()
        shutil.rmtree(images, ignore_errors=True)
        paths = sorted(mix665k.referenced_images(src))
        for d in {os.path.dirname(p) for p in paths}:
            (images / d).mkdir(parents=True, exist_ok=True)
        sources = []
        for k in range(-(-len(paths) // 50_000)):
            sources.append(images / f".source-{k}.jpg")
            Image.new("RGB", (8, 8), (k * 40 % 256, 90, 160)).save(sources[-1], "JPEG")
        for i, p in enumerate(paths):
            os.link(sources[i // 50_000], images / p)
        done.touch()
        print(f"made {len(paths)} image files (links to {len(sources)} tiny JPEGs) under {images} "
              f"in {time.time() - t:.0f} s", flush=True)
    recipe = out / "bench-mix665k.toml"
    recipe.write_text(f'name = "bench-mix665k"\ntitle = "benchmark input"\nlayout = "llava"\n\n'
                      f'[[entries]]\nname = "mix665k"\npath = "{src.absolute()}"\n')
    return src, images, recipe


# ---------------------------------------------------------------- peers (run in their own process)


def peer_from_list(src: Path, dest: Path) -> None:
    import datasets

    with open(src, encoding="utf-8") as fh:
        data = json.load(fh)
    for r in data:
        r["id"] = str(r["id"])
    ds = datasets.Dataset.from_list(data)
    ds.save_to_disk(str(dest))
    print(json.dumps({"rows": len(ds)}))


def peer_load_dataset(src: Path, dest: Path) -> None:
    import datasets

    ds = datasets.load_dataset("json", data_files=str(src), cache_dir=str(dest), split="train")
    print(json.dumps({"rows": len(ds)}))


def command(peer: str, src: Path, images: Path, recipe: Path, dest: Path, jobs: int) -> list[str]:
    if peer == "ours":
        return [sys.executable, "-m", "vlmdata.cli.app", "--root", str(dest.parent), "blend", str(recipe),
                "--image-root", str(images), "--out", str(dest), "--json", "--jobs", str(jobs)]
    return [sys.executable, "-m", "bench.blend.bench_blend", "--peer", peer, "--src", str(src), "--dest", str(dest)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=mix665k.FULL)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "blend")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--once", default="load_dataset", help="peers run in the first repeat only (slow ones)")
    ap.add_argument("--jobs", type=int, default=0, help="--jobs for vlmdata blend (0 = all cores)")
    ap.add_argument("--keep", action="store_true", help="keep our last output (for bench_dataloader)")
    ap.add_argument("--peer", choices=PEERS[1:], help=argparse.SUPPRESS)
    ap.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dest", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:
        {"from_list": peer_from_list, "load_dataset": peer_load_dataset}[args.peer](args.src, args.dest)
        return

    src, images, recipe = prepare(args.out, args.records)
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_DATASETS_DISABLE_PROGRESS_BARS="1", TQDM_DISABLE="1")
    results: dict[str, list[dict]] = {p: [] for p in args.peers.split(",")}
    once = set(args.once.split(","))
    for rep in range(args.repeats):
        for peer in results:
            if rep and peer in once:
                continue
            dest = args.out / f"result-{peer}"
            shutil.rmtree(dest, ignore_errors=True)
            load_before = os.getloadavg()[0]
            cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            run = measure(command(peer, src, images, recipe, dest, args.jobs), env=env, cwd=str(REPO))
            cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            s = run.summary()
            # CPU seconds of the whole tree (workers are waited for by their parent, so they count)
            s["cpu_s"] = round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 2)
            s["load_avg_1min"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]  # before, after
            if run.rc != 0:
                s["error"] = run.stderr.strip().splitlines()[-1:] if run.stderr.strip() else []
            if peer == "ours" and run.rc == 0:
                meta = json.loads(run.stdout)
                s["rows"] = meta["totals"]["rows"]
                s["timings"] = {k: round(v, 2) for k, v in meta["timings"].items()}
            results[peer].append(s)
            print(f"[{rep + 1}/{args.repeats}] {peer:<13} {json.dumps(s)}", flush=True)

            if not (peer == "ours" and args.keep and rep == args.repeats - 1):
                shutil.rmtree(dest, ignore_errors=True)

    summary = {"records": args.records, "input_mb": round(src.stat().st_size / 1e6), "cpus": os.cpu_count(),
               "load_avg_at_end": os.getloadavg(), "runs": results}
    ok = {p: [r for r in rs if r["rc"] == 0] for p, rs in results.items()}
    med = {p: {"wall_s": statistics.median(r["wall_s"] for r in rs),
               "cpu_s": statistics.median(r["cpu_s"] for r in rs),
               "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs),
               "peak_pss_mb": statistics.median(r["peak_pss_mb"] or 0 for r in rs)} for p, rs in ok.items() if rs}
    summary["median"] = med
    if "ours" in med:
        summary["ratios_vs"] = {p: {k: round(med["ours"][k] / m[k], 3) for k in m if m[k]}
                                for p, m in med.items() if p != "ours"}
    path = args.out / "results-blend.json"
    path.write_text(json.dumps(summary, indent=2))
    print(json.dumps({"median": med, "ratios_vs": summary.get("ratios_vs")}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
