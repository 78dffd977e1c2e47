"""What a root holds: its folder checks, the journal of placed files, the lock file of hashes, unfinished downloads.

The names below are imported from their modules when first used, so a command that only reads
the journal does not load the lock file's or the downloads' code (start-up time)."""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlmdata.state.journal import Journal, JournalEntry, is_placed, satisfied, subset_tag  # noqa: F401
    from vlmdata.state.lockfile import LockEntry, LockFile  # noqa: F401
    from vlmdata.state.partial import partial_bytes, reserved_bytes  # noqa: F401
    from vlmdata.state.root import Root  # noqa: F401

_HOME = {"Root": "root", "Journal": "journal", "JournalEntry": "journal", "is_placed": "journal",
         "satisfied": "journal", "subset_tag": "journal", "partial_bytes": "partial", "reserved_bytes": "partial", "LockFile": "lockfile",
         "LockEntry": "lockfile"}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'vlmdata.state' has no attribute {name!r}")
    value = getattr(import_module(f"vlmdata.state.{home}"), name)
    globals()[name] = value
    return value
