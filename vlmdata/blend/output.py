"""Read a blend's output folder back (export, stats): its blend.json and its Arrow shards."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from vlmdata.contract import BLEND_JSON, missing_columns, read_blend_meta
from vlmdata.errors import UserError


class BlendOutput:
    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        state = self.folder / "state.json"
        if not state.is_file():
            raise UserError(f"{self.folder} is not a dataset folder (no state.json)",
                            hint="give the folder `vlmdata blend` wrote (default ROOT/blends/<recipe>)")
        try:
            files = [f["filename"] for f in json.loads(state.read_text(encoding="utf-8"))["_data_files"]]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{state} is not a `datasets` state file: {e}", hint="blend again (`vlmdata blend RECIPE`)") from e
        self.files = [self.folder / f for f in files]
        self.meta: dict[str, Any] | None = read_blend_meta(self.folder) if (self.folder / BLEND_JSON).is_file() else None
        self.schema = self._schema()
        missing = missing_columns(self.schema.names)
        if missing:
            raise UserError(f"{self.folder} has no column(s) {', '.join(missing)}: not a vlmdata blend",
                            hint="the columns a blend writes are listed in vlmdata/contract.py")

    def _schema(self) -> pa.Schema:
        if not self.files:
            raise UserError(f"{self.folder} lists no data files")
        try:
            with pa.memory_map(str(self.files[0])) as f:
                return pa.ipc.open_stream(f).schema
        except (OSError, pa.ArrowInvalid) as e:
            raise UserError(f"cannot read {self.files[0]}: {e}") from e

    def batches(self, columns: list[str] | None = None, *, mapped: bool = True) -> Iterator[pa.RecordBatch]:
        """Record batches in row order. ``mapped``: zero-copy from a memory map, so only the
        columns touched are paged in; otherwise each batch is read into memory and freed after."""
        for path in self.files:
            try:
                src = pa.memory_map(str(path)) if mapped else pa.OSFile(str(path))
                with src:
                    for b in pa.ipc.open_stream(src):
                        yield b.select(columns) if columns else b
            except (OSError, pa.ArrowInvalid) as e:  # a missing or truncated shard
                raise UserError(f"{path} is damaged or missing: {e}", hint="blend again (`vlmdata blend RECIPE`)") from e

    def table(self, columns: list[str]) -> pa.Table:
        """A few columns of every row (memory-mapped)."""
        batches = list(self.batches(columns))
        schema = pa.schema([self.schema.field(c) for c in columns])
        return pa.Table.from_batches(batches, schema=schema)
