"""The command reference, read from the Typer apps themselves.

Every command and option comes from walking the click command tree that ``vlmdata`` and
``vlmtrain`` run (``list_commands`` / ``get_command``, so lazily imported commands are found
too); each option's line is click's own help record (flags, type, default, range, env var). A
command's docstring gives the description and its "Examples:" block. Nothing is listed by hand
except which commands share a page (``TOPICS``); a command no topic names gets a page of its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import typer
from typer.main import get_command

from tools.docgen.md import BANNER, cell, code, prose, slug, table

# page name -> (title, top-level commands on it, in this order). Commands not named: a page each.
TOPICS: dict[str, tuple[str, list[str]]] = {
    "vlmdata-catalog": ("What the catalog knows", ["list", "info"]),
    "vlmdata-fetch": ("Getting the data", ["plan", "fetch", "status", "verify", "normalize"]),
    "vlmdata-layout": ("Layouts and mirrors", ["layout", "mirror"]),
    "vlmdata-blend": ("Blends", ["blend", "report", "export", "stats"]),
}
REFERENCE = "docs/reference"


@dataclass
class Cmd:
    """One command of the tree (a group too), with the context click would run it in."""

    path: list[str]  # ["vlmdata", "layout", "check"]
    cmd: Any
    ctx: Any
    children: list["Cmd"] = field(default_factory=list)

    @property
    def name(self) -> str:
        return " ".join(self.path)

    @property
    def is_group(self) -> bool:
        return hasattr(self.cmd, "list_commands")


def walk(app: typer.Typer, prog: str) -> Cmd:
    root_cmd = get_command(app)
    root = Cmd([prog], root_cmd, typer.Context(root_cmd, info_name=prog))
    _children(root)
    return root


def _children(node: Cmd) -> None:
    if not node.is_group:
        return
    for name in node.cmd.list_commands(node.ctx):
        sub = node.cmd.get_command(node.ctx, name)
        if sub is None or getattr(sub, "hidden", False):
            continue
        child = Cmd(node.path + [name], sub, typer.Context(sub, info_name=name, parent=node.ctx))
        _children(child)
        node.children.append(child)


def leaves(node: Cmd) -> list[Cmd]:
    """Every runnable command under ``node`` (groups replaced by their commands), in tree order."""
    if not node.is_group:
        return [node]
    return [leaf for c in node.children for leaf in leaves(c)]


def split_help(text: str | None) -> tuple[str, list[str]]:
    """A docstring's description and the command lines of its "Examples:" block."""
    text = (text or "").strip()
    desc, _, ex = text.partition("\nExamples:")
    examples, pending = [], ""
    for line in ex.splitlines():
        line = line.strip()
        if not line:
            continue
        if pending:  # a line continued with a backslash
            pending += " " + line.rstrip("\\").strip()
        else:
            pending = line.rstrip("\\").rstrip()
        if not line.endswith("\\"):
            examples.append(pending)
            pending = ""
    if pending:
        examples.append(pending)
    return desc.strip(), examples


def _usage(c: Cmd) -> str:
    pieces = []
    for p in c.cmd.params:
        if getattr(p, "hidden", False) or p.param_type_name != "argument":
            continue
        metavar = (p.name or "").upper() + ("..." if p.nargs == -1 else "")
        pieces.append(metavar if p.required else f"[{metavar}]")
    opts = " [OPTIONS]" if any(p.param_type_name == "option" for p in c.cmd.params) else ""
    return f"{c.name}{opts} {' '.join(pieces)}".rstrip()


def _record(p: Any, ctx: Any) -> tuple[str, str]:
    rec = p.get_help_record(ctx)
    return rec if rec else (p.name or "", getattr(p, "help", "") or "")


def shared_names(root: Cmd) -> set[str]:
    """The options given on the program itself (vlmdata --root R cmd); commands repeat them."""
    return {p.name for p in root.cmd.params if p.param_type_name == "option"}


def param_tables(c: Cmd, shared: set[str]) -> list[str]:
    args, opts = [], []
    for p in c.cmd.params:
        if getattr(p, "hidden", False) or p.name in shared:
            continue
        flags, meaning = _record(p, c.ctx)
        if p.param_type_name == "argument":
            name = (p.name or "").upper() + ("..." if p.nargs == -1 else "")
            args.append([code(name), cell(meaning)])
        else:
            opts.append([code(flags), cell(meaning)])
    out = []
    if args:
        out.append(table(["argument", "meaning"], args).rstrip())
    if opts:
        out.append(table(["option", "meaning"], opts).rstrip())
    return out


def command_section(c: Cmd, shared: set[str], level: int, shown_in: dict[str, list[str]]) -> str:
    """One command's heading, description, usage, tables, --help examples and links to run examples."""
    desc, examples = split_help(c.cmd.help)
    out = [f"{'#' * level} `{c.name}`"]
    if desc:
        out.append(prose(desc))
    if c.is_group:
        out.append("Commands: " + ", ".join(f"[`{s.name}`](#{slug(s.name)})" for s in c.children) + ".")
    else:
        out.append(f"```text\n{_usage(c)}\n```")
        out += param_tables(c, shared)
        mine = shared_opts(c, shared)
        if mine:
            out.append(f"And the [shared options](vlmdata.md#shared-options) ({', '.join(sorted(_flag(o) for o in mine))}).")
    if examples:
        out.append("Examples from `--help`:\n\n<!-- example: help-text -->\n```sh\n" + "\n".join(examples) + "\n```")
    links = shown_in.get(c.name, [])
    if links:
        out.append("Run, with its output: " + ", ".join(links) + ".")
    text = "\n\n".join(out) + "\n"
    for child in c.children:
        text += "\n" + command_section(child, shared, level + 1, shown_in)
    return text


