"""Errors a user can act on.

Every error carries what went wrong, where (file, record, line) and what to do next. The CLI
prints the message without a traceback and exits with the error's code: 2 for bad input (a typo,
a broken manifest, a root that is a file), 1 for an operation that failed (a download, a disk
that is too small).

``run_app`` is that rule for a console script, shared by `vlmdata` and `vlmtrain`: user mistakes
become one clear message and exit code 2 (a VlmdataError carries its own code), usage errors print
click's usage text with exit code 2, Ctrl-C prints how to resume and exits 130; anything else is a
bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import typer


class VlmdataError(Exception):
    """Base class: a message for the user and an exit code."""

    exit_code = 1

    def __init__(self, what: str, *, where: str | None = None, hint: str | None = None) -> None:
        self.what = what
        self.where = where
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        parts = [self.what if not self.where else f"{self.where}: {self.what}"]
        if self.hint:
            parts.append(f"  -> {self.hint}")
        return "\n".join(parts)


class UserError(VlmdataError):
    """The input is wrong: a name, a path, a manifest, a record. Exit code 2."""

    exit_code = 2


class OperationError(VlmdataError):
    """The input is fine but the operation failed (network, disk, checksum). Exit code 1."""

    exit_code = 1


def run_app(app: "typer.Typer", *, interrupted: str,
            user_error: Callable[[BaseException], bool] = lambda e: False) -> None:
    """Run ``app``; ``user_error(e)`` marks other exception types whose message is for the user (exit 2)."""
    import typer  # here, not at the top: every module imports this one, most never run a CLI

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
