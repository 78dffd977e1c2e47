"""The shell examples in the docs: found, classified and split into commands (and shown output).

A shell example is a fenced block whose language is ``sh``, ``bash``, ``shell`` or ``console``:

- ``sh`` / ``bash`` / ``shell``: every line is a command (``\\`` continues it; ``#`` starts a comment);
- ``console``: lines starting with ``$ `` are commands, the lines under one are its output as shown.

tests/docs/test_examples.py runs every example on the demo mirror, unless the HTML comment above its
fence (only blank lines between) says why it cannot run there::

    <!-- example: needs network -->      the real origins (files the demo mirror does not serve)
    <!-- example: needs gpu -->          a GPU (and the real weights)
    <!-- example: needs cluster -->      several machines, a scheduler
    <!-- example: needs network, gpu --> several of these
    <!-- example: help-text -->          a command's --help examples, shown in the generated reference
    <!-- example: covered by PATH -->    run by another test (PATH: that test), e.g. `make demo`
    <!-- example: exit 1 -->             runs; the last command must exit 1 (a check that fails on purpose)

A block without a language is an error: say what it is (``text``, ``toml``, ``json``, ``sh``...).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

SHELL = ("sh", "bash", "shell", "console")
NEEDS = ("network", "gpu", "cluster")
_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)\s*$")
_MARKER = re.compile(r"^<!--\s*example:\s*(.*?)\s*-->\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


@dataclass
class Command:
    line: int  # where it starts in the file (1-based)
    text: str  # continuation lines joined
    output: list[str] = field(default_factory=list)  # console blocks: the output shown under it


@dataclass
class Block:
    path: Path
    line: int  # the fence's line (1-based)
    lang: str
    body: str
    heading: str  # the nearest heading above it ("" at the top)
    marker: str  # the example marker's text ("" if none)

    @property
    def is_shell(self) -> bool:
        return self.lang in SHELL

    @property
    def skip_reason(self) -> str | None:
        """Why this example is not run here, or None when it is."""
        m = self.marker
        if m == "help-text":
            return "a command's --help examples (the reference page shows them; run examples are on the linked pages)"
        if m.startswith("needs "):
            return m
        if m.startswith("covered by "):
            return m
        return None

    @property
    def needs(self) -> list[str]:
        """What a `needs` marker names (network, gpu, cluster)."""
        return [x.strip() for x in self.marker[len("needs "):].split(",")] if self.marker.startswith("needs ") else []

    @property
    def expected_exit(self) -> int:
        m = re.fullmatch(r"exit (\d+)", self.marker)
        return int(m.group(1)) if m else 0

    def commands(self) -> list[Command]:
        if "<<" in self.body and self.lang != "console":  # a here-document: the block is one script
            return [Command(self.line + 1, self.body)]
        return split_commands(self.body, self.lang == "console", self.line + 1)

    def where(self) -> str:
        return f"{self.path}:{self.line}"


def read_blocks(path: Path) -> list[Block]:
    """Every fenced block of a markdown file, with its language, marker and heading."""
    blocks, heading, marker = [], "", ""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            indent, ticks, lang = fence.groups()
            body, j = [], i + 1
            while j < len(lines) and not lines[j].strip().startswith(ticks):
                body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
                j += 1
            blocks.append(Block(path, i + 1, lang, "\n".join(body), heading, marker))
            marker, i = "", j + 1
            continue
        m = _MARKER.match(line.strip())
        if m:
            marker = m.group(1)
        elif line.strip():
            h = _HEADING.match(line)
            if h:
                heading = h.group(2)
            marker = ""
        i += 1
    return blocks


def split_commands(body: str, console: bool, first_line: int) -> list[Command]:
    """The commands of a block, continuation lines joined, comments dropped; console output attached."""
    out: list[Command] = []
    pending: Command | None = None
    for k, raw in enumerate(body.splitlines()):
        n = first_line + k
        if pending is not None:  # continuing the previous line
            text = _strip_comment(raw).strip()
            pending.text += " " + text.rstrip("\\").strip()
            if not text.endswith("\\"):
                pending = None
            continue
        if console:
            if raw.startswith("$ "):
                text = raw[2:]
            else:
                if out:
                    out[-1].output.append(raw)
                continue
        else:
            text = raw
        text = _strip_comment(text).rstrip()
        if not text.strip():
            continue
        cmd = Command(n, text.rstrip("\\").rstrip())
        out.append(cmd)
        if text.endswith("\\"):
            pending = cmd
    return out


def _strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (a # inside quotes or a word is kept)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def doc_pages(repo: Path) -> list[Path]:
    """The hand-written and generated pages whose examples count: README.md, configs/README.md, docs/**."""
    pages = [repo / "README.md", repo / "configs" / "README.md"] + sorted((repo / "docs").rglob("*.md"))
    return [p for p in pages if p.is_file()]


def program_paths(text: str, commands: dict[str, set[str]]) -> list[list[str]]:
    """``vlmdata --root R layout check ...`` -> [["vlmdata", "layout", "check"]]: for each program run
    on the line, its (sub)command words (``commands`` maps a command path to its subcommand names)."""
    found = []
    for segment in re.split(r"&&|\|\||[|;]", text):
        words = segment.split()
        for i, w in enumerate(words):
            if w.rsplit("/", 1)[-1] not in ("vlmdata", "vlmtrain"):
                continue
            path = [w.rsplit("/", 1)[-1]]
            for tok in words[i + 1:]:
                subs = commands.get(" ".join(path), set())
                if tok in subs:
                    path.append(tok)
                elif not tok.startswith("-") and len(path) > 1 and not subs:
                    break
            found.append(path)
            break
    return found
