"""A cache of the parsed catalog, so a command does not parse every shipped TOML at start-up.

Parsing and checking the ~30 shipped manifests costs more than the rest of a `vlmdata fetch`
that has nothing to do. The parsed catalog is pickled to ``VLMDATA_CACHE_DIR`` (default
``$XDG_CACHE_HOME/vlmdata``, else ``~/.cache/vlmdata``), one file per set of manifest folders,
and used while its key still matches: the name, size, mtime, ctime and inode of every manifest
and of the parser's own source files. Any edit, added or removed manifest, or new vlmdata code
changes the key, and the catalog is parsed again.

Like git's index, the cache is only written when every file's mtime is older than ``SETTLE``
seconds: a file written within the timestamp granularity of the parse could change again without
changing its mtime, so it is parsed every time until it has settled. Writes are atomic; a cache
that cannot be read or written (read-only home, full disk) is ignored, never an error. Only
this user's own cache folder is read (like ``__pycache__``, a pickle there is trusted).
"""
from __future__ import annotations

import os
import pickle
import sys
import time
import zlib
from pathlib import Path
from typing import Callable, TypeVar

from vlmdata import __version__, atomic

T = TypeVar("T")
SETTLE = 2.0  # seconds a file must be older than before its parse is cached
KINDS = ("datasets", "layouts", "blends")
_CODE = Path(__file__).resolve().parent  # the parser's own modules: new code, new key


def cache_dir() -> Path:
    env = os.environ.get("VLMDATA_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vlmdata"


def _stat_rows(folder: Path, names: list[str] | None = None) -> list[tuple]:
    rows = []
    try:
        with os.scandir(folder) as it:
            entries = [e for e in it if (e.name.endswith(".toml") if names is None else e.name in names)]
    except OSError:
        return [(str(folder), "missing")]
    for e in sorted(entries, key=lambda e: e.name):
        st = e.stat()
        rows.append((e.path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    return rows


def catalog_key(dirs: list[Path]) -> list[tuple]:
    """What the parsed catalog depends on: every manifest file and the parser's code, by metadata."""
    key: list[tuple] = [("vlmdata", __version__, sys.version_info[:2])]
    key += _stat_rows(_CODE, sorted(p.name for p in _CODE.glob("*.py")))
    for d in dirs:
        key.append(("dir", str(d)))
        for kind in KINDS:
            if (d / kind).is_dir():
                key += _stat_rows(d / kind)
    return key


def _settled(key: list[tuple], now: float) -> bool:
    limit = int((now - SETTLE) * 1e9)
    return all(len(row) < 5 or row[2] < limit for row in key)


def cached(dirs: list[Path], build: Callable[[], T]) -> T:
    """``build()``'s result for these manifest folders, from the cache while its key matches."""
    key = catalog_key(dirs)
    # (the file's name only spreads sets of folders apart; the key inside says whether it is theirs.
    # crc32, not hashlib: importing OpenSSL's hashes was 5% of a fetch with nothing to do)
    path = cache_dir() / f"catalog-{zlib.crc32(repr([str(d) for d in dirs]).encode()):08x}.pickle"
    try:
        with open(path, "rb") as fh:
            stored_key, value = pickle.load(fh)
        if stored_key == key:
            return value
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, ImportError):
        pass  # no cache yet, or one from other code: parse
    value = build()
    if _settled(key, time.time()):
        try:
            atomic.write_bytes(path, pickle.dumps((key, value), protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            pass
    return value
