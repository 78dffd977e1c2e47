"""Issue 13 items 7 and 8: Ctrl-C saves a checkpoint like SIGTERM, a second Ctrl-C stops at once, and the printed
command continues the same run (every --set kept); a checkpoint cut short is not resumed from."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from train_helpers import REPO, read_metrics, run_vlmtrain


def _continue_command(err: str) -> list[str]:
    lines = err.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("Continue"))
    return shlex.split(lines[i + 1].strip())


def test_ctrl_c_saves_a_checkpoint_and_prints_the_full_command(instruct_blend, make_config, tmp_path):
    cfg = make_config(instruct_blend, "base", max_steps=3)
    out = tmp_path / "with space"
    sets = [f"output_dir={out}", "max_steps=6", "learning_rate=2e-3"]
    args = [a for s in sets for a in ("--set", s)]
    r = run_vlmtrain("run", cfg, *args, env={"VLMTRAIN_SIGNAL_AT_STEP": "3:INT"})
    assert r.code == 130, r.err
    assert "stopped by Ctrl-C (SIGINT) after step 3" in r.err and (out / "checkpoint-3" / "trainer_state.json").is_file()
    cmd = _continue_command(r.err)
    assert cmd == ["vlmtrain", "run", str(cfg), *args, "--resume"]
    resumed = run_vlmtrain(*cmd[1:])
    assert resumed.code == 0, resumed.err
    assert sorted(read_metrics(out)) == [1, 2, 3, 4, 5, 6] and (out / "model.safetensors").is_file()
    assert not (tmp_path / "base").exists()  # the overrides were kept: no other run was started


def test_a_second_ctrl_c_stops_at_once(instruct_blend, make_config, tmp_path):
    cfg = make_config(instruct_blend, "twice", max_steps=6)
    r = run_vlmtrain("run", cfg, env={"VLMTRAIN_SIGNAL_AT_STEP": "3:INT+INT"})
    assert r.code == 130, r.err
    assert not list((tmp_path / "twice").glob("checkpoint-*")) and not (tmp_path / "twice" / "model.safetensors").exists()
    assert "before any checkpoint was saved; nothing to resume" in r.err
    assert f"vlmtrain run {cfg}\n" in r.err + "\n" and "--resume" not in r.err
    # With an earlier checkpoint on disk, it names it and the command that continues from it.
    r = run_vlmtrain("run", cfg, "--set", "save_steps=2", "--set", "save_total_limit=5",
                     env={"VLMTRAIN_SIGNAL_AT_STEP": "3:INT+INT"})
    assert r.code == 130, r.err
    assert f"the last checkpoint is {tmp_path / 'twice' / 'checkpoint-2'}" in r.err
    assert _continue_command(r.err)[-5:] == ["--set", "save_steps=2", "--set", "save_total_limit=5", "--resume"]


def test_sigterm_message_keeps_the_overrides_too(instruct_blend, make_config):
    cfg = make_config(instruct_blend, "term", max_steps=6)
    r = run_vlmtrain("run", cfg, "--set", "seed=3", env={"VLMTRAIN_SIGTERM_AT_STEP": "2"})
    assert r.code == 143 and "stopped by SIGTERM after step 2" in r.err
    assert _continue_command(r.err) == ["vlmtrain", "run", str(cfg), "--set", "seed=3", "--resume"]


def test_real_ctrl_c_to_the_process_group_with_dataloader_workers(instruct_blend, make_config, tmp_path):
    """As a terminal does it: SIGINT to the whole process group (the DataLoader workers too)."""
    cfg = make_config(instruct_blend, "tty", max_steps=400, dataloader_num_workers=2, save_steps=1000)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "vlmtrain.cli", "run", str(cfg)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    metrics = tmp_path / "tty" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err[-3000:]
    ckpts = sorted((tmp_path / "tty").glob("checkpoint-*"))
    assert len(ckpts) == 1 and (ckpts[0] / "trainer_state.json").is_file(), err[-3000:]
    assert "Traceback" not in err and f"checkpoint saved in {ckpts[0]}" in err
    assert _continue_command(err) == ["vlmtrain", "run", str(cfg), "--resume"]


def test_a_checkpoint_cut_short_is_skipped_on_resume(instruct_blend, make_config, tmp_path):
    cfg = make_config(instruct_blend, "cut", max_steps=4, save_steps=2, save_total_limit=5)
    assert run_vlmtrain("run", cfg).code == 0
    (tmp_path / "cut" / "checkpoint-4" / "trainer_state.json").unlink()  # as if killed while writing it
    r = run_vlmtrain("run", cfg, "--set", "max_steps=5", "--resume")
    assert r.code == 0, r.err
    from vlmtrain.train.rundir import last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path / "cut").name == "checkpoint-5"


def test_last_complete_checkpoint_orders_by_step(tmp_path, caplog):
    from vlmtrain.train.rundir import last_complete_checkpoint

    for n, complete in ((9, True), (10, True), (12, False)):
        d = tmp_path / f"checkpoint-{n}"
        d.mkdir()
        if complete:
            (d / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    assert any("checkpoint-12 is not complete" in r.getMessage() for r in caplog.records)
    assert last_complete_checkpoint(tmp_path / "none") is None
