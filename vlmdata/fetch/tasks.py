"""A fetch split into tasks that any process on any machine sharing the root can run.

A task is plain data (it travels to Ray workers by pickle): what to fetch, and the key it is
claimed and recorded under. Kinds, in the order a run goes through them:

1. ``file``: one file, fetched, verified, placed (a zip, a JSON, a SAM tar whole or as a subset, a
   Hub repo); ``part``: one part of a file published in parts, downloaded and verified, not placed;
2. ``join``: a file in parts, joined from its verified parts, checked, placed (a part that is not
   there yet is downloaded by the join itself, under the part's claim);
3. ``chunk``: a few thousand ids of a per-image URL list, fetched into the list's folder; when all
   chunks are recorded, one journal entry and one report are made for the list (vlmdata.fetch.chunks).

The split is deterministic: the same files give the same tasks with the same keys, in key order,
and a URL list gives the same chunks (list order, ``size`` records each), so ``--shard I/N``
processes that never talk to each other agree on who does what (vlmdata.fetch.shard).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from vlmdata.manifest import FileSpec

@dataclass(frozen=True)
class Task:
    kind: str  # file | part | join | chunk
    key: str  # what it is claimed and recorded under: spec.key, "<dataset>:<part>", "<spec.key>#<chunk>"
    spec: FileSpec
    merge: bool = False  # its placement fills a folder other files place into too
    part: str | None = None  # kind part: the part's name
    chunk: int | None = None  # kind chunk: its index in the list
    entries: tuple[tuple[str, str], ...] = ()  # kind chunk: (record id, URL)

    @property
    def weight(self) -> int:
        """How much work, for sharing tasks out evenly: bytes, or records for a chunk."""
        if self.kind == "chunk":
            return len(self.entries)
        if self.kind == "part":
            p = next(p for p in self.spec.parts if p.name == self.part)
            return p.size or p.size_approx or 1
        if self.kind == "join":
            return 1  # the parts are the work; joining is a local copy
        return self.spec.download_bytes or 1


def is_url_list(spec: FileSpec) -> bool:
    return spec.place.kind == "images"


def file_tasks(specs: Iterable[FileSpec], shares_target: Callable[[FileSpec], bool]) -> list[Task]:
    """Phase 1: a ``file`` task per file, a ``part`` task per part of a file in parts; by key."""
    out = []
    for s in specs:
        if is_url_list(s):
            continue
        if s.parts:
            out += [Task("part", f"{s.dataset}:{p.name}", s, part=p.name) for p in s.parts]
        else:
            out.append(Task("file", s.key, s, merge=shares_target(s)))
    return sorted(out, key=lambda t: t.key)


def join_tasks(specs: Iterable[FileSpec], shares_target: Callable[[FileSpec], bool]) -> list[Task]:
    """Phase 2: a ``join`` task per file in parts; by key."""
    return sorted((Task("join", s.key, s, merge=shares_target(s)) for s in specs if s.parts and not is_url_list(s)),
                  key=lambda t: t.key)


def chunk_key(spec: FileSpec, index: int) -> str:
    return f"{spec.key}#{index:06d}"


def chunk_tasks(spec: FileSpec, entries: Iterable[tuple[str, str]], size: int) -> Iterator[Task]:
    """Phase 3: the list's records, ``size`` at a time in list order, as they are read."""
    batch: list[tuple[str, str]] = []
    index = 0
    for rid, url in entries:
        batch.append((rid, url))
        if len(batch) == size:
            yield Task("chunk", chunk_key(spec, index), spec, chunk=index, entries=tuple(batch))
            batch, index = [], index + 1
    if batch:
        yield Task("chunk", chunk_key(spec, index), spec, chunk=index, entries=tuple(batch))
