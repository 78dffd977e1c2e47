"""The plan: what a fetch would do, without doing it.

For each selected file: where it would come from, how many bytes are left to download, how much
disk it needs once placed, and whether it is already there. Disk needed is conservative: every
remaining download plus every unpacked size, as if all archives existed at once before their
deletion (they can, with --jobs > 1).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlmdata.errors import OperationError
from vlmdata.manifest import FileSpec, Source
from vlmdata.sources import kind_of
from vlmdata.state import Journal, Root, is_placed, partial_bytes
from vlmdata.units import human_bytes


@dataclass
class PlanItem:
    key: str
    dataset: str
    file: str
    source: str
    to: str
    state: str  # present | partial | missing
    download_bytes: int | None  # still to download (None = unknown)
    size_exact: bool
    disk_bytes: int | None  # disk this file needs from now on
    partial_bytes: int = 0


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
        return [i.key for i in self.items if i.state != "present" and i.download_bytes is None]

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
        return {
            "items": [asdict(i) for i in self.items],
            "download_bytes": self.download_bytes,
            "disk_bytes": self.disk_bytes,
            "free_bytes": self.free_bytes,
            "fits": self.fits,
            "unknown_sizes": self.unknown,
        }


def first_source(spec: FileSpec, mirror_base: str | None, hf_endpoint: str | None) -> str:
    """Where a fetch with these options would go first for ``spec``."""
    src: Source = spec.sources[0] if spec.sources else spec.parts[0].sources[0]
    return kind_of(src).plan_label(src, mirror_base, hf_endpoint)


def plan_files(root: Root, specs: list[FileSpec], *, mirror_base: str | None = None,
               hf_endpoint: str | None = None) -> Plan:
    entries = Journal(root.state_dir).entries()
    plan = Plan(free_bytes=root.free_bytes())
    for spec in specs:
        size = spec.download_bytes
        placed = is_placed(root, entries, spec)
        partial = 0 if placed else partial_bytes(root, spec)
        if placed:
            state, remaining, disk = "present", 0, 0
        else:
            state = "partial" if partial else "missing"
            remaining = None if size is None else max(size - partial, 0)
            disk = _disk_needed(spec, remaining, size)
        plan.items.append(PlanItem(
            key=spec.key, dataset=spec.dataset, file=spec.name,
            source=first_source(spec, mirror_base, hf_endpoint), to=spec.place.to, state=state,
            download_bytes=remaining, size_exact=spec.size_is_exact, disk_bytes=disk, partial_bytes=partial,
        ))
    return plan


def _disk_needed(spec: FileSpec, remaining: int | None, size: int | None) -> int | None:
    if remaining is None or size is None:
        return spec.place.unpacked_size
    if spec.place.kind == "file":
        return remaining  # moved into place, never copied
    unpacked = spec.place.unpacked_size if spec.place.unpacked_size is not None else size
    return remaining + unpacked
