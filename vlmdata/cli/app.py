"""The `vlmdata` application: global options, command registration, and error handling.

Commands are imported when they run, not at start-up: `vlmdata --help` and a `vlmdata fetch`
with nothing to do must not pay for http.client, Pillow, pyarrow and the rest of what the other
commands use. ``COMMANDS`` names each command's module and its one-line help (what the top-level
``--help`` lists without importing anything); a test checks each line against the command's own
help, so the two cannot drift. A plain command line is parsed by vlmdata.cli.fastparse without
importing typer; any other (help, a usage error, a group) by the typer app (``app``, built on
first use), which lists the commands lazily too. Code that walks the tree (the docs generator,
tests) asks the group for its commands as click lets it (``list_commands``/``get_command``, or
``commands``). The console script is ``console``: ``main`` and then an exit without Python's
teardown.
"""
from __future__ import annotations

import functools
import importlib
import sys
import threading
from typing import Any, Callable, NoReturn

from vlmdata.cli.common import COMMON, begin_run, json_error, run_parsed
from vlmdata.errors import run_app

# name: (module under vlmdata.cli, the first line of its help). Order = the order in --help
# (commands, then the groups, as Typer lists them). A module lists its plain commands in its
# ``COMMANDS`` (name -> function); a group's module its ``SUBCOMMANDS`` and ``GROUP_HELP``.
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("catalog_cmds", "Every dataset, layout and blend recipe, one line each."),
    "info": ("catalog_cmds", "Everything known about one dataset, layout or blend recipe."),
    "plan": ("plan_cmd", "What `fetch` would do: each file's source, bytes to download, disk needed, free disk, "
                         "what is present."),
    "fetch": ("fetch_cmd", "Download, verify and place the named datasets under --root; resumable and idempotent."),
    "verify": ("verify_cmd", "Check what was fetched: files present, sizes and counts right; --deep hashes and decodes."),
    "normalize": ("normalize_cmd", "Fix an image folder downloaded by hand: every image becomes a real JPEG named "
                                   "<id>.jpg."),
    "status": ("status_cmd", "Each dataset: absent, partial, subset, complete, verified or damaged."),
    "blend": ("blend_cmd", "Turn a recipe's instruction JSONs into one checked Arrow dataset (datasets.load_from_disk)."),
    "report": ("blend_cmd", "What a recipe needs and what is there (images, records to drop), without writing a dataset."),
    "export": ("blend_cmd", "Write a blend back as the LLaVA JSON the original repos read."),
    "stats": ("blend_cmd", "Counts per source, text-only share, images per record and a histogram of text lengths."),
    "layout": ("layout_cmd", "Check a folder against a layout, or build a layout's view from the store."),
    "mirror": ("mirror_cmd", "Lay out what a root has fetched as a mirror folder (DIR/host/path)."),
}

HELP = ("Download, verify, lay out and blend LLaVA-family training data.\n\n"
        "Typical session:\n\n"
        "  vlmdata plan coco gqa ocr_vqa textvqa vg llava_instruct\n\n"
        "  vlmdata fetch coco gqa ocr_vqa textvqa vg llava_instruct --layout llava\n\n"
        "  vlmdata layout check --layout llava data/layouts/llava\n\n"
        "  vlmdata blend llava-665k")


def plain_command(name: str) -> Callable[..., Any] | None:
    """The function of the plain command ``name`` (its module imported); None for a group or an
    unknown name."""
    entry = COMMANDS.get(name)
    if entry is None:
        return None
    return getattr(importlib.import_module(f"vlmdata.cli.{entry[0]}"), "COMMANDS", {}).get(name)


@functools.lru_cache(maxsize=None)
def module_commands(module: str) -> dict[str, Any]:
    """The click commands one module registers (imported on first use)."""
    import typer

    from vlmdata.cli.common import typer_command
    from vlmdata.cli.plain_help import use_plain_help

    mod = importlib.import_module(f"vlmdata.cli.{module}")
    scratch = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    for name, fn in getattr(mod, "COMMANDS", {}).items():
        scratch.command(name)(typer_command(fn))
    if hasattr(mod, "SUBCOMMANDS"):  # a group: its name is the module's entry in COMMANDS
        group = typer.Typer(help=mod.GROUP_HELP, no_args_is_help=True)
        for sub, fn in mod.SUBCOMMANDS.items():
            group.command(sub)(typer_command(fn))
        scratch.add_typer(group, name=next(n for n, (m, _) in COMMANDS.items() if m == module))
    return {name: use_plain_help(cmd) for name, cmd in typer.main.get_group(scratch).commands.items()}


