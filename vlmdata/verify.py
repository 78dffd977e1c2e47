"""`vlmdata verify`: is what the journal says was placed still there, whole and right?

Quick: every journaled file's target is present, plain files have their recorded size, folders
hold at least as many files as were placed into them (and, as a note, as many as the manifest
says), no image is a 0-byte file, kept archives have their size. Deep adds the sha256 of plain files and kept archives
(against the manifest, else the ``vlmdata.lock`` pin, else the journal) and decodes every image
under the targets in parallel, reporting empty, truncated, undecodable and wrong-format files
(e.g. GIF bytes named ``.jpg``) with their paths.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from vlmdata import atomic
from vlmdata.manifest import Catalog, Dataset, FileSpec
from vlmdata.place.images import IMAGE_EXTS, check_file
from vlmdata.state import Journal, JournalEntry, LockFile, Root


@dataclass
class Problem:
    kind: str  # not_fetched | missing | size | count | sha256 | empty | truncated | undecodable | wrong_format
    path: str
    detail: str


@dataclass
class DatasetResult:
    name: str
    fetched: bool
    files: int = 0  # journaled files checked
    images: int = 0  # images decoded (deep)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    subset: dict[str, int | None] | None = None  # {"images", "of"}: archives placed with --only-referenced-by
    repair: list[str] = field(default_factory=list)  # the files whose placing `fetch --refetch` redoes

    def to_repair(self, *keys: str) -> None:
        self.repair.extend(k for k in keys if k not in self.repair)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class VerifyReport:
    deep: bool
    datasets: list[DatasetResult]
    report_path: Path | None = None
    seconds: float = 0.0
    not_recorded: str | None = None  # why the result was not written to the root

    @property
    def checked(self) -> list[DatasetResult]:
        """The datasets this verify looked at: the fetched ones, and named ones that are not fetched."""
        return [d for d in self.datasets if d.fetched or d.problems]

    @property
    def ok(self) -> bool:
        """Nothing wrong, and something checked: a verify of an empty root proves nothing."""
        return bool(self.checked) and all(d.ok for d in self.datasets)

    def to_json(self) -> dict:
        return {"deep": self.deep, "ok": self.ok, "checked": len(self.checked), "seconds": round(self.seconds, 3),
                "report": str(self.report_path) if self.report_path else None,
                "datasets": [dict(asdict(d), ok=d.ok) for d in self.datasets]}


def _files_under(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(atomic.TMP_PREFIX)]
        for n in filenames:
            if not n.startswith(atomic.TMP_PREFIX):
                yield Path(dirpath) / n


def _expected_sha(spec: FileSpec, entry: JournalEntry, lock: LockFile) -> tuple[str | None, str]:
    if spec.sha256:
        return spec.sha256, "manifest"
    pin = lock.get(spec.key)
    if pin is not None:
        return pin.sha256, "vlmdata.lock"
    return entry.sha256, "journal"


class _Verifier:
    def __init__(self, root: Root, deep: bool, jobs: int, progress: Callable[[int], None] | None) -> None:
        self.root, self.deep, self.jobs, self.progress = root, deep, jobs, progress
        self.journal = Journal(root.state_dir)
        self.entries = self.journal.entries() if self.journal.path.exists() else {}
        self.lock = LockFile(root.lock_path)

    def dataset(self, ds: Dataset, named: bool) -> DatasetResult:
        placed = [(f, self.entries[f.key]) for f in ds.files if f.key in self.entries]
        res = DatasetResult(ds.name, fetched=bool(placed))
        if not placed:
            if named:
                res.problems.append(Problem("not_fetched", str(self.root.path),
                                            f"nothing of {ds.name} is in this root; run `vlmdata fetch {ds.name}`"))
            return res
        missing_defaults = [f.name for f in ds.default_files if f.key not in self.entries]
        if missing_defaults:
            res.notes.append(f"not fetched yet: {', '.join(missing_defaults)}")
        subset = [(f, e) for f, e in placed if f.place.kind == "extract" and (e.extra or {}).get("subset")]
        if subset:
            counts = [f.place.count for f, _ in subset]
            res.subset = {"images": sum(e.files or 0 for _, e in subset),
                          "of": None if any(c is None for c in counts) else sum(counts)}  # type: ignore[arg-type]
        targets: dict[str, list[tuple[FileSpec, JournalEntry]]] = {}
        for spec, entry in placed:
            res.files += 1
            self._file(spec, entry, res)
            if spec.place.kind == "repo":
                self._repo_files(spec, res)
            if spec.place.kind in ("extract", "images"):
                targets.setdefault(entry.to, []).append((spec, entry))
        for to, items in sorted(targets.items()):
            self._folder(ds, to, items, res)
        return res

    def _file(self, spec: FileSpec, entry: JournalEntry, res: DatasetResult) -> None:
        target = self.root.store_path(entry.to)
        if not (target.exists() or target.is_symlink()):
            res.problems.append(Problem("missing", str(target), f"{spec.key} was placed here but it is gone"))
            res.to_repair(spec.key)
            return
        if spec.place.kind == "file":
            self._sized(spec, entry, target, res, "placed file")
        kept = self.root.download_path(spec.dataset, spec.name)
        if spec.place.kind != "file" and kept.is_file():
            self._sized(spec, entry, kept, res, "kept archive")

    def _repo_files(self, spec: FileSpec, res: DatasetResult) -> None:
        """A Hub repo's files, each journaled on its own (``dataset:file/path``): checked like plain files."""
        from msgspec.structs import replace

        from vlmdata.manifest import Placement

        before = list(res.repair)
        for key, entry in sorted(self.entries.items()):
            if key.startswith(spec.key + "/"):
                res.files += 1
                sub = replace(spec, name=key.split(":", 1)[1], size=entry.size, size_approx=None, sha256=None, md5=None,
                              sources=(), parts=(), place=Placement("file", to=entry.to))
                self._file(sub, entry, res)
        if res.repair != before:  # (fetch selects the repo, not its files: `fetch REPO --refetch` mends the bad ones)
            res.repair = before
            res.to_repair(spec.key)

    def _sized(self, spec: FileSpec, entry: JournalEntry, path: Path, res: DatasetResult, what: str) -> None:
        size = entry.size if entry.size is not None else spec.size
        got = path.stat().st_size
        if size is not None and got != size:
            res.problems.append(Problem("size", str(path), f"{what} {spec.key}: {got:,} bytes, expected {size:,}"))
            res.to_repair(spec.key)
            return
        if not self.deep:
            return
        want, where = _expected_sha(spec, entry, self.lock)
        if want is None:
            res.notes.append(f"{spec.key}: no sha256 known to compare the {what} with")
            return
        from vlmdata.fetch.hashing import hash_file  # the same hashing the downloads use

        got_sha = hash_file(path).sha256
        if got_sha != want:
            res.problems.append(Problem("sha256", str(path), f"{what} {spec.key}: sha256 {got_sha}, expected {want} ({where})"))
            res.to_repair(spec.key)

    def _folder(self, ds: Dataset, to: str, items: list[tuple[FileSpec, JournalEntry]], res: DatasetResult) -> None:
        folder = self.root.store_path(to)
        if not folder.is_dir():
            return  # reported as missing already
        files = list(_files_under(folder))
        # Archives fill a folder with disjoint files; a URL list tops up what is there (overlaps).
        archived = sum(e.files or 0 for s, e in items if s.place.kind == "extract")
        listed = max((e.files or 0 for s, e in items if s.place.kind == "images"), default=0)
        floor = max(archived, listed)
        if len(files) < floor:
            res.problems.append(Problem("count", str(folder), f"{len(files):,} files, but {floor:,} were placed here "
                                                              f"({', '.join(s.name for s, _ in items)})"))
        expected = [s.place.count for s, _ in items]
        subset = any(e.extra.get("subset") for _, e in items)  # --only-referenced-by: a part on purpose
        if all(c is not None for c in expected) and items[0][0].place.kind == "extract" and not subset:
            total = sum(expected)  # type: ignore[arg-type]
            if len(files) != total:
                res.notes.append(f"{to}: {len(files):,} files, the manifest's place.count says {total:,} (a note, not "
                                 f"a failure: published counts are often a few off)")
        before = len(res.problems)
        if self.deep:
            self._images(files, res)
        else:  # the quick check's one look inside: a 0-byte image is no image (Visual Genome ships some)
            for p in files:
                if p.suffix.lower() in IMAGE_EXTS and _size(p) == 0:
                    res.problems.append(Problem("empty", str(p), "0 bytes: not an image"))
        if len(files) < floor or any(p.kind != "wrong_format" for p in res.problems[before:]):  # (normalize mends those)
            res.to_repair(*(s.key for s, _ in items))

    def _images(self, files: list[Path], res: DatasetResult) -> None:
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTS]
        with ThreadPoolExecutor(max_workers=self.jobs) as ex:
            for chk in ex.map(check_file, images, chunksize=64):
                res.images += 1
                if chk.status != "ok":
                    res.problems.append(Problem(chk.status, str(chk.path), chk.detail))
                if self.progress is not None:
                    self.progress(1)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def count_images(root: Root, catalog: Catalog, names: list[str]) -> int:
    """How many image files a deep verify would decode (for a progress bar)."""
    journal = Journal(root.state_dir)
    entries = journal.entries() if journal.path.exists() else {}
    tos = {entries[f.key].to for n in names for f in catalog.dataset(n).files
           if f.key in entries and f.place.kind in ("extract", "images")}
    return sum(1 for to in tos for p in _files_under(root.store_path(to)) if p.suffix.lower() in IMAGE_EXTS)


