"""How a command declares its options and arguments, without importing typer.

A command is a function whose parameters default to ``Option(...)`` / ``Argument(...)``, with the
same arguments typer's take. Two things read them: vlmdata.cli.fastparse, which parses a plain
command line without importing typer (typer and its click cost ~0.07 s, half of a fetch with
nothing to do), and ``to_typer``, which turns them into typer's own for everything else (--help,
usage errors, groups, the docs generator). So the help text, the errors and the docs stay
typer's, and the declarations are written once.
"""
from __future__ import annotations

from typing import Any, Callable


class Param:
    """One option or argument, as declared (the arguments of typer.Option / typer.Argument)."""

    __slots__ = ("kind", "default", "flags", "kw")

    def __init__(self, kind: str, default: Any, flags: tuple[str, ...], kw: dict[str, Any]) -> None:
        self.kind = kind  # "option" | "argument"
        self.default = default  # ... (Ellipsis): required
        self.flags = flags
        self.kw = kw  # help, envvar, min, max, count, metavar, show_default, is_eager, callback

    def to_typer(self) -> Any:
        import typer

        if self.kind == "option":
            return typer.Option(self.default, *self.flags, **self.kw)
        return typer.Argument(self.default, **self.kw)


def Option(default: Any, *flags: str, **kw: Any) -> Any:  # noqa: N802 - typer's name and signature
    return Param("option", default, flags, kw)


def Argument(default: Any, **kw: Any) -> Any:  # noqa: N802
    return Param("argument", default, (), kw)


def to_typer(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as typer reads commands: a function whose signature holds typer's Option/Argument
    (the same function; only the signature it shows is new)."""
    import functools
    import inspect

    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def shown(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    shown.__signature__ = sig.replace(parameters=typer_parameters(sig))  # type: ignore[attr-defined]
    return shown


def typer_parameters(sig: Any) -> list[Any]:
    """The parameters of signature ``sig`` with each declaration made typer's."""
    return [p.replace(default=p.default.to_typer()) if isinstance(p.default, Param) else p
            for p in sig.parameters.values()]