@functools.lru_cache(maxsize=None)
def typer_app() -> Any:
    """The typer application: every command, for --help, usage errors, groups and the docs."""
    import typer
    from typer.core import TyperGroup

    from vlmdata.cli.common import global_callback
    from vlmdata.cli.params import to_typer
    from vlmdata.cli.plain_help import PlainContext

    class LazyGroup(TyperGroup):
        """A Typer group whose commands are imported only when one is run or asked for its help."""

        _listing = False  # inside format_help: list stubs, import nothing
        context_class = PlainContext  # (vlmdata.cli.plain_help: no rich at start-up)

        @property
        def commands(self) -> dict[str, Any]:  # type: ignore[override]
            """Every command (imports them all: for code that walks the whole tree)."""
            return {name: module_commands(module)[name] for name, (module, _) in COMMANDS.items()}

        @commands.setter
        def commands(self, value: dict[str, Any]) -> None:
            if value:
                raise ValueError("vlmdata's commands are listed in vlmdata.cli.app.COMMANDS")

        def list_commands(self, ctx: Any) -> list[str]:
            return list(COMMANDS)

        def get_command(self, ctx: Any, cmd_name: str) -> Any:
            entry = COMMANDS.get(cmd_name)
            if entry is None:
                return None
            if self._listing:
                return typer.core.TyperCommand(cmd_name, help=entry[1], short_help=entry[1])
            return module_commands(entry[0])[cmd_name]

        def format_help(self, ctx: Any, formatter: Any) -> None:
            self._listing = True
            try:
                super().format_help(ctx, formatter)
            finally:
                self._listing = False

    app = typer.Typer(name="vlmdata", cls=LazyGroup, help=HELP, no_args_is_help=True, add_completion=False,
                      pretty_exceptions_enable=False, rich_markup_mode=None,
                      context_settings={"help_option_names": ["-h", "--help"]})
    app.callback()(to_typer(global_callback))
    return app


def __getattr__(name: str) -> Any:
    if name == "app":  # (built on first use: importing typer is half of a fast command's start-up)
        return typer_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


TOP_HELP = "top_help.txt"  # beside this file; written by the docs generator (tools/docgen: `make docs`)


def _top_help() -> str | None:
    """`vlmdata --help` as typer prints it on a terminal of 80 columns or more (click wraps at 78
    then), from the file the docs generator writes from typer itself (tests/docs/test_generated.py
    fails when it is stale); None where typer must print it: a narrower terminal, another program
    name (``python -m``), no file."""
    import os

    if os.path.basename(sys.argv[0]) != "vlmdata":
        return None
    try:  # the terminal's width as click reads it (shutil.get_terminal_size, without importing shutil)
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
        except (AttributeError, ValueError, OSError):
            columns = 80
    if columns < 80:
        return None
    try:
        with open(os.path.join(os.path.dirname(__file__), TOP_HELP), encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def _run() -> Any:
    from vlmdata.cli import fastparse

    if sys.argv[1:] in (["--help"], ["-h"]):
        text = _top_help()  # (typer is half of its start-up: 153M of 236M instructions)
        if text is not None:
            sys.stdout.write(text)
            return 0
    if sys.argv[1:] == ["--version"]:  # (what the option's callback prints: vlmdata.cli.common)
        from vlmdata.cli.common import print_version

        print_version(True)
    parsed = fastparse.parse(sys.argv[1:], plain_command, COMMON)
    if parsed is not None:
        run_parsed(parsed)
        return 0
    return typer_app()(standalone_mode=False)


def main() -> None:
    """Entry point: user mistakes become a clear message and exit code 2, never a traceback."""
    begin_run()
    args = sys.argv[1:]
    wants_json = "--json" in (args[:args.index("--")] if "--" in args else args)
    run_app(_run, interrupted="interrupted; nothing is left half-done: run the same command again "
                              "(fetch resumes where it stopped)",
            json_error=json_error if wants_json else None, os_errors=True,
            explain_interrupt=True)


def console() -> NoReturn:
    """The `vlmdata` console script: ``main()``, then the process ends without Python's teardown.

    That teardown clears every module and collects every object, 7-11% of the instructions of
    `vlmdata --help`, a fetch with nothing to do or a small download (callgrind: 31-58M), in which
    nothing a user sees happens. What an exit must do is still done: threads that are not
    daemons are waited for (by taking Python's own exit while one runs), the atexit handlers run
    (logging's flush, finalizers such as temporary folders' removal, pools' joins, Ray's
    shutdown) and stdout/stderr are flushed. Tests call ``main()`` in their own process instead.
    """
    from vlmdata.errors import stop_on_sigterm

    stop_on_sigterm()  # (here, not in main(): the tests run main() in their own process)
    try:
        main()
        code: object = 0
    except SystemExit as e:
        code = e.code
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # what SystemExit("message") does
        print(code, file=sys.stderr)
        status = 1
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(status)
    import atexit
    import os

    atexit._run_exitfuncs()  # (what Python's exit runs before its teardown; multiprocessing calls it too)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: Python's own exit says so, with its exit code
        sys.exit(status)
    os._exit(status)


if __name__ == "__main__":
    console()
