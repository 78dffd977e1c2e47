"""What a fetch run is asked to do and what came of it: options, per-file outcomes, the report.

Kept apart from the run itself (vlmdata.fetch.orchestrate) and free of heavy imports, so that
`vlmdata fetch` can tell from the journal alone that there is nothing to do, and say so, in a
fraction of the time it takes to import the HTTP stack.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import msgspec.structs

from vlmdata.net.retry import RetryPolicy
from vlmdata.units import human_bytes

if TYPE_CHECKING:
    from vlmdata.manifest import FileSpec
    from vlmdata.state.journal import JournalEntry


class FetchOptions(msgspec.Struct):
    jobs: int = 4  # files at once
    connections: int = 4  # connections per file (when the server accepts ranges)
    # the second and later connections only when one alone would be slow (HttpEngine's ramp); --connections: off
    ramp: bool = True
    url_jobs: int = 128  # requests in flight for per-image URL lists
    keep_archives: bool = False
    wanted: set[str] | None = None  # --only-referenced-by: basenames to keep from archives
    wanted_tag: str | None = None  # a digest of `wanted`, recorded in the journal
    mirror: str | None = None
    hf_endpoint: str | None = None
    refetch: bool = False  # ignore the journal: fetch and place again
    update: bool = False  # Hub files only vlmdata.lock pins: the manifest's revision (a branch's head), pins replaced
    timeout: float = 60.0
    min_split: int = 4 << 20
    retry: RetryPolicy = msgspec.field(default_factory=RetryPolicy)
    verify_tries: int = 2  # downloads per source when the bytes do not match
    claim_timeout: float = 60.0  # seconds without a heartbeat before another machine's claim is stale
    url_chunk: int = 2000  # URL-list records per task (--ray, --shard): seconds of work, few enough to ship


class FileOutcome(msgspec.Struct):
    key: str
    state: str  # present | fetched | repinned (--update: a new commit, the same bytes) | failed | cancelled
    to: str
    bytes: int = 0  # received over the network by this run
    size: int | None = None
    sha256: str | None = None
    seconds: float = 0.0
    source: str | None = None
    files: int | None = None
    resumed_from: int = 0
    connections: int = 0
    warnings: list[str] = msgspec.field(default_factory=list)
    error: str | None = None
    hint: str | None = None  # what to do about the error
    # --update on a Hub repo: its files downloaded, re-pinned (placed before, the same at the new commit), removed
    # (gone from it); state "repinned" when none came or went. None otherwise, and then left out of --json
    repo_files: dict[str, int] | None = None


class FetchReport(msgspec.Struct):
    outcomes: list[FileOutcome] = msgspec.field(default_factory=list)
    layout: dict[str, Any] | None = None
    seconds: float = 0.0
    nodes: dict[str, dict[str, Any]] | None = None  # a run on several machines: what each did
    renewed: list[dict[str, Any]] = msgspec.field(default_factory=list)  # views built again: their links followed the store

    @property
    def failed(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.state == "failed"]

    @property
    def network_bytes(self) -> int:
        return sum(o.bytes for o in self.outcomes)

    def to_json(self) -> dict[str, Any]:
        out = {"ok": not self.failed, "seconds": round(self.seconds, 3), "bytes": self.network_bytes,
               "files": [_as_json(o) for o in self.outcomes], "layout": self.layout}
        if self.renewed:
            out["renewed_views"] = self.renewed
        if self.nodes is not None:
            out["nodes"] = self.nodes
        return out


def _as_json(o: FileOutcome) -> dict[str, Any]:
    d = msgspec.structs.asdict(o)
    if d["repo_files"] is None:  # (a fetch without --update reports as it always has)
        del d["repo_files"]
    return d


def repo_files_said(o: FileOutcome) -> str | None:
    """--update on a Hub repo, in words: how many of its files were downloaded (and their bytes), re-pinned
    without a download, removed; None for any other outcome."""
    n = o.repo_files
    if n is None:
        return None
    said = (f"{n['downloaded']} of {n['downloaded'] + n['repinned']} file(s) downloaded ({human_bytes(o.bytes)}), "
            f"{n['repinned']} re-pinned without a download (unchanged)")
    return said + (f", {n['removed']} removed (gone from the new commit)" if n["removed"] else "")


def wanted_digest(names: set[str]) -> str:
    import hashlib  # only for --only-referenced-by

    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16]


def present_outcome(spec: "FileSpec", entry: "JournalEntry") -> FileOutcome:
    """The outcome of a file that was already placed (from its journal entry)."""
    return FileOutcome(spec.key, "present", spec.place.to, size=entry.size, sha256=entry.sha256,
                       source=entry.source, files=entry.files)
