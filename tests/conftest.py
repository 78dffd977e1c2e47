"""Shared test helpers. Area-specific fixtures live in each tests/<area>/conftest.py."""
from __future__ import annotations

import io
import json
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]

# Tests never touch the network or a user's Hugging Face cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
for var in ("VLMDATA_ROOT", "VLMDATA_MANIFESTS", "VLMDATA_MIRROR", "HF_ENDPOINT"):
    os.environ.pop(var, None)


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_vlmdata(*args: str, env: dict[str, str] | None = None) -> CliResult:
    """Run the real `vlmdata` entry point in-process and capture what it prints and its exit code."""
    from vlmdata.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    old_argv, old_env = sys.argv, dict(os.environ)
    sys.argv = ["vlmdata", *map(str, args)]
    os.environ.update(env or {})
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old_argv
        os.environ.clear()
        os.environ.update(old_env)
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    return run_vlmdata
