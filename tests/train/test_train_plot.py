"""Issue 13 item 11: `vlmtrain plot` with an --out it cannot write to is a clear error (exit 2), never a traceback."""
from __future__ import annotations

import json

import pytest

from train_helpers import run_vlmtrain


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    rows = [{"step": s, "loss": 6.0 - 0.1 * s, "learning_rate": 1e-3, "tokens_per_s": 100.0 + s} for s in range(1, 6)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_out_in_a_missing_folder_makes_it_and_a_file_in_the_way_is_said(run_dir, tmp_path):
    r = run_vlmtrain("plot", run_dir, "--out", tmp_path / "missing" / "dir" / "x.png")
    assert r.code == 0, r.err  # as the help's `--out curves/tiny.png` example needs
    assert (tmp_path / "missing" / "dir" / "x.png").stat().st_size > 0
    (tmp_path / "afile").write_text("")
    r = run_vlmtrain("plot", run_dir, "--out", tmp_path / "afile" / "x.png")
    assert r.code == 2 and "Traceback" not in r.err and f"cannot make the folder {tmp_path / 'afile'}" in r.err


def test_out_with_an_unknown_extension(run_dir, tmp_path):
    r = run_vlmtrain("plot", run_dir, "--out", tmp_path / "x.txt")
    assert r.code == 2 and "cannot write a 'txt' picture" in r.err and ".png" in r.err
    assert not (tmp_path / "x.txt").exists()


def test_out_a_folder_gets_the_default_name_and_other_formats_work(run_dir, tmp_path):
    r = run_vlmtrain("plot", run_dir, "--out", tmp_path)
    assert r.code == 0 and (tmp_path / "curves.png").stat().st_size > 1000
    r = run_vlmtrain("plot", run_dir, "--out", tmp_path / "c.pdf")
    assert r.code == 0 and (tmp_path / "c.pdf").read_bytes()[:4] == b"%PDF"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # written atomically, nothing left


def test_run_dir_without_metrics(tmp_path):
    r = run_vlmtrain("plot", tmp_path / "nope")
    assert r.code == 2 and "no metrics.jsonl" in r.err
