"""`--help` printed by click's own formatter instead of rich's.

Why: rich and markdown-it, which Typer's rich help imports, cost about 0.1 s of every `vlmdata
--help`, as much as the rest of start-up together; plain text also pipes and greps well. What rich
did that click does not: keep a block of indented lines (the Examples) line for line. Here a
paragraph whose lines after the first are indented is kept as written (click's ``\\b`` rule);
every other paragraph is wrapped to the terminal as before.
"""
from __future__ import annotations

from typing import Any

from typer.core import TyperCommand

# click's Context and HelpFormatter, from whichever click Typer uses (recent Typers ship their own copy)
_Context = TyperCommand.context_class
_HelpFormatter = _Context.formatter_class


def keep_blocks(text: str) -> str:
    """``text`` with each indented block marked for click to print line for line."""
    paras = text.split("\n\n")
    for i, para in enumerate(paras):
        lines = para.split("\n")
        if len(lines) > 1 and any(line[:1].isspace() for line in lines[1:]) and lines[0].strip() != "\b":
            paras[i] = "\b\n" + para
    return "\n\n".join(paras)


class BlockFormatter(_HelpFormatter):
    def write_text(self, text: str) -> None:
        super().write_text(keep_blocks(text))


class PlainContext(_Context):
    formatter_class = BlockFormatter


def use_plain_help(cmd: Any) -> Any:
    """``cmd`` and every command under it print their help with ``BlockFormatter``."""
    cmd.context_class = PlainContext
    for sub in (getattr(cmd, "commands", None) or {}).values():
        use_plain_help(sub)
    return cmd
