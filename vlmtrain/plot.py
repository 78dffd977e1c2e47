"""``vlmtrain plot RUN_DIR``: a PNG of the training curves from RUN_DIR/metrics.jsonl.

Panels: loss, learning rate, tokens/s, MFU (when the device had a known peak). Steps logged twice
(a run resumed from a checkpoint older than its last log) keep the later value. matplotlib draws
it when installed; otherwise Pillow draws simple line charts.
"""
from __future__ import annotations

import json
from pathlib import Path

from vlmdata.errors import UserError

PANELS = [("loss", "loss"), ("learning_rate", "learning rate"), ("tokens_per_s", "tokens/s"), ("mfu", "MFU")]


def read_metrics(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"no metrics.jsonl in {run_dir}", hint="give the output_dir of a `vlmtrain run`")
    by_step: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if "loss" in row:
            by_step[int(row["step"])] = row
    series: dict[str, list[tuple[int, float]]] = {}
    for key, _ in PANELS:
        pts = [(s, float(r[key])) for s, r in sorted(by_step.items()) if isinstance(r.get(key), (int, float))]
        if pts:
            series[key] = pts
    if "loss" not in series:
        raise UserError(f"{path} has no loss values yet")
    return series


def plot(run_dir: str | Path, out: str | Path | None = None) -> Path:
    run_dir = Path(run_dir)
    series = read_metrics(run_dir)
    out = Path(out) if out else run_dir / "curves.png"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _plot_pillow(series, out, run_dir.name)
        return out
    keys = [(k, t) for k, t in PANELS if k in series]
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 2.4 * len(keys)), sharex=True, squeeze=False)
    for ax, (key, title) in zip(axes[:, 0], keys):
        xs, ys = zip(*series[key])
        ax.plot(xs, ys, lw=1.2)
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _plot_pillow(series, out: Path, title: str) -> None:
    from PIL import Image, ImageDraw

    keys = [(k, t) for k, t in PANELS if k in series]
    w, h, pad = 800, 200, 40
    img = Image.new("RGB", (w, h * len(keys) + 30), "white")
    d = ImageDraw.Draw(img)
    d.text((pad, 8), title, fill="black")
    for i, (key, name) in enumerate(keys):
        top = 30 + i * h
        pts = series[key]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
        box = (pad, top + 10, w - 10, top + h - 20)
        d.rectangle(box, outline="gray")
        d.text((pad + 4, top + 12), f"{name}  [{min(ys):.4g} .. {max(ys):.4g}]", fill="black")

        def xy(x, y):
            return (box[0] + (x - x0) / (x1 - x0) * (box[2] - box[0]),
                    box[3] - (y - y0) / (y1 - y0) * (box[3] - box[1]))

        line = [xy(x, y) for x, y in pts]
        if len(line) > 1:
            d.line(line, fill="navy", width=2)
        else:
            d.ellipse([line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2], fill="navy")
    img.save(out)
