"""The plan: what a fetch would do, without doing it.

For each selected file: where it would come from, how many bytes are left to download, how much
disk it needs once placed, and whether it is already there. Disk needed is conservative: every
remaining download plus every unpacked size, as if all archives existed at once before their
deletion (they can, with --jobs > 1). No request is sent: a size the manifest leaves unknown is
taken from the root's vlmdata.lock (what the first verified download measured, on any machine)
or, for a Hub repo, from its file list as last fetched; a Hub source on a branch shows the commit
that lock pins, which is what a fetch asks for. With ``update`` (`fetch --update`) such a file or repo
is asked for at the branch's newest commit instead: one placed as pinned is "check" (the hub is asked
first: re-pinned if unchanged, downloaded if changed, which only its answer tells), any other is
fetched at a size its old pin cannot promise (unknown), as the run's line before it says.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec.structs

from vlmdata.errors import OperationError
from vlmdata.manifest import FileSpec, Source
from vlmdata.sources import kind_of
from vlmdata.sources.hf import pinned_revision, spec_moves_on_update
from vlmdata.state import (Journal, LockEntry, LockFile, Root, is_placed, partial_bytes, reserved_bytes, satisfied,
                           subset_tag)
from vlmdata.units import human_bytes


@dataclass
class PlanItem:
    key: str
    dataset: str
    file: str
    source: str
    to: str
    state: str  # present | partial | missing | subset (placed in part; the whole archive is asked for)
    # | check (--update: placed, asked about at the branch's newest commit; its download known only then)
    download_bytes: int | None  # still to download (None = unknown)
    size_exact: bool
    disk_bytes: int | None  # disk this file needs from now on
    partial_bytes: int = 0
    in_mirror: bool | None = None  # a local --mirror folder: whether it holds this file (None: no such mirror)


@dataclass
class Plan:
    items: list[PlanItem] = field(default_factory=list)
    free_bytes: int = 0

    @property
    def download_bytes(self) -> int:
        return sum(i.download_bytes or 0 for i in self.items)

    @property
    def disk_bytes(self) -> int:
        return sum(i.disk_bytes or 0 for i in self.items)

    @property
    def unknown(self) -> list[str]:
        return [i.key for i in self.items if i.state not in ("present", "check") and i.download_bytes is None]

    @property
    def checked(self) -> list[str]:
        """--update: the placed files and repos only asked about first (vlmdata.fetch.repin.rechecked)."""
        return [i.key for i in self.items if i.state == "check"]

    @property
    def fits(self) -> bool:
        return self.disk_bytes <= self.free_bytes

    def require_fits(self, where: Path, hint: str) -> None:
        """The disk preflight shared by `plan` and `fetch`: an OperationError when it will not hold."""
        if not self.fits:
            raise OperationError(
                f"not enough disk: need {human_bytes(self.disk_bytes)}, {human_bytes(self.free_bytes)} free on {where}",
                hint=hint)

    def to_json(self) -> dict[str, Any]:
        out = {
            "items": [asdict(i) for i in self.items],
            "download_bytes": self.download_bytes,
            "disk_bytes": self.disk_bytes,
            "free_bytes": self.free_bytes,
            "fits": self.fits,
            "unknown_sizes": self.unknown,
        }
        if self.checked:  # (--update only)
            out["to_check"] = self.checked
        return out


def first_source(spec: FileSpec, mirror_base: str | None, hf_endpoint: str | None,
                 pin: LockEntry | None = None) -> str:
    """Where a fetch with these options would go first for ``spec`` (``pin``: its vlmdata.lock entry)."""
    src: Source = spec.sources[0] if spec.sources else spec.parts[0].sources[0]
    commit = pinned_revision(src, pin)
    if commit is not None:
        src = msgspec.structs.replace(src, revision=commit)
    return kind_of(src).plan_label(src, mirror_base, hf_endpoint) + (" (pinned in vlmdata.lock)" if commit else "")


def plan_files(root: Root, specs: list[FileSpec], *, mirror_base: str | None = None,
               hf_endpoint: str | None = None, wanted_tag: str | None = None, refetch: bool = False,
               update: bool = False) -> Plan:
    """``wanted_tag``: the digest of --only-referenced-by's names; archives are then placed in part.
    ``refetch``: what is placed is fetched again, so it counts as missing (with its bytes).
    ``update``: `fetch --update`: Hub files and repos only the lock pins are asked for at the manifest's
    revision; those placed as pinned are "check", the others are fetched at a size not known yet. Their
    disk still counts their pinned size (as if they all changed), as the run's disk check does."""
    entries = Journal(root.state_dir).entries()
    pins = LockFile(root.lock_path).entries()
    plan = Plan(free_bytes=root.free_bytes())
    checked: set[str] = set()
    if update and not refetch:
        from vlmdata.fetch.repin import rechecked

        checked = {s.key for s in rechecked(specs, root, entries, pins, mirror=mirror_base, wanted_tag=wanted_tag)}
    for spec in specs:
        size, exact = spec.download_bytes, spec.size_is_exact
        pin = pins.get(spec.key)
        moving = update and spec_moves_on_update(spec)  # (asked for at the manifest's revision, not the pin's)
        listed = None
        if spec.place.kind == "repo":  # once listed, a repo's bytes are known exactly (vlmdata.fetch.repo)
            from vlmdata.fetch.repo import repo_disk_bytes

            listed = repo_disk_bytes(root, spec, entries)
        if listed is not None:
            size, exact = listed, True
        elif not exact and pin is not None:  # (a repo's pin holds its total: its files, as listed when pinned)
            size, exact = pin.size, True
        placed = not refetch and not moving and satisfied(root, entries, spec, wanted_tag)
        partial = 0 if placed else partial_bytes(root, spec)
        subset = wanted_tag is not None and spec.place.kind == "extract"
        if placed:
            state, remaining, disk = "present", 0, 0
        else:
            state = "partial" if partial else ("subset" if subset_tag(entries, spec) and is_placed(root, entries, spec)
                                               else "missing")
            remaining = None if size is None else max(size - partial, 0)
            disk = _subset_disk(spec, remaining) if subset else _disk_needed(spec, remaining, size)
            if disk and partial and remaining:  # (blocks an unfinished download already set aside for the rest)
                disk -= min(remaining, reserved_bytes(root, spec))
        if spec.key in checked:
            state, remaining, exact = "check", None, False
        elif moving and not spec.size_is_exact:  # (its pin's size is the old commit's)
            remaining, exact = None, False
        source = first_source(spec, mirror_base, hf_endpoint, None if moving else pin)
        plan.items.append(PlanItem(
            key=spec.key, dataset=spec.dataset, file=spec.name,
            source=source, to=spec.place.to, state=state,
            download_bytes=remaining, size_exact=exact, disk_bytes=disk, partial_bytes=partial,
            in_mirror=None if placed else _in_mirror(source, mirror_base),
        ))
    return plan


