"""CPU data-path benchmark: vlmtrain.data (Arrow -> tokenise -> mask -> image -> collate) vs LLaVA's way
(json.load of the whole list + per-item preprocessing in __getitem__), side by side, same data.

    python -m bench.train_data.bench_data_path [--records 665298] [--batches 100] [--warmup 10]
                                               [--batch-size 16] [--workers 4] [--out bench/out/train_data]

Both sides: vicuna_v1 template, image_aspect_ratio pad, a CLIP-L/14-336 image processor (PIL
backend, no download), the same Llama-style SentencePiece tokenizer (fast; LLaVA itself uses the
slow one, so the reference here is if anything faster than the original), the lengths each side's
length-grouped sampler would use (ours: true token counts; the reference: word counts) computed at
start-up, the same records read in the same seeded random order on both sides (so the timed
windows hold identical samples), a DataLoader with ``--workers`` workers and batch size
``--batch-size``. Each side runs in its own fresh process, alternating, ``--repeats`` times.

A full pass over 665k samples would take hours on this 2-core machine, so each side is timed over a
fixed number of batches after a warm-up. RSS (and PSS, which counts pages shared between the workers
once) is sampled over that window and summed over the main process and its workers, and so is CPU
time: samples per CPU-second is the figure other jobs on the machine disturb least (wall-clock
samples/s swings with their load). Start-up (json.load for the reference; opening the Arrow dataset
and the true-length pass -- first run, then from its cache -- for ours) is reported separately.

A second, single-process comparison isolates text work: tokenise + mask per sample (our Encoder on
Arrow rows vs the reference's preprocess_multimodal + preprocess_v1 on the JSON list's dicts).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class MemSampler(threading.Thread):
    """Peak of (sum RSS, sum PSS) over this process and its children."""

    def __init__(self, period: float = 0.5) -> None:
        super().__init__(daemon=True)
        import psutil

        self.me = psutil.Process()
        self.period = period
        self.peak_rss = self.peak_pss = 0
        self.stop = threading.Event()

    def sample(self) -> None:
        rss = pss = 0
        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                m = p.memory_full_info()
                rss += m.rss
                pss += getattr(m, "pss", m.rss)
            except Exception:
                pass
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.period)


def cpu_seconds() -> float:
    """User + system CPU time of this process and its live children (the DataLoader workers)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except Exception:
            pass
    return total


def _common(out: Path):
    from transformers import CLIPImageProcessorPil, LlamaTokenizer

    tok = LlamaTokenizer.from_pretrained(str(out / "tokenizer"))
    tok.pad_token = tok.unk_token  # as LLaVA's train() does
    proc = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    return tok, proc


def run_side(side: str, out: Path, batches: int, warmup: int, bs: int, workers: int, seed: int, cold: bool) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    tok, proc = _common(out)
    mem = MemSampler()
    t0 = time.perf_counter()
    if side == "ours":
        from vlmtrain.data import DataArgs, ImageTokens, build_train_data

        cache = out / "cache"
        if cold and cache.exists():
            import shutil

            shutil.rmtree(cache)
        data = build_train_data(DataArgs(str(out / "arrow"), template="vicuna_v1", image_aspect_ratio="pad",
                                         bad_samples="skip", group_by_modality_length=True, num_proc=2,
                                         cache_dir=str(cache)),
                                tok, proc, ImageTokens("<image>", len(tok), 576))
        dataset, collate, lengths = data.dataset, data.collator, data.lengths
        n_records = data.report.rows
        extra = {"report": data.report.summary(), "lengths_cache_hit": data.report.lengths_cache_hit}
    else:
        from bench.train_data.llava_reference import DataCollatorForSupervisedDataset, LazySupervisedDataset

        dataset = LazySupervisedDataset(out / "mix665k.json", tok, proc, str(out / "images"))
        lengths = dataset.modality_lengths
        collate = DataCollatorForSupervisedDataset(tok)
        n_records = len(dataset)
        extra = {}
    startup = time.perf_counter() - t0
    # Both sides read the same records in the same order (a seeded permutation of the records), not
    # their length-grouped orders: image sizes vary 10x in cost, so different samples would make the
    # sides incomparable over a short window.
    g = torch.Generator().manual_seed(seed)
    records = torch.randperm(n_records, generator=g)[: (warmup + batches) * bs].tolist()
    order = records if side != "ours" else np.searchsorted(dataset.rows, records).tolist()
    if side == "ours":
        assert all(dataset.rows[i] == r for i, r in zip(order, records)), "a picked record was left out"
    loader = torch.utils.data.DataLoader(dataset, batch_size=bs, sampler=order, collate_fn=collate,
                                         num_workers=workers, persistent_workers=False)
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    mem.start()
    n = tokens = 0
    c1, t1 = cpu_seconds(), time.perf_counter()
    for _ in range(batches):
        b = next(it)
        n += b["input_ids"].shape[0]
        tokens += int(b["attention_mask"].sum())
    dt, cpu = time.perf_counter() - t1, cpu_seconds() - c1
    mem.stop.set()
    mem.join()
    mem.sample()
    del it, loader
    return {"side": side, "samples": n, "seconds": dt, "samples_per_s": n / dt, "cpu_ms_per_sample": cpu / n * 1e3,
            "samples_per_cpu_s": n / cpu, "startup_s": startup,
            "peak_rss_sum_gb": mem.peak_rss / 2**30, "peak_pss_sum_gb": mem.peak_pss / 2**30,
            "rows": len(dataset), **extra}


