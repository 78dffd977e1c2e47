"""Keep pyarrow from importing pandas in a command that never gives it a pandas object.

The first time ``pa.array()`` converts a Python list, pyarrow imports pandas (to recognise pandas'
missing-value markers and Series): ~0.2 s, about half of a blend's start-up, paid before its
reading processes start. pandas is optional to pyarrow: when the import fails it converts lists
exactly as before and only stops recognising pandas objects, which a blend never passes. So
while ``hidden()`` is active, importing pandas fails; code that does need pandas (the `datasets`
import, for its metadata) runs inside ``allowed()``, and pyarrow imports pandas again when asked
for pandas output. Only the CLI turns this on, for the commands whose work is Arrow from lists.
"""
from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from typing import Iterator

_lock = threading.Lock()
_hidden = 0  # hidden() contexts open
_allowed = 0  # allowed() contexts open (any thread)


class _Finder:
    """First on sys.meta_path while hidden: refuses pandas unless an allowed() is open."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if (name == "pandas" or name.startswith("pandas.")) and _hidden and not _allowed:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden while this command runs)", name=name)
        return None


@contextmanager
def hidden() -> Iterator[None]:
    """pandas cannot be imported inside (unless allowed()); a no-op once it is imported anyway."""
    global _hidden
    if "pandas" in sys.modules:
        yield
        return
    with _lock:
        _hidden += 1
        if _Finder not in sys.meta_path:
            sys.meta_path.insert(0, _Finder)
    try:
        yield
    finally:
        with _lock:
            _hidden -= 1
            if not _hidden and _Finder in sys.meta_path:
                sys.meta_path.remove(_Finder)


@contextmanager
def allowed() -> Iterator[None]:
    """pandas can be imported inside, even within hidden() (in any thread meanwhile)."""
    global _allowed
    with _lock:
        _allowed += 1
    try:
        yield
    finally:
        with _lock:
            _allowed -= 1
