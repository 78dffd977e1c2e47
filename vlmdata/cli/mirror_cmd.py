"""`vlmdata mirror build`: what a root has fetched, laid out as a mirror for machines that cannot reach the origins."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from vlmdata.cli.echo import echo
from vlmdata.cli.params import Argument
from vlmdata.cli.settings import Settings
from vlmdata.errors import UserError

if TYPE_CHECKING:
    from vlmdata.mirror import MirrorResult

GROUP_HELP = ("Lay out what a root has fetched as a mirror folder (DIR/host/path).\n\n"
              "For machines behind a firewall or with no network at all: carry the folder in, then fetch "
              "with `--mirror DIR` (docs/airgapped.md).\n\n"
              "Examples:\n"
              "  vlmdata mirror build /media/usb/mirror --root /data/store\n"
              "  vlmdata fetch coco --mirror /media/usb/mirror --root /data/llava")


def build_cmd(
    folder: str = Argument(..., metavar="FOLDER", help="The mirror folder to fill (created if needed)."),
    names: Optional[List[str]] = Argument(None, help="Datasets (NAME) or files (NAME:FILE); default: every "
                                                     "file fetched into the root."),
    settings: Settings = None,
) -> None:
    """Lay out the root's downloads as a mirror: each file where `--mirror DIR` looks for it (DIR/host/path).

    Archives must have been fetched with --keep-archives (an unpacked archive cannot be rebuilt); JSONs and the images of URL lists come from where they were placed. Hard links when DIR is on the root's filesystem, copies otherwise. A file already in DIR is kept when its bytes are right (its sha256 where known, else the root's copy; a hard link to the root's file is not read) and replaced when not. DIR/vlmdata.lock holds the root's pinned hashes: a fetch with --mirror DIR checks them where its own root has no pin. Exit 1 when a file could not be mirrored (the list says why).

    Examples:
      vlmdata fetch coco gqa --keep-archives --root /data/store
      vlmdata mirror build /media/usb/mirror --root /data/store
      vlmdata mirror build /srv/mirror coco:train2017.zip --json
    """
    from vlmdata.mirror import build_mirror, placed_files

    out = _folder(folder)
    root = settings.data_root
    root.check_readable()
    if not root.path.exists():
        raise UserError(f"the root {root.path} does not exist, so nothing was fetched into it; nothing was written",
                        hint="pass the --root (or VLMDATA_ROOT) you fetched into")
    fetched = placed_files(root, settings.catalog)
    if not fetched:
        raise UserError(f"nothing has been fetched into {root.path}: there is nothing to put in a mirror; "
                        "nothing was written",
                        hint=f"pass the --root (or VLMDATA_ROOT) you fetched into, or fetch first: "
                             f"vlmdata fetch NAME --keep-archives --root {root.path}")
    specs = settings.catalog.select_files(names) if names else fetched
    res = build_mirror(root, settings.catalog, out, specs)
    if settings.json:
        settings.emit_json(res.to_json())
    else:
        _print(res)
    if res.left_out:
        raise SystemExit(1)


def _folder(value: str) -> Path:
    """The mirror folder, taken as text: click makes "" the current folder, where a mirror does not belong."""
    if not value.strip():
        raise UserError("the mirror folder is empty (a shell variable that is not set?); nothing was written",
                        hint="give the folder to fill, e.g. vlmdata mirror build /media/usb/mirror")
    return Path(value).expanduser()  # (as every path argument: vlmdata.cli.common.expand_home)


def _print(res: "MirrorResult") -> None:
    from vlmdata.mirror import LINKFILES

    hows = {h: sum(1 for m in res.files if m.how == h) for h in ("hardlink", "copy", "there", "replaced")}
    echo(f"mirror {res.folder}: {len(res.files)} file(s) ({hows['hardlink']} hard links, {hows['copy']} copies, "
         f"{hows['there']} already there, {hows['replaced']} replaced), {res.images} image(s) of URL lists; "
         f"vlmdata.lock with {res.pins} pinned hash(es)")
    if res.checked or res.replaced:  # (a hard link to the root's own file is not read: it is the fetched file)
        echo(f"{res.checked + res.replaced} file(s) already in the mirror checked: {res.checked} with the right "
             f"bytes (their sha256 where known, else the root's copy), {res.replaced} replaced (other bytes or size)")
    for m in res.files:
        echo(f"  {m.key:<48} {m.path}")
    if res.linkfiles:
        echo(f"links tables under {res.folder / LINKFILES}: {', '.join(res.linkfiles)} "
             f"(copy them to the same paths under the far root)")
    if res.left_out:
        echo(f"left out ({len(res.left_out)}):")
        for x in res.left_out:
            echo(f"  {x.key}: {x.reason}")
    if res.files:
        echo(f"on the far machine: vlmdata fetch ... --mirror {res.folder} (it checks the hashes of "
             f"{res.folder / 'vlmdata.lock'} where the root has none)")


# the `mirror` group (vlmdata.cli.app; a group's lines are parsed by typer)
SUBCOMMANDS = {"build": build_cmd}
