"""`status`: per dataset, is it absent, partial, complete or verified in this root?"""
from __future__ import annotations

from dataclasses import dataclass

from vlmdata.manifest import Catalog, Dataset
from vlmdata.state import Journal, JournalEntry, Root, is_placed, partial_bytes


@dataclass
class DatasetStatus:
    name: str
    state: str  # absent | partial | complete | verified
    placed: int
    total: int
    optional_placed: int


def dataset_status(root: Root, entries: dict[str, JournalEntry], ds: Dataset, verified: dict) -> DatasetStatus:
    default = ds.default_files
    placed = sum(is_placed(root, entries, f) for f in default)
    opt = sum(is_placed(root, entries, f) for f in ds.files if f.optional)
    started = any(partial_bytes(root, f) for f in ds.files)
    if default and placed == len(default):
        v = verified.get(ds.name)
        state = "verified" if v and v.get("ok") else "complete"
    elif placed or opt or started:
        state = "partial"
    else:
        state = "absent"
    return DatasetStatus(ds.name, state, placed, len(default), opt)


def status_all(root: Root, catalog: Catalog) -> list[DatasetStatus]:
    journal = Journal(root.state_dir)
    verified = journal.verified() if journal.path.exists() else {}
    entries = journal.entries()
    return [dataset_status(root, entries, ds, verified) for ds in sorted(catalog.datasets.values(), key=lambda d: d.name)]
