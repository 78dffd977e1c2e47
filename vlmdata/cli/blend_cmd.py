"""`vlmdata blend`, `vlmdata report`, `vlmdata export` and `vlmdata stats`."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Literal, Optional

from vlmdata.cli.echo import echo
from vlmdata.cli.params import Argument, Option
from vlmdata.blend.drop_limit import DEFAULT_MAX_DROP
from vlmdata.cli.settings import Settings
from vlmdata.errors import Interrupted, UserError, writing

_MISSING_HELP = "Records whose images are missing or corrupt: drop them (reported), fail (exit 1), or keep them."


def _options(settings: Settings, **kw: object):
    from vlmdata.blend.pipeline import Options

    return Options(progress=settings.progress, **kw)  # type: ignore[arg-type]


def _resolve(settings: Settings, recipe: str, image_root: Optional[Path]):
    from vlmdata.blend.recipe import resolve

    root = settings.data_root
    root.check_readable()
    return resolve(settings.catalog.blend(recipe), settings.catalog, root, image_root=image_root)


def blend_cmd(
    recipe: str = Argument(..., help="A recipe name (see `vlmdata list`) or a recipe TOML path."),
    out: Optional[Path] = Option(None, "--out", "-o", help="Output folder (default ROOT/blends/<recipe>)."),
    image_root: Optional[Path] = Option(
        None, "--image-root", help="Folder the records' image paths are relative to (default: the recipe layout's "
                             "view ROOT/layouts/<layout>/<image_folder>)."),
    missing: Literal["drop", "fail", "keep"] = Option("drop", "--missing", help=_MISSING_HELP),
    deep: bool = Option(False, "--deep", help="Decode every image (in parallel); corrupt ones count as missing."),
    strict: bool = Option(False, "--strict", help="Stop at the first bad record (exit 2) instead of dropping it."),
    image_sizes: bool = Option(False, "--image-sizes", help="Add image_widths / image_heights columns."),
    embed_images: bool = Option(False, "--embed-images", help="Store the image bytes too (image_bytes column)."),
    jobs: int = Option(0, "--jobs", "-j", min=0, help="Processes for parsing / threads for images (0 = all cores)."),
    max_drop: float = Option(
        DEFAULT_MAX_DROP, "--max-drop", min=0.0, max=100.0,
        help="Stop (exit 1, previous output kept) when a recipe entry would lose more than this percent of its "
       "records, e.g. because its images are not fetched. 100 accepts any loss."),
    settings: Settings = None,
) -> None:
    """Turn a recipe's instruction JSONs into one checked Arrow dataset (datasets.load_from_disk).

    Every record is normalised (id as string, image -> images list, turns), checked (roles alternate human/gpt, no empty turn, one <image> per image, paths inside the image root) and its images are checked to exist and not be empty (one stat per distinct path). Bad records are dropped and listed in OUT/dropped.jsonl; OUT/blend.json records the recipe, input hashes, image root and counts. The output is written to a temporary folder and swapped in at the end: an interrupted blend leaves the previous output intact.

    Examples:
      vlmdata blend llava-665k
      vlmdata blend llava-665k --image-root ./playground/data \\
          --out ./blends/llava-665k
      vlmdata blend ./my-mix.toml --missing keep --jobs 8
      vlmdata blend llava-665k --max-drop 5     # accept losing up to 5%
      vlmdata blend sharegpt4v-665k --deep --strict
    """
    from vlmdata.pandas_hidden import hidden

    with hidden():  # pyarrow would import pandas (~0.2 s) for nothing here
        from vlmdata.blend.pipeline import run_blend
        from vlmdata.blend.report import render_blend

        resolved = _resolve(settings, recipe, image_root)
        opts = _options(settings, missing=missing, deep=deep, strict=strict, image_sizes=image_sizes,
                        embed_images=embed_images, jobs=jobs, max_drop=max_drop)
        target = out if out is not None else settings.data_root.path / "blends" / resolved.recipe.name
        settings.info(f"blending {resolved.recipe.name} ({len(resolved.inputs)} input(s)) -> {target}")
        with writing(target, "--out"):
            try:
                res = run_blend(resolved, opts, target)
            except KeyboardInterrupt:
                raise Interrupted("interrupted: nothing was written" + (f"; {target} is as it was" if target.exists()
                                                                        else ""),
                                  hint="run the same command again to blend from the start") from None
            except OSError as e:  # (a full disk: the writes of Arrow and of the temporary folder name no file)
                if e.filename is None:
                    e.filename = str(target)
                raise
        settings.debug("timings: " + ", ".join(f"{k} {t:.2f} s" for k, t in res.timings.items()))
        if settings.json:
            settings.emit_json({"out": str(res.out), **res.meta, "timings": res.timings})
            return
        settings.result(render_blend(res.meta, str(res.out)))


def report_cmd(
    recipe: str = Argument(..., help="A recipe name (see `vlmdata list`) or a recipe TOML path."),
    image_root: Optional[Path] = Option(None, "--image-root", help="Folder the records' image paths are relative to."),
    deep: bool = Option(False, "--deep", help="Decode every image, to find corrupt ones too."),
    jobs: int = Option(0, "--jobs", "-j", min=0, help="Processes / threads (0 = all cores)."),
    settings: Settings = None,
) -> None:
    """What a recipe needs and what is there (images, records to drop), without writing a dataset.

    The images the mix uses, present / missing (/ corrupt with --deep) per source and per folder, and the records that would be dropped, with why.

    Examples:
      vlmdata report llava-665k
      vlmdata report sharegpt4v-cap100k --deep --json > report.json
      vlmdata report ./my-mix.toml --image-root ./playground/data
    """
    from vlmdata.pandas_hidden import hidden

    with hidden():  # pyarrow would import pandas (~0.2 s) for nothing here
        from vlmdata.blend.pipeline import run_report
        from vlmdata.blend.report import render_report

        resolved = _resolve(settings, recipe, image_root)
        rep = run_report(resolved, _options(settings, deep=deep, jobs=jobs))
        if settings.json:
            settings.emit_json(rep)
        else:
            echo(render_report(rep))


def export_cmd(
    folder: Path = Argument(..., help="A blend output folder."),
    out: Path = Argument(..., help="The JSON file to write."),
    fmt: Literal["llava-json", "llava-jsonl"] = Option(
        "llava-json", "--format", "-f", help="llava-json (one JSON array) or llava-jsonl (one record a line)."),
    blend_ids: bool = Option(False, "--blend-ids", help="Write the blend's unique ids, not each record's own id."),
    settings: Settings = None,
) -> None:
    """Write a blend back as the LLaVA JSON the original repos read.

    {id, image, conversations} per record, `image` a string for one image, a list for several, absent for text-only records, plus the record's other keys (model, task_name, ...) and its own id and id type: an unchanged blend exports as its input, record for record. Streams batch by batch; the file appears complete or not at all.

    Examples:
      vlmdata export data/blends/llava-665k llava_v1_5_mix665k.checked.json
      vlmdata export data/blends/moe-llava-stage2 stage2.jsonl \\
          --format llava-jsonl
    """
    from vlmdata.blend.export import FORMATS, export
    from vlmdata.blend.output import BlendOutput

    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    blend = BlendOutput(folder)  # a wrong folder is an error before any progress bar
    if out.is_dir():
        raise UserError(f"{out} is a folder; export writes one JSON file", hint=f"give a file name, e.g. {_export_name(folder, out)}")
    _not_an_input(blend.meta, out)
    from tqdm import tqdm

    with tqdm(disable=not settings.progress, unit="row", desc="export", leave=False, mininterval=0.5) as bar, \
            writing(out, "OUT"):
        n = export(folder, out, fmt, on_rows=bar.update, original_ids=not blend_ids)
    if settings.json:
        settings.emit_json({"out": str(out), "records": n, "format": fmt})
    else:
        settings.result(f"wrote {n:,} records to {out}")


def _not_an_input(meta: dict | None, out: Path) -> None:
    """An OUT that is one of the blend's input JSONs (its store path, or a view's hard link to it) is
    refused: the export would replace the file the journal, the views and the blend's hashes describe."""
    if not out.is_file():
        return
    for i in (meta or {}).get("inputs", []):
        src = Path(i.get("path") or "")
        if src.is_file() and os.path.samefile(src, out):
            raise UserError(f"{out} is an input of this blend ({i.get('source') or i.get('name')}, {src}): the export "
                            f"would replace the file it was made from; nothing was written",
                            hint=f"write it beside, e.g. {out.with_name(out.stem + '.checked.json')}")


