"""The journal: which files of which datasets are complete in this root, and how they got there.

One JSON document, rewritten atomically for every change, so concurrent readers always see a
whole journal and a crash never leaves a torn one. Each change re-reads the journal and writes it
back inside a short critical section that processes on every machine sharing the root respect
(vlmdata.state.claims.mutex: a claim file, not a kernel lock, which would not reach across
machines), so concurrent fetches never lose one another's entries.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import msgspec
import msgspec.structs

from vlmdata import atomic
from vlmdata.errors import UserError

if TYPE_CHECKING:
    from vlmdata.manifest import FileSpec
    from vlmdata.state.root import Root


class JournalEntry(msgspec.Struct):
    key: str  # dataset:file
    size: int | None
    sha256: str | None
    source: str  # which source delivered it (after mirror rewriting)
    to: str  # placement target, relative to the root
    placed_at: float = msgspec.field(default_factory=time.time)
    files: int | None = None  # files placed (archives, image lists)
    extra: dict[str, Any] = msgspec.field(default_factory=dict)


_REBUILD = ("restore it from a backup, or move it aside: the next `vlmdata fetch` then downloads and places "
            "again what it asks for and writes a new journal")


class Journal:
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "journal.json"
        self._lock_path = Path(state_dir) / "claims" / "journal.json.claim"

    @property
    def _lock(self):  # taken to write a change: reading the journal needs none (writes are atomic)
        from vlmdata.state.claims import mutex

        return mutex(self._lock_path, "writing the journal")

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"version": 1, "files": {}, "verified": {}}
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except PermissionError as e:
            from vlmdata.state.root import read_denied

            raise read_denied(self.path, "the journal", e) from e
        except (OSError, ValueError) as e:
            raise UserError(f"the journal is unreadable: {e}", where=str(self.path), hint=_REBUILD) from e
        if not isinstance(data, dict) or not isinstance(data.setdefault("files", {}), dict) \
                or not isinstance(data.setdefault("verified", {}), dict):
            raise UserError("the journal is not a vlmdata journal (an object with \"files\" and \"verified\" objects)",
                            where=str(self.path), hint=_REBUILD)
        return data

    def entries(self) -> dict[str, JournalEntry]:
        out = {}
        for k, v in self._read()["files"].items():
            try:
                out[k] = JournalEntry(**v)
            except TypeError as e:  # not an object, or keys missing / unknown
                raise UserError(f"the journal's entry {k!r} is damaged: {e}", where=str(self.path), hint=_REBUILD) from e
        return out

    def get(self, key: str) -> JournalEntry | None:
        return self.entries().get(key)

    def record(self, entry: JournalEntry) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            data = self._read()
            data["files"][entry.key] = msgspec.structs.asdict(entry)
            atomic.write_json(self.path, data)

    def forget(self, key: str) -> None:
        if not self.path.exists():
            return
        with self._lock:
            data = self._read()
            if data["files"].pop(key, None) is not None:
                atomic.write_json(self.path, data)

    def verified(self) -> dict[str, dict[str, Any]]:
        """dataset -> {"at": time, "deep": bool, "ok": bool}"""
        return self._read()["verified"]

    def record_verified(self, dataset: str, *, deep: bool, ok: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            data = self._read()
            data["verified"][dataset] = {"at": time.time(), "deep": deep, "ok": ok}
            atomic.write_json(self.path, data)


def is_placed(root: "Root", entries: Mapping[str, JournalEntry], spec: "FileSpec") -> bool:
    """Placed = the journal (``entries``, read once by the caller) says so and its target is still on disk."""
    entry = entries.get(spec.key)
    return entry is not None and root.store_path(entry.to).exists()


def subset_tag(entries: Mapping[str, JournalEntry], spec: "FileSpec") -> str | None:
    """The --only-referenced-by digest an archive was placed with (None: placed whole)."""
    entry = entries.get(spec.key)
    if entry is None or spec.place.kind != "extract":
        return None
    return (entry.extra or {}).get("subset")


def satisfied(root: "Root", entries: Mapping[str, JournalEntry], spec: "FileSpec", wanted_tag: str | None = None) -> bool:
    """Whether a fetch (with --only-referenced-by's digest ``wanted_tag``, if any) leaves ``spec`` as it
    is: placed, and not a subset placement when the whole archive or another subset is asked for."""
    if not is_placed(root, entries, spec):
        return False
    tag = subset_tag(entries, spec)
    return tag is None or tag == wanted_tag
