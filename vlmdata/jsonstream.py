"""Read the records of a large JSON array (or a JSONL file, or the members of one JSON object) one
by one, in bounded memory.

The LLaVA JSONs are single top-level arrays of up to 1.5 GB. ``json.load`` builds all of it
as Python objects (many GB of RAM); here records are decoded out of a sliding window of the
file's bytes, so memory stays at one window plus one batch of records. The window stays bytes:
msgspec decodes UTF-8 itself, so text is made only for what the standard library decodes (a
record the slow way, the lines of bad records). Made into text first, a window with any
non-ASCII character in it cost twice the decode (measured on a 62 MB file of captions with
curly quotes and CJK: 0.54 s read as text, 0.27 s as bytes).

A file can also be read in byte ranges by several processes at once (``split_points`` +
``RecordReader(path, start, end)``): each range starts at a record boundary. A boundary inside a
JSON array is found by a local search (``{`` after a ``,`` that decodes as a whole record); a
wrong guess cannot go unnoticed, because the range before it must then end exactly on it, and a
range that does not raises ``SegmentMismatch`` (read the file in one piece then).

Records are decoded by msgspec, several hundred in one call: the reader cuts its window after a
``}`` that is followed by ``,`` and a ``{`` opening an object with the same first key as the
record it started from, and hands those bytes to msgspec between brackets (put in place of the
separators on either side for the call, so the batch's bytes are not copied). A cut that is not between
two records (inside a string, or inside a record, e.g. between two turns) always leaves a string
or a bracket open, so msgspec refuses it and another cut is tried; when none works, or msgspec
refuses the text for any other reason (NaN, Infinity, numbers past a double, escaped lone
surrogates, a real error), the standard library decodes one record, with its exact result or error
message. The records after the last such cut (the end of a range or file, all of a small file)
are one more batch, up to the window's last ``}``. (msgspec, not orjson: orjson 3.13 turns an
integer past 64 bits into a float without a word, where json.loads keeps it exact; msgspec keeps it
exact too, and decodes 112 MB of the 665k mix in 0.25 s where orjson takes 0.43 s.)

A reader given a ``record_type`` (a msgspec Struct) has msgspec decode each batch into that type
first: no dict per record or per turn, and the field types checked in C (the blend's records,
vlmdata.blend.records.Record: 112 MB of the 665k mix decoded in 0.24 s typed against 0.33 s).
A batch the type does not fit (an unknown key, a null, a float id ...) is decoded as plain JSON
objects instead, and the type is then left out for the next 2, 4, ... 256 batches, so a file whose
records never fit it pays for one failed try in a few hundred.

Lines are counted only when asked for (``line()`` for a bad record, ``newlines``): counting the
line breaks of every byte read cost 0.65 CPU-s per GB here, a tenth of the whole read, for numbers
that a file without a bad record never shows. A line asked for counts the bytes before the window
again from the file (``LineCounter``), from where the last count stopped.

Why one file of ~620 lines: the reader's window, its batch cutting, its slow path and its line
bookkeeping share one set of positions; split, each part would need the others' invariants.
"""
from __future__ import annotations

import codecs
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

from vlmdata.errors import UserError

_CHUNK = 1 << 22  # bytes read per refill
_WS = " \t\r\n"
_WS_BYTES = _WS.encode()
_ZEROS = memoryview(bytes(_CHUNK))  # room appended to the window before a read fills it
_SLOW_START = 1 << 16  # bytes of the window made text at a time for values decoded the slow way, at least
# Bytes of records decoded by one msgspec call. Each batch pays a fixed cost (a few dozen numpy and
# Arrow calls in the blend's checks, a record batch written): reading the 665k mix in two processes
# took 4.9 s with 2 MiB batches against 5.6 s with 1 MiB (7 runs each, alternating; 3 and 4 MiB
# no better, with more system time for the larger window).
_BATCH = 2 << 20
_PROBE = 1 << 16  # bytes first read to check that a record starts at a possible cut (x4 while too short)
_BATCH_TRIES = 8  # cuts tried before one record is decoded the slow way
_SLOW_AFTER_MISS = 32  # records decoded the slow way after no batch could be cut (records longer than a batch)

