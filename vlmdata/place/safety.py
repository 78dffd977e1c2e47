"""Member checks for archive extraction: nothing may land outside the target folder.

Every member name is checked before anything is written: no absolute paths, no drive letters or
backslashes, no ``..`` component, no NUL, no component longer than a file system stores. Links must
resolve inside the archive's own tree; device files and fifos are refused outright. Bombs are caught
twice: by the sizes and member count the archive declares (cheap, before extraction) and by the
bytes actually written (during extraction, because zip and tar headers can lie).
"""
from __future__ import annotations

import posixpath
import threading
from dataclasses import dataclass

from vlmdata.errors import UserError
from vlmdata.units import human_bytes

# How far past the expectation unpacking may run before it counts as a bomb.
KNOWN_SIZE_FACTOR = 4  # × place.unpacked_size (an approximate publisher figure)
ARCHIVE_SIZE_FACTOR = 50  # × the archive's size when the unpacked size is unknown (JPEGs barely compress)
MIN_BYTES_LIMIT = 16 << 20  # small archives may always unpack to this much
# Member count: generous multiples of place.count (tar members come as jpg + json pairs, plus folders).
COUNT_FACTOR = 3
COUNT_SLACK = 1000
MAX_MEMBERS = 5_000_000  # when the count is unknown (the largest real archive holds ~560k files)
NAME_MAX = 255  # bytes of one path component (ext4, xfs, btrfs, NFS): longer ones fail to be created


def refuse(archive: str, member: str | None, why: str, hint: str | None = None) -> UserError:
    where = f"{archive}" + (f", member {member!r}" if member is not None else "")
    return UserError(f"refusing to extract: {why}", where=where,
                     hint=hint or "the archive is damaged or hostile; nothing was placed. Fetch it again from another source")


def safe_parts(archive: str, name: str) -> list[str]:
    """The path components of a member name, or a UserError when the name could escape the target."""
    if not name or "\x00" in name:
        raise refuse(archive, name, "empty member name or NUL byte in it")
    if "\\" in name:
        raise refuse(archive, name, "backslash in member name (a Windows path)")
    if name.startswith("/"):
        raise refuse(archive, name, "absolute member path")
    if len(name) >= 2 and name[1] == ":" and name[0].isalpha():
        raise refuse(archive, name, "drive letter in member path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise refuse(archive, name, "'..' in member path (zip-slip)")
    for p in parts:  # (a character is at most 4 bytes in UTF-8: only a long name needs encoding to tell)
        if len(p) > NAME_MAX // 4 and len(p.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise refuse(archive, name, f"a name in the member path is longer than {NAME_MAX} bytes, "
                                        "which no common file system stores")
    return parts


def check_link(archive: str, member: str, target: str, *, hard: bool) -> list[str]:
    """Where a link member points, as path components inside the archive tree.

    A symlink target is relative to the member's own folder; a tar hardlink target is relative to
    the archive's top. Either must stay inside the archive tree, else UserError.
    """
    kind = "hardlink" if hard else "symlink"
    if not target or "\x00" in target or "\\" in target:
        raise refuse(archive, member, f"{kind} with an invalid target {target!r}")
    if target.startswith("/") or (len(target) >= 2 and target[1] == ":" and target[0].isalpha()):
        raise refuse(archive, member, f"{kind} to an absolute path {target!r}")
    base = "" if hard else posixpath.dirname("/".join(safe_parts(archive, member)))
    joined = posixpath.normpath(posixpath.join(base, target))
    if joined == ".." or joined.startswith("../") or joined.startswith("/"):
        raise refuse(archive, member, f"{kind} pointing outside the target ({target!r})")
    return [p for p in joined.split("/") if p not in ("", ".")]


@dataclass
class Limits:
    bytes: int
    members: int
    why_bytes: str  # how the byte limit was derived, for the error message


def limits_for(archive_size: int | None, unpacked_size: int | None, count: int | None) -> Limits:
    if unpacked_size:
        b = max(unpacked_size * KNOWN_SIZE_FACTOR, MIN_BYTES_LIMIT)
        why = f"{KNOWN_SIZE_FACTOR}x the manifest's unpacked size {human_bytes(unpacked_size)}"
    elif archive_size:
        b = max(archive_size * ARCHIVE_SIZE_FACTOR, MIN_BYTES_LIMIT)
        why = f"{ARCHIVE_SIZE_FACTOR}x the archive size {human_bytes(archive_size)}"
    else:
        b = 1 << 62
        why = "no size known"
    m = count * COUNT_FACTOR + COUNT_SLACK if count else MAX_MEMBERS
    return Limits(b, m, why)


class BombGuard:
    """Counts bytes written and members seen during extraction (thread-safe) and stops a bomb."""

    def __init__(self, archive: str, limits: Limits) -> None:
        self.archive, self.limits = archive, limits
        self.written = 0
        self.members = 0
        self._lock = threading.Lock()

    def check_declared(self, total: int, members: int) -> None:
        """Before extraction: what the archive's headers declare."""
        self.member_seen(members)
        if total > self.limits.bytes:
            raise self._bomb(None, total, "declares")

    def member_seen(self, n: int = 1) -> None:
        with self._lock:
            self.members += n
            m = self.members
        if m > self.limits.members:
            raise refuse(self.archive, None,
                         f"more than {self.limits.members:,} members (an archive bomb?)",
                         hint="if the archive is genuine, fix place.count in the manifest")

    def add(self, n: int, member: str) -> None:
        with self._lock:
            self.written += n
            w = self.written
        if w > self.limits.bytes:
            raise self._bomb(member, w, "unpacked to")

    def _bomb(self, member: str | None, n: int, verb: str) -> UserError:
        return refuse(self.archive, member,
                      f"the archive {verb} more than {human_bytes(n)}, past the limit of "
                      f"{human_bytes(self.limits.bytes)} ({self.limits.why_bytes}): an archive bomb?",
                      hint="if the archive is genuine, set place.unpacked_size in the manifest")
