"""A run stopped by its disk (vlmtrain.train.diskfull): one message with where, how much is free, the last
complete checkpoint and the command that continues, whichever library's write failed; never a traceback.

A full disk cannot be made here without root: the process's file size limit (RLIMIT_FSIZE) stands in,
and makes the checkpoint's writers fail as a full disk does (safetensors with an os error, PyTorch's
zip writer with a short write)."""
from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
from train_helpers import REPO, run_vlmtrain

from tests.limits import with_file_size_limit
from vlmtrain.train.diskfull import disk_failure, failed_write


def _run_with_size_limit(limit: int, cfg, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(with_file_size_limit(limit, [sys.executable, "-m", "vlmtrain.cli", "run", str(cfg)]),
                          cwd=cwd, env=env, text=True, capture_output=True, timeout=300)


@pytest.mark.parametrize("limit, library", [(256 << 10, "SafetensorError"), (800 << 10, "unexpected pos")],
                         ids=["weights", "optimizer"])
def test_a_checkpoint_the_disk_refuses_is_said_plainly_and_the_run_starts_again(limit, library, instruct_blend,
                                                                                 make_config, tmp_path):
    # The tiny model's weights are ~630 kB and its optimizer state ~1 MB: 256 kB stops the first
    # (safetensors), 800 kB the second (PyTorch's writer).
    cfg = make_config(instruct_blend, "full", max_steps=4, save_steps=2)
    r = _run_with_size_limit(limit, cfg, tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert f"while the run wrote into {tmp_path / 'full'} (" in r.stderr and library in r.stderr, r.stderr[-3000:]
    assert f"then start again with:\n  vlmtrain run {cfg}\n" in r.stderr + "\n"
    again = run_vlmtrain("run", str(cfg))  # the checkpoint cut short is skipped, the run made whole
    assert again.code == 0, again.err
    assert (tmp_path / "full" / "checkpoint-4" / "trainer_state.json").is_file()  # (the older one rotated out)
    assert (tmp_path / "full" / "model.safetensors").is_file()


def test_with_a_complete_checkpoint_it_names_it_and_the_command_that_continues(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (out / "checkpoint-4").mkdir()  # cut short
    e = OSError(errno.ENOSPC, "No space left on device")
    err = disk_failure(e, out, "vlmtrain run a.yaml --resume", "vlmtrain run a.yaml")
    assert err is not None and err.exit_code == 1
    assert err.what.startswith(f"no space left on the device while the run wrote into {out} (")
    assert "free some space" in err.hint and "continue from checkpoint-2" in err.hint
    assert err.hint.endswith("\n  vlmtrain run a.yaml --resume")


def test_a_final_save_cut_short_is_named_for_removal_since_it_would_block_the_start(tmp_path, make_config,
                                                                                   instruct_blend):
    cfg_path = make_config(instruct_blend, "cut", max_steps=2)
    out = tmp_path / "cut"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"half")  # what a full disk left of the final weights
    refused = run_vlmtrain("run", str(cfg_path))
    assert refused.code == 2 and "holds a finished run" in refused.err  # why the message must say it
    err = disk_failure(OSError(errno.ENOSPC, "No space left on device"), out, "r", f"vlmtrain run {cfg_path}")
    assert f"delete {out / 'model.safetensors'} (the final save, cut short)" in err.hint
    (out / "model.safetensors").unlink()
    r = run_vlmtrain("run", str(cfg_path))  # what the hint says, done: the run starts and finishes
    assert r.code == 0, r.err


@pytest.mark.parametrize("error, code", [
    (OSError(errno.EDQUOT, "Disk quota exceeded"), errno.EDQUOT),
    (RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"), errno.ENOSPC),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 791104 vs 790996"), None),
    (RuntimeError("I/O error: Read-only file system (os error 30)"), errno.EROFS),
])
def test_the_libraries_ways_of_saying_a_write_failed(error, code):
    assert failed_write(error) == (True, code)
    wrapped = RuntimeError("saving the checkpoint")
    wrapped.__cause__ = error
    assert failed_write(wrapped) == (True, code)  # (through a chain as well)


def test_a_read_only_file_system_is_not_told_to_free_space(tmp_path):
    err = disk_failure(OSError(errno.EROFS, "Read-only file system"), tmp_path, "r", "a")
    assert err.what.startswith("read-only file system while the run wrote into")
    assert "writable file system" in err.hint and "free some space" not in err.hint


def test_other_errors_are_not_taken_for_a_full_disk(tmp_path):
    for e in (RuntimeError("CUDA out of memory"), OSError(errno.ENOENT, "No such file or directory"), ValueError("nan")):
        assert failed_write(e) == (False, None)
        assert disk_failure(e, tmp_path, "r", "a") is None
