"""NaN / inf step losses: counted on the device in place of the Trainer's NaN filter (vlmtrain.train.nonfinite)."""
from __future__ import annotations

import json
import math

import torch

from train_helpers import read_metrics


def test_nonfinite_losses_are_zeroed_and_counted():
    from vlmtrain.train.nonfinite import NonFiniteLosses

    c = NonFiniteLosses()
    assert c.add(torch.tensor(1.5)).item() == 1.5
    assert c.add(torch.tensor(float("nan"))).item() == 0.0
    assert c.add(torch.tensor(float("-inf"))).item() == 0.0
    assert c.flush("cpu") == 2
    assert c.flush("cpu") == 0  # reset at each log row


def test_a_diverged_run_says_so(instruct_blend, make_config, vlmtrain, tmp_path, caplog):
    # a learning rate no model survives: after the first update the weights overflow and the losses are NaN
    r = vlmtrain("run", make_config(instruct_blend, "nan", max_steps=3, learning_rate=1e38))
    assert r.code == 0, r.err
    rows = read_metrics(tmp_path / "nan")
    assert rows[1]["nonfinite_steps"] == 0 and math.isfinite(rows[1]["loss"])
    assert rows[3]["nonfinite_steps"] == 1 and math.isnan(rows[3]["loss"])  # (not a mean of the others)
    assert "nonfinite_steps" not in r.err.splitlines()[0]  # the console says it only when there were some
    assert "micro-batch losses were NaN or inf up to step 3" in caplog.text and "Lower learning_rate" in caplog.text
    summary = [json.loads(line) for line in (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()][-1]
    assert summary["nonfinite_steps"] >= 1 and math.isnan(summary["train_loss"])


def test_a_resume_inside_a_logging_window_keeps_its_nonfinite_count(instruct_blend, make_config, vlmtrain, tmp_path,
                                                                    monkeypatch):
    """Found in review: the count of NaN / inf losses was not saved with the logging window, so with
    logging_steps > 1 a run resumed inside a window logged a finite loss where the uninterrupted run
    logged NaN, and its summary's count left out the steps before the checkpoint."""
    over = dict(max_steps=4, logging_steps=4, save_steps=100, learning_rate=1e38)
    assert vlmtrain("run", make_config(instruct_blend, "whole", **over)).code == 0
    cfg = make_config(instruct_blend, "cut", **over)
    monkeypatch.setenv("VLMTRAIN_SIGTERM_AT_STEP", "3")
    vlmtrain("run", cfg)
    assert (tmp_path / "cut" / "checkpoint-3").is_dir()
    monkeypatch.delenv("VLMTRAIN_SIGTERM_AT_STEP")
    r = vlmtrain("run", cfg, "--resume")
    assert r.code == 0, r.err
    whole, cut = read_metrics(tmp_path / "whole")[4], read_metrics(tmp_path / "cut")[4]
    assert whole["nonfinite_steps"] >= 2 and math.isnan(whole["loss"])  # (steps before the cut had some)
    assert cut["nonfinite_steps"] == whole["nonfinite_steps"] and math.isnan(cut["loss"])
    summaries = [[json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()][-1]
                 for name in ("whole", "cut")]
    assert summaries[1]["nonfinite_steps"] == summaries[0]["nonfinite_steps"]
