"""`fetch --update` without a download: a Hub file whose bytes did not change is only re-pinned.

`--update` moves a Hub file that only vlmdata.lock pins to the newest commit of its branch. When
the hub's own hash of the file at that commit is the one the lock pinned (the LFS sha256, or for a
file kept in git its git blob id, which the lock holds only when a download was checked to hash to
it), and the journal says those very bytes are placed, the bytes on disk are already the new
commit's: the lock and the journal then name the new commit, and nothing is downloaded or placed.
Anything less than that proof (no hash from the hub, a pin without a blob id, a placed copy of
other bytes, a hub that does not answer) leaves the file to the ordinary download, and so does
``--mirror``, whose copy the download tries before the hub.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec.structs

from vlmdata.manifest import FileSpec, Source
from vlmdata.net.errors import SourceFailed
from vlmdata.sources.base import Location
from vlmdata.sources.hf import KIND, HubFile, spec_moves_on_update
from vlmdata.state import Journal, JournalEntry, LockEntry, Root, satisfied

if TYPE_CHECKING:  # (rechecked serves `fetch --dry-run` too, which downloads nothing: no HTTP stack for it)
    from vlmdata.fetch.verified import VerifiedDownloader


@dataclass(frozen=True)
class Repinned:
    """A file moved to a new commit without a download: its pin's hash, and the commit now pinned."""

    sha256: str
    size: int
    source: str  # the hub source's label, as a download from it would have journaled
    revision: str | None
    previous: str | None  # the commit pinned before


def repin(spec: FileSpec, down: VerifiedDownloader, journal: Journal, wanted_tag: str | None) -> Repinned | None:
    """Re-pin ``spec`` (a placed Hub file `--update` moves) to its branch's newest commit when the hub
    proves its bytes there are the pinned ones; None: it must be downloaded (or the hub said nothing)."""
    pin = down.lock.get(spec.key)
    entry = journal.entries().get(spec.key)
    if not candidate(spec, down, pin, entry, wanted_tag):
        return None
    assert pin is not None and entry is not None  # (a candidate has both)
    src = _pinned_source(spec, pin)
    assert src is not None  # (and the hf source its pin was made from)
    try:
        loc = HubFile(src, KIND.describe(src)).locate(down.hub)
    except SourceFailed:
        return None  # (the download that follows asks again, and says what went wrong)
    if loc.revision is None or not same_bytes(loc, pin):
        return None
    move_pin(down, journal, entry, pin, source=loc.label, revision=loc.revision, blob=pin.blob)
    return Repinned(pin.sha256, pin.size, loc.label, loc.revision, pin.revision)


def candidate(spec: FileSpec, down: VerifiedDownloader, pin: LockEntry | None, entry: JournalEntry | None,
              wanted_tag: str | None) -> bool:
    """What the root alone tells (no request) of whether ``spec`` may be re-pinned: a Hub file `--update`
    moves, placed as the bytes its lock pin ``pin`` names (``entry``: its journal entry), from the manifest's
    ``hf`` source that pin was made from. Only then is the hub asked; any other file is downloaded."""
    return down.update and _placed_as_pinned(spec, down.root, down.mirror, pin, entry, wanted_tag)


def rechecked(specs: list[FileSpec], root: Root, entries: dict[str, JournalEntry], pins: dict[str, LockEntry], *,
              mirror: str | None, wanted_tag: str | None) -> list[FileSpec]:
    """`fetch --update` (not --refetch): the files of ``specs`` already placed that are first only asked about
    at their branch's newest commit (what the root alone tells, no request): a Hub file ``candidate`` for a
    re-pin, and a Hub repo placed before, which downloads only its changed files. What they will download is
    known only once the hub answers. The run's line before it and its dry run (vlmdata.plan) both count these."""
    return [s for s in specs if spec_moves_on_update(s) and (
        satisfied(root, entries, s, wanted_tag) if s.place.kind == "repo"
        else _placed_as_pinned(s, root, mirror, pins.get(s.key), entries.get(s.key), wanted_tag))]


def _placed_as_pinned(spec: FileSpec, root: Root, mirror: str | None, pin: LockEntry | None,
                      entry: JournalEntry | None, wanted_tag: str | None) -> bool:
    """``candidate``, less the --update that asks: a Hub file only the lock pins, placed as its pin's bytes."""
    if spec.parts or spec.sha256 is not None or mirror:
        return False  # (under --mirror the download tries the mirror first: the hub is not asked ahead of it)
    return pin is not None and entry is not None and entry.sha256 == pin.sha256 \
        and _pinned_source(spec, pin) is not None and satisfied(root, {spec.key: entry}, spec, wanted_tag)


def move_pin(down: VerifiedDownloader, journal: Journal, entry: JournalEntry, pin: LockEntry | None, *,
             source: str, revision: str, blob: str | None) -> None:
    """The placed bytes journaled as ``entry`` are the file at ``revision`` too: the lock (where ``pin`` is of
    these bytes) and the journal name that commit and its label ``source``, as a download from it would have."""
    if pin is not None and pin.sha256 == entry.sha256:
        down.lock.pin(entry.key, dataclasses.replace(pin, source=source, revision=revision, blob=blob), replace=True)
    journal.record(msgspec.structs.replace(entry, source=source, extra={**(entry.extra or {}), "revision": revision}))


def same_bytes(loc: Location, pin: LockEntry) -> bool:
    """Whether the hub's own hash of the file at ``loc`` proves it is the pinned file: its LFS sha256, else
    its git blob id where the pin holds one; a size that differs disproves either."""
    if loc.size is not None and loc.size != pin.size:
        return False
    if loc.sha256 is not None:
        return loc.sha256 == pin.sha256
    return loc.blob is not None and loc.blob == pin.blob


def _pinned_source(spec: FileSpec, pin: LockEntry | None) -> Source | None:
    """The manifest's ``hf`` source the pin was made from (its label, less the endpoint it came through)."""
    if pin is None:
        return None
    made_by = pin.source.split(" via ", 1)[0]
    return next((s for s in spec.sources if s.kind == "hf" and KIND.describe(s) == made_by), None)
