"""The shape of the code, checked from its import statements (ast; nothing is imported or executed).

- vlmdata never imports vlmtrain or torch, and its core (everything but vlmdata/cli) never imports the CLI;
- vlmtrain imports of vlmdata only the dataset contract, the errors (and the console-script runner in
  them) and the atomic-write helper, and those import nothing else of vlmdata, so the trainer never
  pulls in the data toolchain;
- no import cycles between the folders / top-level modules of each package (vlmdata.fetch,
  vlmdata.plan, vlmtrain.data, ...), counting imports inside functions too: a lazy import is still
  a dependency;
- a file over ~400 lines says at its top why it is that long.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("vlmdata", "vlmtrain")
# What vlmtrain may import of vlmdata, and why each.
TRAINER_MAY_IMPORT = {
    "vlmdata.contract": "the dataset contract: schema, version, blend.json, the reader's checks",
    "vlmdata.errors": "errors a user can act on, and the console-script runner that maps them to exit codes",
    "vlmdata.atomic": "the one atomic-write helper (standard library only): atomic writes are a rule for both halves",
}
LONG_FILE = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(module imported, line) for every import statement of the module, top-level or not."""
    is_pkg = path.name == "__init__.py"
    out: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:  # `from pkg import module` imports the module
                sub = f"{mod}.{a.name}"
                out.append((sub if sub in MODULES else mod, node.lineno))
    return out


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _violations(modules, bad) -> list[str]:
    return [f"{MODULES[m].relative_to(REPO)}:{line}: imports {imp}"
            for m in modules for imp, line in IMPORTS[m] if bad(imp)]


def _is(imp: str, *names: str) -> bool:
    return any(imp == n or imp.startswith(n + ".") for n in names)


def test_the_tree_is_what_this_test_reads():
    assert "vlmdata.contract" in MODULES and "vlmdata.fetch.orchestrate" in MODULES and "vlmtrain.data.dataset" in MODULES
    assert sum(len(v) for v in IMPORTS.values()) > 500


def test_vlmdata_never_imports_vlmtrain_or_torch():
    data = [m for m in MODULES if _is(m, "vlmdata")]
    assert _violations(data, lambda imp: _is(imp, "vlmtrain", "torch")) == []


def test_vlmdata_core_never_imports_the_cli():
    core = [m for m in MODULES if _is(m, "vlmdata") and not _is(m, "vlmdata.cli")]
    assert _violations(core, lambda imp: _is(imp, "vlmdata.cli")) == []


def test_vlmtrain_imports_only_the_contract_and_errors_of_vlmdata():
    trainer = [m for m in MODULES if _is(m, "vlmtrain")]
    assert _violations(trainer, lambda imp: _is(imp, "vlmdata") and imp not in TRAINER_MAY_IMPORT) == []
    # ... and those pull in nothing else of vlmdata (the package root only holds the version)
    assert _violations(list(TRAINER_MAY_IMPORT),
                       lambda imp: _is(imp, "vlmdata") and imp not in TRAINER_MAY_IMPORT) == []
    assert _violations(["vlmdata"], lambda imp: _is(imp, "vlmdata", "vlmtrain")) == []


def _unit(module: str) -> str:
    """The folder or top-level module a module belongs to: vlmdata.fetch.http -> vlmdata.fetch."""
    return ".".join(module.split(".")[:2])


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles_between_folders(package):
    graph: dict[str, set[str]] = {}
    for m, imps in IMPORTS.items():
        if not _is(m, package):
            continue
        for imp, _ in imps:
            target = next((t for t in (imp, imp.rsplit(".", 1)[0]) if t in MODULES), None)
            if target is not None and _is(target, package) and _unit(target) != _unit(m):
                graph.setdefault(_unit(m), set()).add(_unit(target))
    cycles = _cycles(graph)
    detail = ["{}: {}".format(" <-> ".join(c), "; ".join(
        f"{a} -> {b}" for a in c for b in sorted(graph.get(a, ())) if b in c)) for c in cycles]
    assert detail == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_long_files_say_why():
    quiet = []
    for name, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > LONG_FILE:
            doc = ast.get_docstring(ast.parse("\n".join(lines))) or ""
            if "why" not in doc.lower():
                quiet.append(f"{path.relative_to(REPO)}: {len(lines)} lines, no reason in its docstring")
    assert quiet == []


def test_architecture_doc_matches_the_tree():
    """docs/architecture.md names every folder and top-level module of vlmdata, and nothing that is gone."""
    import re

    doc = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(vlmdata/[a-z_]+(?:/|\.py))`", doc))
    tree = {f"vlmdata/{p.name}/" if p.is_dir() else f"vlmdata/{p.name}" for p in (REPO / "vlmdata").iterdir()
            if (p.is_dir() and (p / "__init__.py").is_file()) or (p.suffix == ".py" and p.name != "__init__.py")}
    assert sorted(tree - named) == [] and sorted(named - tree) == []
