"""rank_wait.rank_timeout on the texts torch.distributed and gloo end a wait with, as they reach
Python (the multi-node tests meet them in real runs, but which of gloo's two texts a stalled collective
surfaces is a race between its threads: each is checked here on its own)."""
from __future__ import annotations

import json

import pytest

from vlmdata.errors import OperationError
from vlmtrain.train.rank_wait import rank_timeout

RESUME = "vlmtrain run cfg.yaml --resume"

COLLECTIVE = [
    "[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 15000ms for recv "
    "operation to complete",
    "[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:137] Timed out waiting 15000ms for send "
    "operation to complete",
    # the other operation in flight when the first one timed out (CI, a ZeRO-3 gather)
    "Application timeout caused pair closure",
]


def _wrapped(text: str) -> BaseException:
    """As the Trainer raises it: the torch error as the cause of another one."""
    try:
        try:
            raise RuntimeError(text)
        except RuntimeError as inner:
            raise ValueError("while gathering parameters") from inner
    except ValueError as outer:
        return outer


@pytest.mark.parametrize("text", COLLECTIVE)
def test_a_collective_that_timed_out_is_said_as_a_wait_for_another_rank(text, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    err = rank_timeout(_wrapped(text), 15, tmp_path, RESUME)
    assert isinstance(err, OperationError) and err.exit_code == 1
    assert err.what == "rank 0 waited ddp_timeout (15 s) for another rank that did not join a collective"
    assert "ddp_timeout" in err.hint and RESUME not in err.hint  # no checkpoint yet: nothing to resume from


def test_the_collective_message_gives_the_resume_command_when_a_checkpoint_is_complete(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    (tmp_path / "checkpoint-8").mkdir()  # cut short: no trainer_state.json
    err = rank_timeout(RuntimeError(COLLECTIVE[2]), 30, tmp_path, RESUME)
    assert err.what.startswith("rank 1 waited ddp_timeout (30 s)")
    assert f"continue from checkpoint-4 with:\n  {RESUME}" in err.hint


def test_the_start_and_the_connect_waits(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    joined = rank_timeout(RuntimeError("Timed out after 3 seconds waiting for clients. 1/2 clients joined."),
                          3, tmp_path, RESUME)
    assert joined.what == "rank 0: only 1 of 2 ranks joined the run within ddp_timeout (3 s)"
    monkeypatch.setenv("RANK", "1")
    reach = rank_timeout(RuntimeError("The client socket has timed out after 3000ms while trying to connect to "
                                      "(10.0.0.7, 29511)."), 3, tmp_path, RESUME)
    assert reach.what == "rank 1 could not reach rank 0 at 10.0.0.7:29511 within ddp_timeout (3 s)"
    assert "MASTER_ADDR (10.0.0.7)" in reach.hint


@pytest.mark.parametrize("text", ["Connection closed by peer [10.0.0.7]:29511", "CUDA out of memory",
                                  "Timed out waiting for the data loader"])
def test_other_errors_are_left_to_themselves(text, tmp_path):
    assert rank_timeout(_wrapped(text), 15, tmp_path, RESUME) is None
