"""`make demo` end to end, at a smaller size: fetch from the bundled mirror, layout check, blends, the three
MoE-LLaVA stages in one command, the plot and a generated answer. The README's first command runs exactly
this module (`python -m vlmdata.demo`), so it cannot break without this test failing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_every_step_and_answers(tmp_path):
    out = tmp_path / "demo"
    p = subprocess.run([sys.executable, "-m", "vlmdata.demo", "--out", str(out), "--steps", "3", "--per-set", "4"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    assert "answer: '" in p.stdout and "stage 3 loss" in p.stdout
    for i in (1, 2, 3):
        done = json.loads((out / "runs" / f"stage{i}" / "vlmtrain_done.json").read_text())
        assert done["global_step"] == 3 and done["config"]["stage"] == i
    s3 = json.loads((out / "runs" / "stage3" / "config.json").read_text())
    assert s3["moe"]["num_experts"] == [4, 4] and (out / "runs" / "stage3" / "curves.png").is_file()
