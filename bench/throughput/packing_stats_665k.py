"""The padding fraction packing saves on 665k-shaped true lengths (`vlmtrain packing-stats`' figures).

The lengths are vlmtrain's own measure of the 665k-shaped mix (bench/throughput/lengths665k.py:
vicuna_v1, 576 image tokens, model_max_length 2048); the batches are LLaVA-1.5 finetune's (16 per
device) in both sampler orders, for 1 GPU (megabatch 16) and 8 GPUs (megabatch 128, LLaVA's
length grouping); rows of at most 2048 tokens; ``--attention-weight`` as `vlmtrain run` would use for
the LLM (vlmtrain.train.mfu: 0 counts positions only; Vicuna-7B's is printed).

    python -m bench.throughput.packing_stats_665k [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def vicuna7b_attention_weight() -> float:
    """FlopModel.attention_weight of LLaVA-1.5-7B stage 2 (counted on the meta device)."""
    from vlmtrain.config import load_config
    from vlmtrain.model.build import apply_freeze, build_model
    from vlmtrain.train.mfu import flop_model

    cfg = load_config(None, raw={"stage": 2, "random_init": True, "tokenizer_train_vocab_size": 64,
                                 "text_config": "model_configs/vicuna-7b-v1.5.json",
                                 "vision_config": "model_configs/clip-vit-large-patch14-336.json"})
    built = build_model(cfg, meta=True)
    apply_freeze(built.model, cfg.frozen())
    return flop_model(built.model).attention_weight()


def main() -> None:
    from bench.throughput.lengths665k import lengths_665k
    from vlmtrain.data.packing_stats import padding_report, render

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=665_298)
    ap.add_argument("--lengths-dir", type=Path, default=REPO / "bench/out/throughput")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    ls = lengths_665k(a.lengths_dir, a.records)
    ls = ls[ls != 0].astype(int).tolist()
    w7 = vicuna7b_attention_weight()
    out = []
    for world in (1, 8):
        for weight in (0.0, w7):
            r = padding_report(ls, 16, 2048, world_size=world, seed=0, attention_weight=weight)
            print(f"\n== {world} GPU(s), attention weight {weight:.3g}" + (" (Vicuna-7B)" if weight else ""))
            print(render(r), flush=True)
            out.append(r)
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
