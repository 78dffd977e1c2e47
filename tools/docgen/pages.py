"""All generated pages, by path: what ``make docs`` writes and what the drift test compares."""
from __future__ import annotations

from pathlib import Path

from vlmdata.manifest import load_catalog

from tools.docgen import catalog, cli, layouts
from tools.docgen.examples import doc_pages, program_paths, read_blocks
from tools.docgen.md import slug

REPO = Path(__file__).resolve().parents[2]


def command_tree() -> dict[str, set[str]]:
    """Each command path ("vlmdata", "vlmdata layout") -> its subcommand names."""
    out: dict[str, set[str]] = {}
    for root in cli.apps():
        stack = [root]
        while stack:
            node = stack.pop()
            out[node.name] = {c.path[-1] for c in node.children}
            stack += node.children
    return out


def run_examples(generated: set[str]) -> dict[str, list[str]]:
    """Command name -> links to the hand-written examples that run it (and are run by the tests)."""
    tree = command_tree()
    found: dict[str, dict[str, None]] = {}
    for page in doc_pages(REPO):
        rel = page.relative_to(REPO).as_posix()
        if rel in generated:
            continue
        for block in read_blocks(page):
            if not block.is_shell or block.skip_reason:
                continue
            for cmd in block.commands():
                for path in program_paths(cmd.text, tree):
                    anchor = f"#{slug(block.heading)}" if block.heading else ""
                    text = f"{rel}: {block.heading}" if block.heading else rel
                    found.setdefault(" ".join(path), {})[f"[{text.replace('`', '')}](../../{rel}{anchor})"] = None
    return {k: list(v) for k, v in found.items()}


def generate() -> dict[str, str]:
    cat = load_catalog([])
    out = {
        "docs/datasets.md": catalog.datasets_page(cat),
        "docs/recipes.md": catalog.recipes_page(cat),
        "docs/layouts.md": layouts.layouts_page(cat),
    }
    names = set(out) | {f"{cli.REFERENCE}/{p}.md" for p in ("vlmdata", "vlmtrain")}
    names |= {f"{cli.REFERENCE}/{p}.md" for p in cli.TOPICS}
    shown = run_examples(names | reference_pages())
    out.update(cli.pages(shown))
    return dict(sorted(out.items()))


def reference_pages() -> set[str]:
    ref = REPO / cli.REFERENCE
    return {p.relative_to(REPO).as_posix() for p in ref.glob("*.md")} if ref.is_dir() else set()


def generated_files() -> dict[str, str]:
    """Files the generator writes besides the pages: what `vlmdata --help` prints without typer."""
    return {cli.TOP_HELP: cli.top_help()}


def stale() -> list[str]:
    """Generated pages and files that are missing or differ from the committed ones; and
    committed reference pages the generator no longer writes (a command that is gone)."""
    pages = generate()
    bad = [p for p, text in {**pages, **generated_files()}.items()
           if not (REPO / p).is_file() or (REPO / p).read_text(encoding="utf-8") != text]
    bad += sorted(p for p in reference_pages() if p not in pages)
    return bad
