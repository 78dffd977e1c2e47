"""Placement "repo": a Hub repo's files (a model checkpoint, or a dataset kept as files) into one folder.

1. The listing (vlmdata.sources.hfrepo): for a manifest revision that follows a branch, at the
   commit pinned in ``vlmdata.lock`` when there is one (the file list must hash to the pinned
   digest), else at the manifest's revision (``fetch --update``: the branch's newest commit, whatever
   the pin); each ``hfrepo`` source in manifest order until one answers. It is kept in the state
   folder, so `plan` can say the exact bytes afterwards.
2. Every listed file is an ordinary hub file at the listing's commit: downloaded by the same
   engine as any other file (resume from ``.part``, several connections, the hub's LFS sha256
   checked, files without one pinned in vlmdata.lock), placed at ``<to>/<path>`` and journaled on
   its own (key ``<dataset>:<file>/<path>``), so an interrupted fetch resumes file by file. A file
   placed before is kept only when it is this listing's file (its size, and its LFS sha256 or, for
   a file kept in git itself, the commit it came from or its git blob id, so ``--update`` downloads only
   what changed and re-pins the rest); files an earlier commit had and this one
   has not are removed, so the folder never mixes two commits.
3. When every file is placed, the repo itself is journaled and its listing pinned.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from vlmdata import atomic
from vlmdata.errors import OperationError
from vlmdata.fetch.repin import move_pin
from vlmdata.fetch.verified import AccessDenied, VerifiedDownloader
from vlmdata.manifest import FileSpec, Placement, Source
from vlmdata.net.errors import Cancelled, SourceFailed
from vlmdata.place import place_download
from vlmdata.sources.hf import hub_label, pinned_revision
from vlmdata.sources.hfrepo import Listing, RepoFile, label, list_repo
from vlmdata.state import Journal, JournalEntry, LockEntry, Root, is_placed


@dataclass
class RepoResult:
    listing: Listing
    source: str
    fetched: int = 0  # files downloaded by this run
    present: int = 0  # files placed before
    removed: int = 0  # files placed before that the listing's commit no longer has
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
        moving = down.moves((src,), spec.sha256)
        # (a branch moves on; the commit the lock pinned does not. A commit the manifest names is asked as is.)
        at_pin = None if moving else pinned_revision(src, pin)
        try:
            listing = list_repo(src, at_pin or src.revision or "main", endpoint, down.hub.token)
        except SourceFailed as e:
            problems.append(str(e))
            continue
        if pin is not None and not moving:
            if pin.revision and listing.commit != pin.revision:
                raise OperationError(
                    f"{spec.key}: the manifest asks for commit {listing.commit}, vlmdata.lock pins {pin.revision} "
                    "(an earlier fetch)", hint="to move to the manifest's commit, run the fetch again with --update")
            if listing.digest() != pin.sha256:
                raise OperationError(
                    f"{spec.key}: the file list at the pinned commit {pin.revision} is not the pinned one "
                    f"(digest {listing.digest()}, pinned {pin.sha256})",
                    hint="the manifest's include/exclude changed, or the hub rewrote history; if you trust the new "
                         "list, remove the entry from vlmdata.lock")
            if at_pin:
                down.progress.message(f"{spec.key}: at commit {at_pin}, pinned in vlmdata.lock (the manifest "
                                      f"follows {src.revision}; `vlmdata fetch {spec.dataset} --update` moves to "
                                      "its newest commit)")
        elif pin is not None and pin.revision != listing.commit:
            down.progress.message(f"{spec.key}: --update: from commit {pin.revision} to {listing.commit}")
        return listing, src
    raise OperationError(f"{spec.key}: no source could list the repo:\n" + "\n".join(f"  - {p}" for p in problems),
                         hint="check the network or --hf-endpoint, then run the same command again; finished files are kept")


def _current(entry: JournalEntry, f: RepoFile, commit: str) -> bool:
    """Whether the placed copy journaled as ``entry`` is the listing's file ``f``: the same size, and the
    same LFS sha256, or for a file kept in git itself (no LFS hash) placed from this very commit or from
    the same git blob (the id a download was checked to hash to: the same bytes at another commit)."""
    if entry.size != f.size:
        return False
    if f.sha256:
        return entry.sha256 == f.sha256
    extra = entry.extra or {}
    return extra.get("revision") == commit or (f.blob is not None and extra.get("blob") == f.blob)


def _repin_kept(spec: FileSpec, kept: list[tuple[JournalEntry, Source]], commit: str, down: VerifiedDownloader,
                journal: Journal, endpoint: str | None) -> None:
    """Files ``--update`` found unchanged at ``commit`` (the same LFS sha256, or for one kept in git the same
    git blob; each with its ``hf`` source there): their journal entries and lock pins name that commit now,
    as a download from it would have; nothing is downloaded."""
    pins = down.lock.entries()
    for e, at_commit in kept:
        move_pin(down, journal, e, pins.get(e.key), source=hub_label(at_commit, endpoint), revision=commit,
                 blob=(e.extra or {}).get("blob"))
    if kept:
        down.progress.message(f"{spec.key}: {len(kept)} file(s) unchanged at commit {commit} (the same LFS sha256 "
                              "or git blob): re-pinned, not downloaded")


def _intact(path: Path, f: RepoFile, pin: LockEntry | None, commit: str) -> bool:
    """--refetch: whether the placed copy's bytes hash to what the listing says (its LFS sha256) or, for a
    file kept in git itself, to its vlmdata.lock pin made at this commit. Reading a repo back costs far
    less than downloading it again, and the file is then as good as a new download."""
    from vlmdata.fetch.hashing import hash_file

    want = f.sha256 or (pin.sha256 if pin is not None and pin.revision == commit else None)
    return want is not None and hash_file(path).sha256 == want


def _drop_stale(spec: FileSpec, listing: Listing, todo: list[FileSpec], gone: list[str], down: VerifiedDownloader,
                journal: Journal, entries: dict[str, JournalEntry], pins: dict[str, LockEntry]) -> None:
    """The files of the repo an earlier commit placed that this listing lacks (``gone``): removed from
    the folder, the journal and the lock, so the folder is this commit's repo and no stale shard or
    tokenizer file stays beside it. And the pins of files kept in git (no LFS hash) that are fetched
    again from another commit than their pin's: the repo's own pin says which commit holds."""
    folder = down.root.store_path(spec.place.to)
    for k in gone:
        path = down.root.store_path(entries[k].to)
        path.unlink(missing_ok=True)
        for parent in path.parents:  # (empty folders it leaves, up to the repo's own)
            if parent == folder or folder not in parent.parents or any(parent.iterdir()):
                break
            parent.rmdir()
        journal.forget(k)
    shas = {f"{spec.key}/{f.path}": f.sha256 for f in listing.files}
    stale = [s.key for s in todo if shas[s.key] is None and s.key in pins and pins[s.key].revision != listing.commit]
    down.lock.forget(gone + stale)


def fetch_repo(spec: FileSpec, down: VerifiedDownloader, journal: Journal, *, endpoint: str | None,
               jobs: int = 4, refetch: bool = False) -> RepoResult:
    """Fetch, check and place every selected file of the repo (``refetch``: also every placed file whose
    bytes no longer hash right); journal the repo when all are placed."""
    root = down.root
    listing, src = _list(spec, down, endpoint)
    atomic.write_json(listing_path(root, spec), listing.to_json())
    res = RepoResult(listing, label(src, listing.commit, endpoint))
    entries = journal.entries()
    pins = down.lock.entries()
    if refetch:
        down.progress.message(f"{spec.key}: --refetch: reading the placed files back to check their hashes")
    todo, kept = [], []
    for f in listing.files:
        sub = file_spec(spec, src, listing.commit, f.path, f.size, f.sha256)
        if is_placed(root, entries, sub) and _current(entries[sub.key], f, listing.commit) and (
                not refetch or _intact(root.store_path(entries[sub.key].to), f, pins.get(sub.key), listing.commit)):
            res.present += 1
            if (entries[sub.key].extra or {}).get("revision") != listing.commit:
                kept.append((entries[sub.key], sub.sources[0]))
        else:
            todo.append(sub)
    _repin_kept(spec, kept, listing.commit, down, journal, endpoint)
    listed = {f"{spec.key}/{f.path}" for f in listing.files}
    gone = [k for k, e in entries.items() if (e.extra or {}).get("repo") == spec.key and k not in listed]
    if todo or gone:  # (until all is placed again the repo is not: a run stopped halfway journals no mix as whole)
        journal.forget(spec.key)
    _drop_stale(spec, listing, todo, gone, down, journal, entries, pins)
    res.removed = len(gone)
    if gone:
        down.progress.message(f"{spec.key}: removed {len(gone)} file(s) that commit {listing.commit} no longer has")
    refused: list[AccessDenied] = []  # (a hub that refuses one file of a repo refuses them all: say it once)

    def one(sub: FileSpec) -> None:
        down.check_cancel()
        if refused:
            return
        try:
            got = down.file(sub, listed=True)
        except AccessDenied as e:
            refused.append(e)
            return
        placed = place_download(sub, got.path, root, merge=True)
        extra = {"revision": got.revision, "repo": spec.key, **({"blob": got.blob} if got.blob else {})}
        journal.record(JournalEntry(key=sub.key, size=got.digests.size, sha256=got.digests.sha256, source=got.source,
                                    to=placed.to, files=1, extra=extra))
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
    if refused:
        raise AccessDenied(f"{spec.key}: the hub refused access to the repo's files ({res.fetched + res.present} of "
                           f"{len(listing.files)} placed); the first refusal:\n{refused[0].what}",
                           hint=refused[0].hint)
    if failures:
        raise OperationError(f"{spec.key}: {len(failures)} of {len(listing.files)} file(s) failed "
                             f"({res.fetched + res.present} placed):\n" + "\n".join(failures),
                             hint="run the same command again: placed files are kept, partial ones resume")
    down.lock.pin(spec.key, LockEntry(sha256=listing.digest(), size=listing.size, source=res.source,
                                      revision=listing.commit), replace=down.moves((src,), spec.sha256))
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
