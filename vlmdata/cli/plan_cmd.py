"""`vlmdata plan`: a dry run of fetch."""
from __future__ import annotations

from typing import List, Optional

import typer

from vlmdata.cli.common import Settings, with_settings
from vlmdata.plan import Plan, plan_files
from vlmdata.units import human_bytes


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_cmd)


@with_settings
def plan_cmd(
    names: List[str] = typer.Argument(..., help="Datasets (NAME) or single files (NAME:FILE)."),
    layout: Optional[str] = typer.Option(None, "--layout", help="Also check the layout exists (the view costs no extra disk)."),
    settings: Settings = None,
) -> None:
    """What `fetch` would do: each file's source, bytes to download, disk needed, free disk, what is present.

    Exits 1 when the disk will not hold it (disk needed counts archives and their unpacked contents).

    Examples:
      vlmdata plan coco gqa --root /data/llava
      vlmdata plan sam:sa_000000.tar --json
      vlmdata plan ocr_vqa textvqa vg --layout llava --mirror http://cache.local/
    """
    cat = settings.catalog
    specs = cat.select_files(names)
    if layout:
        cat.layout(layout)
    root = settings.data_root
    root.check_readable()
    plan = plan_files(root, specs, mirror_base=settings.mirror, hf_endpoint=settings.hf_endpoint)
    if settings.json:
        settings.emit_json(plan.to_json())
    else:
        _print(plan, str(root.path))
    plan.require_fits(root.path, "free some space, choose another --root, or fetch fewer datasets at a time")


def _print(plan: Plan, root: str) -> None:
    typer.echo(f"{'file':<52} {'state':<8} {'download':>11} {'disk':>11}  source")
    for i in plan.items:
        typer.echo(f"{i.key:<52} {i.state:<8} {human_bytes(i.download_bytes, approx=not i.size_exact):>11} "
                   f"{human_bytes(i.disk_bytes, approx=not i.size_exact):>11}  {i.source}")
    typer.echo("")
    typer.echo(f"to download: {human_bytes(plan.download_bytes)} ({plan.download_bytes:,} bytes)")
    typer.echo(f"disk needed: {human_bytes(plan.disk_bytes)} (archives and their unpacked contents)")
    typer.echo(f"free on {root}: {human_bytes(plan.free_bytes)}")
    if plan.unknown:
        typer.echo(f"size unknown for {len(plan.unknown)} file(s), not counted: {', '.join(plan.unknown)}")
    typer.echo("fits: yes" if plan.fits else "fits: NO")
