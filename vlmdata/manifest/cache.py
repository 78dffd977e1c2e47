"""A cache of the parsed catalog, so a command does not parse every shipped TOML at start-up.

Parsing and checking the ~30 shipped manifests costs more than the rest of a `vlmdata fetch`
that has nothing to do. The parsed catalog is written as MessagePack (msgspec, decoded straight
into the schema's classes) to ``VLMDATA_CACHE_DIR`` (default ``$XDG_CACHE_HOME/vlmdata``, else
``~/.cache/vlmdata``), one file per set of manifest folders, and used while its key still
matches: the name, size, mtime, ctime and inode of every manifest and of the parser's own source
files. Any edit, added or removed manifest, or new vlmdata code changes the key, and the catalog
is parsed again.

Like git's index, the cache is only written when every file's mtime is older than ``SETTLE``
seconds: a file written within the timestamp granularity of the parse could change again without
changing its mtime, so it is parsed every time until it has settled. Writes are atomic; a cache
that cannot be read, decoded or written (read-only home, full disk, a damaged or foreign file) is
ignored, never an error. Decoding is typed data, not pickle: a file in the cache folder cannot run
code.
"""
from __future__ import annotations

import os
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable, TypeVar

import msgspec
import msgspec.msgpack

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


def _encode_path(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    raise NotImplementedError(f"cannot cache a {type(obj).__name__}")


def _decode_path(type_: type, obj: Any) -> Any:
    if type_ is Path and isinstance(obj, str):
        return Path(obj)
    raise NotImplementedError(f"cannot read a {type_.__name__} from the cache")


def cached(dirs: list[Path], build: Callable[[], T], type_: type[T]) -> T:
    """``build()``'s result (a ``type_``) for these manifest folders, from the cache while its key matches."""
    key = catalog_key(dirs)
    encoder = msgspec.msgpack.Encoder(enc_hook=_encode_path)
    # (the file's name only spreads sets of folders apart; the key inside says whether it is theirs.
    # crc32, not hashlib: importing OpenSSL's hashes was 5% of a fetch with nothing to do)
    path = cache_dir() / f"catalog-{zlib.crc32(repr([str(d) for d in dirs]).encode()):08x}.msgpack"
    try:
        with open(path, "rb") as fh:
            stored_key, stored = msgspec.msgpack.decode(fh.read(), type=tuple[msgspec.Raw, msgspec.Raw])
        if bytes(stored_key) == encoder.encode(key):  # (tuples and lists encode alike: compare the bytes)
            return msgspec.msgpack.decode(stored, type=type_, dec_hook=_decode_path)
    except (OSError, msgspec.DecodeError):  # (ValidationError is a DecodeError)
        pass  # no cache yet, or one from other code: parse
    value = build()
    if _settled(key, time.time()):
        try:
            atomic.write_bytes(path, encoder.encode((key, value)))
        except OSError:
            pass
    return value
