"""Unfinished downloads in a root: ``NAME.part`` beside the final path and its ``NAME.part.state`` sidecar.

The sidecar (JSON) remembers the server's validator (ETag / Last-Modified), the size and, for
segmented downloads, which byte ranges are done: enough for the next run to resume, and for
`plan` / `status` to tell how much is there without touching the network.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vlmdata.manifest import FileSpec
    from vlmdata.state.root import Root

STATE_SUFFIX = ".state"  # NAME.part.state


@dataclass
class PartState:
    """The sidecar of a .part file."""

    url: str = ""  # where the bytes come from, for a person reading it: without query string or user:password
    size: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    done: list[list[int]] | None = None  # segmented mode: finished [start, end) ranges

    @property
    def validator(self) -> str | None:
        return self.etag if self.etag and not self.etag.startswith("W/") else self.last_modified

    @classmethod
    def load(cls, path: Path) -> "PartState | None":
        try:
            d = json.loads(path.read_text("utf-8"))
            return cls(url=d.get("url", ""), size=d.get("size"), etag=d.get("etag"),
                       last_modified=d.get("last_modified"), done=d.get("done"))
        except (OSError, ValueError, TypeError, AttributeError):
            return None

    def save(self, path: Path) -> None:
        """Written to ``NAME.part.state.tmp``, then renamed (the download's claim makes this the one writer).
        The temporary is made afresh (O_EXCL): in a downloads folder others may write, a link planted under
        its name must not make this write through it."""
        tmp = path.with_name(path.name + ".tmp")
        data = json.dumps({"url": self.url, "size": self.size, "etag": self.etag,
                           "last_modified": self.last_modified, "done": self.done}).encode()
        tmp.unlink(missing_ok=True)  # (a killed run's, or a planted link)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            view = memoryview(data)
            while view:  # (not vlmdata.atomic.write_all: importing it costs `status` its shutil import)
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)


def part_path(dest: Path) -> Path:
    """Where the unfinished download of ``dest`` lies."""
    return dest.with_name(dest.name + ".part")


def state_path(part: Path) -> Path:
    """The sidecar of the .part file ``part``."""
    return part.with_name(part.name + STATE_SUFFIX)


def discard_partial(dest: Path) -> None:
    """Forget an unfinished download of ``dest``."""
    part = part_path(dest)
    for p in (part, state_path(part)):
        p.unlink(missing_ok=True)


def partial_progress(dest: Path) -> int:
    """Bytes of ``dest`` already downloaded by an unfinished run (segmented runs count their ranges)."""
    part = part_path(dest)
    if not part.exists():
        return 0
    st = PartState.load(state_path(part))
    if st is not None and st.done is not None:
        return sum(b - a for a, b in st.done)
    try:
        return part.stat().st_size
    except FileNotFoundError:  # another process (a concurrent --shard) finished it since: renamed to ``dest``
        return 0


def _downloads(root: "Root", spec: "FileSpec") -> list[Path]:
    """Where ``spec``'s downloads go: its parts', or its own."""
    return [root.download_path(spec.dataset, n) for n in [p.name for p in spec.parts] or [spec.name]]


def reserved_bytes(root: "Root", spec: "FileSpec") -> int:
    """Disk that ``spec``'s unfinished downloads hold beyond the bytes they have: the blocks a
    download sets aside for what is still to come (vlmdata.fetch.disk.reserve)."""
    total = 0
    for dest in _downloads(root, spec):
        try:
            st = os.stat(part_path(dest))
        except OSError:
            continue
        total += max(0, getattr(st, "st_blocks", 0) * 512 - partial_progress(dest))
    return total


def partial_bytes(root: "Root", spec: "FileSpec") -> int:
    """Bytes of ``spec`` (all its parts) in the downloads folder: finished downloads and .part files."""
    return sum(_bytes_of(dl) for dl in _downloads(root, spec))


def _bytes_of(dl: Path) -> int:
    """A download's bytes: the finished file's, else its .part's. Another process fetching the same
    root (`--shard`) may finish it between the two looks, renaming the .part to ``dl``: look again."""
    if not dl.is_file():
        got = partial_progress(dl)
        if got or not dl.is_file():
            return got
    try:
        return dl.stat().st_size
    except FileNotFoundError:  # (finished and moved on again: placed, its download dropped)
        return 0