def run_text(out: Path, n: int, seed: int) -> dict:
    """Single process: tokenise + mask only."""
    import copy
    import random

    import datasets

    from bench.train_data import llava_reference as ref
    from vlmtrain.data import Encoder, ImageTokens

    tok, _ = _common(out)
    ds = datasets.load_from_disk(str(out / "arrow"))
    rng = random.Random(seed)
    rows = [rng.randrange(len(ds)) for _ in range(n)]
    enc = Encoder(tok, "vicuna_v1", ImageTokens("<image>", len(tok), 576), 2048)
    t0 = time.process_time()
    for r in rows:
        rec = ds[r]
        enc.encode(rec["conversations"], len(rec["images"]))
    ours = n / (time.process_time() - t0)
    with open(out / "mix665k.json") as fh:
        records = json.load(fh)
    t0 = time.process_time()
    for r in rows:
        src = records[r]
        sources = copy.deepcopy([src["conversations"]])
        if "image" in src:
            sources = ref.preprocess_multimodal(sources)
        ref.preprocess_v1(sources, tok, has_image="image" in src)
    theirs = n / (time.process_time() - t0)
    return {"samples": n, "ours_samples_per_s": ours, "reference_samples_per_s": theirs}


def _subprocess(args: list[str]) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "bench.train_data.bench_data_path", *args],
                       cwd=REPO, env=env, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"{args[:2]} failed:\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "bench/out/train_data")
    ap.add_argument("--records", type=int, default=665_298)
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--text-samples", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of each side; medians are reported")
    ap.add_argument("--no-cold", action="store_true",
                    help="skip the first-run measurement (it re-does the true-length pass: ~5-15 min at 665k on 2 cores)")
    ap.add_argument("--side", choices=["ours", "reference", "text"], help=argparse.SUPPRESS)
    ap.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side == "text":
        print(json.dumps(run_text(a.out, a.text_samples, a.seed)))
        return
    if a.side:
        print(json.dumps(run_side(a.side, a.out, a.batches, a.warmup, a.batch_size, a.workers, a.seed, a.cold)))
        return

    from bench.train_data.prepare import prepare

    info = prepare(a.out, a.records)
    common = ["--out", str(a.out), "--batches", str(a.batches), "--warmup", str(a.warmup),
              "--batch-size", str(a.batch_size), "--workers", str(a.workers), "--seed", str(a.seed)]
    res = {"setup": info, "args": vars(a) | {"out": str(a.out)}, "load_avg_before": os.getloadavg()}
    if not a.no_cold:
        res["ours_cold"] = _subprocess(["--side", "ours", "--cold", *common])
    runs: dict[str, list[dict]] = {"ours": [], "reference": [], "text": []}
    for _ in range(a.repeats):  # alternate, so a busy neighbour on the machine hits both sides alike
        runs["ours"].append(_subprocess(["--side", "ours", *common]))
        runs["reference"].append(_subprocess(["--side", "reference", *common]))
        runs["text"].append(_subprocess(["--side", "text", "--out", str(a.out), "--text-samples", str(a.text_samples)]))
    res["runs"] = runs
    res["load_avg_after"] = os.getloadavg()

    def median(side: str) -> dict:
        rs = runs[side]
        return {k: statistics.median(r[k] for r in rs) for k in rs[0] if isinstance(rs[0][k], (int, float))
                and not isinstance(rs[0][k], bool)}

    o, r, t = median("ours"), median("reference"), median("text")
    res["ours"], res["reference"], res["text"] = o, r, t
    rows = [
        ("samples/s (DataLoader, images; wall clock)", f"{o['samples_per_s']:.1f}", f"{r['samples_per_s']:.1f}", o["samples_per_s"] / r["samples_per_s"]),
        ("samples per CPU-second (main + workers)", f"{o['samples_per_cpu_s']:.1f}", f"{r['samples_per_cpu_s']:.1f}",
         o["samples_per_cpu_s"] / r["samples_per_cpu_s"]),
        ("peak RSS sum, GB", f"{o['peak_rss_sum_gb']:.2f}", f"{r['peak_rss_sum_gb']:.2f}", r["peak_rss_sum_gb"] / o["peak_rss_sum_gb"]),
        ("peak PSS sum, GB", f"{o['peak_pss_sum_gb']:.2f}", f"{r['peak_pss_sum_gb']:.2f}", r["peak_pss_sum_gb"] / o["peak_pss_sum_gb"]),
        ("start-up s (ours: cached lengths)", f"{o['startup_s']:.1f}", f"{r['startup_s']:.1f}", r["startup_s"] / o["startup_s"]),
    ]
    if "ours_cold" in res:
        rows.append(("start-up s (ours: first run, length pass)", f"{res['ours_cold']['startup_s']:.1f}",
                     f"{r['startup_s']:.1f}", r["startup_s"] / res["ours_cold"]["startup_s"]))
    rows += [
        ("tokenise+mask samples per CPU-s (1 process)", f"{t['ours_samples_per_s']:.0f}", f"{t['reference_samples_per_s']:.0f}",
         t["ours_samples_per_s"] / t["reference_samples_per_s"]),
    ]
    spread = {side: [(round(x["samples_per_s"], 1), round(x["samples_per_cpu_s"], 1)) for x in runs[side]]
              for side in ("ours", "reference")}
    print(f"medians of {a.repeats} alternating runs; (samples/s, samples per CPU-s) per run: {spread}; load average {res['load_avg_before']} -> {res['load_avg_after']}")
    print(f"{'':44} {'ours':>10} {'reference':>10} {'ratio':>7}")
    for name, x, y, ratio in rows:
        print(f"{name:44} {x:>10} {y:>10} {ratio:>6.2f}x")
    (a.out / "results.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
