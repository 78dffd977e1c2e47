"""A rank that waited ``ddp_timeout`` seconds for the others, said as such instead of a traceback from
deep inside torch.distributed.

Two waits end this way in a Python exception: the start (the rendezvous: rank 0's store says "Timed
out after N seconds waiting for clients. K/W clients joined", another rank's "The client socket has
timed out ... while trying to connect to (ADDR, PORT)": a node that never started, or cannot reach
``MASTER_ADDR:master_port``) and, with gloo (CPU runs), a collective ("Timed out waiting Nms for recv
operation to complete": another rank died, stalled or is still busy elsewhere). The gloo operation that
times out first closes every connection of its group with "Application timeout caused pair closure", and
the operation this rank's Python waits on may be another one in flight beside it (ZeRO-3 gathers several
parameters at once), which then fails with that text instead: the same wait (met in CI). NCCL's
watchdog ends the process itself on a collective's timeout, before Python could say anything; its own
log line names the operation.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from vlmdata.errors import OperationError
from vlmtrain.train.diskfull import exception_chain

_START = re.compile(r"waiting for clients\. (\d+)/(\d+) clients joined")
_CONNECT = re.compile(r"timed out after \S+ while trying to connect to \((.+?), (\d+)\)")
_COLLECTIVE = re.compile(r"Timed out waiting \d+ms for (?:recv|send) operation|Application timeout caused pair closure")


def rank_timeout(e: BaseException, ddp_timeout: int, output_dir: str | Path, resume: str) -> OperationError | None:
    """The error to show for ``e`` when this rank gave up waiting for the others, else None.
    ``resume``: the command that continues from the last checkpoint."""
    from vlmtrain.train.rundir import last_complete_checkpoint

    rank = os.environ.get("RANK", "?")
    raise_it = f"raise ddp_timeout (now {ddp_timeout} s; --set ddp_timeout=SECONDS)"
    for x in exception_chain(e):
        said = str(x)
        if _COLLECTIVE.search(said):
            last = last_complete_checkpoint(Path(output_dir))
            then = f"; then continue from {last.name} with:\n  {resume}" if last is not None else ""
            return OperationError(
                f"rank {rank} waited ddp_timeout ({ddp_timeout} s) for another rank that did not join a collective",
                hint=f"another rank stopped, stalled or is still busy: the first error in the other ranks' logs says "
                     f"which and why; where a rank is slower for a reason (a slow disk under a checkpoint save), "
                     f"{raise_it}{then}")
        if m := _START.search(said):
            what = f"rank {rank}: only {m[1]} of {m[2]} ranks joined the run"
            check = ("start the command on every node (num_nodes of them), each with the same MASTER_ADDR and "
                     "master_port, the port reachable from every node")
        elif m := _CONNECT.search(said):
            what = f"rank {rank} could not reach rank 0 at {m[1]}:{m[2]}"
            check = (f"start the command on node 0 too; check that MASTER_ADDR ({m[1]}) names node 0 and that port "
                     f"{m[2]} (master_port) is reachable from this node (a firewall, another address)")
        else:
            continue
        return OperationError(f"{what} within ddp_timeout ({ddp_timeout} s)",
                              hint=f"{check}; where nodes start minutes apart, {raise_it}")
    return None
