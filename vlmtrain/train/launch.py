"""Several GPUs or nodes: re-launch ``vlmtrain run`` under the ``deepspeed`` or ``torchrun`` launcher.

``vlmtrain run`` is one command everywhere. With ``num_gpus: 1`` and no hostfile it trains in the
process that was started. Otherwise it starts the launcher with the same arguments and waits;
the launched processes see ``LOCAL_RANK`` / ``RANK`` and train instead of launching again.

- ``deepspeed`` (the default when the config names a DeepSpeed JSON or a hostfile): multi-node by
  hostfile (``worker-1 slots=8`` lines; the launcher starts the other nodes over ssh/pdsh); or,
  with ``NODE_RANK`` and ``MASTER_ADDR`` in the environment, every node runs the command itself
  (DeepSpeed's ``--no_ssh``: SLURM, Kubernetes, no ssh between nodes), the hostfile naming the nodes.
- ``torchrun``: one node, or several when every node runs the command with ``MASTER_ADDR`` and
  ``NODE_RANK`` set (the usual SLURM / Kubernetes pattern).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from vlmtrain.config import ConfigError, TrainConfig


def under_launcher() -> bool:
    return "LOCAL_RANK" in os.environ or "RANK" in os.environ


def needs_launch(cfg: TrainConfig) -> bool:
    return (cfg.num_gpus > 1 or cfg.num_nodes > 1 or bool(cfg.hostfile)) and not under_launcher()


def launcher_for(cfg: TrainConfig) -> str:
    if cfg.launcher != "auto":
        return cfg.launcher
    return "deepspeed" if (cfg.deepspeed or cfg.hostfile) else "torchrun"


def launch_command(cfg: TrainConfig, run_args: list[str], env: dict[str, str] | None = None) -> list[str]:
    """The launcher command line that runs ``vlmtrain <run_args>`` on every GPU."""
    env = dict(os.environ if env is None else env)
    module = ["vlmtrain.cli", *run_args]
    kind = launcher_for(cfg)
    if kind == "deepspeed":
        cmd = ["deepspeed"]
        if cfg.hostfile:
            cmd += ["--hostfile", cfg.hostfile]
        if cfg.num_nodes > 1 or cfg.hostfile:
            cmd += ["--num_nodes", str(cfg.num_nodes)]
        if cfg.num_nodes > 1 and not cfg.hostfile:
            raise ConfigError(f"the deepspeed launcher over {cfg.num_nodes} nodes needs a `hostfile` naming them",
                              hint="write one line per node (`node-1 slots=8`), or use `launcher: torchrun`")
        if cfg.num_nodes > 1 and "NODE_RANK" in env and "MASTER_ADDR" in env:
            # each node starts its own ranks: no ssh from the first node to the others
            cmd += ["--no_ssh", "--node_rank", env["NODE_RANK"], "--master_addr", env["MASTER_ADDR"]]
        cmd += ["--num_gpus", str(cfg.num_gpus), "--master_port", str(cfg.master_port), "--no_local_rank",
                "--module", *module]
        return cmd
    cmd = ["torchrun", "--nproc_per_node", str(cfg.num_gpus), "--nnodes", str(cfg.num_nodes)]
    if cfg.num_nodes > 1:
        missing = [k for k in ("MASTER_ADDR", "NODE_RANK") if k not in env]
        if missing:
            raise ConfigError(f"torchrun over {cfg.num_nodes} nodes needs {' and '.join(missing)} in the environment",
                              hint="run the same command on every node with MASTER_ADDR and NODE_RANK set, "
                                   "or give a `hostfile` and use `launcher: deepspeed`")
        cmd += ["--node_rank", env["NODE_RANK"], "--master_addr", env["MASTER_ADDR"]]
    cmd += ["--master_port", str(cfg.master_port), "-m", *module]
    return cmd


def launched_rank() -> bool:
    """Whether this process is one of several ranks a launcher started (torchrun / deepspeed set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def join_process_group(cfg: TrainConfig) -> None:
    """A launched rank without a GPU joins its process group now, with ``ddp_timeout``. The Trainer passes the
    timeout when it sets up GPUs but not on the CPU (transformers 5.x, TrainingArguments' CPU branch), where
    a rank would wait torch's 30 minutes for a rank that died or stalled; once a group exists, the Trainer
    and DeepSpeed use it."""
    import torch

    if not launched_rank() or torch.cuda.is_available() or torch.distributed.is_initialized():
        return
    from datetime import timedelta

    torch.distributed.init_process_group(backend="gloo", timeout=timedelta(seconds=cfg.ddp_timeout))


def world_of_one(cfg: TrainConfig) -> None:
    """A run with a DeepSpeed config in one process that no launcher started (``num_gpus: 1``): the
    environment a launcher gives a world of one. Without it DeepSpeed looks for MPI to learn its rank
    (mpi4py, no dependency of ours) and fails, after the model is built."""
    if not cfg.deepspeed or under_launcher():
        return
    import socket

    with socket.socket() as s:  # (a port free now, for the group of one this process makes)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        os.environ.setdefault(key, value)


def relaunch(cfg: TrainConfig, run_args: list[str]) -> int:
    cmd = launch_command(cfg, run_args)
    if shutil.which(cmd[0]) is None:
        # The launcher sits next to this interpreter in a venv that is not on PATH.
        candidate = os.path.join(os.path.dirname(sys.executable), cmd[0])
        if not os.path.exists(candidate):
            raise ConfigError(f"`{cmd[0]}` is not installed or not on PATH", hint="pip install deepspeed (or torch for torchrun)")
        cmd[0] = candidate
    print("launching: " + " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.call(cmd)
