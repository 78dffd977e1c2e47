"""`vlmdata layout check` and `vlmdata layout build`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from vlmdata.cli.echo import echo
from vlmdata.cli.params import Argument, Option
from vlmdata.cli.settings import Settings
from vlmdata.errors import OperationError, UserError
from vlmdata.layouts.build import build_layout, undo_build
from vlmdata.layouts.check import check_layout
from vlmdata.manifest.needs import datasets_of, missing_entries

GROUP_HELP = ("Check a folder against a layout, or build a layout's view from the store.\n\n"
              "A layout is the folder tree one training script expects (`vlmdata list` names them, "
              "`vlmdata info LAYOUT` shows one).\n\n"
              "Examples:\n"
              "  vlmdata layout build --layout llava\n"
              "  vlmdata layout check --layout llava data/layouts/llava\n"
              "  vlmdata layout build --layout llava --out ./playground/data")


def check_cmd(
    folder: Path = Argument(..., help="The folder to check (e.g. playground/data)."),
    layout: str = Option(..., "--layout", "-l", help="Layout name (see `vlmdata list`)."),
    no_counts: bool = Option(False, "--no-counts", help="Do not compare file counts with the reference counts."),
    settings: Settings = None,
) -> None:
    """Check a folder against a layout: every path present, non-empty, with the expected file count.

    Exit 0 when all holds, 1 with a list of what is missing or wrong (--json for CI).

    Examples:
      vlmdata layout check --layout llava ./playground/data
      vlmdata layout check --layout moe-llava /data/moe --json     # for CI
    """
    lay = settings.catalog.layout(layout)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a folder")
    if not folder.exists():
        raise UserError(f"{folder} does not exist",
                        hint=f"give the folder the training script reads; the view vlmdata builds is "
                             f"ROOT/layouts/{lay.name} (`vlmdata layout build --layout {lay.name}`)")
    result = check_layout(lay, folder, counts=not no_counts)
    if settings.json:
        settings.emit_json(result.to_json())
    else:
        for e in result.entries:
            mark = {"ok": "ok  ", "skipped": "skip"}.get(e.status, "FAIL")
            detail = e.message or (f"{e.found} files" if e.found is not None else "")
            echo(f"[{mark}] {e.path:<45} {detail}")
        n = len(result.problems)
        echo(f"\n{lay.name}: {'all good' if result.ok else f'{n} problem(s)'} in {folder}")
        if not result.ok:
            datasets = sorted({e.dataset for e in result.problems if e.dataset and e.status != "count_mismatch"})
            echo(f"  -> fetch what is missing, then build the view here: vlmdata fetch {' '.join(datasets)}; "
                 f"vlmdata layout build --layout {lay.name} --out {folder}" if datasets else
                 "  -> the counts differ from the reference: a dataset fetched in part (`vlmdata status`) or "
                 "files added by hand; --no-counts checks the paths only")
    if not result.ok:
        raise SystemExit(1)


def build_cmd(
    layout: str = Option(..., "--layout", "-l", help="Layout name (see `vlmdata list`)."),
    out: Optional[Path] = Option(None, "--out", help="Where to build it (default ROOT/layouts/NAME); not inside the store, e.g. LLaVA's ./playground/data."),
    settings: Settings = None,
) -> None:
    """Build a layout's folder tree from what has been fetched, as links, never a second copy.

    Hard links into the store (symbolic links across filesystems). Safe to run again. Exits 1 while
    anything the layout requires is not fetched yet, and says what to fetch.

    Examples:
      vlmdata layout build --layout llava --root /data/store \\
          --out ./playground/data
      vlmdata layout build --layout moe-llava
    """
    lay = settings.catalog.layout(layout)
    root = settings.data_root
    root.check_readable()
    fetch = settings.catalog.fetch_command(settings.catalog.layout_datasets(lay), lay.name)
    if not root.path.is_dir():
        raise UserError(f"the root {root.path} does not exist, so nothing is there to link",
                        hint=f"pass the --root the datasets were fetched into, or fetch them: {fetch}")
    if out is not None and not out.absolute().is_relative_to(root.path):
        # a view of a (maybe shared, read-only) store in a folder of one's own: the store is only read
        res = build_layout(lay, root, out)
    else:
        with root.exclusive(f"vlmdata layout build --layout {layout}"):
            res = build_layout(lay, root, out)
    if res.missing and not (res.hardlinks or res.symlinks or res.existing):
        undo_build(res)  # a tree of empty folders is no view
        raise OperationError(f"nothing the {lay.name} layout links to is in {root.path} yet",
                             hint=f"fetch it first: {fetch} (that also builds the view)")
    gone = missing_entries(lay, lambda e: root.store_path(e.store).exists())
    if settings.json:
        settings.emit_json({"folder": str(res.folder), "hardlinks": res.hardlinks, "symlinks": res.symlinks,
                            "existing": res.existing, "missing": res.missing,
                            "image_folder": str(res.folder / lay.image_folder),
                            "required_missing": [e.path for e in gone]})
        _require_complete(lay.name, gone)
        return
    echo(f"{lay.name} view in {res.folder}: {res.hardlinks} hard links, {res.symlinks} symlinks, "
         f"{res.existing} already there")
    if res.missing:
        echo(f"not fetched yet ({len(res.missing)}): {', '.join(res.missing)}")
    echo(f"pass --image_folder {res.folder / lay.image_folder}")
    _require_complete(lay.name, gone)


def _require_complete(name: str, gone: list) -> None:
    if gone:
        what, hint = incomplete_view(name, gone)
        raise OperationError(what, hint=hint)


def incomplete_view(name: str, gone: list) -> tuple[str, str]:
    """What is missing from the ``name`` view (``gone``: its required entries not in the store), and what to
    run; `layout build` fails with it, `fetch NAMES --layout` warns with it (it fetched what was asked)."""
    what = (f"the {name} view is incomplete: {len(gone)} required path(s) not fetched yet: "
            + ", ".join(e.path for e in gone[:8]) + (f" and {len(gone) - 8} more" if len(gone) > 8 else ""))
    return what, (f"fetch them: `vlmdata fetch --layout {name}` (all it needs), or "
                  f"`vlmdata fetch {' '.join(datasets_of(gone))} --layout {name}`")


# the `layout` group (vlmdata.cli.app; a group's lines are parsed by typer)
SUBCOMMANDS = {"check": check_cmd, "build": build_cmd}