def _export_name(folder: Path, out: Path) -> Path:
    """A file name for an export whose OUT is the folder ``out``: beside it when ``out`` is a dataset
    (the blend itself: a file written into it would sit among its shards), else in it."""
    from vlmdata.contract import BLEND_JSON

    if out.resolve() == folder.resolve() or (out / BLEND_JSON).exists():
        return out.parent / f"{out.resolve().name}.json"
    return out / f"{folder.resolve().name}.json"


def stats_cmd(
    folder: Path = Argument(..., help="A blend output folder."),
    png: Optional[Path] = Option(None, "--png", help="Also draw the histograms into this PNG (needs matplotlib)."),
    settings: Settings = None,
) -> None:
    """Counts per source, text-only share, images per record and a histogram of text lengths.

    Reads a blend's output folder (what `vlmdata blend` wrote).

    Examples:
      vlmdata stats data/blends/llava-665k
      vlmdata stats data/blends/llava-665k --json
      vlmdata stats data/blends/llava-665k --png llava-665k.png
    """
    from vlmdata.blend import stats

    if png is not None and importlib.util.find_spec("matplotlib") is None:
        raise UserError("--png needs matplotlib, which is not installed", hint="pip install matplotlib, or leave out --png")
    if png is not None and png.is_dir():
        raise UserError(f"--png {png} is a folder", hint=f"give a file name, e.g. {png / 'stats.png'}")
    if png is not None and not png.suffix:
        png = png.with_suffix(".png")  # what matplotlib would write anyway: say the real name
    st = stats.compute(folder)
    if png is not None:
        with writing(png, "--png"):
            stats.write_png(st, png)
        st["png"] = str(png)
    if settings.json:
        settings.emit_json(st)
        return
    echo(stats.render(st))
    if png is not None:
        echo(f"\n  histograms: {png}")


COMMANDS = {"blend": blend_cmd, "report": report_cmd, "export": export_cmd, "stats": stats_cmd}  # (vlmdata.cli.app)
