"""Fixtures for the foundation tests: small manifest folders and data trees built per test."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def writer():
    """``writer(path, text)``: write dedented text, creating folders."""
    return write


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    """An extra manifests folder with one small dataset (three files of known sizes) and a layout."""
    m = tmp_path / "manifests"
    write(m / "datasets" / "tiny.toml", """
        name = "tiny"
        title = "A tiny dataset"
        license = "test"

        [[files]]
        name = "pics.zip"
        size = 1000
        sha256 = "unknown"
        sources = [{ kind = "http", url = "http://example.org/pics.zip" }]
        place = { kind = "extract", inner = "pics", to = "tiny/pics", count = 3, unpacked_size = 1500 }

        [[files]]
        name = "labels.json"
        size = 200
        sha256 = "unknown"
        sources = [{ kind = "http", url = "http://example.org/labels.json" }]
        place = { kind = "file", to = "tiny/labels.json" }

        [[files]]
        name = "extra.tar"
        size_approx = 5000
        size = "unknown"
        sha256 = "unknown"
        optional = true
        sources = [{ kind = "hf", repo_type = "dataset", repo_id = "org/tiny", revision = "main", path = "extra.tar" }]
        place = { kind = "extract", inner = "", to = "tiny/extra" }
        """)
    write(m / "layouts" / "tinylay.toml", """
        name = "tinylay"
        title = "Tiny layout"
        image_folder = "data"

        [[entries]]
        path = "data/pics"
        store = "tiny/pics"
        dataset = "tiny"
        count = 3

        [[entries]]
        path = "data/labels.json"
        store = "tiny/labels.json"
        dataset = "tiny"
        kind = "file"

        [[entries]]
        path = "data/extra"
        store = "tiny/extra"
        dataset = "tiny"
        optional = true

        [[entries]]
        path = "out"
        kind = "mkdir"
        """)
    return m
