"""Fixtures for the blend tests; the builders of synthetic inputs are in blend_helpers.py."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blend_helpers import Tree  # noqa: E402


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    """A data root where the tests place inputs shaped like a recipe's real ones, and their images."""
    return Tree(tmp_path / "root")
