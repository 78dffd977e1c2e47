"""docs/tour.md, followed in a checkout: what its commands write there is ignored by git (a new user's
`git status` listed data/, tiny-data/ and the export as untracked), and its opening list of the demo's
datasets names every one the demo replaces (SAM was left out)."""
from __future__ import annotations

import re
import subprocess

from tests.conftest import run_vlmdata
from tests.docs.conftest import LINKED, REPO, TOUR

# How the tour's opening sentence names each demo dataset; a dataset new to the demo fails below until named here.
PROSE = {"coco": "COCO", "gqa": "GQA", "ocr_vqa": "OCR-VQA", "textvqa": "TextVQA", "vg": "Visual Genome",
         "sam": "SAM", "llava_pretrain": "LLaVA-Pretrain", "llava_instruct": "mix665k JSON"}
WORDS = {"seven": 7, "eight": 8, "nine": 9, "ten": 10}


def test_what_the_tour_writes_is_ignored(workspace):
    assert workspace.tour and not any(b.error for b in workspace.tour), "the tour did not run through (test_examples says why)"
    box = workspace.base / "tour"
    made = sorted(p.name + ("/" if p.is_dir() else "") for p in box.iterdir()
                  if p.name not in (*LINKED, "demo-out", "_abs"))  # (the sandbox's own)
    assert {"data/", "tiny-data/", "llava_v1_5_mix665k.checked.json"} <= set(made)
    r = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=REPO, input="\n".join(made),
                       capture_output=True, text=True, timeout=30)
    ignored = set(r.stdout.split())
    assert [m for m in made if m not in ignored] == []


def test_the_tour_names_every_demo_dataset(workspace):
    r = run_vlmdata("list", env={"VLMDATA_MANIFESTS": str(workspace.demo.manifests)})
    assert r.code == 0, r.err
    demo = {line.split()[0] for line in r.out.splitlines() if line.rstrip().endswith("(demo)")}
    assert demo == set(PROSE)
    text = TOUR.read_text()
    opening = text.split("\n\n", 2)[1]
    assert [k for k, name in PROSE.items() if name not in opening] == []
    count = re.search(r"The demo replaces (\w+) datasets", text)
    assert count and WORDS[count.group(1)] == len(demo)
