"""A folder replaced by ``atomic.replace_dir`` when the process is killed between its two renames:
the old tree is under ``.tmp-<name>.old.<owner>`` and no folder has the name. The next run's
``owned_temp_dir_beside`` puts it back instead of deleting it (found in review: it removed the
complete previous blend as a dead run's leftover)."""
from __future__ import annotations

import subprocess
import sys

from vlmdata import atomic


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_old_tree_of_a_run_killed_between_the_renames_is_put_back(tmp_path):
    final = tmp_path / "llava-665k"
    old = tmp_path / f".tmp-llava-665k.old.{_dead_pid()}-{atomic.machine_tag()}"
    (old / "data").mkdir(parents=True)
    (old / "data" / "shard-0.arrow").write_bytes(b"the previous blend")
    tmp = atomic.owned_temp_dir_beside(final)
    assert (final / "data" / "shard-0.arrow").read_bytes() == b"the previous blend"
    assert not old.exists() and tmp.is_dir() and tmp.parent == tmp_path


def test_with_the_name_taken_an_old_tree_is_a_leftover_and_removed(tmp_path):
    final = tmp_path / "llava-665k"
    (final / "data").mkdir(parents=True)
    old = tmp_path / f".tmp-llava-665k.old.{_dead_pid()}-{atomic.machine_tag()}"
    (old / "data").mkdir(parents=True)
    atomic.owned_temp_dir_beside(final)
    assert not old.exists() and (final / "data").is_dir()


def test_a_live_runs_old_tree_is_left_alone(tmp_path):
    final = tmp_path / "llava-665k"
    old = tmp_path / f".tmp-llava-665k.old.1-{atomic.machine_tag()}"  # (pid 1 always runs)
    old.mkdir()
    atomic.owned_temp_dir_beside(final)
    assert old.is_dir() and not final.exists()
