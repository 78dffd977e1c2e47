"""Shared test helpers. Area-specific fixtures live in each tests/<area>/conftest.py."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.cli_runner import CliResult, run_main

REPO = Path(__file__).resolve().parents[1]

# Tests never touch the network or a user's Hugging Face cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# ... nor the user's cache of parsed manifests (vlmdata.manifest.cache): one of their own, removed at the end.
os.environ["VLMDATA_CACHE_DIR"] = tempfile.mkdtemp(prefix="vlmdata-test-cache-")
atexit.register(shutil.rmtree, os.environ["VLMDATA_CACHE_DIR"], True)
for var in ("VLMDATA_ROOT", "VLMDATA_MANIFESTS", "VLMDATA_MIRROR", "HF_ENDPOINT"):
    os.environ.pop(var, None)


def run_vlmdata(*args: str, env: dict[str, str] | None = None) -> CliResult:
    """Run the real `vlmdata` entry point in-process and capture what it prints and its exit code."""
    from vlmdata.cli.app import main

    return run_main(main, "vlmdata", *args, env=env)


@pytest.fixture
def cli():
    return run_vlmdata
