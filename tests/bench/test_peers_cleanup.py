"""bench.peers removes the last run's outputs before the next: a folder of many files is renamed
aside (deleting it would slow the next run's file creation down) and deleted once all cases ran;
and reads each input once before a case, so no tool is the one that reads it from the disk."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.peers import timing


def _folder(path: Path, files: int) -> Path:
    (path / "sub").mkdir(parents=True)
    for i in range(files):
        (path / "sub" / f"{i}.jpg").write_bytes(b"x")
    return path


@pytest.fixture(autouse=True)
def _few(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timing, "MANY", 3)
    monkeypatch.setattr(timing, "_aside", [])


def test_many_files_set_aside_until_emptied(tmp_path: Path) -> None:
    if timing._on_tmpfs(tmp_path):
        pytest.skip("tmp_path is on tmpfs, where folders are deleted at once")
    out = _folder(tmp_path / "root", 5)
    timing.rm(out)
    assert not out.exists()
    aside = list(tmp_path.glob(".aside-root-*"))
    assert len(aside) == 1 and len(list((aside[0] / "sub").iterdir())) == 5
    _folder(out, 5)  # the next run writes the same folder again
    timing.rm(out)
    assert len(list(tmp_path.glob(".aside-root-*"))) == 2
    timing.empty_trash(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_few_files_and_single_files_deleted_at_once(tmp_path: Path) -> None:
    small = _folder(tmp_path / "small", 3)
    one = tmp_path / "big.bin"
    one.write_bytes(b"0" * 10)
    timing.rm(small, one, tmp_path / "missing")
    assert list(tmp_path.iterdir()) == []


def test_left_over_aside_folders_are_emptied(tmp_path: Path) -> None:
    """An interrupted bench leaves its set-aside folders: the next one deletes them at its end."""
    (tmp_path / ".aside-root-1" / "x").mkdir(parents=True)
    (tmp_path / "keep").mkdir()
    timing.empty_trash(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]


def test_tmpfs_found_from_mounts() -> None:
    assert timing._on_tmpfs(Path("/dev/shm/x")) == any(
        line.split()[1] == "/dev/shm" and line.split()[2] == "tmpfs" for line in open("/proc/self/mounts"))


def test_warm_reads_every_byte_of_each_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(os.urandom((8 << 20) + 3))  # more than one read
    b.write_bytes(b"")
    assert timing.warm(a, b) == (8 << 20) + 3
