"""`vlmdata status`: a table of datasets and their state in the root."""
from __future__ import annotations

from vlmdata.cli.echo import echo
from vlmdata.cli.settings import Settings
from vlmdata.status import status_all


def status_cmd(settings: Settings) -> None:
    """Each dataset: absent, partial, subset, complete, verified or damaged.

    "complete": every default file placed. "verified": the last `vlmdata verify` found nothing wrong; "damaged": it found problems, and nothing was placed again since.

    "subset (N of M images)": archives placed with `fetch --only-referenced-by`, a part of them on purpose.
    Below the table: what fetches running now (on this machine or others sharing the root) hold.

    Examples:
      vlmdata status --root /data/llava
      vlmdata status --json
    """
    root = settings.data_root
    root.check_readable()
    rows = status_all(root, settings.catalog)
    if settings.json:
        settings.emit_json([r.__dict__ for r in rows])
        return
    echo(f"root: {root.path}" + ("" if root.path.is_dir() else "  (does not exist: nothing fetched into it yet)"))
    width = max([16, *(len(r.name) for r in rows)])
    echo(f"{'dataset':<{width}} {'state':<9} files")
    for r in rows:
        extra = f" (+{r.optional_placed} optional)" if r.optional_placed else ""
        note = {"subset": "  (placed with --only-referenced-by)",
                "damaged": f"  (`vlmdata verify {r.name}` says what, and the command that mends it)"}.get(r.state, "")
        echo(f"{r.name:<{width}} {r.describe():<9} {r.placed}/{r.total}{extra}{note}")
    _show_claims(root)


def _show_claims(root) -> None:
    """The files other fetches (here or on other machines) are working on right now."""
    import time

    from vlmdata.state.claims import live_claims

    held = live_claims(root.claims_dir)
    if held:
        echo(f"in progress ({len(held)} claim(s) in {root.claims_dir}):")
    for key, h in held:
        where = "this machine" if h.same_machine() else h.host
        echo(f"  {h.what or key}: pid {h.pid} on {where}, heartbeat {max(0.0, time.time() - h.heartbeat):.0f} s ago")


COMMANDS = {"status": status_cmd}  # (vlmdata.cli.app)
