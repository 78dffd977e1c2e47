"""``kind = "hfrepo"``: every file of a Hugging Face Hub repo (a model, or a dataset kept as files),
at a revision, filtered by ``include`` / ``exclude`` globs (and, where a repo has both weight
formats, only its safetensors); placement ``repo`` puts them under one folder.

Fetch asks the hub for the repo's file list once (``repo_info`` with file metadata: each file's
size and, for LFS files, its sha256), then every file is an ordinary ``hf`` file of the same repo
at the resolved commit, downloaded, checked and placed by the usual engine (vlmdata.fetch.repo).
The listing itself is pinned in ``vlmdata.lock`` (its commit and a digest of the file list), so a
later fetch, on any machine, gets the very same files even when the branch has moved on.
"""
from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vlmdata.manifest import Source
from vlmdata.net.errors import SourceFailed
from vlmdata.net.urls import shown
from vlmdata.sources.base import Candidate, SourceKind, Unavailable
from vlmdata.sources.hf import DEFAULT_ENDPOINT, hub_failure, share_ca_bundle, token_from_env

if TYPE_CHECKING:
    from vlmdata.state import Root


@dataclass(frozen=True)
class RepoFile:
    path: str  # inside the repo
    size: int
    sha256: str | None  # the LFS sha256; None for files kept in git itself (pinned in vlmdata.lock instead)
    blob: str | None = None  # a file kept in git: its git blob id (the same id at two commits: the same bytes)


@dataclass(frozen=True)
class Listing:
    commit: str
    files: tuple[RepoFile, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def digest(self) -> str:
        """What the lock pins for the repo: one line per file (path, size, LFS sha256), sorted."""
        text = "".join(f"{f.path}\t{f.size}\t{f.sha256 or '-'}\n" for f in sorted(self.files, key=lambda f: f.path))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_json(self) -> dict:
        return {"commit": self.commit, "files": [[f.path, f.size, f.sha256, f.blob] for f in self.files]}

    @staticmethod
    def from_json(d: dict) -> "Listing":
        # (a listing saved before blob ids were kept has three fields a file)
        return Listing(d["commit"], tuple(RepoFile(*f[:4]) for f in d["files"]))


def selected(path: str, src: Source) -> bool:
    """``include`` (any glob; none given: every file) and not ``exclude``. Git's own files are never fetched."""
    if path == ".gitattributes" or path.startswith(".git/"):
        return False
    if src.include and not any(fnmatch.fnmatchcase(path, g) for g in src.include):
        return False
    return not any(fnmatch.fnmatchcase(path, g) for g in src.exclude)


_BIN_WEIGHTS = ("pytorch_model*.bin", "pytorch_model.bin.index.json")


def prefer_safetensors(paths: list[str]) -> list[str]:
    """Where a repo publishes its weights in both formats, the safetensors ones: what transformers
    loads when both are there, so the PyTorch pickles would be downloaded for nothing."""
    if not any(p.endswith(".safetensors") for p in paths):
        return paths
    return [p for p in paths if not any(fnmatch.fnmatchcase(p.rsplit("/", 1)[-1], g) for g in _BIN_WEIGHTS)]


def label(src: Source, revision: str | None = None, endpoint: str | None = None) -> str:
    rev = revision or src.revision
    what = f"hf://{src.repo_type}s/{src.repo_id}@{rev}"
    if src.include:
        what += f" [{', '.join(src.include)}]"
    return what + (f" via {shown(endpoint)}" if endpoint and endpoint.rstrip("/") != DEFAULT_ENDPOINT else "")


def list_repo(src: Source, revision: str, endpoint: str | None, token: str | None = None) -> Listing:
    """The files of ``src``'s repo at ``revision`` that it selects; SourceFailed with a clean message."""
    from huggingface_hub import HfApi, constants

    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    token = token if token is not None else token_from_env()
    where = label(src, revision, endpoint)
    if constants.is_offline_mode():
        raise SourceFailed(f"{where}: HF_HUB_OFFLINE is set, so the hub is not asked for the file list "
                           "(unset HF_HUB_OFFLINE to download from the hub)")
    share_ca_bundle()
    try:
        info = HfApi(endpoint=endpoint, token=token or False).repo_info(
            src.repo_id or "", repo_type=src.repo_type, revision=revision, files_metadata=True)
    except Exception as e:  # noqa: BLE001 - every hub error becomes "try the next source"
        raise hub_failure(where, e, src, token, missing=("RevisionNotFound", " (no such revision)")) from None
    files = []
    keep = set(prefer_safetensors([s.rfilename for s in info.siblings or [] if selected(s.rfilename, src)]))
    for s in info.siblings or []:
        if s.rfilename not in keep:
            continue
        lfs = s.lfs
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        size = getattr(lfs, "size", None) if lfs is not None else s.size
        if size is None:
            raise SourceFailed(f"{where}: the hub gave no size for {s.rfilename} (an endpoint without file metadata?)")
        blob = getattr(s, "blob_id", None) if sha is None else None
        files.append(RepoFile(s.rfilename, int(size), sha, blob if isinstance(blob, str) else None))
    if not files:
        raise SourceFailed(f"{where}: no file of the repo matches include={list(src.include)} exclude={list(src.exclude)}")
    return Listing(info.sha or revision, tuple(sorted(files, key=lambda f: f.path)))


class HfRepoKind(SourceKind):
    name = "hfrepo"
    lists_files = True  # delivers a list of hub files (placement "repo"), not one file

    def describe(self, src: Source) -> str:
        return label(src)

    def plan_label(self, src: Source, mirror: str | None, hf_endpoint: str | None) -> str:
        return label(src, endpoint=hf_endpoint)

    def candidate(self, src: Source, name: str, root: "Root", *, download_path: Path,
                  mirror: str | None) -> Candidate:
        return Unavailable(src, self.describe(src), reason="a repo is listed and fetched file by file, not as one file")


KIND = HfRepoKind()
