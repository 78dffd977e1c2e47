"""Every shell example in the docs runs on the demo mirror, or says why it cannot.

docs/tour.md runs first from an empty root (tests/docs/conftest.py); each other page then runs top to
bottom in a sandbox with a copy of what the tour left, with VLMDATA_MANIFESTS / VLMDATA_MIRROR
pointing at the demo mirror. A `console` block's shown output must appear in what the command
prints (`...` stands for anything). The markers are described in tools/docgen/examples.py.
"""
from __future__ import annotations

import pytest

from tests.docs.conftest import REPO, TOUR, run_block, runnable
from tools.docgen import cli
from tools.docgen.examples import NEEDS, SHELL, doc_pages, read_blocks
from tools.docgen.pages import run_examples

PAGES = [p for p in doc_pages(REPO) if p != TOUR and runnable(p)]
# Commands no page can run on the demo mirror, and why (each still has its reference section).
NOT_RUN = {
    "vlmtrain export-moe-llava": "needs a stage-3 run (a minute of CPU): tests/train/test_stage3.py writes the same "
                                 "checkpoint (save_moellava_checkpoint), tests/train/test_train_rundir.py runs the command",
}


def _rel(p):
    return p.relative_to(REPO).as_posix()


def test_every_block_says_what_it_is_and_every_marker_is_known():
    problems = []
    for page in doc_pages(REPO):
        for b in read_blocks(page):
            if not b.lang:
                problems.append(f"{b.where()}: a fenced block without a language (text, sh, console, toml, ...)")
            m = b.marker
            if not m:
                continue
            if not b.is_shell:
                problems.append(f"{b.where()}: an example marker on a {b.lang} block")
            ok = (m == "help-text" or b.needs and set(b.needs) <= set(NEEDS)
                  or m.startswith("exit ") and m[5:].isdigit()
                  or m.startswith("covered by ") and (REPO / m.split(" ", 2)[2].split()[0]).exists())
            if not ok:
                problems.append(f"{b.where()}: unknown marker {m!r} (needs {'|'.join(NEEDS)}, help-text, exit N, "
                                "covered by PATH)")
    assert problems == []


def test_the_tour_runs_from_an_empty_root(workspace):
    assert TOUR.is_file()
    assert workspace.tour, "docs/tour.md has no runnable example"
    failed = [r.error for r in workspace.tour if r.error]
    assert not failed, failed[0]
    assert len(workspace.tour) == len(runnable(TOUR))


@pytest.mark.parametrize("page", PAGES, ids=[_rel(p) for p in PAGES])
def test_page_examples_run_on_the_demo_mirror(workspace, page):
    shell = workspace.sandbox(_rel(page).replace("/", "_"))
    for block in runnable(page):
        res = run_block(shell, block)
        assert not res.error, res.error


def test_every_command_is_run_by_an_example_on_some_page():
    shown = run_examples(set())
    data, train = cli.apps()
    missing = [c.name for root in (data, train) for c in cli.leaves(root)
               if c.name not in shown and c.name not in NOT_RUN]
    assert missing == [], f"no doc example runs {missing}; add one (see docs/tour.md) or say why in NOT_RUN"


def test_shell_languages_are_the_ones_the_runner_knows():
    assert set(SHELL) == {"sh", "bash", "shell", "console"}
