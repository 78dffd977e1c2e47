"""``vlmdata.lock``: the sha256 (and size) of every file as first verified on any machine.

Few publishers give checksums. The first download that matches the manifest's size is hashed
and recorded here; every later fetch, on this machine or another that shares the file, must
produce the same hash. Commit it next to your training configs to pin your data.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vlmdata import atomic
from vlmdata.errors import UserError


@dataclass
class LockEntry:
    sha256: str
    size: int
    source: str
    revision: str | None = None  # the Hub commit a `hf` source resolved to
    recorded_at: float = field(default_factory=time.time)
    blob: str | None = None  # a Hub file kept in git: its git blob id, checked against the bytes (`fetch --update`)

    def to_json(self) -> dict:
        """The entry as the lock holds it: ``blob`` only where there is one, so a lock without any stays
        readable by releases that predate it."""
        out = asdict(self)
        if out["blob"] is None:
            del out["blob"]
        return out


class LockFile:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_path = self.path.parent / ".vlmdata" / "claims" / "vlmdata.lock.claim"

    @property
    def _lock(self):  # taken to write a pin, by processes on every machine that shares the root (claims.mutex)
        from vlmdata.state.claims import mutex

        return mutex(self._lock_path, "writing vlmdata.lock")

    def entries(self) -> dict[str, LockEntry]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text("utf-8"))
            return {k: LockEntry(**v) for k, v in data.get("files", {}).items()}
        except PermissionError as e:
            from vlmdata.state.root import read_denied

            raise read_denied(self.path, "the lock file", e) from e
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise UserError(f"the lock file is unreadable: {e}", where=str(self.path),
                            hint="restore it from version control, or delete it to re-pin on the next fetch") from e

    def get(self, key: str) -> LockEntry | None:
        return self.entries().get(key)

    def pin(self, key: str, entry: LockEntry, *, replace: bool = False) -> None:
        """Record a first verified download; an existing different pin is never overwritten, unless
        ``replace`` (the user asked for the newest commit of a Hub branch: `fetch --update`)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            entries = self.entries()
            old = entries.get(key)
            if old is not None and old.sha256 != entry.sha256 and not replace:
                raise UserError(
                    f"{key}: sha256 {entry.sha256} differs from the pinned {old.sha256}",
                    where=str(self.path),
                    hint="the publisher may have re-uploaded the file; if you trust the new one, remove its entry from the lock file",
                )
            same = old is not None and (old.sha256, old.revision, old.blob) == (entry.sha256, entry.revision,
                                                                                 entry.blob)
            if old is not None and (not replace or same):
                return
            entries[key] = entry
            self._write(entries)

    def forget(self, keys: list[str]) -> None:
        """Drop the pins of ``keys``: files a Hub repo no longer has at the commit it is pinned to now, or
        files kept in git whose pin was made at another commit than the repo's (vlmdata.fetch.repo)."""
        if not self.path.exists():
            return
        with self._lock:
            entries = self.entries()
            dropped = [k for k in keys if entries.pop(k, None) is not None]
            if dropped:
                self._write(entries)

    def _write(self, entries: dict[str, LockEntry]) -> None:
        atomic.write_json(self.path, {"version": 1, "files": {k: v.to_json() for k, v in sorted(entries.items())}})