def shared_opts(c: Cmd, shared: set[str]) -> list[Any]:
    return [p for p in c.cmd.params if p.name in shared and not getattr(p, "hidden", False)]


def _flag(p: Any) -> str:
    longs = [o for o in p.opts if o.startswith("--")]
    return f"`{(longs or p.opts)[0]}`"


def topic_of(name: str) -> str:
    for page, (_, names) in TOPICS.items():
        if name in names:
            return page
    return f"vlmdata-{name}"


def vlmdata_pages(root: Cmd, shown_in: dict[str, list[str]]) -> dict[str, str]:
    """docs/reference/vlmdata-*.md: one page per topic (and per command no topic names)."""
    shared = shared_names(root)
    pages: dict[str, list[Cmd]] = {}
    for c in root.children:
        pages.setdefault(topic_of(c.path[1]), []).append(c)
    out = {}
    for page, cmds in pages.items():
        order = TOPICS.get(page, ("", []))[1]
        cmds.sort(key=lambda c: order.index(c.path[1]) if c.path[1] in order else len(order))
        title = TOPICS[page][0] if page in TOPICS else f"`{cmds[0].name}`"
        names = ", ".join(f"`{c.name}`" for c in cmds)
        body = "".join(command_section(c, shared, 2, shown_in) + "\n" for c in cmds)
        out[f"{REFERENCE}/{page}.md"] = (BANNER.format(source="the `vlmdata` command itself")
                                          + f"# {title}: {names}\n\n" + body).rstrip() + "\n"
    return out


def index_page(data: Cmd, train: Cmd, pages: dict[str, str]) -> str:
    """docs/reference/vlmdata.md: every command in one table, and the shared options."""
    rows = []
    for c in leaves(data):
        page = topic_of(c.path[1])
        summary = split_help(c.cmd.help)[0].split("\n\n")[0]
        rows.append([f"[`{c.name}`]({page}.md#{slug(c.name)})", cell(summary)])
    for c in leaves(train):
        summary = split_help(c.cmd.help)[0].split("\n\n")[0]
        rows.append([f"[`{c.name}`](vlmtrain.md#{slug(c.name)})", cell(summary)])
    everywhere = {p.name for c in leaves(data) for p in c.cmd.params}
    params = [p for p in data.cmd.params if not getattr(p, "hidden", False)]
    shared = [[code(_record(p, data.ctx)[0]), cell(_record(p, data.ctx)[1])] for p in params if p.name in everywhere]
    alone = [[code(_record(p, data.ctx)[0]), cell(_record(p, data.ctx)[1])] for p in params if p.name not in everywhere]
    desc = split_help(data.cmd.help)[0].split("\n\n")[0]
    return (BANNER.format(source="the `vlmdata` and `vlmtrain` commands themselves")
            + "# Command reference\n\n"
            + f"`vlmdata`: {desc} `vlmtrain`: {split_help(train.cmd.help)[0].split(chr(10) * 2)[0]}\n\n"
            + table(["command", "what it does"], rows) + "\n"
            + "## Shared options\n\n"
            + "Every `vlmdata` command takes these, before the command (`vlmdata --root R fetch coco`) or after "
              "it (`vlmdata fetch coco --root R`; a value given after the command wins).\n\n"
            + table(["option", "meaning"], shared)
            + (("\nOnly before a command (`vlmdata OPTION`):\n\n" + table(["option", "meaning"], alone)) if alone else "")
            + "\nExit codes: 0 done, 1 the operation failed (a download, a check), 2 bad input "
              "(a name, a path, an option), 130 interrupted.\n")


def vlmtrain_page(train: Cmd, shown_in: dict[str, list[str]]) -> str:
    body = "".join(command_section(c, set(), 2, shown_in) + "\n" for c in train.children)
    return (BANNER.format(source="the `vlmtrain` command itself") + "# `vlmtrain`: "
            + ", ".join(f"`{c.name}`" for c in train.children) + "\n\n"
            + "Run configs and their keys: [configs/README.md](../../configs/README.md).\n\n" + body).rstrip() + "\n"


TOP_HELP = "vlmdata/cli/top_help.txt"


def top_help() -> str:
    """`vlmdata --help` as typer prints it on a terminal of 80 columns or more: what `vlmdata
    --help` prints from vlmdata/cli/top_help.txt without importing typer (vlmdata.cli.app)."""
    import contextlib
    import io
    import os

    from vlmdata.cli.app import typer_app

    out, old = io.StringIO(), os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "80"
    try:
        with contextlib.redirect_stdout(out):
            typer_app()(["--help"], prog_name="vlmdata", standalone_mode=False)
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return out.getvalue()


def apps() -> tuple[Cmd, Cmd]:
    from vlmdata.cli.app import app as data_app
    from vlmtrain.cli import app as train_app

    return walk(data_app, "vlmdata"), walk(train_app, "vlmtrain")


def pages(shown_in: dict[str, list[str]]) -> dict[str, str]:
    data, train = apps()
    out = vlmdata_pages(data, shown_in)
    out[f"{REFERENCE}/vlmdata.md"] = index_page(data, train, out)
    out[f"{REFERENCE}/vlmtrain.md"] = vlmtrain_page(train, shown_in)
    return out
