"""Placements that would overwrite or swallow each other, refused when the catalog is built.

Certain clashes only (docs/manifests.md, Placement):

- two `file` placements with one `to`: the second fetch overwrites the first;
- a `file` at the `to` of a folder placement (extract, images, repo), or any placement under a
  `file`'s `to`: one path cannot be a file and a folder;
- a `file` inside the folder an `extract` or `images` placement fills: an archive alone in its
  folder replaces the folder whole on every fetch, and verify counts and checks every file in
  such a folder as the archive's or the list's.

Several folder placements sharing one `to` (ALLaVA's chunks, SAM's tars) is the documented way to
fill one folder and stays allowed; so does a file inside a `repo` folder (a config the repo lacks).
Runs once per catalog build, which vlmdata.manifest.cache keeps: no cost on a cached start-up.
"""
from __future__ import annotations

from typing import Iterable

from vlmdata.errors import UserError
from vlmdata.manifest.schema import Dataset, FileSpec

_FILLED = ("extract", "images")  # folder kinds whose folder holds nothing but what they put there
_HINT = "give each its own `to` (see Placement in docs/manifests.md)"
Owner = tuple[Dataset, int, FileSpec]  # a dataset, the index of one of its [[files]], that file


def check_placements(datasets: Iterable[Dataset]) -> None:
    """Raise UserError (exit 2) at the first certain clash, naming both files and their TOMLs."""
    owners = [(ds, i, f) for ds in datasets for i, f in enumerate(ds.files)]
    files: dict[str, Owner] = {}
    folders: dict[str, Owner] = {}  # any folder kind
    filled: dict[str, Owner] = {}  # extract and images only
    for own in owners:
        to, is_file = own[2].place.to, own[2].place.kind == "file"
        other = files.get(to) or (folders.get(to) if is_file else None)
        if other is not None:
            both = is_file and other[2].place.kind == "file"
            raise _clash(own, f"places {_what(own[2])} at {to!r}, where {_named(other)} places "
                                     f"{_what(other[2])}: " + ("the second would overwrite the first" if both
                                                              else "one path cannot be a file and a folder"))
        (files if is_file else folders).setdefault(to, own)
        if own[2].place.kind in _FILLED:
            filled.setdefault(to, own)
    for own in owners:
        for parent in _parents(own[2].place.to):
            _check_parent(own, parent, files.get(parent), filled.get(parent))


def _check_parent(own: Owner, parent: str, file: Owner | None, folder: Owner | None) -> None:
    """``own`` lies under ``parent``: refused if a file is placed there, or (for a file) if an
    extract or images placement fills that folder."""
    if file is not None:
        raise _clash(own, f"places {_what(own[2])} at {own[2].place.to!r}, under {parent!r}, where "
                                f"{_named(file)} places a file: one path cannot be a file and a folder")
    if folder is not None and own[2].place.kind == "file":
        raise _clash(own, f"places a file at {own[2].place.to!r}, inside {parent!r}, the folder "
                                  f"{_named(folder)} fills (kind {folder[2].place.kind}): an archive alone there "
                                  "replaces the folder on each fetch, and verify takes every file in it for theirs")


def _parents(to: str) -> list[str]:
    """'a/b/c' -> ['a', 'a/b']."""
    parts = to.split("/")
    return ["/".join(parts[:n]) for n in range(1, len(parts))]


def _what(f: FileSpec) -> str:
    return "a file" if f.place.kind == "file" else f"a folder (kind {f.place.kind})"


def _named(own: Owner) -> str:
    ds, _, f = own
    return f"{f.key} ({ds.origin})"


def _clash(own: Owner, what: str) -> UserError:
    ds, i, f = own
    return UserError(f"{f.key} {what}", where=f"{ds.origin}: key 'files[{i}].place.to'",
                     hint=_HINT)
