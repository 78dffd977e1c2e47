"""A real read-only file system for a test: a small tmpfs mounted ro, where this machine lets the
tests mount one (root with CAP_SYS_ADMIN); elsewhere the test is skipped. A folder without write
permission is no stand-in: it gives EACCES, not EROFS, and root writes into it anyway."""
from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest


@contextmanager
def read_only_mount(folder: Path) -> Iterator[Path]:
    folder.mkdir(parents=True)
    try:
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                              capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        made = False
    if not made:
        pytest.skip("cannot mount a read-only tmpfs here (not root, or no CAP_SYS_ADMIN)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True, timeout=20)
