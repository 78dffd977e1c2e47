"""A plain `vlmdata COMMAND ...` line parsed without importing typer; ``None``: typer parses it.

Why: typer and its copy of click cost ~0.07 s to import, half of a `vlmdata fetch` with nothing to
do. This parser reads the declarations (vlmdata.cli.params) and takes what click takes, in the
same forms: the shared options before the command (and their environment variables), then the
command's options and arguments mixed in any order: ``--name VALUE``, ``--name=VALUE``, ``-n
VALUE``, ``-nVALUE``, flags, a count's repeats, short flags run together (``-vq``), and ``--``
before arguments that start with a dash. Anything else (``--help``, ``--version``, no command, a
group, an unknown option, a value that does not convert or is out of its range or choices, a
missing or extra argument, a value that starts with a dash) gives ``None``, and typer parses the
same line: every help text and usage error users see is typer's. tests/foundation/test_fastparse.py
parses command lines both ways and compares what the command receives.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from vlmdata.cli.params import Param


class Defer(Exception):
    """Not a line for this parser: typer parses it."""


class Parsed:
    """What the line says. (Plain classes: a NamedTuple or a dataclass costs ~2 ms to define.)"""

    __slots__ = ("fn", "before", "after", "kwargs")

    def __init__(self, fn: Callable[..., Any], before: dict[str, Any], after: dict[str, Any],
                 kwargs: dict[str, Any]) -> None:
        self.fn = fn  # the command's function (it takes ``settings=``)
        self.before = before  # the shared options given before the command (or by their variables)
        self.after = after  # the shared options typed after it
        self.kwargs = kwargs  # the command's own parameters


class _Spec:
    __slots__ = ("name", "param", "conv", "multiple", "choices", "flags")

    def __init__(self, name: str, param: Param, conv: Callable[[str], Any] | None, multiple: bool,
                 choices: tuple[str, ...] | None) -> None:
        self.name = name
        self.param = param
        self.conv = conv  # None: a flag (bool) or a count
        self.multiple = multiple
        self.choices = choices
        self.flags = param.flags or ("--" + name.replace("_", "-"),)


def parse(argv: list[str], commands: Callable[[str], Callable[..., Any] | None],
          common: dict[str, tuple[Param, str]]) -> Parsed | None:
    """``argv`` (after the program's name); ``commands(name)``: the function of a plain command
    (None for a group or an unknown name); ``common``: the shared options (name -> declaration,
    annotation)."""
    try:
        return _parse(argv, commands, common)
    except Defer:
        return None


def _parse(argv: list[str], commands: Callable[[str], Callable[..., Any] | None],
           common: dict[str, tuple[Param, str]]) -> Parsed:
    shared = [_spec(name, p, ann) for name, (p, ann) in common.items()]
    i, before = _options_before(argv, shared)
    if i >= len(argv):
        raise Defer  # no command: the top-level help
    fn = commands(argv[i])
    if fn is None:
        raise Defer
    own = _specs(fn)
    options = [s for s in own if s.param.kind == "option"] + shared
    typed, positional = _command_line(argv[i + 1:], options)
    kwargs = {s.name: typed.pop(s.name) if s.name in typed else _absent(s) for s in own if s.param.kind == "option"}
    kwargs.update(_arguments([s for s in own if s.param.kind == "argument"], positional))
    for s in shared:  # the environment fills only what nothing before the command set
        if s.name not in before and s.param.kw.get("envvar") and os.environ.get(s.param.kw["envvar"]):
            before[s.name] = _convert(s, os.environ[s.param.kw["envvar"]])
    return Parsed(fn, before, typed, kwargs)


def _spec(name: str, p: Param, ann: str) -> _Spec:
    if p.kw.get("is_eager") or p.kw.get("callback") is not None:
        raise Defer  # (--version: typer runs its callback)
    t = ann.replace(" ", "")
    if t.startswith("Optional[") and t.endswith("]"):
        t = t[len("Optional["):-1]
    multiple = t.startswith("List[") and t.endswith("]")
    if multiple:
        t = t[len("List["):-1]
    choices = None
    if t.startswith("Literal[") and t.endswith("]"):
        choices = tuple(c.strip("\"'") for c in t[len("Literal["):-1].split(","))
        t = "str"
    if t == "bool" or p.kw.get("count"):
        if multiple or (t == "bool" and p.default is not False) or any("/" in f for f in p.flags):
            raise Defer  # (--x/--no-x pairs, a flag that defaults to on: not taken here)
        return _Spec(name, p, None, False, None)
    conv = _CONVERTERS.get(t)
    if conv is None:
        raise Defer
    return _Spec(name, p, conv, multiple, choices)


def _path(value: str) -> Any:
    from pathlib import Path

    if not value:
        raise ValueError(value)
    return Path(value)


_CONVERTERS: dict[str, Callable[[str], Any]] = {"str": str, "int": int, "float": float, "Path": _path}


def _specs(fn: Callable[..., Any]) -> list[_Spec]:
    """The command's own parameters, in order (``settings`` aside), from the function itself."""
    while hasattr(fn, "__wrapped__"):  # (a decorated command: its declarations are the inner one's)
        fn = fn.__wrapped__
    code = fn.__code__
    names = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
    defaults = dict(zip(names[code.co_argcount - len(fn.__defaults__ or ()):code.co_argcount], fn.__defaults__ or ()))
    defaults.update(fn.__kwdefaults__ or {})
    out = []
    for name in names:
        if name == "settings":
            continue
        p = defaults.get(name)
        if not isinstance(p, Param):
            raise Defer
        out.append(_spec(name, p, str(fn.__annotations__.get(name, "str"))))
    return out


def _options_before(argv: list[str], shared: list[_Spec]) -> tuple[int, dict[str, Any]]:
    """The shared options ahead of the command: (the command's place, their values)."""
    values: dict[str, Any] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        if argv[i] == "--":
            raise Defer
        i = _option(argv, i, shared, values)
    return i, values


def _command_line(args: list[str], options: list[_Spec]) -> tuple[dict[str, Any], list[str]]:
    """The options typed (by name) and the positional arguments, in order."""
    values: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            positional += args[i + 1:]
            break
        if a.startswith("-") and a != "-":
            i = _option(args, i, options, values)
        else:
            positional.append(a)
            i += 1
    return values, positional


def _option(args: list[str], i: int, options: list[_Spec], values: dict[str, Any]) -> int:
    """Read the option at ``args[i]`` into ``values``; the index after it."""
    a = args[i]
    if a in ("-h", "--help"):
        raise Defer
    if a.startswith("--"):
        flag, eq, inline = a.partition("=")
        s = _find(options, flag)
        if s.conv is None:
            if eq:
                raise Defer
            _flag(s, values)
            return i + 1
        if eq:
            _set(s, inline, values)
            return i + 1
        return _value(args, i, s, values)
    for k in range(1, len(a)):  # -vq, -x8, -x 8
        s = _find(options, "-" + a[k])
        if s.conv is None:
            _flag(s, values)
            continue
        if k + 1 < len(a):
            _set(s, a[k + 1:], values)
            return i + 1
        return _value(args, i, s, values)
    return i + 1


def _find(options: list[_Spec], flag: str) -> _Spec:
    for s in options:
        if flag in s.flags:
            return s
    raise Defer


def _flag(s: _Spec, values: dict[str, Any]) -> None:
    values[s.name] = values.get(s.name, 0) + 1 if s.param.kw.get("count") else True


def _value(args: list[str], i: int, s: _Spec, values: dict[str, Any]) -> int:
    if i + 1 >= len(args) or (args[i + 1].startswith("-") and args[i + 1] != "-"):
        raise Defer
    _set(s, args[i + 1], values)
    return i + 2


def _set(s: _Spec, raw: str, values: dict[str, Any]) -> None:
    v = _convert(s, raw)
    if s.multiple:
        values.setdefault(s.name, []).append(v)
    else:
        values[s.name] = v  # (given twice: the last one, as click does)


def _convert(s: _Spec, raw: str) -> Any:
    if s.choices is not None and raw not in s.choices:
        raise Defer
    assert s.conv is not None
    try:
        v = s.conv(raw)
    except ValueError:
        raise Defer from None
    lo, hi = s.param.kw.get("min"), s.param.kw.get("max")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise Defer
    return v


def _absent(s: _Spec) -> Any:
    if s.param.default is ...:
        raise Defer  # a required option: typer says it is missing
    return None if s.multiple else s.param.default


def _arguments(specs: list[_Spec], positional: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if any(s.multiple for s in specs[:-1]):
        raise Defer
    for k, s in enumerate(specs):
        if s.multiple:
            rest, positional = positional, []
            out[s.name] = [_convert(s, v) for v in rest] or None
        elif positional:
            out[s.name] = _convert(s, positional.pop(0))
        else:
            out[s.name] = _absent(s)
    if positional:
        raise Defer  # an extra argument: typer says so
    return out
