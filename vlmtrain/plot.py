"""``vlmtrain plot RUN_DIR``: a PNG of the training curves from RUN_DIR/metrics.jsonl.

Panels: loss, learning rate, tokens/s, MFU (when the device had a known peak); for a stage-3 (MoE)
run also the routers' load-balancing loss, the share of routes dropped for capacity, and the expert
load (the least and the most loaded expert's share of its layer's routes). Steps logged twice
(a run resumed from a checkpoint older than its last log) keep the later value. matplotlib draws
it when installed; otherwise Pillow draws simple line charts. The picture is drawn in memory and
written atomically, so a bad ``--out`` is an error before anything is drawn and a kill leaves no
half-written file.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

from vlmdata.errors import UserError

PANELS = [("loss", "loss"), ("learning_rate", "learning rate"), ("tokens_per_s", "tokens/s"), ("mfu", "MFU")]
MOE_PANELS = [("moe/aux_loss", "router aux loss"), ("moe/dropped", "routes dropped")]


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
    for key, _ in PANELS + MOE_PANELS:
        pts = [(s, float(r[key])) for s, r in sorted(by_step.items()) if isinstance(r.get(key), (int, float))]
        if pts:
            series[key] = pts
    loads = {s: [v for k, v in r.items() if k.startswith("moe/L") and "/load_e" in k] for s, r in sorted(by_step.items())}
    if any(loads.values()):
        series["moe/load_min"] = [(s, min(v)) for s, v in loads.items() if v]
        series["moe/load_max"] = [(s, max(v)) for s, v in loads.items() if v]
    if "loss" not in series:
        raise UserError(f"{path} has no loss values yet")
    return series


def _panels(series) -> list[tuple[str, list[str]]]:
    """(title, series keys drawn in it) for the panels that have data."""
    out = [(t, [k]) for k, t in PANELS + MOE_PANELS if k in series]
    if "moe/load_max" in series:
        out.append(("expert load (min, max share)", ["moe/load_min", "moe/load_max"]))
    return out


PILLOW_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG"}


def output_path(run_dir: Path, out: str | Path | None, formats: list[str]) -> tuple[Path, str]:
    """Where the picture goes and in which format; a UserError for a path it cannot go to."""
    if out is None:
        return run_dir / "curves.png", "png"
    out = Path(out).expanduser()
    if out.is_dir():  # `--out plots/`: the default name inside it
        out = out / "curves.png"
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in formats:
        raise UserError(f"--out {out}: cannot write a {fmt or 'extension-less'!r} picture",
                        hint=f"end the name with .{' / .'.join(formats)}")
    parent = out.parent
    if not parent.is_dir():  # made, as `--out curves/tiny.png` asks, where the nearest folder above allows
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--out {out}: cannot make the folder {parent} ({e.strerror or e})",
                            hint="choose another --out") from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"--out {out}: the folder {parent} is not writable", hint="choose another --out")
    return out, fmt


def plot(run_dir: str | Path, out: str | Path | None = None) -> Path:
    from vlmdata.atomic import write_bytes

    run_dir = Path(run_dir)
    series = read_metrics(run_dir)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        out, fmt = output_path(run_dir, out, list(PILLOW_FORMATS))
        buf = io.BytesIO()
        _plot_pillow(series, buf, run_dir.name, PILLOW_FORMATS[fmt])
        write_bytes(out, buf.getvalue())
        return out
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    out, fmt = output_path(run_dir, out, sorted(FigureCanvasAgg.get_supported_filetypes()))
    panels = _panels(series)
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.4 * len(panels)), sharex=True, squeeze=False)
    for ax, (title, keys) in zip(axes[:, 0], panels):
        for key in keys:
            xs, ys = zip(*series[key])
            ax.plot(xs, ys, lw=1.2)
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format=fmt)
    plt.close(fig)
    write_bytes(out, buf.getvalue())
    return out


def _plot_pillow(series, out: io.BytesIO, title: str, fmt: str = "PNG") -> None:
    from PIL import Image, ImageDraw

    panels = _panels(series)
    w, h, pad = 800, 200, 40
    img = Image.new("RGB", (w, h * len(panels) + 30), "white")
    d = ImageDraw.Draw(img)
    d.text((pad, 8), title, fill="black")
    for i, (name, keys) in enumerate(panels):
        top = 30 + i * h
        every = [p for k in keys for p in series[k]]
        xs, ys = [p[0] for p in every], [p[1] for p in every]
        x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
        box = (pad, top + 10, w - 10, top + h - 20)
        d.rectangle(box, outline="gray")
        d.text((pad + 4, top + 12), f"{name}  [{min(ys):.4g} .. {max(ys):.4g}]", fill="black")

        def xy(x, y):
            return (box[0] + (x - x0) / (x1 - x0) * (box[2] - box[0]),
                    box[3] - (y - y0) / (y1 - y0) * (box[3] - box[1]))

        for key, colour in zip(keys, ("navy", "darkred")):
            line = [xy(x, y) for x, y in series[key]]
            if len(line) > 1:
                d.line(line, fill=colour, width=2)
            else:
                d.ellipse([line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2], fill=colour)
    img.save(out, format=fmt)
