"""`vlmdata verify`: quick (presence, sizes, counts) or deep (hashes, decode every image)."""
from __future__ import annotations

import sys
from typing import List, Optional

from vlmdata.cli.echo import echo
from vlmdata.cli.params import Argument, Option
from vlmdata.cli.settings import Settings
from vlmdata.errors import UserError
from vlmdata.verify import count_images, verify

SHOW = 20  # problems printed per dataset; the report JSON has them all


def verify_cmd(
    names: Optional[List[str]] = Argument(None, help="Datasets to check (default: every fetched one)."),
    deep: bool = Option(False, "--deep", help="Also hash kept archives and plain files, and decode every image."),
    jobs: Optional[int] = Option(None, "--jobs", "-j", min=1, help="Images decoded in parallel (default: 2 per core)."),
    settings: Settings = None,
) -> None:
    """Check what was fetched: files present, sizes and counts right; --deep hashes and decodes.

    Every placed file present, sizes and file counts right; with --deep also sha256 of plain files and kept archives, and every image decoded (empty, truncated, undecodable and wrong-format files are listed with their paths). Writes ROOT/.vlmdata/reports/verify.json; `vlmdata status` then shows "verified" (or "damaged", until what it names is fetched again). Exit 1 when something is wrong.

    Examples:
      vlmdata verify
      vlmdata verify coco ocr_vqa --deep
      vlmdata verify --deep --json > verify.json
    """
    root = settings.data_root
    root.check_readable()
    if not root.path.exists():
        raise UserError(f"the root {root.path} does not exist, so nothing was fetched into it",
                        hint="pass the --root (or VLMDATA_ROOT) you fetched into")
    for n in names or []:
        ds, colon, _ = n.partition(":")
        if colon and ds in settings.catalog.datasets:  # (fetch and plan take NAME:FILE; verify checks datasets)
            raise UserError(f"{n!r}: verify checks whole datasets, not single files",
                            hint=f"`vlmdata verify {ds}` checks every file of {ds} that was fetched")
        settings.catalog.dataset(n)  # a wrong name is an error before any progress bar
    bar = None
    progress = None
    if deep and settings.progress:
        from tqdm import tqdm

        total = count_images(root, settings.catalog, names or sorted(settings.catalog.datasets))
        bar = tqdm(total=total, unit="img", desc="decoding", file=sys.stderr)
        progress = bar.update
    try:
        report = verify(root, settings.catalog, names, deep=deep, jobs=jobs, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    if settings.json:
        settings.emit_json(report.to_json())
    elif not settings.quiet or not report.ok:
        _print(report, str(root.path), explicit=bool(names), quiet=settings.quiet)
    if not report.ok:
        raise SystemExit(1)


def _print(report, root: str, *, explicit: bool, quiet: bool) -> None:
    if not report.checked:
        echo(f"nothing has been fetched into {root}: there is nothing to verify\n"
             "  -> pass the --root (or VLMDATA_ROOT) you fetched into, or fetch first (`vlmdata fetch NAME`)")
        return
    never = [d.name for d in report.datasets if not d.fetched and d.ok]
    for d in report.checked:
        if quiet and d.ok:
            continue
        what = f"{d.files} file(s)" + (f", {d.images:,} images checked by decoding" if report.deep else "")
        if d.subset is not None:
            of = f"{d.subset['of']:,}" if d.subset["of"] is not None else "an unknown number of"
            what += f", subset: {d.subset['images']:,} of {of} images (placed with --only-referenced-by)"
        echo(f"[{'ok  ' if d.ok else 'FAIL'}] {d.name:<16} {what}")
        for p in d.problems[:SHOW]:
            echo(f"       {p.kind:<12} {p.path}: {p.detail}")
        if len(d.problems) > SHOW:
            echo(f"       ... and {len(d.problems) - SHOW} more (see the report)")
        for n in d.notes:
            echo(f"       note: {n}")
    if never and not explicit and not quiet:
        echo(f"never fetched: {', '.join(never)}")
    bad = sum(len(d.problems) for d in report.datasets)
    failed = sum(1 for d in report.checked if not d.ok)
    mode = "deep" if report.deep else "quick"
    verdict = "all good" if report.ok else f"{bad} problem(s) in {failed} of them"
    echo(f"\n{mode} verify of {len(report.checked)} dataset(s): {verdict}"
         + (f"; report: {report.report_path}" if report.report_path else ""))
    if report.not_recorded:
        echo(f"  note: {report.not_recorded}")
    repair = [k for d in report.datasets for k in d.repair]
    if repair:
        echo(f"  -> to download and place {'it' if len(repair) == 1 else 'them'} again: "
             f"vlmdata fetch {' '.join(repair)} --refetch")
    if any(p.kind == "wrong_format" for d in report.datasets for p in d.problems):
        echo("  -> images in the wrong format: `vlmdata normalize DATASET FOLDER` converts them to real JPEGs")


COMMANDS = {"verify": verify_cmd}  # (vlmdata.cli.app)
