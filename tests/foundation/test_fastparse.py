"""vlmdata.cli.fastparse against typer: a command line either gives the command exactly what typer
would give it (its own parameters and the resolved settings), or is left to typer (None).

Every plain command's declarations are turned into command lines: each option in each form click
accepts (``--name V``, ``--name=V``, ``-n V``, ``-nV``), flags, counts, lists given twice,
arguments before, between and after options, ``--``, the shared options before and after the
command and from their environment variables. Each line is run through the fast parser and
through a typer app built from the same declarations, with a recorder in place of the command.
"""
from __future__ import annotations

import functools
from typing import Any

import pytest
import typer

from vlmdata.cli import common, fastparse
from vlmdata.cli.app import COMMANDS, plain_command
from vlmdata.cli.params import Param, to_typer

PLAIN = [name for name in COMMANDS if plain_command(name) is not None]


def _recorder(fn: Any, seen: list[dict[str, Any]]) -> Any:
    @functools.wraps(fn)  # (the same signature and annotations: typer reads them through __wrapped__)
    def record(*args: Any, **kwargs: Any) -> None:
        assert not args
        seen.append(kwargs)

    return record


def _typer_run(name: str, fn: Any, argv: list[str]) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                      context_settings={"help_option_names": ["-h", "--help"]})
    app.callback()(to_typer(common.global_callback))
    app.command(name)(common.typer_command(_recorder(fn, seen)))
    common.begin_run()
    app(argv, standalone_mode=False, prog_name="vlmdata")
    return seen


def _fast_run(name: str, fn: Any, argv: list[str]) -> list[dict[str, Any]] | None:
    seen: list[dict[str, Any]] = []
    rec = _recorder(fn, seen)
    parsed = fastparse.parse(argv, lambda n: rec if n == name else None, common.COMMON)
    if parsed is None:
        return None
    common.begin_run()
    common.run_parsed(parsed)
    return seen


def _value(p: Param, ann: str, k: int = 0) -> str:
    """A valid value for a declaration (``k`` varies it)."""
    t = ann.replace(" ", "")
    if "Literal[" in t:
        choices = [c.strip("\"'") for c in t[t.index("Literal[") + 8:t.index("]")].split(",")]
        return choices[-1 - (k % len(choices))]
    lo, hi = p.kw.get("min"), p.kw.get("max")
    if "int" in t:
        v = (lo or 0) + 2 + k
        return str(min(v, hi) if hi is not None else v)
    if "float" in t:
        v = (lo or 0) + 1.5 + k
        return str(min(v, hi) if hi is not None else v)
    if "Path" in t:
        return f"some/dir{k}"
    return f"val{k}"


def _lines(fn: Any) -> list[list[str]]:
    """Command lines for one command: (args before the command name, args after it)."""
    specs = fastparse._specs(fn)
    args = [s for s in specs if s.param.kind == "argument"]
    opts = [s for s in specs if s.param.kind == "option"]
    pos: list[str] = []
    for s in args:
        ann = str(fn.__annotations__[s.name])
        pos += [_value(s.param, ann, 0), _value(s.param, ann, 1)] if s.multiple else [_value(s.param, ann)]
    required = []
    for s in opts:
        if s.param.default is ...:
            required += [s.flags[0], _value(s.param, str(fn.__annotations__[s.name]))]
    lines = [pos + required, required + pos]
    for s in opts:
        ann = str(fn.__annotations__[s.name])
        longs = [f for f in s.flags if f.startswith("--")]
        shorts = [f for f in s.flags if not f.startswith("--")]
        if s.conv is None:
            lines.append(pos[:1] + [s.flags[0]] + required + pos[1:])
            if shorts:
                lines.append(required + pos + [shorts[0], shorts[0]])
            continue
        v, w = _value(s.param, ann, 0), _value(s.param, ann, 1)
        for f in longs:
            lines.append(pos + required + [f, v])
            lines.append([f"{f}={v}"] + required + pos)
        for f in shorts:
            lines.append(pos + [f, v] + required)
            lines.append(required + [f + v] + pos)
        lines.append(pos + required + [s.flags[0], v, s.flags[0], w])  # twice: a list of both, or the last one
    if pos:
        lines.append(required + ["--"] + pos)
    return lines


SHARED = [[], ["--root", "r1"], ["--json", "-v"], ["-vv", "--quiet", "--manifests", "m1:m2"],
          ["--mirror", "http://m/", "--hf-endpoint", "https://h/"]]  # before the command
AFTER = [[], ["--root", "r2", "-q"], ["-v", "--json", "--mirror=/m2"]]  # after it


@pytest.mark.parametrize("name", PLAIN)
def test_a_line_the_fast_parser_takes_gives_what_typer_gives(name, monkeypatch):
    fn = plain_command(name)
    taken = total = 0
    for env in ({}, {"VLMDATA_ROOT": "from-env", "VLMDATA_MIRROR": "/env/mirror"}):
        for k, v in {"VLMDATA_ROOT": None, "VLMDATA_MIRROR": None, "VLMDATA_MANIFESTS": None,
                     "HF_ENDPOINT": None, **env}.items():
            if v is None:
                monkeypatch.delenv(k, raising=False)
            else:
                monkeypatch.setenv(k, v)
        for k, line in enumerate(_lines(fn)):
            for j in (k, k + 2):  # (two of the shared options' variants per line, in turn: every variant is used)
                before, after = SHARED[j % len(SHARED)], AFTER[j % len(AFTER)]
                argv = before + [name] + line + after if "--" not in line else before + [name] + after + line
                total += 1
                fast = _fast_run(name, fn, argv)
                if fast is None:
                    continue
                taken += 1
                assert fast == _typer_run(name, fn, argv), argv
    assert taken >= 0.9 * total, (taken, total)


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["fetch", "--help"], ["fetch", "-h"], ["--version"], ["fetch", "--no-such-option"],
    ["fetch", "--jobs", "0"], ["fetch", "--jobs", "x"], ["fetch", "--timeout", "0.01"], ["fetch", "--root"],
    ["fetch", "--root", "-v"], ["layout", "check", "x", "--layout", "llava"], ["nosuchcommand"],
    ["info"], ["info", "a", "b"], ["blend", "r", "--missing", "sometimes"], ["fetch", "--force=yes"],
    ["--", "fetch"],
])
def test_what_it_does_not_take_is_left_to_typer(argv):
    assert fastparse.parse(argv, plain_command, common.COMMON) is None
