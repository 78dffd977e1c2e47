"""``--shard I/N``: the share of a fetch's tasks that process I of N runs, with no coordinator.

N processes (a SLURM job array, ``xargs -P``, N shells) given the same command split the same
tasks (vlmdata.fetch.tasks) the same way, so together they do each task once. Files and parts go
to the shard with the least work so far, largest first (sizes from the manifests; ties by key);
URL-list chunks go round-robin by their index. The claims still apply: a task that another
process is on is waited for, so shards that overlap with another fetch, or with a rerun, are safe.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from vlmdata.errors import UserError
from vlmdata.fetch.tasks import Task

_FORM = re.compile(r"(\d+)/(\d+)")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        m = _FORM.fullmatch(text.strip())
        if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
            raise UserError(f"--shard {text!r} is not I/N with 0 <= I < N",
                            hint="e.g. --shard 0/3, --shard 1/3 and --shard 2/3 for three processes; in a SLURM array: "
                                 "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT (with --array=0-N-1)")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def mine(self, tasks: list[Task]) -> list[Task]:
        """This shard's tasks of ``tasks`` (files, parts or joins), in key order."""
        load = [0] * self.count
        owner: dict[str, int] = {}
        for t in sorted(tasks, key=lambda t: (-t.weight, t.key)):
            i = min(range(self.count), key=lambda k: (load[k], k))
            load[i] += t.weight
            owner[t.key] = i
        return [t for t in tasks if owner[t.key] == self.index]

    def has_chunk(self, index: int) -> bool:
        return index % self.count == self.index
