"""``kind = "linkfile"``: the file's row in a TSV of (signed) links kept under the root (SA-1B), then as http."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from vlmdata.manifest import Source
from vlmdata.sources.base import Candidate, SourceKind, Unavailable
from vlmdata.sources.http import url_candidate

if TYPE_CHECKING:
    from vlmdata.state import Root


def lookup_link(table: Path, name: str, name_column: str, url_column: str) -> str | None:
    """The URL in ``url_column`` of the row whose ``name_column`` is ``name`` (tab-separated, header row)."""
    with open(table, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        if reader.fieldnames is None or name_column not in reader.fieldnames or url_column not in reader.fieldnames:
            raise ValueError(f"{table} has no header with columns {name_column!r} and {url_column!r} "
                             f"(found: {', '.join(reader.fieldnames or [])})")
        for row in reader:
            if (row.get(name_column) or "").strip() == name:
                return (row.get(url_column) or "").strip() or None
    return None


class LinkfileKind(SourceKind):
    name = "linkfile"

    def describe(self, src: Source) -> str:
        return f"linkfile {src.path} ({src.name_column} -> {src.url_column})"

    def candidate(self, src: Source, name: str, root: "Root", *, download_path: Path,
                  mirror: str | None) -> Candidate:
        label = self.describe(src)
        table = root.store_path(src.path or "")
        if not table.is_file():
            return Unavailable(src, label, reason=f"the links file {table} is not there", save_as=table)
        try:
            url = lookup_link(table, name, src.name_column or "", src.url_column or "")
        except (OSError, ValueError, UnicodeDecodeError) as e:
            return Unavailable(src, label, reason=f"cannot read {table}: {e}")
        if not url:
            return Unavailable(src, label, reason=f"{table} has no row for {name} (column {src.name_column})")
        return url_candidate(url, src, mirror, via=f" from {src.path}")


KIND = LinkfileKind()
