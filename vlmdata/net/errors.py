"""How a try to get a file ends when it does not deliver it (besides the retryable net.retry.Transient)."""
from __future__ import annotations


class Cancelled(Exception):
    """The user pressed Ctrl-C (or the run is stopping): a .part stays for the next run."""


class SourceFailed(Exception):
    """This location cannot deliver the file (404, 403, retries spent, ...): try the next source."""

    def __init__(self, message: str, *, status: int | None = None, unreachable: bool = False,
                 denied: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.unreachable = unreachable  # the server could not be reached at all (offline, firewalled)
        self.denied = denied  # the Hub refused this user (401/403: a token, or a gated repo's terms): no retry helps
