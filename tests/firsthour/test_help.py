"""Item 19 (vlmdata): help a new user can read at 80 columns: every command and group has
examples, no example wraps mid-command, and options with fixed choices list them."""
from __future__ import annotations

import re

import typer.main

from tests.conftest import run_vlmdata
from vlmdata.cli.app import app


def _commands():
    """Every command path, groups included: ["list"], ["layout"], ["layout", "check"], ..."""
    out = []

    def walk(cmd, path):
        for name, sub in getattr(cmd, "commands", {}).items():
            out.append(path + [name])
            walk(sub, path + [name])

    walk(typer.main.get_command(app), [])
    return out


def _help(*path: str) -> str:
    r = run_vlmdata(*path, "--help", env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert r.code == 0, r.err
    return r.out


def test_every_command_has_examples_that_do_not_wrap_at_80_columns():
    paths = _commands()
    assert ["layout"] in paths and ["layout", "build"] in paths and len(paths) >= 14
    for path in paths:
        text = _help(*path)
        assert max(len(line) for line in text.splitlines()) <= 80, path
        assert "Examples:" in text, path
        block = re.split(r"\n(?=\S)", text.split("Examples:", 1)[1], maxsplit=1)[0]  # up to the next heading
        lines = [line for line in block.splitlines() if line.strip()]
        assert lines, path
        for line in lines:
            # an example starts indented with its command; a continuation ("\\") is indented more;
            # a line that wrapped would start less indented
            assert re.match(r"^ {4}(vlmdata |HF_ENDPOINT=| {4}\S)", line), (path, line)


def test_fixed_choices_are_listed():
    assert "<drop|fail|keep>" in _help("blend")
    assert "<llava-json|llava-jsonl>" in _help("export")
    r = run_vlmdata("blend", "llava-665k", "--missing", "sometimes")
    assert r.code == 2 and "'sometimes' is not one of 'drop', 'fail', 'keep'" in r.err


def test_global_conventions():
    import vlmdata

    r = run_vlmdata("--version")
    assert r.code == 0 and r.out.strip() == f"vlmdata {vlmdata.__version__}"
    assert "--quiet" in _help() and "--dry-run" in _help("fetch") and "--only-referenced-by" in _help("plan")


def test_the_typical_session_fetches_what_its_blend_reads():
    """The session's blend reads llava_instruct's JSON: a fetch line without it ended in 'not fetched yet'."""
    from vlmdata.manifest import load_catalog

    lines = [line.split() for line in _help().split("Typical session:", 1)[1].split("Options:", 1)[0].splitlines()
             if line.strip()]
    fetch = next(w for w in lines if w[:2] == ["vlmdata", "fetch"])
    blend = next(w for w in lines if w[:2] == ["vlmdata", "blend"])
    needed = {e.dataset for e in load_catalog().blend(blend[2]).entries}
    assert needed and needed <= set(fetch[2:fetch.index("--layout")])
