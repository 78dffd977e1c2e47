"""``loss_mean``: ``tokens`` (the default: every supervised token of the global batch weighs the same, transformers
5's ``num_items_in_batch``) or ``micro_batch`` (the original repos' weighting under transformers < 4.46: each
micro-batch's token mean, divided by the accumulation steps, averaged over the ranks). Checked on one step of two
accumulated micro-batches of one sample each, against the two samples' own losses, with a learning rate too
small to move the weights between them."""
from __future__ import annotations

import pytest

from train_helpers import read_metrics, run_vlmtrain

ONE_SAMPLE = dict(per_device_train_batch_size=1, learning_rate=1e-12, max_grad_norm=0.0)


@pytest.mark.usefixtures("one_thread")
def test_micro_batch_weighs_each_micro_batch_alike_and_tokens_each_token(instruct_blend, make_config):
    alone = make_config(instruct_blend, "alone", max_steps=2, **ONE_SAMPLE)
    assert run_vlmtrain("run", alone).code == 0
    rows = read_metrics(alone.parent / "alone")
    first, second = rows[1]["loss"], rows[2]["loss"]  # each sample's mean over its supervised tokens
    assert abs(first - second) > 0.01  # (else the two weightings could not be told apart)
    got = {}
    for mode in ("micro_batch", "tokens"):
        cfg = make_config(instruct_blend, mode, max_steps=1, gradient_accumulation_steps=2, loss_mean=mode, **ONE_SAMPLE)
        r = run_vlmtrain("run", cfg)
        assert r.code == 0, r.err
        got[mode] = read_metrics(cfg.parent / mode)[1]["loss"]
    assert got["micro_batch"] == pytest.approx((first + second) / 2, abs=1e-5)
    # by tokens the longer answer weighs more: the mean lies between the two, but not at their midpoint
    assert min(first, second) < got["tokens"] < max(first, second)
    assert abs(got["tokens"] - (first + second) / 2) > 1e-3


def test_loss_mean_takes_one_of_two_values(instruct_blend, make_config):
    r = run_vlmtrain("run", make_config(instruct_blend, "bad", loss_mean="sample"), "--dry-run")
    assert r.code == 2 and "loss_mean" in r.err and "micro_batch" in r.err


def test_the_dry_run_says_how_the_loss_is_weighted(instruct_blend, make_config):
    r = run_vlmtrain("run", make_config(instruct_blend, "mb", loss_mean="micro_batch"), "--dry-run")
    assert r.code == 0 and "loss: each micro-batch's mean, averaged (loss_mean: micro_batch" in r.out, r.err
    r = run_vlmtrain("run", make_config(instruct_blend, "tk"), "--dry-run", "--json")
    assert r.code == 0 and '"loss_mean": "tokens"' in r.out
