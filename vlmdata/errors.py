"""Errors a user can act on.

Every error carries what went wrong, where (file, record, line) and what to do next. The CLI
prints the message without a traceback and exits with the error's code: 2 for bad input (a typo,
a broken manifest, a root that is a file), 1 for an operation that failed (a download, a disk
that is too small).
"""
from __future__ import annotations


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
