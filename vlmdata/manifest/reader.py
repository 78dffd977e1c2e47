"""A strict reader over a parsed TOML table.

Each accessor names the file and the dotted key path in its error, and ``done()`` rejects keys
the schema does not know, so a typo in a manifest fails loudly instead of being ignored.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from vlmdata.errors import UserError

T = TypeVar("T")
UNKNOWN = "unknown"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


class Table:
    """Wraps one TOML table; remembers which keys were read."""

    def __init__(self, data: dict[str, Any], file: Path, path: str = "") -> None:
        if not isinstance(data, dict):
            raise UserError(f"expected a table, got {type(data).__name__}", where=f"{file}: {path or '<top>'}")
        self.data = data
        self.file = file
        self.path = path
        self._seen: set[str] = set()

    def where(self, key: str | None = None) -> str:
        dotted = ".".join(p for p in (self.path, key) if p)
        return f"{self.file}: key '{dotted}'" if dotted else str(self.file)

    def fail(self, key: str | None, msg: str, hint: str | None = None) -> UserError:
        return UserError(msg, where=self.where(key), hint=hint or "see docs/manifests.md for the format")

    def has(self, key: str) -> bool:
        return key in self.data

    def _get(self, key: str, required: bool, default: Any) -> Any:
        self._seen.add(key)
        if key not in self.data:
            if required:
                raise self._missing(key)
            return default
        return self.data[key]

    def _missing(self, key: str) -> UserError:
        """A required key is absent. A key of the table not read so far and spelt almost like it
        (`too` for `to`) is most likely its misspelling: that one is named as unknown, as done()
        would have named it, together with the missing key."""
        typo = _close(key, [k for k in self.data if k not in self._seen])
        if typo is None:
            return self.fail(key, "is required but missing")
        return self.fail(typo, f"unknown key (did you mean {key!r}? {key!r} is required but missing)",
                         hint=f"rename {typo!r} to {key!r}; see docs/manifests.md for the format")

    def str(self, key: str, default: Any = ..., *, choices: tuple[str, ...] | None = None) -> Any:
        v = self._get(key, default is ..., None if default is ... else default)
        if v is None or (v is default and default is not ...):
            return v
        if not isinstance(v, str):
            raise self.fail(key, f"must be a string, got {type(v).__name__} {v!r}")
        if choices is not None and v not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}; got {v!r}")
        return v

    def bool(self, key: str, default: bool = False) -> bool:
        v = self._get(key, False, default)
        if not isinstance(v, bool):
            raise self.fail(key, f"must be true or false, got {v!r}")
        return v

    def int(self, key: str, default: Any = ..., *, minimum: int = 0) -> Any:
        v = self._get(key, default is ..., None if default is ... else default)
        if v is None or (v is default and default is not ...):
            return v
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(key, f"must be an integer, got {v!r}")
        if v < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {v}")
        return v

    def int_or_unknown(self, key: str, default: Any = ...) -> int | None:
        """An integer, or the string "unknown" (returned as None)."""
        v = self._get(key, default is ..., default if default is not ... else None)
        if v is None or v == UNKNOWN:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise self.fail(key, f"must be a non-negative integer or \"unknown\", got {v!r}")
        return v

    def float(self, key: str, default: Any = ...) -> Any:
        v = self._get(key, default is ..., None if default is ... else default)
        if v is None or (v is default and default is not ...):
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(key, f"must be a number, got {v!r}")
        return float(v)

    def hexdigest(self, key: str, kind: str, default: Any = ...) -> str | None:
        """A lowercase hex digest (``sha256`` or ``md5``), or "unknown" (returned as None)."""
        v = self._get(key, default is ..., default if default is not ... else None)
        if v is None or v == UNKNOWN:
            return None
        pattern = _HEX64 if kind == "sha256" else _HEX32
        if not isinstance(v, str) or not pattern.match(v):
            raise self.fail(key, f"must be a lowercase hex {kind} digest or \"unknown\", got {v!r}")
        return v

    def str_list(self, key: str) -> list[str]:
        v = self._get(key, False, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.fail(key, f"must be a list of strings, got {v!r}")
        return list(v)

    def table(self, key: str, required: bool = True) -> "Table | None":
        v = self._get(key, required, None)
        if v is None:
            return None
        if not isinstance(v, dict):
            raise self.fail(key, f"must be a table, got {type(v).__name__}")
        return Table(v, self.file, self._child(key))

    def tables(self, key: str, required: bool = True) -> list["Table"]:
        v = self._get(key, required, [])
        if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
            raise self.fail(key, "must be an array of tables ([[...]] or a list of {...})")
        if required and not v:
            raise self.fail(key, "must not be empty")
        return [Table(x, self.file, f"{self._child(key)}[{i}]") for i, x in enumerate(v)]

    def _child(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def done(self) -> None:
        unknown = sorted(set(self.data) - self._seen)
        if unknown:
            near = _close(unknown[0], self._seen)
            guess = f"did you mean {near!r}? " if near else ""
            raise self.fail(unknown[0], f"unknown key ({guess}known here: {', '.join(sorted(self._seen))})")

    def parse_each(self, key: str, fn: Callable[["Table"], T], required: bool = True) -> list[T]:
        return [fn(t) for t in self.tables(key, required)]


# How alike two key names must be (difflib's ratio) to call one a misspelling of the other. Above
# every pair of real keys that one table reads (the closest, include/exclude, is 0.71), so a key that
# is read later in the same table is not mistaken for a typo of a missing one; `too`/`to` is 0.8.
_TYPO_RATIO = 0.75


def _close(key: str, candidates: Iterable[str]) -> str | None:
    import difflib  # (only on an error)

    found = difflib.get_close_matches(key, list(candidates), n=1, cutoff=_TYPO_RATIO)
    return found[0] if found else None


def check_relpath(t: Table, key: str, value: str) -> str:
    """A relative POSIX path that stays inside its base folder (no '..', not absolute)."""
    if not value or value.startswith("/") or "\\" in value:
        raise t.fail(key, f"must be a relative path with '/' separators, got {value!r}")
    if any(p in ("", "..") for p in value.split("/")):
        raise t.fail(key, f"must not contain '..' or empty parts, got {value!r}")
    return value
