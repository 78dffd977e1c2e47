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


def test_mm_projector_lr_applies_under_deepspeed(instruct_blend, make_config, tmp_path):
    """LLaVA's mm_projector_lr (its LoRA recipe: 2e-5 for the projector, 2e-4 for the rest) under ZeRO-2: the
    projector moves at its rate, the LLM at learning_rate. It used to be dropped without a word under DeepSpeed."""
    import torch
    from safetensors.torch import load_file

    runs = {"proj": 1e-2, "same": 1e-12}
    for name, proj_lr in runs.items():
        cfg = make_config(instruct_blend, name, deepspeed=str(REPO / "configs/deepspeed/zero2.json"), max_steps=2,
                          learning_rate=1e-12, mm_projector_lr=proj_lr)
        env = dict(os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
        p = subprocess.run([sys.executable, "-c", PRELUDE, "run", str(cfg)], env=env, capture_output=True, text=True,
                           timeout=240, cwd=REPO)
        assert p.returncode == 0, p.stderr[-3000:]
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in runs)  # same seed: same start
    moved = {k: (a[k].float() - b[k].float()).abs().max().item() for k in a}
    projector = [v for k, v in moved.items() if "multi_modal_projector" in k]
    llm = [v for k, v in moved.items() if "language_model" in k]
    assert projector and min(projector) > 1e-4, moved
    assert llm and max(llm) < 1e-8, moved
    _logs_the_llms_rate(tmp_path / "proj")


def _logs_the_llms_rate(run_dir) -> None:
    """The logged learning_rate is the LLM's (1e-12 here), not the projector's (1e-2): found in review,
    the Trainer logged the first parameter group's, which is the projector's."""
    from train_helpers import read_metrics

    rates = [row["learning_rate"] for row in read_metrics(run_dir).values()]
    assert rates and max(rates) <= 1e-12, rates


def test_mm_projector_lr_applies_without_deepspeed(instruct_blend, make_config, tmp_path):
    from safetensors.torch import load_file

    from train_helpers import run_vlmtrain

    runs = {"proj": 1e-2, "same": 1e-12}
    for name, proj_lr in runs.items():
        r = run_vlmtrain("run", make_config(instruct_blend, name, max_steps=2, learning_rate=1e-12,
                                            mm_projector_lr=proj_lr))
        assert r.code == 0, r.err
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in runs)
    moved = {k: (a[k].float() - b[k].float()).abs().max().item() for k in a}
    assert min(v for k, v in moved.items() if "multi_modal_projector" in k) > 1e-4, moved
    assert max(v for k, v in moved.items() if "language_model" in k) < 1e-8, moved
    _logs_the_llms_rate(tmp_path / "proj")


def test_zero2_in_one_process_that_no_launcher_started(instruct_blend, make_config, tmp_path):
    """`vlmtrain run` with a DeepSpeed config and num_gpus 1 trains in this process, with no launcher's
    RANK / MASTER_* variables (found in review: DeepSpeed then looked for MPI, mpi4py, and the run failed
    after the model was built, a traceback)."""
    cfg = make_config(instruct_blend, "alone", deepspeed=str(REPO / "configs/deepspeed/zero2.json"), max_steps=2)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
                                                             "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    p = subprocess.run([sys.executable, "-c", PRELUDE, "run", str(cfg)], env=env, capture_output=True, text=True,
                       timeout=240, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(read_metrics(tmp_path / "alone")) == [1, 2]
