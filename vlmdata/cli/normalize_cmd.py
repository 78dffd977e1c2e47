"""`vlmdata normalize DATASET DIR`: every image in a hand-downloaded folder becomes a real .jpg."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from vlmdata.cli.echo import echo
from vlmdata.cli.params import Argument, Option
from vlmdata.cli.settings import Settings
from vlmdata.errors import UserError
from vlmdata.place.normalize import normalize_folder

SHOW = 20


def normalize_cmd(
    dataset: str = Argument(..., help="The dataset whose image placement says the extension (e.g. ocr_vqa)."),
    folder: Path = Argument(..., help="The image folder to fix in place."),
    jobs: Optional[int] = Option(None, "--jobs", "-j", min=1, help="Files handled in parallel (default: 2 per core)."),
    settings: Settings = None,
) -> None:
    """Fix an image folder downloaded by hand: every image becomes a real JPEG named <id>.jpg.

    GIF/PNG/WebP under any name (also GIF bytes named .jpg) become real RGB JPEGs named <id>.jpg; JPEGs under another name are renamed. In place, atomically, one file at a time (disk use never doubles); safe to run again. Lists files that cannot be decoded; exit 1 when there are any.

    Examples:
      vlmdata normalize ocr_vqa ./playground/data/ocr_vqa/images
      vlmdata normalize ocr_vqa /data/ocr_vqa/images --json
    """
    ds = settings.catalog.dataset(dataset)
    exts = sorted({f.place.ext for f in ds.files if f.place.kind == "images" and f.place.ext})
    if not exts:
        raise UserError(f"dataset {dataset!r} has no image placement with a forced extension (place.ext)",
                        hint="normalize applies to per-image datasets such as ocr_vqa")
    if len(exts) > 1:
        raise UserError(f"dataset {dataset!r} places images with several extensions: {', '.join(exts)}")
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder", hint="give the folder that holds the images")
    bar = None
    if settings.progress:
        from tqdm import tqdm

        bar = tqdm(unit="file", desc="normalizing", file=sys.stderr)
    try:
        rep = normalize_folder(folder, ext=exts[0], jobs=jobs, progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    if not (rep.ok or rep.converted or rep.renamed or rep.problems):
        other = f" ({rep.not_images} other file(s), left alone)" if rep.not_images else ""
        raise UserError(f"{folder} holds no image{other}: nothing to normalize",
                        hint="give the folder the images were downloaded into, e.g. ./playground/data/ocr_vqa/images")
    if settings.json:
        settings.emit_json(rep.to_json())
    elif not settings.quiet or rep.problems:
        echo(f"{folder}: {len(rep.converted)} converted to JPEG, {len(rep.renamed)} renamed, "
             f"{rep.ok} already ok, {len(rep.undecodable)} undecodable"
             + (f", {len(rep.duplicates)} duplicate(s)" if rep.duplicates else "")
             + (f", {rep.not_images} non-image file(s) left alone" if rep.not_images else ""))
        for c in rep.converted[:SHOW]:
            echo(f"  converted  {c['from']} ({c['format']}) -> {Path(c['to']).name}")
        for r in rep.renamed[:SHOW]:
            echo(f"  renamed    {r['from']} -> {Path(r['to']).name}")
        for u in rep.undecodable:
            echo(f"  {u['status']:<10} {u['path']}: {u['detail']}")
        for d in rep.duplicates:
            echo(f"  duplicate  {d['path']}: {Path(d['kept']).name} already exists; left both")
    if rep.problems:
        raise SystemExit(1)


COMMANDS = {"normalize": normalize_cmd}  # (vlmdata.cli.app)
