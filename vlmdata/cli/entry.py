"""Running a Typer app as a console script: the error handling both `vlmdata` and `vlmtrain` share.

User mistakes become one clear message and exit code 2 (VlmdataError carries its own code),
usage errors print click's usage text with exit code 2, Ctrl-C prints how to resume and exits 130;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable

import typer

from vlmdata.errors import VlmdataError


def run_app(app: typer.Typer, *, interrupted: str,
            user_error: Callable[[BaseException], bool] = lambda e: False) -> None:
    """Run ``app``; ``user_error(e)`` marks other exception types whose message is for the user (exit 2)."""
    try:
        # Without standalone mode click returns (not raises) the code of a typer.Exit.
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except VlmdataError as e:
        typer.echo(f"error: {e.render()}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo(interrupted, err=True)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as e:  # usage errors: missing argument, unknown option
        show = getattr(e, "show", None)
        if show is None:
            raise
        show()
        sys.exit(2)
    except Exception as e:
        if not user_error(e):
            raise
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
