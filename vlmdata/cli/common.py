"""Options every command shares; the settings object they resolve to is vlmdata.cli.settings.

Options work before the command (``vlmdata --root R plan coco``) and after it
(``vlmdata plan coco --root R``); a value given after the command wins. Each also reads its
environment variable (VLMDATA_ROOT, VLMDATA_MANIFESTS, VLMDATA_MIRROR, HF_ENDPOINT).

A command is a function whose last parameter is ``settings: Settings``: a
line vlmdata.cli.fastparse reads is run by ``run_parsed``; for typer (help, errors, groups, the
docs) ``typer_command`` shows the same function with the shared options added to its signature.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from vlmdata.cli.params import Option, Param, typer_parameters

if TYPE_CHECKING:  # imported when a command runs, not when the CLI starts
    from vlmdata.cli.fastparse import Parsed
    from vlmdata.cli.settings import Settings

_GLOBAL: Settings | None = None  # what the options before the command say (None: no command has run)
_JSON_EMITTED = False  # a command has printed its JSON document (an error then adds no second one)


def begin_run() -> None:
    """Forget the previous run's state (the tests run many commands in one process)."""
    global _JSON_EMITTED, _GLOBAL
    _JSON_EMITTED = False
    _GLOBAL = None


def json_emitted() -> None:
    """The command has printed its JSON document (Settings.emit_json)."""
    global _JSON_EMITTED
    _JSON_EMITTED = True


def json_error(err: dict[str, Any]) -> None:
    """The error object for --json runs, unless the command already printed its own document."""
    if not _JSON_EMITTED:
        import json

        sys.stdout.write(json.dumps(err, indent=2) + "\n")


# name -> (declaration, annotation), in the order of the settings they resolve to
COMMON: dict[str, tuple[Param, str]] = {
    # (a str, made a Path in _resolve: click turns "" into Path('.'), and `--root "$UNSET"` must not
    # become the current folder)
    "root": (Option(None, "--root", envvar="VLMDATA_ROOT", help="Data root (the store). Default ./data.",
                    show_default=False, metavar="<path>"), "Optional[str]"),
    "manifests": (Option(None, "--manifests", envvar="VLMDATA_MANIFESTS",
                         help="Extra folder of datasets/layouts/blends TOMLs (adds to or overrides shipped ones)."),
                  "Optional[str]"),
    "mirror": (Option(None, "--mirror", envvar="VLMDATA_MIRROR",
                      help="Read http(s)://host/path from BASE/host/path, and Hub files from their resolve "
                           "URL's place there first (BASE: http(s) URL or local folder)."),
               "Optional[str]"),
    "hf_endpoint": (Option(None, "--hf-endpoint", envvar="HF_ENDPOINT", help="Hugging Face Hub endpoint (a hub mirror)."),
                    "Optional[str]"),
    "json_out": (Option(False, "--json", help="Print the result as JSON on stdout."), "bool"),
    "verbose": (Option(0, "-v", "--verbose", count=True, help="More detail (repeat for more)."), "int"),
    "quiet": (Option(False, "-q", "--quiet", help="No progress and no summary: errors only (and --json)."), "bool"),
}
_UNSET = {name: p.default for name, (p, _) in COMMON.items()}  # what a shared option is when nobody gave it


def print_version(value: bool) -> None:
    """``--version``'s callback (and what `vlmdata --version` alone runs without typer)."""
    if value:
        import vlmdata
        from vlmdata.cli.echo import echo

        echo(f"vlmdata {vlmdata.__version__}")
        raise SystemExit(0)


def global_callback(
    root: Optional[str] = COMMON["root"][0],
    manifests: Optional[str] = COMMON["manifests"][0],
    mirror: Optional[str] = COMMON["mirror"][0],
    hf_endpoint: Optional[str] = COMMON["hf_endpoint"][0],
    json_out: bool = COMMON["json_out"][0],
    verbose: int = COMMON["verbose"][0],
    quiet: bool = COMMON["quiet"][0],
    version: bool = Option(False, "--version", is_eager=True, callback=print_version,
                           help="Print the version and exit."),
) -> None:
    """Options given before the command."""
    global _GLOBAL
    _GLOBAL = _resolve(None, root, manifests, mirror, hf_endpoint, json_out, verbose, quiet)


