"""The workspace the doc examples run in: one demo mirror, and the root the tour fills, for every page.

Each sandbox has `demo-out/mirror` (where `make demo` builds the demo mirror) and links to the
checkout's configs/ and manifests/. docs/tour.md runs first, with an empty root (it shows a first fetch); every
other page then runs in a fresh sandbox holding a copy of what the tour left (data/, runs/), so no
page pays for fetching, blending and training again, and no page sees another's changes.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from demo.build_mirror import build_demo_mirror
from tests.docs.shell import Ran, Shell
from tools.docgen.examples import Block, read_blocks

REPO = Path(__file__).resolve().parents[2]
TOUR = REPO / "docs" / "tour.md"
LINKED = ("configs", "manifests")  # what examples read from the checkout (relative paths, as in the repo root)


@dataclass
class BlockRun:
    block: Block
    runs: list[tuple[str, Ran]] = field(default_factory=list)  # (command as written, result)
    error: str = ""  # the first failure, "" when all went as the page says


@dataclass
class Workspace:
    base: Path
    demo: object
    env: dict[str, str]
    tour: list[BlockRun] = field(default_factory=list)

    def sandbox(self, name: str, *, fresh: bool = False) -> Shell:
        box = self.base / name
        box.mkdir(parents=True)
        for link in LINKED:
            (box / link).symlink_to(REPO / link)
        (box / "demo-out").mkdir()
        (box / "demo-out" / "mirror").symlink_to(self.demo.out)  # where `make demo` builds its mirror
        if not fresh:
            tour = self.base / "tour"
            for folder in ("data", "runs", "_abs"):
                if (tour / folder).is_dir():
                    shutil.copytree(tour / folder, box / folder, symlinks=True)
        return Shell(box, dict(self.env))


def run_block(shell: Shell, block: Block) -> BlockRun:
    """Every command of ``block`` in ``shell``; stops at the first one that fails or shows other output."""
    from tests.docs.shell import matches

    result = BlockRun(block)
    cmds = block.commands()
    for i, cmd in enumerate(cmds):
        ran = shell.run(cmd.text)
        result.runs.append((cmd.text, ran))
        want = block.expected_exit if i == len(cmds) - 1 else 0
        if ran.code != want:
            result.error = (f"{block.path.name}:{cmd.line}: `{cmd.text}` exited {ran.code} (expected {want}) "
                            f"[{ran.how}]\n--- stdout\n{ran.out[-3000:]}\n--- stderr\n{ran.err[-3000:]}")
            return result
        missing = matches(cmd.output, ran.text)
        if missing:
            result.error = (f"{block.path.name}:{cmd.line}: `{cmd.text}` printed no line like:\n  "
                            + "\n  ".join(missing) + f"\n--- it printed\n{ran.text[-4000:]}")
            return result
    return result


def runnable(page: Path) -> list[Block]:
    return [b for b in read_blocks(page) if b.is_shell and b.skip_reason is None]


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Workspace:
    base = tmp_path_factory.mktemp("docs-examples")
    demo = build_demo_mirror(base / "demo")  # as `make demo` builds it (12 images per set)
    env = {"VLMDATA_MANIFESTS": str(demo.manifests), "VLMDATA_MIRROR": str(demo.mirror), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "VLMTRAIN_LOG": "WARNING"}
    ws = Workspace(base, demo, env)
    if TOUR.is_file():
        shell = ws.sandbox("tour", fresh=True)
        for block in runnable(TOUR):
            ws.tour.append(run_block(shell, block))
            if ws.tour[-1].error:
                break
    return ws
