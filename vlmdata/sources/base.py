"""The interface every source kind implements, and what fetch gets back from it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vlmdata.manifest import Source
from vlmdata.net.errors import SourceFailed

if TYPE_CHECKING:
    from vlmdata.sources.hf import HubAccess
    from vlmdata.state import LockEntry, Root


@dataclass
class Location:
    """A concrete place the bytes of one file are read from: a URL, or a file in a local mirror."""

    label: str  # for messages and the journal (no credentials, no signed query string)
    url: str | None = None
    path: Path | None = None
    headers: dict[str, str] = field(default_factory=dict)
    sha256: str | None = None  # what the hub says the bytes hash to (LFS files)
    size: int | None = None  # what the hub says the size is
    revision: str | None = None  # the commit a hub revision resolved to
    blob: str | None = None  # a hub file kept in git (no LFS sha256): its git blob id, as the hub's ETag says it


@dataclass
class Candidate:
    """One source of one file, as fetch tries it: ``locate`` says where the bytes are right now."""

    source: Source
    label: str

    def locate(self, hub: "HubAccess") -> Location:
        """The location to read; SourceFailed when this source cannot deliver after all."""
        raise NotImplementedError

    def pinned(self, pin: "LockEntry") -> "Candidate":
        """This candidate at the Hub commit of the file's vlmdata.lock ``pin``. Only a Hub file whose
        revision is a branch changes (vlmdata.sources.hf.HubFile)."""
        return self


@dataclass
class Ready(Candidate):
    """A location known without asking anyone (a URL, a mirrored URL)."""

    location: Location | None = None

    def locate(self, hub: "HubAccess") -> Location:
        assert self.location is not None
        return self.location


@dataclass
class MirrorFile(Candidate):
    """A file in a local-folder mirror (``--mirror /path``)."""

    path: Path = Path()

    def locate(self, hub: "HubAccess") -> Location:
        if not self.path.is_file():
            raise SourceFailed(f"{self.label}: no such file in the mirror")
        return Location(str(self.path), path=self.path)


@dataclass
class Unavailable(Candidate):
    """This source cannot deliver the file here; ``reason`` says why and what a person can do."""

    reason: str = ""
    manual: bool = False  # a person has to fetch it (not a failure of the machine)
    save_as: Path | None = None  # the file a person has to put in place for this source to work
    todo: str = ""  # manual: what a person does (the note, and where)

    def locate(self, hub: "HubAccess") -> Location:
        raise SourceFailed(f"{self.label}: {self.reason}")


class SourceKind:
    """One kind of source (``kind = "..."`` in a manifest): what plan, fetch and info ask of it."""

    name = ""
    lists_images = False  # delivers per-image URLs (placement "images") rather than one file
    lists_files = False  # delivers a repo's files (placement "repo") rather than one file

    def describe(self, src: Source) -> str:
        """The source as a person reads it (`vlmdata info`, the journal, messages)."""
        raise NotImplementedError

    def plan_label(self, src: Source, mirror: str | None, hf_endpoint: str | None) -> str:
        """Where a fetch with these options would go for it (`vlmdata plan`)."""
        return self.describe(src)

    def candidate(self, src: Source, name: str, root: "Root", *, download_path: Path,
                  mirror: str | None) -> Candidate:
        """What fetch tries for the published file ``name`` (saved to ``download_path``)."""
        raise NotImplementedError

    def candidates(self, src: Source, name: str, root: "Root", *, download_path: Path,
                   mirror: str | None) -> list[Candidate]:
        """Every candidate of this source, in the order fetch tries them (most kinds: one)."""
        return [self.candidate(src, name, root, download_path=download_path, mirror=mirror)]