_TYPED_WAIT_MAX = 256  # batches decoded untyped, at most, after the record type did not fit one

try:  # a declared dependency; without it every record takes the standard library's path
    from msgspec import ValidationError as _NotOfType
    from msgspec.json import Decoder as _Decoder

    _fast_loads = _Decoder().decode  # its errors are ValueErrors
except ImportError:  # pragma: no cover
    _fast_loads = None


class _Piece:
    """A piece of the window made text: its character ``char`` is the window's byte ``byte`` (moved
    along in place as values are decoded out of it: no object per value)."""

    __slots__ = ("text", "char", "byte", "ascii", "final")

    def __init__(self, text: str, byte: int, final: bool) -> None:
        self.text, self.char, self.byte = text, 0, byte
        self.ascii = text.isascii()  # (then a character is a byte)
        self.final = final  # it runs to the end of the range


class SegmentMismatch(Exception):
    """A byte range did not start or end on a record boundary (only raised for ranges)."""


def iter_json_records(path: Path | str) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, record)`` for each element of a JSON array, or each line of a JSONL file."""
    yield from RecordReader(path)


def iter_json_object(path: Path | str) -> Iterator[tuple[str, Any]]:
    """Yield ``(key, value)`` for each member of a file holding one JSON object, one at a time
    (OCR-VQA's dataset.json: 207k records, never all in memory)."""
    yield from RecordReader(path).members()


def is_jsonl(path: Path | str) -> bool:
    return Path(path).suffix == ".jsonl"


class RecordReader:
    """Records of a whole file, or of the byte range ``[start, end)`` of it.

    Iterating yields ``(index, record)`` with indexes counted from 0 in the range. With a
    ``record_type`` (a msgspec Struct), a record is an instance of it where it fits the type, else
    the plain JSON value (see the module docstring).
    ``batches()`` yields the same records in lists (a batch as msgspec decoded it, or one record),
    without a generator step per record; ``line(k)`` is then the line of the list's record ``k``.
    ``line()`` is the 1-based line (within the range) where the record just yielded starts, and
    after the iteration ``newlines`` is the number of line breaks in the range.
    """

    def __init__(self, path: Path | str, start: int = 0, end: int | None = None, *,
                 record_type: type | None = None) -> None:
        self.path = Path(path)
        typed = record_type is not None and _fast_loads is not None
        self._typed = (_Decoder(list[record_type]).decode, _Decoder(record_type).decode) if typed else None
        self._typed_wait = 0  # batches (or JSONL lines) to decode untyped before trying the type again
        self._typed_misses = 0  # tries in a row the type did not fit
        self.start = start
        self.end = end
        self.whole = start == 0 and end is None
        self.jsonl = is_jsonl(self.path)
        self._newlines = 0  # JSONL: lines read
        self._breaks = LineCounter(self.path, start)  # JSON array: line breaks before the window
        self.total = self.left = 0  # bytes in the range, and not read yet
        self._line = 1  # JSONL: line of the last record
        self._rec_pos = -1  # JSON array: where the last record starts in the window
        self._piece: _Piece | None = None  # the window made text for the slow way (None: the window moved)
        self._batch_pos = -1  # where the batch being yielded starts in the window (-1: none)
        self._batch_end = 0  # and where it ends
        self._batch_k = 0  # the record of that batch just yielded
        self._batch_text: str | None = None  # the batch as text, made when a line is asked for
        self._batch_starts: list[int] = []  # its records' starts in that text, found as far as asked
        self._batch_next = 0  # where in that text the search for starts goes on
        # whether the batch just yielded was decoded by the standard library: only its decoder keeps
        # an escaped lone surrogate ("\\ud800"), a str that cannot be encoded (msgspec refuses it)
        self.slow = False

    # -- the sliding window: bytes as read (the batches are decoded from them as they are; text is
    #    made only for a record the slow way and for the lines of bad records)
    def _open(self, fh: Any) -> None:
        self.fh = fh
        fh.seek(self.start)
        self.left = (self.end if self.end is not None else os.fstat(fh.fileno()).st_size) - self.start
        if self.start == 0 and fh.read(3) != codecs.BOM_UTF8:
            fh.seek(0)  # (a UTF-8 byte order mark is skipped)
        self.left -= fh.tell() - self.start
        self.total = self.left
        self.buf, self.pos, self.eof = bytearray(), 0, False
        self.offset = fh.tell()  # the file offset of the window's first byte
        self.refill()

    def refill(self) -> None:
        """Drop what was decoded and read the next chunk into the window's own memory (no fresh
        buffer per read: a new 4 MiB object each time cost a page fault per 4 KiB)."""
        self._piece = None
        if self.pos > 1:
            self._drop()
        want = min(_CHUNK, self.left) if self.left > 0 else 0
        got = 0
        if want:
            have = len(self.buf)
            self.buf += _ZEROS[:want]
            view = memoryview(self.buf)
            try:
                got = self.fh.readinto(view[have:have + want]) or 0
            except OSError as e:  # (a read names no file: without this a failing input disk is blamed on --out)
                if e.filename is None:
                    e.filename = str(self.path)
                raise
            finally:
                view.release()
            if got < want:
                del self.buf[have + got:]
        self.left -= got
        self.eof = self.left <= 0 or not got

    def bytes_read(self) -> int:
        """Bytes of the range read so far (the window runs at most one chunk ahead of the records)."""
        return self.total - max(self.left, 0)

    def _drop(self) -> None:
        """Drop the window's bytes before ``pos`` (decoded) but the last one: a batch that starts at
        ``pos`` borrows that byte for its opening bracket (_decode_span), where a batch at the
        window's very start was copied three times over to get one (3 MB of every 4 read)."""
        self._piece = None
        gone = self.pos - 1
        self.offset += gone
        del self.buf[:gone]
        self.pos = 1

    def line_at(self, pos: int) -> int:
        """The line (within the range) of the window's byte ``pos``."""
        return self._breaks.before(self.offset) + self.buf.count(b"\n", 0, pos) + 1

    @property
    def newlines(self) -> int:
        """Line breaks in the range (read after the iteration)."""
        if self.jsonl:
            return self._newlines
        return self._breaks.before(self.end if self.end is not None else self.path.stat().st_size)

    def line(self, k: int | None = None) -> int:
        """Line of the record just yielded (within the range), or of record ``k`` of the list just
        yielded by ``batches()``; ask before asking for the next."""
        if self._batch_pos >= 0:
            return self.line_at(self._batch_pos) + self._batch_text_lines(self._batch_k if k is None else k)
        return self._line if self._rec_pos < 0 else self.line_at(self._rec_pos)

    def _batch_text_lines(self, k: int) -> int:
        """Line breaks between the batch's start and the start of its record ``k`` (the slow decoder
        finds where its records start, as far as asked: only bad records ask)."""
        if self._batch_text is None:  # the batch decoded, so it is valid UTF-8
            self._batch_text = codecs.utf_8_decode(self.buf[self._batch_pos:self._batch_end], "strict", True)[0]
            self._batch_starts, self._batch_next = [], 0
        text, starts, pos = self._batch_text, self._batch_starts, self._batch_next
        while len(starts) <= k:
            while text[pos] in _WS:
                pos += 1
            starts.append(pos)
            _, pos = _DECODER.raw_decode(text, pos)
            while pos < len(text) and text[pos] in _WS + ",":
                pos += 1
        self._batch_next = pos
        return text.count("\n", 0, starts[k])

    def _fast_batch(self) -> list[Any] | None:
        """The records from ``pos`` to a record boundary about ``_BATCH`` bytes ahead, decoded in one
        msgspec call, ``pos`` moved to the next record; None when no boundary is found."""
        self.peek()  # (skips blanks)
        while len(self.buf) - self.pos < 2 * _BATCH and not self.eof:
            self.refill()
        buf, pos = self.buf, self.pos
        first = _FIRST_KEY.match(buf, pos)
        if first is None:
            return None
        if len(buf) - pos < _BATCH // 8:
            return self._last_batch() if self.eof else None
        cut, tries = min(len(buf), pos + _BATCH), 0
        while tries < _BATCH_TRIES:
            cut = buf.rfind(b"}", pos, cut)
            if cut < 0:
                return None
            after = _NEXT_RECORD.match(buf, cut + 1)
            if after is None or after.group(2) != first.group(1):
                continue
            tries += 1
            try:
                return self._take_span(pos, cut + 1, after.start(1))  # (pos then at the next record's '{')
            except _UNDECODABLE:  # (the slow way says what is wrong, and where)
                continue

        return None

    def _last_batch(self) -> list[Any] | None:
        """The records from ``pos`` to the window's last ``}``, when the window holds the rest of
        the range: decoded in one call, ``pos`` left after that ``}`` (the separator after it is
        checked by the caller, as after a record decoded the slow way); None if they do not decode.
        (No record after them opens a cut, so they used to go one by one through the slow way.)"""
        buf, pos = self.buf, self.pos
        cut = buf.rfind(b"}", pos)
        if cut < 0 or cut + 1 >= len(buf):  # (a byte after it is needed for the closing bracket)
            return None
        try:
            return self._take_span(pos, cut + 1, cut + 1)
        except _UNDECODABLE:
            return None

    def _take_span(self, a: int, b: int, next_pos: int) -> list[Any]:
        """The records in bytes ``a:b`` of the window, decoded as the batch being yielded (its lines
        found from there when asked), ``pos`` moved to ``next_pos``; ValueError when they do not
        decode (nothing moved then)."""
        records = self._decode_span(a, b)
        self._batch_pos, self._batch_end, self._batch_text, self._piece = a, b, None, None
        self.pos = next_pos
        return records

    def _decode_span(self, a: int, b: int) -> Any:
        """``[`` + bytes ``a:b`` of the window + ``]``, decoded. The bytes on either side of a span
        of records are separators (blanks, ``,``), so they are swapped for the brackets in place
        for the call: no copy of the batch."""
        buf = self.buf
        if a == 0:
            return self._loads(b"[" + buf[:b] + b"]", 0)
        before, after = buf[a - 1], buf[b]
        buf[a - 1], buf[b] = 0x5B, 0x5D  # '[' and ']'
        whole = memoryview(buf)
        span = whole[a - 1:b + 1]
        try:
            return self._loads(span, 0)
        finally:
            span.release()
            whole.release()
            buf[a - 1], buf[b] = before, after

    def _loads(self, data: Any, one: int) -> Any:
        """msgspec's decode of a batch (``one=0``) or of one JSONL line (``one=1``): into the
        record type when there is one and it fits, else as plain JSON."""
        if self._typed is not None:
            if self._typed_wait <= 0:
                try:
                    got = self._typed[one](data)
                    self._typed_misses = 0
                    return got
                except _NotOfType:
                    self._typed_misses += 1
                    self._typed_wait = min(1 << self._typed_misses, _TYPED_WAIT_MAX)
            else:
                self._typed_wait -= 1
        return _fast_loads(data)

    def where(self) -> str:
        return f"{self.path}: line {self.line_at(self.pos)}"

    def peek(self) -> str:
        """The next non-blank character ('' at the end of the range)."""
        while True:
            buf, pos, n = self.buf, self.pos, len(self.buf)
            while pos < n and buf[pos] in _WS_BYTES:
                pos += 1
            self.pos = pos
            if pos < n:
                return chr(buf[pos])
            if self.eof:
                return ""
            self.refill()

    def _column(self) -> str:
        """`` (column N)`` of ``pos`` (bytes from its line's start), when that start is in the window."""
        start = self.buf.rfind(b"\n", 0, self.pos)
        if start < 0 and self.offset > 0:
            return ""
        return f" (column {self.pos - start})"

    def _fail(self, msg: str, *, hint: str | None = None) -> Exception:
        if not self.whole:
            return SegmentMismatch(f"{self.path} [{self.start}, {self.end}): {msg}")
        return UserError(msg, where=self.where(), hint=hint)

    def decode(self, index: int) -> Any:
        """One JSON value from ``pos``, by the standard library, out of a piece of the window made
        text (``_SLOW_START`` bytes, four times more each time a value runs past its end). The piece
        is kept for the values after it (the members of one JSON object, runs of slow records):
        between two of them ``pos`` only moves over ASCII blanks and separators, a byte a character."""
        self.peek()  # raw_decode does not skip leading blanks
        want = _SLOW_START
        piece, at = self._kept_piece()
        fresh = False
        while True:
            if piece is None:
                if len(self.buf) - self.pos < want and not self.eof:
                    self.refill()
                    continue
                piece, at, fresh = self._new_piece(want), 0, True
            text = piece.text
            try:
                obj, end = _DECODER.raw_decode(text, at)
                past = end == len(text) and not piece.final  # a number or literal at the very end could go on
            except json.JSONDecodeError as e:
                if piece.final or not _cut_short(e, len(text)):
                    self.pos += len(text[at:e.pos].encode())
                    raise self._fail(f"invalid JSON in record {index}: {_words(e.msg)}{self._column()}",
                                     hint="fix the file or re-download it") from e
                past = True
            except _UNDECODABLE as e:  # nested too deep, an integer of over 4,300 digits
                raise self._fail(f"record {index} cannot be read: {_unreadable(e)}{self._column()}",
                                 hint="fix the record or leave it out of the file") from e
            if past:  # the value runs past the text: a new piece from pos, larger if this one was new
                want = 4 * want if fresh else want
                piece = None
                continue
            size = end - at if piece.ascii else len(text[at:end].encode())
            self._rec_pos, self.pos = self.pos, self.pos + size
            piece.char, piece.byte = end, self.pos
            return obj

    def _kept_piece(self) -> tuple[_Piece | None, int]:
        """The kept piece and the character at ``pos`` in it, when ``pos`` is still inside it."""
        kept = self._piece
        if kept is not None and kept.byte <= self.pos:
            at = kept.char + (self.pos - kept.byte)
            if at < len(kept.text) and self.buf[kept.byte:self.pos].isascii():
                return kept, at
        return None, 0

    def _new_piece(self, want: int) -> _Piece:
        final = self.eof and self.pos + want >= len(self.buf)
        try:
            text = codecs.utf_8_decode(self.buf[self.pos:self.pos + want], "strict", final)[0]
        except UnicodeDecodeError as e:
            raise self._not_utf8(e, self.line_at(self.pos + max(e.start, 0))) from e
        self._piece = _Piece(text, self.pos, final)
        return self._piece

    def _not_utf8(self, e: UnicodeDecodeError, line: int) -> UserError:
        return UserError(f"not valid UTF-8: {e.reason}", where=f"{self.path}: line {line}",
                         hint="the file is damaged or not a JSON text file; re-download it")

    # -- iteration
    def __iter__(self) -> Iterator[tuple[int, Any]]:
        index = 0
        for records in self.batches():
            for k, rec in enumerate(records):
                self._batch_k = k
                yield index, rec
                index += 1

    def batches(self) -> Iterator[list[Any]]:
        """The records in lists, in order (see the class docstring)."""
        with open(self.path, "rb") as fh:
            if self.jsonl:
                yield from self._lines(fh)
                return
            self._open(fh)
            yield from self._array()

    def _array(self) -> Iterator[list[Any]]:
        if self.start == 0:
            wide = _wide_encoding(self.buf[:4])
            if wide:  # (Windows tools write UTF-16: "expected a JSON array" would send the user to the wrong fix)
                raise self._fail(f"not valid UTF-8: the file is {wide} text", hint=_reencode_hint(wide))
            if self.peek() == "":  # (not "expected a JSON array": the file holds nothing to fix)
                raise self._fail(_nothing_in(self.total), hint="download or export it again (a file vlmdata fetched: "
                                                               "`vlmdata verify`, then `vlmdata fetch NAME --refetch`)")
            if self.peek() != "[":
                raise self._fail("expected a JSON array ('[' at the start)",
                                 hint="LLaVA-style files are one JSON array of records; use .jsonl for one record per line")
            self.pos += 1
            if self.peek() == "]":
                return self._tail()
        elif self.peek() != "{":
            raise SegmentMismatch(f"{self.path}: byte {self.start} is not the start of a record")
        index = 0
        slow = 0  # records to decode the slow way before trying a batch again
        while True:
            records = None
            if _fast_loads is not None and slow <= 0:
                records = self._fast_batch()
                slow = 0 if records is not None else _SLOW_AFTER_MISS
            slow -= 1
            if records is not None:
                self.slow = False
                yield records
                index += len(records)
                self._batch_pos, self._batch_text = -1, None
                if self.pos != self._batch_end:  # pos moved on to the next record's '{'
                    self._trim()
                    continue
            else:  # (after the window's last record, as after one decoded here, a separator follows)
                record = self.decode(index)
                self.slow = True
                yield [record]
                index += 1
            c = self.peek()
            if c == "]":
                return self._tail()
            if c != ",":
                raise self._fail(f"expected ',' or ']' after record {index - 1}")
            self.pos += 1
            self._trim()
            if self.end is not None and self.peek() == "" and self.eof:
                return  # a range that ends just before the next range's first record

    def _trim(self) -> None:
        if self.pos > _CHUNK:  # drop decoded bytes so the window does not grow
            self._drop()

    def members(self) -> Iterator[tuple[str, Any]]:
        """``(key, value)`` for each member of a file that is one JSON object (not ranges, not JSONL)."""
        with open(self.path, "rb") as fh:
            self._open(fh)
            if self.peek() != "{":
                raise self._fail("expected a JSON object ('{' at the start)")
            self.pos += 1
            index = 0
            if self.peek() == "}":
                self._tail()
                return
            while True:
                key = self.decode(index)
                if not isinstance(key, str):
                    raise self._fail(f"expected a string key for member {index}")
                if self.peek() != ":":
                    raise self._fail(f"expected ':' after the key of member {index}")
                self.pos += 1
                yield key, self.decode(index)
                index += 1
                c = self.peek()
                if c == "}":
                    self._tail()
                    return
                if c != ",":
                    raise self._fail(f"expected ',' or '}}' after member {index - 1}")
                self.pos += 1
                self._trim()

    def _tail(self) -> None:
        if self.end is not None and self.end < os.fstat(self.fh.fileno()).st_size:
            raise SegmentMismatch(f"{self.path}: the array ends inside the range [{self.start}, {self.end})")
        self.pos += 1
        if self.peek() != "":
            raise self._fail("unexpected data after the end of the JSON array")

    def _lines(self, fh: Any) -> Iterator[list[Any]]:
        fh.seek(self.start)
        self.total = self.left = (self.end if self.end is not None else os.fstat(fh.fileno()).st_size) - self.start
        lineno = 0
        for raw in fh:
            lineno += 1
            self.left -= len(raw)
            if lineno == 1 and self.start == 0 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[3:]
            if lineno == 1 and self.start == 0 and (wide := _wide_encoding(raw[:4])):
                raise UserError(f"not valid UTF-8: the file is {wide} text", where=f"{self.path}: line 1",
                                hint=_reencode_hint(wide))
            if raw.strip():
                rec = self._decode_line(raw, lineno)
                self._line = lineno
                yield [rec]
            if self.left <= 0:
                break
        self._newlines = lineno

    def _decode_line(self, raw: bytes, lineno: int) -> Any:
        """One JSONL line: msgspec from the bytes; what it refuses, the standard library from text."""
        self.slow = False
        if _fast_loads is not None:
            try:
                return self._loads(raw, 1)
            except _UNDECODABLE:
                pass  # refused (NaN, Infinity, ...) or really bad: the standard library decides
        self.slow = True
        try:
            line = raw.decode()
        except UnicodeDecodeError as e:
            raise self._not_utf8(e, lineno) from e
        try:
            return json.loads(line)
        except json.JSONDecodeError as e:
            if not self.whole:
                raise SegmentMismatch(f"{self.path}: {e}") from e
            column = min(e.pos, len(line.rstrip("\r\n"))) + 1  # (past the end: the line ended too soon)
            raise UserError(f"invalid JSON: {_words(e.msg)} (column {column})",
                            where=f"{self.path}: line {lineno}",
                            hint="fix the line (one JSON value per line in a .jsonl file) or re-download the file") from e
        except _UNDECODABLE as e:
            raise UserError(f"the line cannot be read: {_unreadable(e)}", where=f"{self.path}: line {lineno}",
                            hint="fix the line or leave it out of the file") from e


_DECODER = json.JSONDecoder()
# What msgspec and json raise for a value, besides a syntax error: ValueError (json's own errors, msgspec's,
# an integer of over 4,300 digits) and RecursionError (values nested deeper than Python reads).
_UNDECODABLE = (ValueError, RecursionError)

_BOUNDARY = re.compile(rb",\s*\{")
_FIRST_KEY = re.compile(rb'\{\s*"((?:[^"\\]|\\.)*)"')  # an object's first key
_NEXT_RECORD = re.compile(rb'\s*,\s*(\{)\s*"((?:[^"\\]|\\.)*)"')  # ", {" and the next object's first key


def _nothing_in(size: int) -> str:
    """What an array file without a character of JSON is, for its error."""
    if size == 0:
        return "the file is empty (0 bytes): an interrupted download or an empty export?"
    return f"the file holds no JSON ({size:,} bytes of blanks): an interrupted download or an empty export?"


def _wide_encoding(head: bytes) -> str | None:
    """"UTF-16" or "UTF-32" when a file's first bytes are such a byte order mark, or JSON text's
    first character ('[', '{' or a blank) followed or preceded by zero bytes; else None."""
    head = bytes(head)
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "UTF-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "UTF-16"
    if len(head) >= 2 and 0 in head[:2] and any(c in head[:2] for c in b"[{ \t\r\n"):
        return "UTF-32" if len(head) == 4 and head.count(0) == 3 else "UTF-16"
    return None


def _reencode_hint(wide: str) -> str:
    return f"JSON files are read as UTF-8: convert it (e.g. `iconv -f {wide} -t UTF-8 IN > OUT`) and use the copy"


class LineCounter:
    """Line breaks in a file from ``start`` up to an offset, counted on from the last offset asked
    for (asks move forward with a reader; one behind the last starts again from ``start``)."""

    def __init__(self, path: Path | str, start: int = 0) -> None:
        self.path, self.start = path, start
        self.at, self.n = start, 0

    def before(self, offset: int) -> int:
        if offset < self.at:
            self.at, self.n = self.start, 0
        self.n += count_newlines(self.path, self.at, offset)
        self.at = offset
        return self.n


def count_newlines(path: Path | str, start: int, end: int) -> int:
    """Line breaks in bytes ``[start, end)`` of a file."""
    n = 0
    if start >= end:
        return n
    with open(path, "rb") as fh:
        fh.seek(start)
        while start < end:
            data = fh.read(min(_CHUNK, end - start))
            if not data:
                break
            n += data.count(b"\n")
            start += len(data)
    return n


def split_points(path: Path | str, parts: int, *, window: int = 1 << 20, max_search: int = 64 << 20) -> list[int]:
    """Byte offsets ``[0, b1, ..., size]`` cutting the file into about ``parts`` equal ranges that
    each start on a record. Cuts that cannot be found near their target are left out (fewer ranges)."""
    size = Path(path).stat().st_size
    return cut_near(path, [size * i // parts for i in range(1, max(parts, 1))], window=window, max_search=max_search)


def cut_near(path: Path | str, targets: list[int], *, window: int = 1 << 20, max_search: int = 64 << 20) -> list[int]:
    """Byte offsets ``[0, b1, ..., size]``: for each target offset (ascending), the first record
    start at or after it. Cuts that cannot be found near their target are left out."""
    path = Path(path)
    size = path.stat().st_size
    cuts = [0]
    if targets:
        with open(path, "rb") as fh:
            for target in targets:
                cut = _find_boundary(fh, max(target, cuts[-1] + 1), size, is_jsonl(path), window, max_search)
                if cut is not None and cuts[-1] < cut < size:
                    cuts.append(cut)
    cuts.append(size)
    return cuts


def _find_boundary(fh: Any, target: int, size: int, jsonl: bool, window: int, max_search: int) -> int | None:
    offset = target
    while offset < min(size, target + max_search):
        fh.seek(offset)
        data = fh.read(window)
        if not data:
            return None
        if jsonl:
            nl = data.find(b"\n")
            if nl >= 0:
                return offset + nl + 1
        else:
            for m in _BOUNDARY.finditer(data):
                start = offset + m.end() - 1  # the '{'
                if _is_record_start(fh, start, size, window):
                    return start
        offset += max(1, len(data) - 64)  # overlap so a boundary split by the window is still seen
    return None


def _is_record_start(fh: Any, start: int, size: int, window: int) -> bool:
    """Does a whole record (an object with 'conversations', followed by ',' or ']') start here?

    Turns of a conversation are objects too, but never have a 'conversations' key, and an object
    quoted inside a string has escaped quotes, so it does not decode. A false positive is still
    caught later (see the module docstring); this only keeps them rare.
    """
    length = min(window, _PROBE)  # (most records are a few kB: a whole window made text cost ~1 ms a try)
    while True:
        fh.seek(start)
        data = fh.read(length)
        text = data.decode("utf-8", errors="ignore")
        try:
            obj, end = _DECODER.raw_decode(text, 0)
        except json.JSONDecodeError as e:
            if start + length >= size or length >= 64 * window or not _cut_short(e, len(text)):
                return False
            length *= 4  # maybe the record is longer than the window
            continue
        except _UNDECODABLE:  # (not a start to cut at: the whole file's reading says why)
            return False
        rest = text[end:end + 64].lstrip(_WS)
        return isinstance(obj, dict) and "conversations" in obj and rest[:1] in (",", "]")


def _cut_short(e: json.JSONDecodeError, length: int) -> bool:
    """Could this error be the text's end cutting a value, rather than a fault inside it? A string
    still open, or a failure in the last few characters (a literal such as ``-Infinity`` or a
    ``\\uXXXX`` escape cut through). A fault before that is reported at once: growing the piece
    until the file's end would hold the rest of the file in memory to say the same."""
    return e.msg.startswith("Unterminated string") or e.pos >= length - 16


def _unreadable(e: BaseException) -> str:
    """What a decoder's error other than a syntax error says: values nested deeper than Python
    reads them, or an integer longer than it converts."""
    if isinstance(e, RecursionError):
        return "values nested deeper than Python can read"
    return str(e).split(";")[0]


def _words(msg: str) -> str:
    """The json module's message without its dangling "at" (it is followed by the position there)."""
    return msg[:-3] if msg.endswith(" at") else msg
