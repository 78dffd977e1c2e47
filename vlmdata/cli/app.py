"""The `vlmdata` application: global options, command registration, and error handling."""
from __future__ import annotations

import sys

import typer

from vlmdata.cli import (
    blend_cmd,
    catalog_cmds,
    fetch_cmd,
    layout_cmd,
    mirror_cmd,
    normalize_cmd,
    plan_cmd,
    status_cmd,
    verify_cmd,
)
from vlmdata.cli.common import begin_run, global_callback, json_error
from vlmdata.errors import run_app

app = typer.Typer(
    name="vlmdata",
    help="Download, verify, lay out and blend LLaVA-family training data.\n\n"
         "Typical session:\n\n"
         "  vlmdata plan coco gqa ocr_vqa textvqa vg\n\n"
         "  vlmdata fetch coco gqa ocr_vqa textvqa vg --layout llava\n\n"
         "  vlmdata layout check --layout llava data/layouts/llava\n\n"
         "  vlmdata blend llava-665k",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.callback()(global_callback)

# Each command group lives in its own module and adds itself here.
for module in (catalog_cmds, plan_cmd, fetch_cmd, verify_cmd, normalize_cmd, status_cmd, layout_cmd, mirror_cmd, blend_cmd):
    module.register(app)


def main() -> None:
    """Entry point: user mistakes become a clear message and exit code 2, never a traceback."""
    begin_run()
    args = sys.argv[1:]
    wants_json = "--json" in (args[:args.index("--")] if "--" in args else args)
    run_app(app, interrupted="interrupted; nothing is left half-done: run the same command again "
                             "(fetch resumes where it stopped)",
            json_error=json_error if wants_json else None, os_errors=True,
            explain_interrupt=True)


if __name__ == "__main__":
    main()
