"""A ZeRO-2 run through `vlmtrain run` in one CPU process (gloo), the way the launcher would start a rank."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

from train_helpers import REPO, read_metrics

# DeepSpeed JIT-compiles a shared-memory comm op on its first CPU start (35-45 s with g++); the tests
# skip it (environment.md §2): the op only speeds up intra-node CPU collectives.
PRELUDE = """
import importlib, sys
importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
from vlmtrain.cli import main
sys.argv = ["vlmtrain"] + sys.argv[1:]
main()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_zero2_single_process_cpu(instruct_blend, make_config, tmp_path):
    cfg = make_config(instruct_blend, "zero2", deepspeed=str(REPO / "configs/deepspeed/zero2.json"), max_steps=3,
                      save_steps=2)
    env = dict(os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    p = subprocess.run([sys.executable, "-c", PRELUDE, "run", str(cfg)], env=env, capture_output=True, text=True,
                       timeout=240, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = read_metrics(tmp_path / "zero2")
    assert sorted(rows) == [1, 2, 3] and all(r["loss"] > 0 for r in rows.values())
    ckpt = tmp_path / "zero2" / "checkpoint-3"  # the last one (save_total_limit: 1)
    assert any(d.name.startswith("global_step") for d in ckpt.iterdir())  # DeepSpeed's own optimizer shards
    assert (tmp_path / "zero2" / "model.safetensors").is_file()
