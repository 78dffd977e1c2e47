"""Printing a line as typer.echo does, without importing typer (vlmdata.cli.fastparse runs
commands without it): to stdout or stderr, flushed at once (a progress line or a message must
show before a long step starts)."""
from __future__ import annotations

import sys


def echo(message: object = "", err: bool = False, nl: bool = True) -> None:
    out = sys.stderr if err else sys.stdout
    out.write(("" if message is None else str(message)) + ("\n" if nl else ""))
    out.flush()
