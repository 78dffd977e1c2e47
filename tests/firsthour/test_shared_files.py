"""Item 9: files meant to be shared are written with the umask's mode, like any other tool's."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vlmdata.state import LockFile
from vlmdata.state.lockfile import LockEntry


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


def test_journal_lock_export_and_blend_follow_the_umask(full, tmp_path, umask):
    umask(0o022)
    assert _mode(full.root / ".vlmdata" / "journal.json") == 0o644  # written by the fetch
    lock = LockFile(full.root / "vlmdata.lock")
    lock.pin("x:y", LockEntry(sha256="0" * 64, size=1, source="test"))
    assert _mode(lock.path) == 0o644
    r = full.run("blend", "llava-665k", "--max-drop", "100", "--json")
    assert r.code == 0, r.err
    out = Path(r.json()["out"])
    assert _mode(out) == 0o755 and _mode(out / "blend.json") == 0o644
    r = full.run("export", out, tmp_path / "x.json")
    assert r.code == 0, r.err
    assert _mode(tmp_path / "x.json") == 0o644
    umask(0o077)  # a private umask is honoured too
    r = full.run("export", out, tmp_path / "y.jsonl", "--format", "llava-jsonl")
    assert r.code == 0, r.err
    assert _mode(tmp_path / "y.jsonl") == 0o600
    umask(0o002)
    r = full.run("verify")  # rewrites the journal
    assert _mode(full.root / ".vlmdata" / "journal.json") == 0o664
