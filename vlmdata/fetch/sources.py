"""Turn a file's manifest sources into the concrete places to try, in order.

- ``http``: the URL, or its mirrored location under ``--mirror`` (a URL, or a path in a local
  folder, read as a plain file and still size- and hash-checked). With a mirror the origin is not
  contacted: a mirror is meant for machines that cannot or should not reach it.
- ``hf``: resolved through the hub later (that needs the network), see ``vlmdata.fetch.hf``.
- ``linkfile``: the file's row in a TSV of signed links under the root (SA-1B), then as ``http``.
- ``urllist``: handed to the per-image downloader (``vlmdata.place.fetch_url_list``).
- ``manual``: nothing to try; its note becomes part of the error if nothing else works.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from vlmdata import mirror as mirror_mod
from vlmdata.manifest import Source
from vlmdata.state import Root


@dataclass
class Candidate:
    kind: str  # http | local | hf | urllist | unavailable
    source: Source
    label: str
    url: str | None = None
    path: Path | None = None
    reason: str | None = None  # unavailable: why, and what a person can do
    manual: bool = False


def _http(url: str, source: Source, mirror: str | None, via: str = "") -> Candidate:
    from vlmdata.fetch.http import shown

    if mirror:
        loc = mirror_mod.rewrite(url, mirror)
        if mirror_mod.is_local(mirror):
            return Candidate("local", source, f"{loc} (local mirror{via})", path=Path(loc))
        return Candidate("http", source, f"{loc} (mirror{via})", url=loc)
    return Candidate("http", source, shown(url) + via, url=url)


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


def candidates(name: str, sources: tuple[Source, ...], root: Root, *, download_path: Path,
               mirror: str | None = None) -> list[Candidate]:
    """Where the published file ``name`` can come from, in manifest order."""
    out: list[Candidate] = []
    for src in sources:
        if src.kind == "http":
            out.append(_http(src.url or "", src, mirror))
        elif src.kind == "hf":
            out.append(Candidate("hf", src, src.describe()))
        elif src.kind == "urllist":
            out.append(Candidate("urllist", src, src.describe()))
        elif src.kind == "linkfile":
            table = root.store_path(src.path or "")
            if not table.is_file():
                out.append(Candidate("unavailable", src, src.describe(), reason=(
                    f"the links file {table} is not there" + (f" ({src.note})" if src.note else ""))))
                continue
            try:
                url = lookup_link(table, name, src.name_column or "", src.url_column or "")
            except (OSError, ValueError, UnicodeDecodeError) as e:
                out.append(Candidate("unavailable", src, src.describe(), reason=f"cannot read {table}: {e}"))
                continue
            if not url:
                out.append(Candidate("unavailable", src, src.describe(),
                                     reason=f"{table} has no row for {name} (column {src.name_column})"))
            else:
                out.append(_http(url, src, mirror, via=f" from {src.path}"))
        else:  # manual
            where = f" ({src.url})" if src.url else ""
            out.append(Candidate("unavailable", src, src.describe(), manual=True, reason=(
                f"needs a person: {src.note or 'download it by hand'}{where}; then save the file as "
                f"{download_path} and run the same command again")))
    return out
