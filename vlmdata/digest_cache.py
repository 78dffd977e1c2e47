"""The sha256 of a local file, remembered while the file is unchanged, so an input that has not
changed is not read again only to be hashed (a blend records each input's digest: re-blending the
900 MB 665k mix spent a CPU-second of every run on it).

The digest is kept beside the file's identity: device, inode, size, mtime and ctime (ns). Any write
to the file sets its ctime to the time of the write, and no user tool can set a ctime back, so an
identity that still matches means the same bytes. Like git's index (and the catalog cache), a
digest is only remembered when the file's ctime is older than ``SETTLE`` seconds: two writes within
one timestamp tick could leave the same identity. One small JSON per path under
``VLMDATA_CACHE_DIR/digests``; a cache that cannot be read or written is ignored, never an error.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from vlmdata import atomic
from vlmdata.manifest.cache import SETTLE, cache_dir

def _identity(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _entry(path: Path) -> Path:
    return cache_dir() / "digests" / f"{hashlib.sha256(str(path).encode()).hexdigest()[:24]}.json"


def sha256_of(path: Path) -> tuple[str, int]:
    """(sha256 hex digest, size) of ``path``: remembered while the file is unchanged, else read."""
    path = Path(path).resolve()
    st = os.stat(path)
    entry = _entry(path)
    try:
        stored = json.loads(entry.read_text())
        if stored["path"] == str(path) and stored["identity"] == _identity(st):
            return stored["sha256"], st.st_size
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or unreadable: hash the file
    digest = _hash(path)
    after = os.stat(path)
    if _identity(after) == _identity(st) and after.st_ctime_ns < (time.time() - SETTLE) * 1e9:
        try:
            atomic.write_text(entry, json.dumps({"path": str(path), "identity": _identity(st), "sha256": digest}))
        except OSError:
            pass
    return digest, st.st_size


def _hash(path: Path) -> str:
    from vlmdata.fetch.hashing import hash_file  # (read into one small reused buffer, hashed while in the cache)

    return hash_file(path).sha256
