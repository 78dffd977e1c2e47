"""`status`: per dataset, is it absent, partial, subset, complete or verified in this root?"""
from __future__ import annotations

from dataclasses import dataclass

from vlmdata.manifest import Catalog, Dataset
from vlmdata.state import Journal, JournalEntry, Root, is_placed, partial_bytes, subset_tag


@dataclass
class DatasetStatus:
    name: str
    state: str  # absent | partial | subset | complete | verified | damaged
    placed: int
    total: int
    optional_placed: int
    verified: bool = False  # the last verify found nothing wrong
    subset_images: int | None = None  # subset: images placed from the archives placed in part
    subset_of: int | None = None  # subset: images those archives hold (None: unknown)

    def describe(self) -> str:
        """The state in words, e.g. ``subset (4 of 11,186 images)``."""
        if self.state != "subset":
            return self.state
        of = f"{self.subset_of:,}" if self.subset_of is not None else "an unknown number of"
        return f"subset ({self.subset_images:,} of {of} images{', verified' if self.verified else ''})"


def dataset_status(root: Root, entries: dict[str, JournalEntry], ds: Dataset, verified: dict) -> DatasetStatus:
    default = ds.default_files
    placed = sum(is_placed(root, entries, f) for f in default)
    opt = sum(is_placed(root, entries, f) for f in ds.files if f.optional)
    started = any(partial_bytes(root, f) for f in ds.files)
    v = verified.get(ds.name)
    ok = bool(v and v.get("ok"))
    # the last verify found problems, and nothing of the dataset was placed again since
    last_placed = max((entries[f.key].placed_at for f in ds.files if f.key in entries), default=0.0)
    damaged = bool(v) and not ok and float(v.get("at", 0)) >= last_placed
    # archives placed with --only-referenced-by: a part of them on purpose, never "complete"
    subset = [f for f in ds.files if subset_tag(entries, f) is not None and is_placed(root, entries, f)]
    if subset:
        counts = [f.place.count for f in subset]
        return DatasetStatus(ds.name, "subset", placed, len(default), opt, ok,
                             sum(entries[f.key].files or 0 for f in subset),
                             None if any(c is None for c in counts) else sum(counts))  # type: ignore[arg-type]
    if default and placed == len(default):
        state = "verified" if ok else "damaged" if damaged else "complete"
    elif placed or opt or started:
        state = "partial"
    else:
        state = "absent"
    return DatasetStatus(ds.name, state, placed, len(default), opt, ok and state == "verified")


def status_all(root: Root, catalog: Catalog) -> list[DatasetStatus]:
    journal = Journal(root.state_dir)
    verified = journal.verified() if journal.path.exists() else {}
    entries = journal.entries()
    return [dataset_status(root, entries, ds, verified) for ds in sorted(catalog.datasets.values(), key=lambda d: d.name)]