def verify(root: Root, catalog: Catalog, names: list[str] | None = None, *, deep: bool = False,
           jobs: int | None = None, progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Check the named datasets (default: every dataset in the catalog), write the report JSON and
    record the result in the journal (so `vlmdata status` shows "verified")."""
    start = time.time()
    root.check_readable()
    explicit = bool(names)
    names = list(dict.fromkeys(names)) if names else sorted(catalog.datasets)
    for n in names:
        catalog.dataset(n)  # an unknown name is a UserError with suggestions
    v = _Verifier(root, deep, jobs or max(2, os.cpu_count() or 2), progress)
    report = VerifyReport(deep, [v.dataset(catalog.dataset(n), explicit) for n in names])
    report.seconds = time.time() - start
    if root.state_dir.is_dir() and os.access(root.state_dir, os.W_OK | os.X_OK):
        for d in report.datasets:
            if d.fetched:
                v.journal.record_verified(d.name, deep=deep, ok=d.ok)
        report.report_path = root.state_dir / "reports" / "verify.json"
        atomic.write_json(report.report_path, dict(report.to_json(), at=time.time(), root=str(root.path)))
    elif root.state_dir.is_dir():  # another user's root, shared read-only: check it, record nothing
        report.not_recorded = f"{root.state_dir} is not writable: the result is not recorded for `vlmdata status`"
    return report


__all__ = ["verify", "VerifyReport", "DatasetResult", "Problem", "count_images"]
