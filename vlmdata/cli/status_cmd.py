"""`vlmdata status`: a table of datasets and their state in the root."""
from __future__ import annotations

import typer

from vlmdata.cli.common import Settings, with_settings
from vlmdata.status import status_all


def register(app: typer.Typer) -> None:
    app.command("status")(status_cmd)


@with_settings
def status_cmd(settings: Settings) -> None:
    """Each dataset: absent, partial, complete (every default file placed) or verified.

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
    typer.echo(f"root: {root.path}")
    typer.echo(f"{'dataset':<16} {'state':<9} files")
    for r in rows:
        extra = f" (+{r.optional_placed} optional)" if r.optional_placed else ""
        typer.echo(f"{r.name:<16} {r.state:<9} {r.placed}/{r.total}{extra}")
