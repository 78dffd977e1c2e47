"""`vlmdata stats`: what a blend holds, from its small columns only (source, n_images, text_chars
and the conversation lengths), so even a large blend is summarised from a few MB of pages.

The mix as blended: rows and share per source, beside the weight and the kept records blend.json
recorded (rows = kept x weight, rounded)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from vlmdata.blend.output import BlendOutput

# text length bins (characters): lower edges; the last bin is open
TEXT_BINS = [0, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000]


def compute(folder: Path) -> dict[str, Any]:
    out = BlendOutput(folder)
    t = out.table(["source", "n_images", "text_chars", "conversations"])
    n = t.num_rows
    n_images = t.column("n_images").to_numpy() if n else np.zeros(0, np.int32)
    chars = t.column("text_chars").to_numpy() if n else np.zeros(0, np.int32)
    turns = pc.list_value_length(t.column("conversations")).to_numpy() if n else np.zeros(0, np.int32)
    sources = t.column("source").to_numpy(zero_copy_only=False) if n else np.zeros(0, object)

    per_source = []
    weights = (out.meta or {}).get("mix", {})
    # every recipe entry, in recipe order (the order the blend wrote them): one that wrote no row (an
    # empty input, a weight that rounds to 0) is part of the mix too, and was left out of the table
    for name in dict.fromkeys([*weights, *sources.tolist()]):
        m = sources == name
        some = bool(m.any())
        per_source.append({
            "source": name,
            "rows": int(m.sum()),
            "share": round(float(m.mean()), 4) if some else 0.0,
            "weight": weights.get(name, {}).get("weight"),
            "kept": weights.get(name, {}).get("kept"),
            "text_only": int((n_images[m] == 0).sum()),
            "images": int(n_images[m].sum()),
            "mean_text_chars": round(float(chars[m].mean()), 1) if some else 0.0,
            "mean_turns": round(float(turns[m].mean()), 2) if some else 0.0,
        })
    edges = TEXT_BINS + [max(int(chars.max()) + 1 if n else 1, TEXT_BINS[-1] + 1)]
    hist, _ = np.histogram(chars, bins=edges)
    return {
        "folder": str(out.folder),
        "recipe": (out.meta or {}).get("recipe", {}).get("name"),
        "rows": n,
        "text_only": int((n_images == 0).sum()),
        "text_only_share": round(float((n_images == 0).mean()), 4) if n else 0.0,
        "images": int(n_images.sum()),
        "sources": per_source,
        "images_per_record": {str(k): int(c) for k, c in zip(*np.unique(n_images, return_counts=True))},
        "turns_per_record": {str(k): int(c) for k, c in zip(*np.unique(turns, return_counts=True))},
        "text_chars": {
            "mean": round(float(chars.mean()), 1) if n else 0.0,
            **{f"p{q}": int(np.percentile(chars, q)) if n else 0 for q in (50, 90, 99)},
            "max": int(chars.max()) if n else 0,
            "histogram": [{"from": int(a), "to": None if i == len(hist) - 1 else int(b), "rows": int(c)}
                          for i, (a, b, c) in enumerate(zip(edges, edges[1:], hist))],
        },
    }


def render(st: dict[str, Any]) -> str:
    lines = [f"{st['folder']}" + (f" (recipe {st['recipe']})" if st.get("recipe") else ""),
             f"  rows {st['rows']:,}   image references {st['images']:,}   text-only {st['text_only']:,} "
             f"({100 * st['text_only_share']:.1f}%)", "", "  per source:",
             f"    {'source':<28} {'rows':>10} {'share':>7} {'weight':>7} {'kept':>10} {'text-only':>10} {'images':>10} "
             f"{'chars/row':>10} {'turns/row':>10}"]
    for s in st["sources"]:
        weight = f"{s['weight']:g}" if s.get("weight") is not None else "-"
        kept = f"{s['kept']:,}" if s.get("kept") is not None else "-"
        lines.append(f"    {s['source']:<28} {s['rows']:>10,} {100 * s['share']:>6.1f}% {weight:>7} {kept:>10} "
                     f"{s['text_only']:>10,} {s['images']:>10,} {s['mean_text_chars']:>10,.0f} {s['mean_turns']:>10.1f}")
    lines += ["", "  images per record:"]
    lines += _bars({k: v for k, v in st["images_per_record"].items()}, st["rows"])
    tc = st["text_chars"]
    lines += ["", f"  text length (characters): mean {tc['mean']:,.0f}, p50 {tc['p50']:,}, p90 {tc['p90']:,}, "
                  f"p99 {tc['p99']:,}, max {tc['max']:,}"]
    hist = tc["histogram"]
    last = max((i for i, h in enumerate(hist) if h["rows"]), default=0)
    lines += _bars({(f"{h['from']:,}-{h['to'] - 1:,}" if h["to"] is not None else f">= {h['from']:,}"): h["rows"]
                    for h in hist[:last + 1]}, st["rows"])
    return "\n".join(lines)


def _bars(counts: dict[str, int], total: int, width: int = 40) -> list[str]:
    top = max(counts.values(), default=0) or 1
    return [f"    {k:>15} {v:>10,} {100 * v / total if total else 0:5.1f}% {'#' * round(width * v / top)}"
            for k, v in counts.items()]


def write_png(st: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    hist = st["text_chars"]["histogram"]
    labels = [f"{h['from']:,}+" for h in hist]
    a.bar(range(len(hist)), [h["rows"] for h in hist])
    a.set_xticks(range(len(hist)), labels, rotation=45, ha="right", fontsize=8)
    a.set_title("text length (characters per record)")
    a.set_ylabel("records")
    ipr = st["images_per_record"]
    b.bar(list(ipr.keys()), list(ipr.values()))
    b.set_title(f"images per record (text-only {100 * st['text_only_share']:.1f}%)")
    b.set_xlabel("images")
    fig.suptitle(f"{st.get('recipe') or st['folder']}: {st['rows']:,} records")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)

