"""Options every command shares; the settings object they resolve to is vlmdata.cli.settings.

Options work before the command (``vlmdata --root R plan coco``) and after it
(``vlmdata plan coco --root R``); a value given after the command wins. Each also reads its
environment variable (VLMDATA_ROOT, VLMDATA_MANIFESTS, VLMDATA_MIRROR, HF_ENDPOINT).
"""
from __future__ import annotations

import functools
import inspect
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import typer

if TYPE_CHECKING:  # imported when a command runs, not when the CLI starts
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

_COMMON: dict[str, inspect.Parameter] = {
    name: inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
    for name, default, ann in [
        ("root", typer.Option(None, "--root", envvar="VLMDATA_ROOT", help="Data root (the store). Default ./data.",
                              show_default=False), Optional[Path]),
        ("manifests", typer.Option(None, "--manifests", envvar="VLMDATA_MANIFESTS",
                                   help="Extra folder of datasets/layouts/blends TOMLs (adds to or overrides shipped ones)."),
         Optional[str]),
        ("mirror", typer.Option(None, "--mirror", envvar="VLMDATA_MIRROR",
                                help="Read http(s)://host/path from BASE/host/path, and Hub files from their resolve "
                                     "URL's place there first (BASE: http(s) URL or local folder)."),
         Optional[str]),
        ("hf_endpoint", typer.Option(None, "--hf-endpoint", envvar="HF_ENDPOINT", help="Hugging Face Hub endpoint (a hub mirror)."),
         Optional[str]),
        ("json_out", typer.Option(False, "--json", help="Print the result as JSON on stdout."), bool),
        ("verbose", typer.Option(0, "-v", "--verbose", count=True, help="More detail (repeat for more)."), int),
        ("quiet", typer.Option(False, "-q", "--quiet", help="No progress and no summary: errors only (and --json)."),
         bool),
    ]
}


def _print_version(value: bool) -> None:
    if value:
        import vlmdata

        typer.echo(f"vlmdata {vlmdata.__version__}")
        raise typer.Exit(0)


def global_callback(
    root: Optional[Path] = _COMMON["root"].default,
    manifests: Optional[str] = _COMMON["manifests"].default,
    mirror: Optional[str] = _COMMON["mirror"].default,
    hf_endpoint: Optional[str] = _COMMON["hf_endpoint"].default,
    json_out: bool = _COMMON["json_out"].default,
    verbose: int = _COMMON["verbose"].default,
    quiet: bool = _COMMON["quiet"].default,
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the version and exit."),
) -> None:
    """Options given before the command."""
    global _GLOBAL
    _GLOBAL = _resolve(None, root, manifests, mirror, hf_endpoint, json_out, verbose, quiet)


def _resolve(base: Settings | None, root, manifests, mirror, hf_endpoint, json_out, verbose, quiet=False) -> Settings:
    from vlmdata.cli.settings import Settings  # (here: --help resolves no settings)

    base = base if base is not None else Settings()
    return Settings(
        root=Path(root) if root is not None else base.root,
        manifests=_manifest_dirs(manifests) if manifests else list(base.manifests),
        mirror=mirror if mirror is not None else base.mirror,
        hf_endpoint=hf_endpoint if hf_endpoint is not None else base.hf_endpoint,
        json=json_out or base.json,
        verbose=max(verbose, base.verbose),
        quiet=quiet or base.quiet,
    )


def _manifest_dirs(value: str) -> list[str]:
    from vlmdata.manifest.catalog import extra_dirs_from_env  # a catalog is read next anyway

    return extra_dirs_from_env(value)


def with_settings(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the shared options; it receives them as ``settings: Settings``."""
    sig = inspect.signature(fn)
    own = [p for p in sig.parameters.values() if p.name != "settings"]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        common = {k: kwargs.pop(k) for k in _COMMON}
        ctx = kwargs.pop("cli_context", None)
        # Only what was typed after the command overrides what was typed before it: a value this
        # level read from the environment (VLMDATA_ROOT, ...) must not beat `vlmdata --root R cmd`;
        # the global level reads the same variables when nothing was typed.
        if ctx is not None:
            for k in _COMMON:
                source = ctx.get_parameter_source(k)
                if source is not None and source.name != "COMMANDLINE":
                    common[k] = _COMMON[k].default.default if k in ("json_out", "verbose", "quiet") else None
        settings = _resolve(_GLOBAL, common["root"], common["manifests"], common["mirror"], common["hf_endpoint"],
                            common["json_out"], common["verbose"], common["quiet"])
        return fn(*args, settings=settings, **kwargs)

    context = inspect.Parameter("cli_context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
    wrapper.__signature__ = sig.replace(parameters=own + list(_COMMON.values()) + [context])  # type: ignore[attr-defined]
    return wrapper
