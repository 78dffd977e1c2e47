"""True token lengths of a 665k-shaped LLaVA mix (bench/common/mix665k.py), as vlmtrain measures them.

Each record goes through vlmtrain's own encoder (vicuna_v1 template, LLaVA's system prompt, 576 image
tokens per ``<image>``, model_max_length 2048) with a Llama-style SentencePiece tokenizer trained on a
sample of the records' text, exactly as `vlmtrain run` measures true lengths before training. The
signed lengths (negative: text-only) are cached in OUT/lengths665k.npz for the packing benchmarks.

    python -m bench.throughput.lengths665k [--records 665298] [--out bench/out/throughput]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

PER_IMAGE = 576       # CLIP-L/14-336 patch tokens
MAX_LENGTH = 2048     # LLaVA-1.5's model_max_length


def lengths_665k(out: Path, records: int = 665_298, seed: int = 0) -> np.ndarray:
    from bench.common.mix665k import generate_records
    from vlmtrain.data import ImageTokens
    from vlmtrain.data.encode import Encoder
    from vlmtrain.data.tokenizers import train_llama_sentencepiece

    path = out / f"lengths665k-{records}-{seed}.npz"
    if path.is_file():
        return np.load(path)["lengths"]
    out.mkdir(parents=True, exist_ok=True)
    texts = []
    for rec in generate_records(min(records, 20_000), seed):
        texts += [t["value"].replace("<image>", "") for t in rec["conversations"]]
    tok = train_llama_sentencepiece(texts, 4000, legacy=False, workdir=out / "tokenizer")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    enc = Encoder(tok, "vicuna_v1", ImageTokens("<image>", tok.convert_tokens_to_ids("<image>"), PER_IMAGE), MAX_LENGTH)
    lengths = np.zeros(records, dtype=np.int32)
    batch, at, t0 = [], 0, time.perf_counter()
    for rec in generate_records(records, seed):
        batch.append((rec["conversations"], 1 if "image" in rec else 0))
        if len(batch) == 2048:
            at = _encode(enc, batch, lengths, at)
            batch = []
            if at % (2048 * 40) == 0:
                print(f"{at:,} records, {time.perf_counter() - t0:.0f} s", flush=True)
    _encode(enc, batch, lengths, at)
    np.savez(path, lengths=lengths)
    return lengths


def _encode(enc, batch, lengths: np.ndarray, at: int) -> int:
    for j, e in enumerate(enc.encode_many(batch)):
        if not isinstance(e, Exception):  # a record that cannot be encoded stays 0 (left out, as a run would)
            lengths[at + j] = len(e) if e.n_images else -len(e)
    return at + len(batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=665_298)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench/out/throughput"))
    a = ap.parse_args()
    ls = lengths_665k(a.out, a.records, a.seed)
    kept = np.abs(ls[ls != 0])
    print(f"{len(kept):,} of {len(ls):,} records encoded; mean {kept.mean():.0f}, median {np.median(kept):.0f}, "
          f"max {kept.max()} tokens; {(ls < 0).sum():,} text-only")


if __name__ == "__main__":
    main()
