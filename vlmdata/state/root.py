"""The data root: the store every dataset is placed in, plus the tool's own state folder.

``ROOT/<placement.to>`` is the store (its shape is the LLaVA-style tree of each dataset's
manifest); ``ROOT/layouts/<name>`` holds the link views built for each layout;
``ROOT/.vlmdata/`` holds the journal, downloads in progress and locks; ``ROOT/vlmdata.lock`` pins
the sha256 of files whose publisher gives none.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from vlmdata.errors import OperationError, UserError

if TYPE_CHECKING:
    from vlmdata.state.claims import Claim

STATE_DIR = ".vlmdata"
LOCK_FILE = "vlmdata.lock"


def _not_writable_hint(path: Path) -> str:
    # A read-only mount first: its owner cannot write there either ("it belongs to root: run as
    # that user" sent root itself in circles), and no chmod helps.
    if _read_only_mount(path):
        return f"{path} is on a file system mounted read-only: remount it read-write, or choose another --root"
    try:
        import pwd

        st = path.stat()
        owner = None if st.st_uid == os.geteuid() else pwd.getpwuid(st.st_uid).pw_name
    except (ImportError, KeyError, OSError):
        owner = None
    who = f"it belongs to {owner}: run as that user, ask them for write access, " if owner else "fix its permissions, "
    return who + "or choose another --root"


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # (no statvfs: not a POSIX system)
        return False


def read_denied(path: Path, what: str, e: OSError) -> UserError:
    """The error for a state file this user may not read (another user's root, shared read-only)."""
    return UserError(f"cannot read {what}: {e.strerror.lower()}", where=str(path),
                     hint="it belongs to another user: ask them to make it readable (chmod a+r), "
                          "or use a root of your own (--root)")


class Root:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser().absolute()

    # -- folders
    @property
    def state_dir(self) -> Path:
        return self.path / STATE_DIR

    @property
    def downloads_dir(self) -> Path:
        """Downloads in progress (``.part``) and archives kept with ``--keep-archives``."""
        return self.state_dir / "downloads"

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_FILE

    def download_path(self, dataset: str, name: str) -> Path:
        """Where a published file is downloaded to (then placed, and kept with --keep-archives).

        ``name`` may contain '/' (files in Hub sub-folders); the in-progress download is the same
        path with ``.part`` appended, so a later run resumes it.
        """
        return self.downloads_dir / dataset / name

    @staticmethod
    def part_path(download: Path) -> Path:
        """The unfinished download of ``download`` (see vlmdata.state.partial)."""
        from vlmdata.state.partial import part_path

        return part_path(download)

    def layout_dir(self, layout: str) -> Path:
        return self.path / "layouts" / layout

    def store_path(self, rel: str) -> Path:
        return self.path / rel

    # -- checks
    def check_readable(self) -> None:
        """For read-only commands: the root may be missing, but must not be a file."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"the root {self.path} is a file, not a folder",
                            hint="pass --root (or VLMDATA_ROOT) pointing at a folder")

    def ensure_writable(self) -> None:
        """For commands that write: create the root if needed and prove we can write to it."""
        self.check_readable()
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            if self.path.is_dir():  # it exists: we may not write into it
                raise UserError(f"the root {self.path} is not writable ({e.strerror.lower()})",
                                hint=_not_writable_hint(self.path)) from e
            raise UserError(f"cannot create the root {self.path}: {e.strerror}",
                            hint="choose a folder you can write to with --root") from e
        for p in (self.path, self.state_dir):
            if not os.access(p, os.W_OK | os.X_OK):
                raise UserError(f"the root {self.path} is not writable" + ("" if p == self.path else f" ({p} is not)"),
                                hint=_not_writable_hint(p))

    def free_bytes(self) -> int:
        """Free space on the filesystem that holds (or will hold) the root."""
        p = self.path
        while not p.exists():
            p = p.parent
        return shutil.disk_usage(p).free

    # -- who else is using it
    @property
    def claims_dir(self) -> Path:
        """Per-file claims (vlmdata.state.claims): which process works on which file right now."""
        return self.state_dir / "claims"

    @property
    def sessions_dir(self) -> Path:
        """One claim per command that writes into the root: fetches share it, the others hold it alone."""
        return self.state_dir / "sessions"

    def claim(self, key: str, what: str, timeout: float | None = None) -> "Claim":
        """The claim on one file, part or chunk of this root (``key``: ``coco:train2017.zip``, ...)."""
        from vlmdata.state.claims import DEFAULT_TIMEOUT, Claim, claim_name

        return Claim(self.claims_dir / claim_name(key), what, timeout=timeout or DEFAULT_TIMEOUT)

    @contextmanager
    def sharing(self, what: str) -> Iterator["Claim"]:
        """Held by `fetch`: any number of fetches, on any machines, share the root (per-file claims keep
        them apart), while a command that holds the root exclusively is refused.

        The fetch first registers itself, then looks for an exclusive holder (and ``exclusive`` does
        the same the other way round), so of two that start at once at least one sees the other.
        """
        from vlmdata.state.claims import Claim, live_holder, new_session_name

        self.ensure_writable()
        me = Claim(self.sessions_dir / new_session_name("fetch"), what)
        me.acquire(wait=False)
        try:
            other = live_holder(self.sessions_dir / EXCLUSIVE)
            if other is not None and not other.ours():
                raise self._busy(what, other.describe())
            yield me
        finally:
            me.release()

    @contextmanager
    def exclusive(self, what: str) -> Iterator[None]:
        """Held by commands that rewrite what fetches read or write (layout build): no fetch and no
        other such command may run on the root meanwhile, on this machine or another. A second one
        stops at once with a clear message instead of interleaving writes with the first.
        """
        from vlmdata.state.claims import Claim, live_sessions

        self.ensure_writable()
        claim = Claim(self.sessions_dir / EXCLUSIVE, what)
        other = claim.acquire(wait=False)
        if other is not None:
            raise self._busy(what, other.describe())
        try:
            fetching = [h for h in live_sessions(self.sessions_dir, "fetch") if not h.ours()]
            if fetching:
                raise self._busy(what, fetching[0].describe())
            yield
        finally:
            claim.release()

    def _busy(self, what: str, who: str) -> OperationError:
        return OperationError(
            f"another vlmdata command is changing {self.path} right now: {who}",
            hint=f"wait for it to finish, then run `{what}` again (it resumes where the other stopped)")


EXCLUSIVE = "exclusive.claim"  # in Root.sessions_dir: the command that holds the root alone