def _in_mirror(source: str, mirror_base: str | None) -> bool | None:
    """Whether a local mirror folder holds the file a fetch would read there (None: not read from one)."""
    if not mirror_base or mirror_base.startswith(("http://", "https://")):
        return None
    base = Path(mirror_base).resolve()
    path = Path(source)
    if not path.is_absolute() or not path.resolve().is_relative_to(base):
        return None  # (a URL list's images, a manual source: not one file in the mirror)
    return path.exists()


def _subset_disk(spec: FileSpec, remaining: int | None) -> int | None:
    """--only-referenced-by keeps a few members: a tar is streamed and never stored (the images kept
    are not counted), a zip is downloaded whole first."""
    # (the test fetch.subset.is_tar makes; plan does not import the fetch machinery)
    tar = spec.place.format in ("tar", "tar.gz") or (
        spec.place.format == "auto" and spec.name.endswith((".tar", ".tar.gz", ".tgz")))
    return 0 if tar else remaining


def _disk_needed(spec: FileSpec, remaining: int | None, size: int | None) -> int | None:
    if remaining is None or size is None:
        return spec.place.unpacked_size
    if spec.place.kind in ("file", "repo"):
        return remaining  # moved into place, never copied
    unpacked = spec.place.unpacked_size if spec.place.unpacked_size is not None else size
    return remaining + unpacked
