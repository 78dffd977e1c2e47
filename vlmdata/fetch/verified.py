"""From a file's sources to a verified download, pinned: what `fetch` does for one file before placing it.

1. A finished download already in the downloads folder (an earlier run, ``--keep-archives``, or a
   file a person saved there for a ``manual`` source) is hashed and used if it checks out.
2. Otherwise each source in manifest order (vlmdata.sources): a download whose size or hash does
   not match (manifest sha256 / md5, the hub's LFS sha256, else the ``vlmdata.lock`` pin) is
   deleted and downloaded once more, then the next source is tried; nothing mismatching is returned.
3. A file published in parts: each part the same way, then joined and checked as a whole.
4. The first verified download of a file without a published sha256 is pinned in vlmdata.lock. A
   Hub source on a branch is then asked for the pinned commit (the branch may have moved on);
   ``fetch --update`` asks for the branch instead and replaces the pin.

Each part is downloaded under its own claim (vlmdata.state.claims), so a file in parts can be
fetched part by part on several machines and joined by whichever process gets to it.

Why one file of ~420 lines: one class, whose expectations (manifest, lock pin, Hub hash, --update)
decide both what a download must match and which verdict a failed file gets (a damaged mirror, a
changed source, a refusing Hub, no network); split, each half would take the other's state.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from vlmdata.errors import OperationError
from vlmdata.fetch.hashing import Digests, StreamHasher, git_blob_id, hash_file
from vlmdata.fetch.http import Fetched, HttpEngine, copy_local
from vlmdata.fetch.progress import FileBar, Progress
from vlmdata.manifest import FileSpec, Part, Source
from vlmdata.net.errors import Cancelled, SourceFailed
from vlmdata.net.retry import OFFLINE_HINT
from vlmdata.net.urls import shown
from vlmdata.sources import Candidate, HubAccess, Location, Unavailable, candidates
from vlmdata.sources.hf import moves_on_update, redact, spec_moves_on_update
from vlmdata.state import LockEntry, LockFile, Root
from vlmdata.state.partial import discard_partial


class NeedsPerson(OperationError):
    """No source could even be tried: a person has to get something first (a links file, a file
    behind a licence form). Nothing went over the network, so this is no network problem."""


def needs_person(key: str, unavailable: list[Unavailable]) -> NeedsPerson:
    """One cause and one path for a file no source could try: what is missing (the first source's
    reason), what a person does (the manual source's note) and where the result goes. When the
    manual source saves what the other source lacks (SA-1B: the links file), that is one path."""
    manual = [u for u in unavailable if u.manual]
    machine = [u for u in unavailable if not u.manual]
    lines = [f"{key} cannot be downloaded before a person gets something first: {machine[0].reason}" if machine
             else f"{key} cannot be downloaded automatically"]
    needed = next((u.save_as for u in machine if u.save_as is not None), None)
    if manual:
        m = manual[0]
        same = needed is None or m.save_as == needed
        lines.append(f"  to get it: {m.todo}")
        lines.append(f"  save it as: {m.save_as if same else needed}")
        if not same:  # the manual route fetches the file itself instead: a real alternative
            lines.append(f"  (or download {key.split(':', 1)[1]} itself by hand and save it as {m.save_as})")
    elif needed is not None:
        lines.append(f"  save it as: {needed}")
    for u in machine[1:]:
        lines.append(f"  also: {u.label}: {u.reason}")
    return NeedsPerson("\n".join(lines), hint="then run the same command again (nothing was downloaded: "
                                              "this is not a network problem)")


class Mismatch(Exception):
    """The bytes downloaded are not the expected ones (size, sha256 or md5)."""

    def __init__(self, what: str, sha256: str, transferred: int) -> None:
        super().__init__(what)
        self.sha256 = sha256  # what was got: the same bytes twice is a steady file, not a bad transfer
        self.transferred = transferred  # bytes received for it (counted in what the run downloaded)


MANIFEST_WORDS = "its dataset's manifest"  # (the fetch, which knows the catalog, names the file instead)


class AccessDenied(OperationError):
    """Every source that was tried is a Hub that refused this user (401/403: no token, a token without
    access, a gated repo whose terms were not accepted): a person has to act, no retry helps."""


class NotTheDescribedFile(OperationError):
    """A source gave the same bytes on every try, and they are not what the manifest or the lock
    describes: the file changed at its source or the description is wrong, and no retry helps."""


@dataclass
class Expected:
    """What a download must match: the manifest's facts, else the vlmdata.lock pin."""

    size: int | None
    sha256: str | None
    md5: str | None
    pinned: bool  # sha256 comes from vlmdata.lock
    pin_from: str = "vlmdata.lock"  # which lock file: the root's, or a local mirror's (MIRROR/vlmdata.lock)
    pin: LockEntry | None = None  # that pin (its Hub commit is the one asked for: vlmdata.sources.hf.HubFile.pinned)
    moving: bool = False  # --update on a Hub file only the lock pins: its pin is ignored, then replaced
    listed: bool = False  # sha256 is the LFS hash of a Hub repo's file list (vlmdata.fetch.repo), not the manifest's

    def check(self, d: Digests, hub_sha: str | None = None, hub_size: int | None = None) -> list[str]:
        """What does not match, one line each (empty: it matches)."""
        bad = []
        size = self.size if self.size is not None else hub_size
        if size is not None and d.size != size:
            bad.append(f"size: expected {size:,} bytes, got {d.size:,}")
        sha = self.sha256 or hub_sha
        if sha and d.sha256 != sha:
            what = f"sha256 (pinned in {self.pin_from})" if self.pinned and self.sha256 else (
                "sha256 (the hub's file list)" if self.listed else
                "sha256" if self.sha256 else "sha256 (the hub's LFS hash)")
            bad.append(f"{what}: expected {sha}, got {d.sha256}")
        if self.md5 and d.md5 != self.md5:
            bad.append(f"md5: expected {self.md5}, got {d.md5}")
        return bad


def _mirror_lock(mirror: str | None) -> LockFile | None:
    """A local mirror folder's vlmdata.lock (what `mirror build` writes): the hashes the connected
    machine verified. Its pins hold where the root has none, so a mirror whose lock was not copied
    into the far root still cannot slip in other bytes than the ones it was built from."""
    if not mirror or mirror.startswith(("http://", "https://")):
        return None
    path = Path(mirror) / "vlmdata.lock"
    return LockFile(path) if path.is_file() else None


@dataclass
class Verified:
    """A download that matched what was expected, and where it came from."""

    path: Path
    digests: Digests
    source: str  # label of the source that delivered it (journal, summary)
    revision: str | None  # the hub commit, for hf sources
    transferred: int  # bytes received over the network
    resumed_from: int  # bytes an earlier run had already downloaded
    connections: int
    notes: list[str] = field(default_factory=list)  # for the user: e.g. a resume only the size vouched for
    blob: str | None = None  # a hub file kept in git: the git blob id the hub named, which these bytes hash to


class VerifiedDownloader:
    """Downloads files of a root from their sources and checks them; one per fetch run, thread-safe."""

    def __init__(self, root: Root, engine: HttpEngine, progress: Progress, cancel: threading.Event, *,
                 hub: HubAccess, mirror: str | None, verify_tries: int, claim_timeout: float | None = None,
                 update: bool = False) -> None:
        self.root = root
        self.engine = engine
        self.progress = progress
        self.cancel = cancel
        self.hub = hub
        self.mirror = mirror
        self.verify_tries = verify_tries
        self.claim_timeout = claim_timeout
        self.update = update  # --update: Hub files only the lock pins come at the manifest's revision
        self.lock = LockFile(root.lock_path)
        self.mirror_lock = _mirror_lock(mirror)

    @contextmanager
    def claimed(self, key: str) -> Iterator[None]:
        """Hold the root's claim on ``key`` (a file, a part, a chunk of a URL list), waiting while another
        live process holds it; Cancelled when the run is interrupted meanwhile."""
        claim = self.root.claim(key, f"fetching {key}", self.claim_timeout)
        other = claim.acquire(cancel=self.cancel, on_wait=lambda h: self.progress.message(
            f"waiting for {key}: {h.describe()} is on it"))
        if other is not None:
            raise Cancelled()
        try:
            yield
        finally:
            claim.release()

    # ------------------------------------------------------------------ expectations
    def moves(self, sources: tuple[Source, ...], sha256: str | None) -> bool:
        """--update on a Hub file or repo that only vlmdata.lock pins (no sha256 in the manifest): the
        revision the manifest names now (a branch's newest commit) is asked for, not the pinned commit."""
        return self.update and moves_on_update(sources, sha256)

    def spec_moves(self, spec: FileSpec) -> bool:
        """``moves`` for a file, or for any of its parts (whose pins the joined file's then follows)."""
        return self.update and spec_moves_on_update(spec)

    def expected(self, key: str, size: int | None, sha256: str | None, md5: str | None,
                 sources: tuple[Source, ...] = (), moving: bool | None = None) -> Expected:
        moving = self.moves(sources, sha256) if moving is None else moving
        pin = self.lock.get(key) if sha256 is None and not moving else None
        where = "vlmdata.lock"
        if sha256 is None and pin is None and self.mirror_lock is not None and not moving:
            pin = self.mirror_lock.get(key)
            where = str(self.mirror_lock.path)
        return Expected(size=size if size is not None else (pin.size if pin else None),
                        sha256=sha256 or (pin.sha256 if pin else None), md5=md5, pinned=pin is not None,
                        pin_from=where, pin=pin, moving=moving)

    def pin(self, key: str, expect: Expected, got: Verified) -> None:
        """No sha256 in the manifest and none pinned in the root yet: this verified download sets the
        root's pin (a local mirror's pin, which it matched, is copied in); with --update it replaces
        the root's pin."""
        if expect.pinned and expect.pin_from != "vlmdata.lock" and expect.pin is not None:
            # (as the connected machine made it: its source and Hub commit, which later fetches ask for)
            self.lock.pin(key, expect.pin)
        elif expect.sha256 is None:
            self.lock.pin(key, LockEntry(sha256=got.digests.sha256, size=got.digests.size, source=got.source,
                                         revision=got.revision, blob=got.blob), replace=expect.moving)

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled()

    # ------------------------------------------------------------------ one file
    def file(self, spec: FileSpec, listed: bool = False) -> Verified:
        """``spec`` downloaded (or found in the downloads folder), checked and pinned. ``listed``: its
        sha256 is what a Hub repo's file list says (a file of an ``hfrepo``), not the manifest's."""
        dest = self.root.download_path(spec.dataset, spec.name)
        expect = self.expected(spec.key, spec.size, spec.sha256, spec.md5,
                               moving=spec.sha256 is None and self.spec_moves(spec))
        expect.listed = listed and spec.sha256 is not None
        if expect.moving:  # (a download kept from before is of the old commit, and no pin would tell)
            dest.unlink(missing_ok=True)
        if not spec.parts:
            return self._from_sources(spec.key, spec.name, spec.sources, dest, expect)
        if dest.exists():
            got = self._reuse(spec.key, dest, expect)
            if got is not None:
                return got
        return self._join(spec, [self.part(spec, p) for p in spec.parts], dest, expect)  # type: ignore[misc]

    def part(self, spec: FileSpec, p: Part, done: Callable[[], bool] | None = None) -> Verified | None:
        """One part of ``spec`` downloaded (or found already downloaded) and checked, under its claim;
        None when ``done()`` says, once the claim is ours, that it is not needed any more."""
        key = f"{spec.dataset}:{p.name}"
        with self.claimed(key):
            if done is not None and done():
                return None
            return self._from_sources(key, p.name, p.sources, self.root.download_path(spec.dataset, p.name),
                                      self.expected(key, p.size, p.sha256, None, p.sources))

    def _join(self, spec: FileSpec, pieces: list[Verified], dest: Path, expect: Expected) -> Verified:
        tmp = dest.with_name(dest.name + ".joining")
        hasher = StreamHasher(md5=expect.md5 is not None)
        tmp.unlink(missing_ok=True)  # (a killed join's, or a link planted under the name: never written through)
        try:
            with open(tmp, "xb") as out:
                for p in pieces:
                    with open(p.path, "rb") as fh:
                        while data := fh.read(4 << 20):
                            self.check_cancel()
                            out.write(data)
                            hasher.feed(data)
        except BaseException:
            hasher.abandon()
            tmp.unlink(missing_ok=True)  # the parts are still there: joining again is cheap
            raise
        d = hasher.finish()
        bad = expect.check(d)
        if bad:
            tmp.unlink(missing_ok=True)
            raise OperationError(f"{spec.key}: the joined parts do not match: {'; '.join(bad)}",
                                 hint="delete the parts in the downloads folder and fetch again")
        if spec.place.format == "split-zip":  # its offsets are per part: the reader needs where each starts
            from vlmdata.place.splitzip import record_disks

            # (before the joined file has its name: a kill between the two leaves the parts to join
            # again, not a joined file without the sizes its reader needs)
            record_disks(dest, [p.digests.size for p in pieces])
        os.replace(tmp, dest)
        for p in pieces:
            p.path.unlink(missing_ok=True)
        got = Verified(dest, d, " + ".join(sorted({p.source for p in pieces})), pieces[0].revision,
                       sum(p.transferred for p in pieces), sum(p.resumed_from for p in pieces),
                       max(p.connections for p in pieces), [n for p in pieces for n in p.notes])
        self.pin(spec.key, expect, got)
        return got

    def _reuse(self, key: str, dest: Path, expect: Expected) -> Verified | None:
        """A finished download already in the downloads folder: use it if it checks out."""
        d = hash_file(dest, md5=expect.md5 is not None)
        bad = expect.check(d)
        if bad:
            rejected = dest.with_name(dest.name + ".rejected")
            os.replace(dest, rejected)
            self.progress.message(f"{key}: {dest} does not match ({'; '.join(bad)}); moved aside to {rejected.name}")
            return None
        got = Verified(dest, d, f"{dest} (already downloaded)", None, 0, 0, 0)
        self.pin(key, expect, got)
        return got

    def _from_sources(self, key: str, name: str, sources: tuple[Source, ...], dest: Path,
                      expect: Expected) -> Verified:
        if dest.exists():
            got = self._reuse(key, dest, expect)
            if got is not None:
                return got
        problems: list[str] = []
        manual: list[str] = []
        unavailable: list[Unavailable] = []
        tried = 0
        unreachable = 0  # sources whose server could not be reached at all
        denied = 0  # sources whose hub refused this user (401/403)
        steady = False  # a source gave the same wrong bytes on every try
        wasted, last_mismatch = 0, ""  # bytes received for downloads that did not match; what the last one was
        pin = expect.pin
        for cand in candidates(name, sources, self.root, download_path=dest, mirror=self.mirror):
            if pin is not None:  # (the bytes pinned stay at their commit when a branch moves on)
                cand = cand.pinned(pin)
            if isinstance(cand, Unavailable):
                (manual if cand.manual else problems).append(f"{cand.label}: {cand.reason}")
                unavailable.append(cand)
                continue
            tried += 1
            got_shas: list[str] = []
            first_line = len(problems)  # this source's lines start here
            for attempt in range(1, self.verify_tries + 1):
                self.check_cancel()
                try:
                    got = self._download(cand, dest, expect, key)
                except SourceFailed as e:
                    problems.append(redact(str(e), self.hub.token))
                    unreachable += e.unreachable
                    denied += e.denied
                    break
                except Mismatch as e:
                    got_shas.append(e.sha256)
                    wasted, last_mismatch = wasted + e.transferred, f"{cand.label}: {e}"
                    if attempt > 1 and len(set(got_shas)) == 1:
                        steady = True
                        del problems[first_line:]  # one line says it for every download of this source
                        problems.append(f"{cand.label}: {e} (the same bytes on all {attempt} downloads)")
                    elif attempt > 1:
                        problems.append(f"{cand.label}: {e} (other bytes than the download before)")
                    else:
                        problems.append(f"{cand.label}: {e}")
                    continue
                self.pin(key, expect, got)
                if wasted:
                    got.transferred += wasted
                    got.notes.append(f"{key}: {last_mismatch}; it was downloaded again ({wasted:,} bytes more) "
                                     "and this download matched")
                return got
        if not tried and unavailable:
            raise needs_person(key, unavailable)
        lines = "\n".join(f"  - {p}" for p in problems + manual)
        mism = [p for p in problems if "expected" in p]
        if mism and expect.pinned and expect.pin_from != "vlmdata.lock":
            raise NotTheDescribedFile(
                f"{key}: the mirror's file is not the one the connected machine verified; nothing was placed:\n{lines}",
                hint=f"the mirror was damaged on its way (the hash is from {expect.pin_from}): copy it again, or "
                     "build it again on the connected machine (vlmdata mirror build, docs/airgapped.md)")
        if mism and steady and expect.listed:
            raise NotTheDescribedFile(
                f"{key}: the downloaded bytes are not the file the hub's file list describes; nothing was placed:\n{lines}",
                hint="the hub lists this LFS hash at the commit, and the place it sent the download to serves other "
                     "bytes every time: a damaged copy there (a CDN, or the mirror of --hf-endpoint). Try another "
                     "--hf-endpoint, or the same command later")
        if mism and steady:
            pinned = expect.pinned and expect.sha256 is not None
            raise NotTheDescribedFile(
                f"{key}: the downloaded bytes do not match what is expected; nothing was placed:\n{lines}",
                hint="the source serves these same bytes every time, so running again will not help: the file "
                     "changed where it is published, or its description is wrong. If it is the file you want, "
                     + ("remove its entry from vlmdata.lock (the pin of an earlier download)" if pinned else
                        "correct its size/sha256/md5 in " + MANIFEST_WORDS)
                     + "; else fetch it from another source (--mirror)")
        if mism:
            raise OperationError(f"{key}: the downloaded bytes do not match what is expected; nothing was placed:\n{lines}",
                                 hint="the server may serve a changed or corrupt file; if the publisher re-uploaded it "
                                      "on purpose, remove its entry from vlmdata.lock (for a pinned hash)")
        if manual and not problems:
            raise OperationError(f"{key} cannot be downloaded automatically:\n{lines}")
        if denied and denied == tried:
            raise AccessDenied(f"{key}: the hub refused access:\n{lines}",
                               hint="do what the message above says (the token, the repo's terms), then run the "
                                    "same command again; retrying as things are will not help")
        if unreachable:
            raise OperationError(f"{key}: no source could be reached:\n{lines}", hint=OFFLINE_HINT)
        if problems and all(p.endswith("no such file in the mirror") for p in problems):
            # (a local mirror folder: running again changes nothing; the mirror has to)
            raise OperationError(f"{key}: the mirror folder does not hold it:\n{lines}",
                                 hint="check that --mirror names the folder holding vlmdata-mirror.json, or build the "
                                      "mirror again on the connected machine with this dataset in it: vlmdata mirror "
                                      "build DIR NAME... (docs/airgapped.md)")
        raise OperationError(f"{key}: no source could deliver it:\n{lines}",
                             hint="check the network or the mirror (--mirror / --hf-endpoint), then run the same command again; "
                                  "finished bytes are kept")

    def _download(self, cand: Candidate, dest: Path, expect: Expected, key: str) -> Verified:
        loc = cand.locate(self.hub)
        bar: FileBar | None = None
        try:
            size = expect.size if expect.size is not None else loc.size
            bar = self.progress.file(key, loc.path.stat().st_size if loc.path is not None else size)
            # a resume that only the size vouches for is safe only if a known sha256 judges the result
            judged = expect.sha256 is not None or loc.sha256 is not None
            f = self._deliver(loc, dest, md5=expect.md5 is not None, size=size, bar=bar, weak_resume=judged)
        finally:
            if bar is not None:
                bar.close()
        bad = expect.check(f.digests, loc.sha256, loc.size)
        if bad:
            dest.unlink(missing_ok=True)
            discard_partial(dest)
            came = shown(loc.url) if loc.url else str(loc.path or "")
            # (a hub file's bytes come from where the hub sent the download: a CDN, a mirror's store)
            where = f" (the bytes came from {came})" if came and came != cand.label else ""
            raise Mismatch("; ".join(bad) + where, f.digests.sha256, f.transferred)
        blob = loc.blob if loc.blob is not None and git_blob_id(dest) == loc.blob else None
        return Verified(dest, f.digests, loc.label, loc.revision, f.transferred, f.resumed_from, f.connections,
                        list(f.notes), blob)

    def _deliver(self, loc: Location, dest: Path, *, md5: bool, size: int | None, bar: FileBar,
                 weak_resume: bool) -> Fetched:
        """The bytes at ``loc`` into ``dest``: a copy from a local mirror, or the HTTP engine's download."""
        if loc.path is not None:
            return copy_local(loc.path, dest, md5=md5, progress=bar.update, cancel=self.cancel)
        return self.engine.download(loc.url or "", dest, headers=loc.headers, size_hint=size, md5=md5,
                                    progress=bar.update, weak_resume=weak_resume)
