"""Benchmark: memory over one full pass of a torch DataLoader with 4 workers, reading

- arrow: the blend's output (`datasets.load_from_disk`, memory-mapped Arrow), or
- list:  the same records as LLaVA keeps them: `json.load` of the whole JSON into a list of dicts
         (llava/train/train.py LazySupervisedDataset), each item deep-copied in __getitem__.

Both shuffle (LLaVA samples at random) and do the same small amount of work per item. Each runs
in its own process; the memory of its whole tree (main + workers) is sampled from outside: RSS
summed over processes (shared pages counted once per process that maps them), PSS summed (shared
pages split between their processes: the real footprint) and USS summed (pages private to one
process). Copy-on-write makes the list's pages private to every worker that touches them (each
reference count update writes to the object), so its PSS/USS grow while the workers run; the
Arrow buffers are read-only file pages shared by all processes.

    python -m bench.blend.bench_dataloader --dataset DIR --json FILE [--workers 4] [--batch 16]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

from bench.blend.monitor import measure

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- the two datasets (child process)


class ArrowItems:
    def __init__(self, folder: str) -> None:
        import datasets

        self.ds = datasets.load_from_disk(folder)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> int:
        r = self.ds[i]
        return len(r["conversations"]) + len(r["images"])


class ListItems:
    """LLaVA's way: the whole JSON as a Python list; a deep copy of the record's turns per item."""

    def __init__(self, path: str) -> None:
        with open(path, encoding="utf-8") as fh:
            self.data = json.load(fh)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> int:
        src = self.data[i]
        conv = copy.deepcopy(src["conversations"])
        return len(conv) + (1 if "image" in src else 0)


def _collate(batch: list[int]) -> int:
    return sum(batch)


def child(mode: str, source: str, workers: int, batch: int) -> None:
    import torch
    from torch.utils.data import DataLoader

    t0 = time.perf_counter()
    items = ArrowItems(source) if mode == "arrow" else ListItems(source)
    loaded = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    loader = DataLoader(items, batch_size=batch, shuffle=True, generator=g, num_workers=workers,
                        collate_fn=_collate, multiprocessing_context="fork", prefetch_factor=4)
    total = n = 0
    t1 = time.perf_counter()
    for x in loader:
        total += x
        n += 1
    print(json.dumps({"mode": mode, "items": len(items), "batches": n, "checksum": total,
                      "load_s": round(loaded, 2), "pass_s": round(time.perf_counter() - t1, 2)}))


# ---------------------------------------------------------------- the harness


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=REPO / "bench" / "out" / "blend" / "result-ours")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "blend" / "mix665k-665298.json")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--modes", default="arrow,list")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "blend")
    ap.add_argument("--png", type=Path, default=REPO / "bench" / "blend" / "dataloader_memory.png")
    ap.add_argument("--child", choices=("arrow", "list"), help=argparse.SUPPRESS)
    ap.add_argument("--source", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.source, args.workers, args.batch)
        return

    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    results = {}
    for mode in args.modes.split(","):
        source = str(args.dataset if mode == "arrow" else args.json)
        cmd = [sys.executable, "-m", "bench.blend.bench_dataloader", "--child", mode, "--source", source,
               "--workers", str(args.workers), "--batch", str(args.batch)]
        run = measure(cmd, env=env, cwd=str(REPO), interval=0.2, full_every=0.5, min_available=2 << 30)
        info = json.loads(run.stdout.strip().splitlines()[-1]) if run.rc == 0 and run.stdout.strip() else {}
        curve = [{"t": s.t, "procs": s.procs, "rss_mb": round(s.rss / 2**20), "pss_mb": round(s.pss / 2**20),
                  "uss_mb": round(s.uss / 2**20), "pss_anon_mb": round((s.pss_anon or 0) / 2**20),
                  "pss_file_mb": round((s.pss_file or 0) / 2**20)} for s in run.samples if s.pss is not None]
        results[mode] = {**run.summary(), **info, "curve": curve,
                         "error": run.stderr.strip().splitlines()[-3:] if run.rc else None}
        print(json.dumps({k: v for k, v in results[mode].items() if k != "curve"}), flush=True)
        with open(args.out / f"dataloader-{mode}.csv", "w") as fh:
            fh.write("t_s,procs,rss_sum_mb,pss_sum_mb,uss_sum_mb,pss_anon_sum_mb,pss_file_sum_mb\n")
            for c in curve:
                fh.write(f"{c['t']},{c['procs']},{c['rss_mb']},{c['pss_mb']},{c['uss_mb']},{c['pss_anon_mb']},"
                         f"{c['pss_file_mb']}\n")
    (args.out / "results-dataloader.json").write_text(json.dumps(results, indent=1))
    for mode, r in results.items():
        c = r["curve"]
        workers_up = [x for x in c if x["procs"] > 1]
        if workers_up:
            first, last = workers_up[0], workers_up[-1]
            top = max(workers_up, key=lambda x: x["pss_mb"])
            print(f"{mode}: workers up {first['t']:.0f}-{last['t']:.0f} s; PSS sum first {first['pss_mb']} MB, "
                  f"max {top['pss_mb']} MB at {top['t']:.0f} s (anon {top['pss_anon_mb']}, file {top['pss_file_mb']}), "
                  f"last {last['pss_mb']} MB; USS sum first {first['uss_mb']}, last {last['uss_mb']} MB; "
                  f"RSS sum first {first['rss_mb']}, last {last['rss_mb']} MB")
    try:
        plot(results, args.png)
        print(f"wrote {args.png}")
    except ImportError:
        pass


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=False)
    for ax, key, title in zip(axes, ("pss_mb", "pss_anon_mb", "rss_mb"),
                              ("PSS summed (the real footprint)", "PSS of anonymous memory (heap)",
                               "RSS summed (shared pages once per process)")):
        for mode, r in results.items():
            c = r["curve"]
            ax.plot([x["t"] for x in c], [x[key] / 1024 for x in c], label=mode)
        ax.set_title(title)
        ax.set_xlabel("seconds")
        ax.set_ylabel("GiB")
        ax.legend()
    fig.suptitle("one DataLoader pass, 4 workers: memory of main + workers")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
