"""A tiny dataset in the `vlmdata blend` output format, for tiny-cpu.yaml, tests and smoke runs.

    vlmtrain make-tiny-data DIR            # then: vlmtrain run configs/tiny-cpu.yaml --set dataset_dir=DIR

Same contract as a real blend (vlmdata.contract): ``datasets.load_from_disk(DIR)`` with the columns id,
source, images, conversations, n_images, text_chars, plus ``DIR/blend.json`` naming the image root
(``images``, relative to DIR, so the folder can be moved: small JPEGs of coloured shapes).
``kind="caption"`` gives stage-1 style pairs (one image, one caption: what the ``plain`` template
needs); ``"instruct"`` gives multi-turn conversations, about a quarter of them text-only.

The folder is written beside its final place and renamed in at the end: an interrupted write
leaves no half dataset, and an earlier tiny dataset is replaced whole. Any other non-empty folder
is refused, so a typo cannot scatter files into someone's home folder.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from vlmdata import contract
from vlmdata.errors import UserError

NOTE = "written by vlmtrain.tinydata for smoke runs"

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40),
          "purple": (140, 60, 180), "orange": (240, 140, 30)}
SHAPES = ("square", "circle", "bar")
WORDS = ("the a of and to in is what color shape image picture there left right top bottom small large "
         "one two three answer question describe detail background front").split()


def _draw(path: Path, color: str, shape: str, size: int, rng: random.Random) -> None:
    from PIL import Image, ImageDraw

    w, h = size + rng.randint(0, size // 2), size  # not square, so `pad` has work to do
    img = Image.new("RGB", (w, h), (250, 250, 250))
    d = ImageDraw.Draw(img)
    box = (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
    if shape == "circle":
        d.ellipse(box, fill=COLORS[color])
    elif shape == "bar":
        d.rectangle((w // 8, h // 3, 7 * w // 8, 2 * h // 3), fill=COLORS[color])
    else:
        d.rectangle(box, fill=COLORS[color])
    img.save(path, quality=90)


def _filler(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _is_tiny_blend(folder: Path) -> bool:
    try:
        return json.loads((folder / contract.BLEND_JSON).read_text()).get("note") == NOTE
    except (OSError, ValueError, AttributeError):
        return False


def check_target(out: Path) -> None:
    """A UserError when ``out`` is a file, or a non-empty folder that is not an earlier tiny dataset."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a folder", hint="give a folder path for the dataset (it is created)")
    if out.is_dir() and any(out.iterdir()) and not _is_tiny_blend(out):
        raise UserError(f"{out} is a folder that is not empty and holds no tiny dataset; nothing was written",
                        hint="give a new folder (it is created), or an earlier `vlmtrain make-tiny-data` output "
                             "to replace it")


def write_tiny_blend(out: str | Path, n: int = 48, *, kind: str = "instruct", seed: int = 0,
                     image_size: int = 40) -> Path:
    from vlmdata.atomic import replace_dir, temp_dir_beside

    out = Path(out)
    check_target(out)
    try:
        tmp = temp_dir_beside(out)
    except OSError as e:
        raise UserError(f"cannot create a folder beside {out}: {e.strerror}",
                        hint="give a path in a folder that exists and that you may write to") from None
    try:
        _write(tmp, n, kind, seed, image_size)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write(out: Path, n: int, kind: str, seed: int, image_size: int) -> None:
    import sys

    import datasets

    if not sys.stderr.isatty():  # "Saving the dataset" redraws are noise in a log file
        datasets.disable_progress_bars()

    img_dir = out / "images"
    img_dir.mkdir()
    rng = random.Random(seed)
    records = []
    for i in range(n):
        color, shape = rng.choice(sorted(COLORS)), rng.choice(SHAPES)
        with_image = kind == "caption" or rng.random() < 0.75
        images = []
        if with_image:
            name = f"{i:05d}.jpg"
            _draw(img_dir / name, color, shape, image_size, rng)
            images = [name]
        if kind == "caption":
            conv = [{"from": "human", "value": "<image>\n" + rng.choice(["Describe the image.", "What is shown?"])},
                    {"from": "gpt", "value": f"a {color} {shape} on a white background"}]
        else:
            conv = []
            for t in range(rng.randint(1, 3)):
                q = f"what color is the {shape}?" if t == 0 else _filler(rng, 3, 10) + "?"
                if t == 0 and with_image:
                    q = "<image>\n" + q if rng.random() < 0.8 else q + "\n<image>"
                a = f"the {shape} is {color}." if t == 0 else _filler(rng, 2, 12) + "."
                conv += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        records.append((f"tiny-{i:05d}", images, conv))
    save_records(out, records, source=f"tiny-{kind}", note=NOTE)


def save_records(out: Path, records: list[tuple[str, list[str], list[dict]]], *, source: str, note: str) -> None:
    """``(id, images, conversations)`` records as a blend in ``out`` (the dataset and blend.json; the
    images, relative to ``out/images``, are the caller's). One source, named ``source``, nothing dropped."""
    import datasets

    rows: dict[str, list] = {k: [] for k in contract.REQUIRED_NAMES}
    for rid, images, conv in records:
        rows[contract.ID].append(rid)
        rows[contract.SOURCE].append(source)
        rows[contract.IMAGES].append(images)
        rows[contract.CONVERSATIONS].append(conv)
        rows[contract.N_IMAGES].append(len(images))
        rows[contract.TEXT_CHARS].append(sum(len(t["value"]) for t in conv))
    datasets.Dataset.from_dict(rows, features=contract.features()).save_to_disk(str(out))
    contract.write_blend_meta(out, contract.blend_meta(
        image_root="images", recipe=source, counts={source: len(records)}, dropped={}, note=note))
