"""What placing a file reports back to the fetch orchestration."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class PlaceResult:
    to: str  # the placement target, relative to the root
    files: int  # files placed by this call
    warnings: list[str] = field(default_factory=list)


@dataclass
class DeadUrl:
    """A URL the server says is gone (404/410), or a mirror file that is absent."""

    url: str
    status: int | None  # HTTP status; None for a local-mirror file that does not exist
    ids: list[str] = field(default_factory=list)  # the list's record ids that point at it


@dataclass
class FailedUrl:
    """A record whose image could not be saved this time (retries spent, bad content, ...)."""

    id: str
    url: str
    error: str


@dataclass
class UrlListResult:
    saved: int  # images written this run
    skipped: int  # already there
    converted: int  # saved after conversion to JPEG (counted in `saved` too)
    dead: list[DeadUrl]
    failed: list[FailedUrl]
    report_path: Path
    total: int = 0  # records in the list
