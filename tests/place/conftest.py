"""Fixtures for placement tests: a writable root and a loopback HTTP server."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vlmdata.state import Root

sys.path.insert(0, str(Path(__file__).parent))
from place_server import serve  # noqa: E402


@pytest.fixture
def root(tmp_path) -> Root:
    r = Root(tmp_path / "root")
    r.ensure_writable()
    return r


@pytest.fixture
def server():
    yield from serve()
