"""Fixtures for the first-hour tests (issue 13): the demo mirror as a local folder, a root with
everything fetched from it, and a way to run a command as an unprivileged user."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from firsthour_helpers import DemoRoot  # noqa: E402

from demo.build_mirror import build_demo_mirror  # noqa: E402


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    return build_demo_mirror(tmp_path_factory.mktemp("demo"), n_per_set=6)


@pytest.fixture(scope="session")
def fetched(demo, tmp_path_factory):
    """A root with the LLaVA datasets fetched from the demo mirror and the llava layout built (read it only:
    tests that change it take ``full``)."""
    d = DemoRoot(demo, tmp_path_factory.mktemp("fetched") / "root")
    r = d.run("fetch", "coco", "gqa", "ocr_vqa", "textvqa", "vg", "llava_instruct", "--layout", "llava")
    assert r.code == 0, r.err
    return d


@pytest.fixture
def full(fetched, tmp_path):
    """A private copy of ``fetched`` (hard links would share the images' bytes, so a real copy)."""
    dst = tmp_path / "root"
    shutil.copytree(fetched.root, dst, symlinks=True)
    return DemoRoot(fetched.demo, dst)


@pytest.fixture
def empty(demo, tmp_path):
    return DemoRoot(demo, tmp_path / "root")