def _resolve(base: Settings | None, root, manifests, mirror, hf_endpoint, json_out, verbose, quiet=False) -> Settings:
    from vlmdata.cli.settings import Settings  # (here: --help resolves no settings)

    base = base if base is not None else Settings()
    for flag, value in (("--manifests", manifests), ("--mirror", mirror), ("--hf-endpoint", hf_endpoint)):
        if value is not None and not value.strip():
            _empty(flag)
    return Settings(
        root=_root(root) if root is not None else base.root,
        manifests=_manifest_dirs(manifests) if manifests else list(base.manifests),
        mirror=mirror if mirror is not None else base.mirror,
        hf_endpoint=hf_endpoint if hf_endpoint is not None else base.hf_endpoint,
        json=json_out or base.json,
        verbose=max(verbose, base.verbose),
        quiet=quiet or base.quiet,
    )


def _root(value: str) -> Path:
    if not value.strip():
        _empty("--root", "give the data root's folder, e.g. --root ./data, or leave --root out for ./data")
    return Path(value)


def _empty(flag: str, hint: str | None = None) -> None:
    """An option given as "" (`--mirror "$MIRROR"` with MIRROR unset): refused, not read as absent:
    an empty --mirror fetched from the origins, an empty --root wrote into the current folder."""
    from vlmdata.errors import UserError

    raise UserError(f"{flag} is empty (a shell variable that is not set?); nothing was read or written",
                    hint=hint or f"give {flag} a value, or leave it out")


def _manifest_dirs(value: str) -> list[str]:
    from vlmdata.manifest.catalog import extra_dirs_from_env  # a catalog is read next anyway

    return extra_dirs_from_env(value)


def expand_home(value: Any) -> Any:
    """A Path argument (or a list of them) with a leading ``~`` made the home folder, as --root and
    --mirror always were: the shell leaves a quoted ``"~/x"`` and ``--out=~/x`` alone, and a folder
    named ``~`` was made in the current one (blend --out, export, layout build --out, ...)."""
    if isinstance(value, Path):
        return value.expanduser()
    if isinstance(value, list):
        return [expand_home(v) for v in value]
    return value


def run_parsed(p: Parsed) -> Any:
    """Run a line vlmdata.cli.fastparse read, as typer would have run it."""
    global _GLOBAL
    before, after = {**_UNSET, **p.before}, {**_UNSET, **p.after}
    _GLOBAL = _resolve(None, *before.values())
    kwargs = {k: expand_home(v) for k, v in p.kwargs.items()}
    return p.fn(**kwargs, settings=_resolve(_GLOBAL, *after.values()))


def typer_command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as typer runs it: its parameters declared with typer's Option/Argument, then the
    shared options and the click context (to tell what was typed after the command)."""
    import functools
    import inspect
    import typing

    import typer

    sig = inspect.signature(fn)
    own = [p for p in typer_parameters(sig) if p.name != "settings"]
    names = {"Optional": typing.Optional, "List": typing.List, "Path": Path}
    common = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=p.to_typer(), annotation=eval(ann, names))
              for name, (p, ann) in COMMON.items()]
    context = inspect.Parameter("cli_context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        typed = {k: kwargs.pop(k) for k in COMMON}
        ctx = kwargs.pop("cli_context", None)
        # Only what was typed after the command overrides what was typed before it: a value this
        # level read from the environment (VLMDATA_ROOT, ...) must not beat `vlmdata --root R cmd`;
        # the global level reads the same variables when nothing was typed.
        if ctx is not None:
            for k in COMMON:
                source = ctx.get_parameter_source(k)
                if source is not None and source.name != "COMMANDLINE":
                    typed[k] = _UNSET[k]
        settings = _resolve(_GLOBAL, *typed.values())
        return fn(*map(expand_home, args), settings=settings, **{k: expand_home(v) for k, v in kwargs.items()})

    wrapper.__signature__ = sig.replace(parameters=own + common + [context])  # type: ignore[attr-defined]
    return wrapper
