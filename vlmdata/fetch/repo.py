"""Placement "repo": a Hub repo's files (a model checkpoint, or a dataset kept as files) into one folder.

1. The listing (vlmdata.sources.hfrepo): at the revision pinned in ``vlmdata.lock`` when there is
   one (its commit; the file list must hash to the pinned digest), else at the manifest's revision;
   each ``hfrepo`` source in manifest order until one answers. It is kept in the state folder, so
   `plan` can say the exact bytes afterwards.
2. Every listed file is an ordinary hub file at the listing's commit: downloaded by the same
   engine as any other file (resume from ``.part``, several connections, the hub's LFS sha256
   checked, files without one pinned in vlmdata.lock), placed at ``<to>/<path>`` and journaled on
   its own (key ``<dataset>:<file>/<path>``), so an interrupted fetch resumes file by file.
3. When every file is placed, the repo itself is journaled and its listing pinned.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from vlmdata import atomic
from vlmdata.errors import OperationError
from vlmdata.fetch.verified import VerifiedDownloader
from vlmdata.manifest import FileSpec, Placement, Source
from vlmdata.net.errors import Cancelled, SourceFailed
from vlmdata.place import place_download
from vlmdata.sources.hfrepo import Listing, label, list_repo
from vlmdata.state import Journal, JournalEntry, LockEntry, Root, is_placed


@dataclass
class RepoResult:
    listing: Listing
    source: str
    fetched: int = 0  # files downloaded by this run
    present: int = 0  # files placed before
    transferred: int = 0
    resumed_from: int = 0
    connections: int = 0
    warnings: list[str] = field(default_factory=list)


def listing_path(root: Root, spec: FileSpec) -> Path:
    return root.state_dir / "repos" / spec.dataset / (spec.name + ".json")


def cached_listing(root: Root, spec: FileSpec) -> Listing | None:
    """The listing an earlier fetch saved (no network), or None."""
    try:
        return Listing.from_json(json.loads(listing_path(root, spec).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def file_spec(spec: FileSpec, src: Source, commit: str, path: str, size: int, sha256: str | None) -> FileSpec:
    """One file of the repo as an ordinary file of the dataset: an ``hf`` source at the commit, placed as is."""
    hub = Source("hf", repo_type=src.repo_type, repo_id=src.repo_id, revision=commit, path=path)
    return FileSpec(dataset=spec.dataset, name=f"{spec.name}/{path}", size=size, size_approx=None, sha256=sha256,
                    md5=None, optional=False, description=None, sources=(hub,), parts=(),
                    place=Placement("file", to=f"{spec.place.to}/{path}"))


def _list(spec: FileSpec, down: VerifiedDownloader, endpoint: str | None) -> tuple[Listing, Source]:
    pin = down.lock.get(spec.key)
    problems = []
    for src in spec.sources:
        try:
            listing = list_repo(src, pin.revision if pin and pin.revision else src.revision or "main",
                                endpoint, down.hub.token)
        except SourceFailed as e:
            problems.append(str(e))
            continue
        if pin is not None and listing.digest() != pin.sha256:
            raise OperationError(
                f"{spec.key}: the file list at the pinned commit {pin.revision} is not the pinned one "
                f"(digest {listing.digest()}, pinned {pin.sha256})",
                hint="the manifest's include/exclude changed, or the hub rewrote history; if you trust the new list, "
                     "remove the entry from vlmdata.lock")
        return listing, src
    raise OperationError(f"{spec.key}: no source could list the repo:\n" + "\n".join(f"  - {p}" for p in problems),
                         hint="check the network or --hf-endpoint, then run the same command again; finished files are kept")


def fetch_repo(spec: FileSpec, down: VerifiedDownloader, journal: Journal, *, endpoint: str | None,
               jobs: int = 4) -> RepoResult:
    """Fetch, check and place every selected file of the repo; journal the repo when all are placed."""
    root = down.root
    listing, src = _list(spec, down, endpoint)
    atomic.write_json(listing_path(root, spec), listing.to_json())
    res = RepoResult(listing, label(src, listing.commit, endpoint))
    entries = journal.entries()
    todo = []
    for f in listing.files:
        sub = file_spec(spec, src, listing.commit, f.path, f.size, f.sha256)
        if is_placed(root, entries, sub) and entries[sub.key].size == f.size:
            res.present += 1
        else:
            todo.append(sub)

    def one(sub: FileSpec) -> None:
        down.check_cancel()
        got = down.file(sub)
        placed = place_download(sub, got.path, root, merge=True)
        journal.record(JournalEntry(key=sub.key, size=got.digests.size, sha256=got.digests.sha256, source=got.source,
                                    to=placed.to, files=1, extra={"revision": got.revision, "repo": spec.key}))
        res.fetched += 1
        res.transferred += got.transferred
        res.resumed_from += got.resumed_from
        res.connections = max(res.connections, got.connections)

    failures: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(todo) or 1))) as pool:
        for sub, fut in [(s, pool.submit(one, s)) for s in todo]:
            try:
                fut.result()
            except Cancelled:
                raise
            except Exception as e:  # noqa: BLE001 - one file's failure is reported with the others
                failures.append(getattr(e, "render", lambda: f"{sub.key}: {e}")())
    if failures:
        raise OperationError(f"{spec.key}: {len(failures)} of {len(listing.files)} file(s) failed "
                             f"({res.fetched + res.present} placed):\n" + "\n".join(failures),
                             hint="run the same command again: placed files are kept, partial ones resume")
    down.lock.pin(spec.key, LockEntry(sha256=listing.digest(), size=listing.size, source=res.source,
                                      revision=listing.commit))
    journal.record(JournalEntry(key=spec.key, size=listing.size, sha256=listing.digest(), source=res.source,
                                to=spec.place.to, files=len(listing.files),
                                extra={"revision": listing.commit, "warnings": res.warnings}))
    return res


def repo_disk_bytes(root: Root, spec: FileSpec, placed: dict) -> int | None:
    """Bytes still to download for a repo, from the saved listing (None: never listed here): the
    files not placed yet, less what their unfinished downloads already hold."""
    from vlmdata.state.partial import partial_bytes

    listing = cached_listing(root, spec)
    if listing is None:
        return None
    left = 0
    for f in listing.files:
        sub = file_spec(spec, Source("hf"), listing.commit, f.path, f.size, f.sha256)
        if not is_placed(root, placed, sub):
            left += max(0, f.size - partial_bytes(root, sub))
    return left


__all__ = ["RepoResult", "cached_listing", "fetch_repo", "file_spec", "listing_path", "repo_disk_bytes"]
