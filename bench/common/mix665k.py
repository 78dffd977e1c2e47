"""Generate a JSON shaped like llava_v1_5_mix665k.json, for benchmarks.

Shape facts (datasets.md §7): 665,298 records; by image prefix coco 364,100, vg 86,417,
gqa 72,140, ocr_vqa 80,000, textvqa 21,953, and 40,688 text-only ShareGPT records with no
`image` key (about 6%), which sit near the tail. 1-10 turn pairs per record; `<image>` in the
first human turn. Text lengths are drawn to give a file of roughly the real size (~1 GB) at full
scale. Deterministic for a given seed.

    python -m bench.common.mix665k OUT.json [--records 665298] [--seed 0] [--images-root DIR]
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

COMPOSITION = [  # (prefix, records at full scale, file name pattern)
    ("coco/train2017/", 364_100, "{:012d}.jpg"),
    ("vg/VG_100K/", 50_000, "{}.jpg"),
    ("vg/VG_100K_2/", 36_417, "{}.jpg"),
    ("gqa/images/", 72_140, "{}.jpg"),
    ("ocr_vqa/images/", 80_000, "{:010d}.jpg"),
    ("textvqa/train_images/", 21_953, "{:016x}.jpg"),
]
TEXT_ONLY = 40_688
FULL = sum(n for _, n, _ in COMPOSITION) + TEXT_ONLY  # 665,298
# Distinct images per folder at full scale (records reuse images: 608k files for 625k image records).
DISTINCT = {"coco/train2017/": 118_287, "vg/VG_100K/": 64_346, "vg/VG_100K_2/": 43_903, "gqa/images/": 148_854,
            "ocr_vqa/images/": 207_572, "textvqa/train_images/": 25_119}

_WORDS = ("the a of and to in is what color image man woman person table shown picture there "
          "left right top bottom sign number text written building car street dog cat two three "
          "answer question describe detail background front wearing holding sitting standing").split()


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi)))


def _conversation(rng: random.Random, with_image: bool) -> list[dict]:
    turns = []
    n_pairs = min(10, max(1, int(rng.expovariate(1 / 2.5)) + 1))
    for i in range(n_pairs):
        q = _sentence(rng, 5, 25) + "?"
        if i == 0 and with_image:
            q = "<image>\n" + q if rng.random() < 0.9 else q + "\n<image>"
        a = _sentence(rng, 1, 4) if rng.random() < 0.5 else _sentence(rng, 20, 160) + "."
        turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return turns


def generate_records(n_records: int = FULL, seed: int = 0):
    """Yield records in file order: image records shuffled, text-only ones near the tail."""
    rng = random.Random(seed)
    scale = n_records / FULL
    plan = []
    for prefix, n, pattern in COMPOSITION:
        k = max(1, round(n * scale))
        distinct = max(1, round(DISTINCT[prefix] * scale))
        plan += [(prefix, pattern, distinct)] * k
    rng.shuffle(plan)
    n_text = max(0, n_records - len(plan))
    for i, (prefix, pattern, distinct) in enumerate(plan[: n_records - n_text]):
        image = prefix + pattern.format(rng.randrange(distinct))
        rid = i if rng.random() < 0.01 else f"{rng.getrandbits(40):010x}"  # a few int ids, as in the real repo
        yield {"id": rid, "image": image, "conversations": _conversation(rng, True)}
    for j in range(n_text):
        rec = {"id": f"sharegpt_{j}_{rng.getrandbits(16):x}", "conversations": _conversation(rng, False)}
        if rng.random() < 0.3:
            rec["model"] = ""
        yield rec


def write(path: Path, n_records: int = FULL, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("[")
        for i, rec in enumerate(generate_records(n_records, seed)):
            fh.write(("," if i else "") + "\n" + json.dumps(rec, ensure_ascii=False))
        fh.write("\n]\n")
    return path


def referenced_images(path: Path) -> set[str]:
    """Every image path the generated file references (to build a matching tree of files)."""
    from vlmdata.jsonstream import iter_json_records

    return {r["image"] for _, r in iter_json_records(path) if "image" in r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--records", type=int, default=FULL)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    write(args.out, args.records, args.seed)
    print(f"wrote {args.records} records to {args.out} ({args.out.stat().st_size / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
