"""Read the records of a large JSON array (or a JSONL file) one by one, in bounded memory.

The LLaVA JSONs are single top-level arrays of up to 1.5 GB. ``json.load`` builds all of it
as Python objects (many GB of RAM); here the C scanner of the standard library decodes one
record at a time out of a sliding text buffer, so memory stays at one buffer plus one record.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from vlmdata.errors import UserError

_CHUNK = 1 << 22  # characters read per refill
_WS = " \t\r\n"


def _line_of(path: Path, offset_chars: int) -> int:
    """1-based line number of a character offset (only computed for error messages)."""
    line, seen = 1, 0
    with open(path, encoding="utf-8") as fh:
        while seen < offset_chars:
            chunk = fh.read(min(_CHUNK, offset_chars - seen))
            if not chunk:
                break
            line += chunk.count("\n")
            seen += len(chunk)
    return line


def iter_json_records(path: Path | str) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, record)`` for each element of a JSON array, or each line of a JSONL file."""
    path = Path(path)
    if path.suffix == ".jsonl":
        yield from _iter_jsonl(path)
        return
    with open(path, encoding="utf-8") as fh:
        yield from _ArrayReader(fh, path).records()


class _ArrayReader:
    """A sliding window over the file text; ``consumed`` counts characters already dropped."""

    def __init__(self, fh: Any, path: Path) -> None:
        self.fh, self.path = fh, path
        self.buf, self.pos, self.consumed, self.eof = "", 0, 0, False
        self.dec = json.JSONDecoder()
        self.refill()

    def refill(self) -> None:
        chunk = self.fh.read(_CHUNK)
        self.eof = len(chunk) < _CHUNK  # a text read returns fewer characters only at the end
        self.consumed += self.pos
        self.buf, self.pos = self.buf[self.pos:] + chunk, 0

    def peek(self) -> str:
        """The next non-blank character ('' at the end of the file)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.buf) or self.eof:
                return self.buf[self.pos] if self.pos < len(self.buf) else ""
            self.refill()

    def where(self) -> str:
        return f"{self.path}: line {_line_of(self.path, self.consumed + self.pos)}"

    def decode(self, index: int) -> Any:
        self.peek()  # raw_decode does not skip leading blanks
        while True:
            try:
                obj, end = self.dec.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or self.eof:
                    self.pos = end
                    return obj
            except json.JSONDecodeError as e:
                if self.eof:
                    self.pos = e.pos
                    raise UserError(f"invalid JSON in record {index}: {e.msg}", where=self.where(),
                                    hint="fix the file or re-download it") from e
            self.refill()  # the record runs past the window: read more and decode it again

    def records(self) -> Iterator[tuple[int, Any]]:
        if self.peek() != "[":
            raise UserError("expected a JSON array ('[' at the start)", where=self.where(),
                            hint="LLaVA-style files are one JSON array of records; use .jsonl for one record per line")
        self.pos += 1
        if self.peek() == "]":
            return
        index = 0
        while True:
            yield index, self.decode(index)
            index += 1
            c = self.peek()
            if c == "]":
                return
            if c != ",":
                raise UserError(f"expected ',' or ']' after record {index - 1}", where=self.where())
            self.pos += 1
            if self.pos > _CHUNK:  # drop decoded text so the window does not grow
                self.consumed += self.pos
                self.buf, self.pos = self.buf[self.pos:], 0


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, encoding="utf-8") as fh:
        index = 0
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield index, json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"invalid JSON: {e.msg}", where=f"{path}: line {lineno}") from e
            index += 1
