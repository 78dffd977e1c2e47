"""Packed vs padded training steps on a CPU: tokens/s and the loss, over 665k-shaped sample lengths.

The same batches both ways: samples drawn in a seeded random order from the true lengths of a
665k-shaped mix (bench/throughput/lengths665k.py), each made of BOS, a 36-token system prompt, 576
image-token ids and text (labels from 24 tokens after the image, as bench/train_throughput.py), laid
out by vlmtrain's own collators (``Collator``: right-padded; ``PackingCollator``: rows of at most
2048 tokens, cut where rows x width x (1 + attention weight x width) is least, with the model's
attention weight as `vlmtrain run` sets it, and, to show what that term is for, with the weight at 0:
positions only). A small vlmtrain model (a 2-layer Llama of width 256 behind a 1-layer CLIP tower that
gives 576 tokens per 336-px image, stage 2: tower frozen) runs forward + backward on each layout in
turn (which goes first alternates), fp32, SDPA; no optimizer step, so every batch is also a check
that the two layouts give the same loss. tokens/s counts true tokens.

    python -m bench.throughput.packing_cpu [--batches 8] [--batch-size 8] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SYSTEM = 36
TEXT = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 4096, "max_position_embeddings": 2048}
VISION = {"model_type": "clip_vision_model", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
          "num_attention_heads": 2, "patch_size": 14, "image_size": 336}


def build():
    import torch

    from vlmtrain.config import load_config
    from vlmtrain.model.build import apply_freeze, build_model

    cfg = load_config(None, raw={"stage": 2, "random_init": True, "tokenizer_train_vocab_size": 64,
                                 "text_config": TEXT, "vision_config": VISION, "attn_implementation": "sdpa",
                                 "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -1})
    torch.manual_seed(0)
    built = build_model(cfg, vocab_size=TEXT["vocab_size"], image_token_id=TEXT["vocab_size"] - 1)
    apply_freeze(built.model, cfg.frozen())
    built.model.train()
    return built


def items_for(lengths, built, rng):
    import torch

    out = []
    per = built.tokens_per_image
    for k, n in enumerate(lengths):
        image = n > 0
        n = abs(int(n))
        ids = torch.from_numpy(rng.integers(3, built.image_token_id, size=n)).long()
        ids[0] = 1
        start = 1 + SYSTEM
        answer_from = start + (per if image else 0) + 24
        if image:
            ids[start:start + per] = built.image_token_id
        labels = torch.full_like(ids, -100)
        labels[answer_from:] = ids[answer_from:]
        pix = torch.randn(1 if image else 0, 3, 336, 336, generator=torch.Generator().manual_seed(k))
        out.append({"input_ids": ids, "labels": labels, "pixel_values": pix, "id": str(k)})
    return out


def step(model, batch) -> tuple[float, float]:
    import torch

    from vlmtrain.data import pop_batch_meta

    batch = dict(batch)
    pop_batch_meta(batch)
    t0 = time.perf_counter()
    loss = model(**batch).loss
    loss.backward()
    dt = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    del batch
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return float(loss.detach()), dt


def run(args) -> dict:
    import numpy as np
    import torch

    from bench.throughput.lengths665k import lengths_665k
    from vlmtrain.data import Collator, PackingCollator
    from vlmtrain.train.mfu import flop_model

    lengths = lengths_665k(args.lengths_dir, args.records)
    lengths = lengths[lengths != 0]
    rng = np.random.default_rng(args.seed)
    built = build()
    model = built.model
    weight = flop_model(model).attention_weight()
    layouts = {"padded": Collator(0), "packed": PackingCollator(0, args.max_length, attention_weight=weight),
               "packed_positions_only": PackingCollator(0, args.max_length)}
    time_s = dict.fromkeys(layouts, 0.0)
    positions = dict.fromkeys(layouts, 0)
    tokens = 0
    diffs, rows = [], []
    for b in range(args.batches + 1):  # batch 0 warms up
        lens = rng.choice(lengths, size=args.batch_size, replace=False)
        items = items_for(lens, built, rng)
        batches = {name: collate(items) for name, collate in layouts.items()}
        names = list(layouts)[b % 3:] + list(layouts)[:b % 3]  # who goes first rotates
        res = {name: step(model, batches[name]) for name in names}
        if b == 0:
            continue
        n = int(sum(abs(int(x)) for x in lens))
        tokens += n
        row = {"tokens": n}
        for name in layouts:
            time_s[name] += res[name][1]
            positions[name] += batches[name]["input_ids"].numel()
            row[name] = {"shape": list(batches[name]["input_ids"].shape), "s": res[name][1], "loss": res[name][0]}
        diffs += [abs(res[name][0] - res["padded"][0]) for name in layouts]
        rows.append(row)
        print(f"batch {b}: {n} tokens; " + "; ".join(f"{name} {tuple(row[name]['shape'])} {row[name]['s']:.2f} s "
                                                      f"loss {row[name]['loss']:.6f}" for name in layouts), flush=True)
    out = {"batches": args.batches, "batch_size": args.batch_size, "max_length": args.max_length,
           "records": args.records, "attention_weight": weight, "tokens": tokens, "loss_max_abs_diff": max(diffs),
           "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}
    for name in layouts:
        out[name] = {"positions": positions[name], "padding_frac": 1 - tokens / positions[name],
                     "tokens_per_s": tokens / time_s[name], "vs_padded": time_s["padded"] / time_s[name]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--records", type=int, default=665_298, help="records of the 665k-shaped mix to draw from")
    ap.add_argument("--lengths-dir", type=Path, default=REPO / "bench/out/throughput")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    r = run(args)
    for name in ("padded", "packed", "packed_positions_only"):
        print(f"{name:22s} {r[name]['tokens_per_s']:8.0f} tokens/s  padding {100 * r[name]['padding_frac']:5.1f}%  "
              f"{r[name]['vs_padded']:.2f}x padded's tokens/s")
    print(f"loss |packed - padded| <= {r['loss_max_abs_diff']:.2e}; attention weight {r['attention_weight']:.3g}")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
