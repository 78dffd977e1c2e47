"""`vlmdata plan`: a dry run of fetch (also `vlmdata fetch --dry-run`)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from vlmdata.cli.echo import echo
from vlmdata.cli.params import Argument, Option
from vlmdata.cli.selection import select
from vlmdata.cli.settings import Settings
from vlmdata.errors import UserError
from vlmdata.units import human_bytes

if TYPE_CHECKING:  # (vlmdata.plan imports every source kind: a fetch with nothing to do never plans)
    from vlmdata.manifest import FileSpec
    from vlmdata.plan import Plan

ONLY_REFERENCED_HELP = ("Keep only the archive members these LLaVA-style JSONs reference "
                        "(tars are streamed, never stored). Repeatable.")
REFETCH_HELP = "Ignore what the journal says is placed: fetch and place again."
UPDATE_HELP = ("Hub files and repos that only vlmdata.lock pins: fetch the revision the manifest names now (a branch's "
               "newest commit) instead of the pinned commit, and replace the pins. A repo downloads only the files "
               "that changed.")
# fetch --update, of the placed Hub files and repos it first only asks about (the line before the run, the dry run)
UPDATE_CHECK = ("re-pinned without a download if unchanged, downloaded if changed (the bytes are known once the "
                "Hub answers)")


def plan_cmd(
    names: Optional[List[str]] = Argument(None, help="Datasets (NAME) or single files (NAME:FILE)."),
    layout: Optional[str] = Option(None, "--layout", help="Also check the layout exists (the view costs no extra disk); "
                                                          "alone: everything it needs."),
    recipe: Optional[str] = Option(None, "--recipe", help="Everything this blend recipe needs (the bill of `fetch --recipe`)."),
    only_referenced_by: Optional[List[Path]] = Option(None, "--only-referenced-by", help=ONLY_REFERENCED_HELP),
    refetch: bool = Option(False, "--refetch", help="Plan `fetch --refetch`. " + REFETCH_HELP),
    update: bool = Option(False, "--update", help="Plan `fetch --update` (no request is sent: placed pinned Hub "
                                                  "files show as 'check'). " + UPDATE_HELP),
    settings: Settings = None,
) -> None:
    """What `fetch` would do: each file's source, bytes to download, disk needed, free disk, what is present.

    Exits 1 when the disk will not hold it (disk needed counts archives and their unpacked contents). `vlmdata fetch --dry-run` prints the same.

    Examples:
      vlmdata plan coco gqa --root /data/llava
      vlmdata plan --recipe llava-665k
      vlmdata plan sam:sa_000000.tar --json
      vlmdata plan sam --only-referenced-by cap100k.json
      vlmdata plan ocr_vqa textvqa vg --layout llava \\
          --mirror http://cache.local/
      vlmdata plan phi-2 --update
    """
    show_plan(settings, names, layout, only_referenced_by, recipe, refetch=refetch, update=update)


def wanted_names(settings: Settings, paths: Optional[List[Path]],
                 specs: list[FileSpec]) -> tuple[set[str] | None, str | None]:
    """--only-referenced-by: the image base names the JSONs reference, and their digest.

    Refused when it could keep nothing or change nothing: a JSON that references no image (every
    archive would be downloaded for none of its members), or a selection without an archive to
    filter (URL lists, JSONs and Hub repos are fetched whole). Files it leaves whole are said."""
    if not paths:
        return None, None
    from vlmdata.fetch.outcome import wanted_digest
    from vlmdata.place.subset import referenced_names

    for p in paths:
        if not p.is_file():
            raise UserError(f"--only-referenced-by {p}: no such file",
                            hint="give the LLaVA-style JSON whose images you want")
    wanted: set[str] = set()
    for p in paths:
        names = referenced_names([p])
        if not names:
            raise UserError(f"--only-referenced-by {p}: its records reference no image (no 'image' or 'images' "
                            f"path), so nothing of the archives would be kept; nothing was downloaded",
                            hint="give the LLaVA-style JSON whose images you want, or leave the option out "
                                 "to fetch the whole archives")
        wanted |= names
    whole = [s.key for s in specs if s.place.kind != "extract"]
    if whole and len(whole) == len(specs):
        raise UserError(f"--only-referenced-by keeps only the members of archives, and none of the selected "
                        f"files is one ({_listed(whole)}): it would change nothing; nothing was downloaded",
                        hint="leave the option out to fetch them whole, or name the archives to filter (e.g. sam)")
    settings.info(f"keeping only the {len(wanted):,} image names referenced by {len(paths)} JSON file(s)")
    if whole:
        settings.info(f"--only-referenced-by filters archives only; fetched whole: {_listed(whole)}")
    return wanted, wanted_digest(wanted)


def _listed(keys: list[str], show: int = 5) -> str:
    return ", ".join(keys[:show]) + (f" and {len(keys) - show} more" if len(keys) > show else "")


def show_plan(settings: Settings, names: Optional[List[str]], layout: Optional[str],
              only_referenced_by: Optional[List[Path]] = None, recipe: Optional[str] = None, *,
              refetch: bool = False, update: bool = False) -> None:
    """The plan, printed (``refetch``, ``update``: those of `fetch --dry-run`). No request is sent: under
    --update, placed Hub files and repos are said to be checked, which the hub alone can answer."""
    from vlmdata.plan import plan_files

    sel = select(settings.catalog, names, layout, recipe)
    specs = sel.specs
    for note in sel.notes:
        settings.info(f"note: {note}")
    root = settings.data_root
    root.check_readable()
    _, tag = wanted_names(settings, only_referenced_by, specs)
    plan = plan_files(root, specs, mirror_base=settings.mirror, hf_endpoint=settings.hf_endpoint, wanted_tag=tag,
                      refetch=refetch, update=update)
    if settings.json:
        settings.emit_json({**plan.to_json(), **({"notes": sel.notes} if sel.notes else {})})
    else:
        _print(plan, str(root.path), subset=tag is not None)
    plan.require_fits(root.path, "free some space, choose another --root, or fetch fewer datasets at a time")


def _print(plan: Plan, root: str, *, subset: bool = False) -> None:
    echo(f"{'file':<52} {'state':<8} {'download':>11} {'disk':>11}  source")
    for i in plan.items:
        echo(f"{i.key:<52} {i.state:<8} {human_bytes(i.download_bytes, approx=not i.size_exact):>11} "
             f"{human_bytes(i.disk_bytes, approx=not i.size_exact):>11}  {i.source}"
             + ("  (not in the mirror)" if i.in_mirror is False else ""))
    echo("")
    echo(f"to download: {human_bytes(plan.download_bytes)} ({plan.download_bytes:,} bytes)")
    if plan.checked:
        echo(f"to check for updates: {len(plan.checked)} pinned Hub file(s), asked about at the branch's newest "
             f"commit: {UPDATE_CHECK}; disk needed counts a file (not a repo) at its pinned size, as if it changed")
    echo(f"disk needed: {human_bytes(plan.disk_bytes)} (archives and their unpacked contents"
         + ("; --only-referenced-by: tars are streamed, the referenced images they hold are not counted)"
            if subset else ")"))
    echo(f"free on {root}: {human_bytes(plan.free_bytes)}")
    if plan.unknown:
        echo(f"size unknown for {len(plan.unknown)} file(s), not counted: {', '.join(plan.unknown)}")
    absent = [i.key for i in plan.items if i.in_mirror is False]
    if absent:
        echo(f"not in the mirror folder: {len(absent)} of the files to fetch ({', '.join(absent[:5])}"
             f"{', ...' if len(absent) > 5 else ''}): is --mirror the folder that holds vlmdata-mirror.json?")
    if any(i.state == "subset" for i in plan.items):
        echo("subset: placed in part with --only-referenced-by; this fetch asks for the whole archive")
    echo("fits: yes" if plan.fits else "fits: NO")


COMMANDS = {"plan": plan_cmd}  # (vlmdata.cli.app)
