"""``sample_log: true``: which samples each rank trained on, step by step.

One JSON line per micro-batch in ``output_dir/samples/rank-<R>.jsonl``: ``{"step", "rank", "ids"}``,
``step`` being the optimizer step the micro-batch belongs to (1-based). It answers what a loss
curve cannot: did the ranks of a multi-node run see disjoint data, did a resumed run continue with
the samples the interrupted one would have used, which records were in the step that diverged.
Lines are appended (a resumed run adds to the same files) and flushed per write.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TextIO

SAMPLES_DIR = "samples"


class SampleLog:
    def __init__(self, output_dir: str | Path, rank: int) -> None:
        self.rank = rank
        self.path = Path(output_dir) / SAMPLES_DIR / f"rank-{rank}.jsonl"
        self._fh: TextIO | None = None

    def write(self, step: int, ids: list[str]) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(json.dumps({"step": step, "rank": self.rank, "ids": list(ids)}) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_sample_logs(output_dir: str | Path) -> list[dict]:
    """Every line of every rank's log, in file order per rank."""
    folder = Path(output_dir) / SAMPLES_DIR
    rows: list[dict] = []
    for p in sorted(folder.glob("rank-*.jsonl")) if folder.is_dir() else []:
        rows += [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows


def global_rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)
