"""docs/layouts.md: each layout of manifests/layouts/ as a folder tree, beside the others and its source.

First one table with a row per placed folder or file of the store and a column per layout (where
that layout puts it), then each layout's tree as the entries draw it, with the documents it follows.
"""
from __future__ import annotations

from vlmdata.manifest import Catalog, Layout, LayoutEntry

from tools.docgen.md import BANNER, cell, code, table


def _note(e: LayoutEntry) -> str:
    if e.kind == "mkdir":
        return "(created empty)"
    bits = [f"<- {e.dataset}:{e.store}" if e.store != e.path else f"<- {e.dataset}"]
    if e.kind == "dir":
        bits.append("unknown count" if e.count is None else f"{e.count:,} files")
    if e.optional:
        bits.append("optional")
    return "  ".join(bits)


def tree(layout: Layout) -> str:
    """The entries as a tree, one line per path component, each entry annotated."""
    nodes: dict = {}
    for e in layout.entries:
        cur = nodes
        parts = e.path.split("/")
        for p in parts[:-1]:
            cur = cur.setdefault(p + "/", {})
        cur.setdefault(parts[-1] + ("/" if e.kind != "file" else ""), {})["\0"] = e
    lines = [f"{layout.name}/" + (f"    (--image_folder {layout.image_folder})" if layout.image_folder != "." else
                                  "    (--image_folder is this folder)")]

    rows: list[tuple[str, str]] = []  # (tree part, note), the notes aligned in one column

    def draw(node: dict, prefix: str) -> None:
        keys = [k for k in node if k != "\0"]
        for i, k in enumerate(keys):
            last = i == len(keys) - 1
            entry = node[k].get("\0")
            rows.append((f"{prefix}{'└── ' if last else '├── '}{k}", _note(entry) if entry is not None else ""))
            draw(node[k], prefix + ("    " if last else "│   "))

    draw(nodes, "")
    width = max((len(t) for t, n in rows if n), default=0)
    lines += [f"{t:<{width}}  {n}".rstrip() for t, n in rows]
    return "\n".join(lines)


def side_by_side(catalog: Catalog) -> str:
    layouts = sorted(catalog.layouts.values(), key=lambda x: x.name)
    rows: dict[tuple[str, str], dict[str, list[str]]] = {}
    for lay in layouts:
        for e in lay.entries:
            if e.kind == "mkdir":
                continue
            rows.setdefault((e.dataset or "", e.store), {}).setdefault(lay.name, []).append(e.path)
    body = []
    for (dataset, store), where in sorted(rows.items()):  # a store path linked at several places: each one
        body.append([code(dataset), code(store)]
                    + ["<br>".join(code(p) for p in where.get(lay.name, [])) for lay in layouts])
    return table(["dataset", "in the store"] + [f"[{lay.name}](#{lay.name})" for lay in layouts], body)


def layouts_page(catalog: Catalog) -> str:
    out = [BANNER.format(source="manifests/layouts/ (through vlmdata's manifest loader)"),
           "# Layouts side by side\n",
           "A layout is the folder tree one training codebase expects. `vlmdata layout build --layout NAME` makes "
           "it out of links into the store (one download serves every layout), `vlmdata layout check` checks "
           "it. Where each placed folder or file of the store appears in each layout (paths relative to the "
           "layout's folder):\n",
           side_by_side(catalog)]
    for lay in sorted(catalog.layouts.values(), key=lambda x: x.name):
        out.append(f"## {lay.name}\n")
        out.append(f"**{cell(lay.title)}**." + (f" {cell(lay.description)}" if lay.description else "") + "\n")
        if lay.references:
            out.append("From: " + "; ".join(cell(r) for r in lay.references) + ".\n")
        out.append("```text\n" + tree(lay) + "\n```\n")
    return "\n".join(out).rstrip() + "\n"
