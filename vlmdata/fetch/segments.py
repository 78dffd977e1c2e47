"""Byte-range bookkeeping for downloads over several connections.

The missing ranges of a file are handed out in file order, one piece at a time, to whichever
connection asks: the connections work side by side near the start of what is missing, so the
contiguous prefix that the hashing thread may read grows at the speed of all of them together,
and when the last byte arrives only the last pieces are left to hash (aria2c's split into one
big range per connection leaves all but the first range to hash at the end).

A piece is large enough that starting it (a request, a round trip before its first byte) is a
small share of its transfer time: its size follows the measured first-byte latency times the
measured rate per connection, never below ``min_split``, and pieces get smaller towards the end
so the connections finish together. When nothing is left to hand out, an idle connection takes
the second half of the largest piece still in flight (the piece's owner stops at the new end) if
that half is worth a request of its own, so every connection stays busy to the last byte. A
download whose first connection ran alone for a while (HttpEngine's ramp) has that connection's
range cut back to one piece (``hand_back_tails``) when the others open, and the rest goes out in
file order as above.

What is done is always ``[piece.start, piece.pos)`` of every piece plus what an earlier run
finished; it goes into the .part's sidecar so a killed download resumes.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

ALIGN = 64 << 10
MAX_PIECE = 256 << 20
START_SHARE = 0.05  # a piece's start (first-byte latency) may cost this share of its time


def merge_intervals(ranges: list[list[int]] | list[tuple[int, int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in ranges if b > a):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def missing_intervals(done: list[list[int]], size: int) -> list[list[int]]:
    out, pos = [], 0
    for a, b in merge_intervals(done):
        if a > pos:
            out.append([pos, min(a, size)])
        pos = max(pos, b)
    if pos < size:
        out.append([pos, size])
    return [r for r in out if r[1] > r[0]]


@dataclass(eq=False)
class Piece:
    start: int  # first byte this piece was created for (done = [start, pos))
    pos: int  # next byte to write
    end: int  # one past the last byte (may shrink when another connection takes the rest)
    active: bool = False


class Scheduler:
    def __init__(self, size: int, done: list[list[int]], connections: int, *, min_split: int = 1 << 20) -> None:
        self.size = size
        self.min_split = max(ALIGN, min_split)
        self._done = merge_intervals(done)
        self._cond = threading.Condition()
        self._gaps = missing_intervals(self._done, size)  # not handed out yet, in file order
        self.missing = self._unassigned = sum(b - a for a, b in self._gaps)
        self.connections = max(1, connections)
        # until latency and rate are measured: a few pieces per connection
        self.piece = max(self.min_split, min(MAX_PIECE, self.missing // (4 * max(1, connections))))
        self._piece_floor = self.piece
        self.pieces: list[Piece] = []
        self._latency: float | None = None  # seconds to a piece's first byte (moving average)
        self._rate: float | None = None  # bytes/s of one connection (moving average)
        self._worth = self.min_split  # the least a new request must bring to be worth its start

    def claim(self, start: int, end: int) -> Piece:
        """An active piece for bytes a connection is already receiving (the probe's answer);
        ``start`` must be where the first missing range begins."""
        with self._cond:
            if start != self._gaps[0][0]:
                raise ValueError(f"claim at {start}, but the first missing byte is {self._gaps[0][0]}")
            return self._cut(end)

    def _cut(self, end: int) -> Piece:
        """A new active piece from the start of the first missing range to ``end`` (or that range's end)."""
        a, b = self._gaps[0]
        end = min(end, b)
        if end < b:
            self._gaps[0][0] = end
        else:
            self._gaps.pop(0)
        self._unassigned -= end - a
        p = Piece(a, a, end, active=True)
        self.pieces.append(p)
        return p

    def workers(self, connections: int) -> int:
        """Connections worth opening: no more than there are pieces of ``min_split``."""
        return max(1, min(connections, -(-self.missing // self.min_split)))

    def take(self) -> Piece | None:
        """A released unfinished piece, else the next piece in file order, else half of the largest in flight."""
        with self._cond:
            idle = [p for p in self.pieces if not p.active and p.pos < p.end]
            if idle:
                p = min(idle, key=lambda x: x.pos)
                p.active = True
                return p
            if self._gaps:
                a, b = self._gaps[0]
                # smaller pieces towards the end, so the connections finish together
                want = min(self.piece, max(self.min_split, self._unassigned // (2 * self.connections)))
                return self._cut(b if b - a < want + self.min_split else a + want // ALIGN * ALIGN)
            # Half of a piece in flight, if that half takes longer than starting a request for it:
            # the owner's response keeps arriving past the new end until it notices, so stealing a
            # piece about to finish wastes bytes and gains nothing.
            busy = [p for p in self.pieces if p.active and p.end - p.pos >= 2 * self._worth]
            if not busy:
                return None
            victim = max(busy, key=lambda x: x.end - x.pos)
            mid = victim.pos + ((victim.end - victim.pos) // 2) // ALIGN * ALIGN
            new = Piece(mid, mid, victim.end, active=True)
            victim.end = mid
            self.pieces.append(new)
            return new

    def observe(self, latency: float, nbytes: int, seconds: float) -> None:
        """A finished piece: its first-byte latency and its transfer; sizes the next pieces."""
        if seconds <= 0 or nbytes < self.min_split:
            return
        with self._cond:
            rate = nbytes / seconds
            self._latency = latency if self._latency is None else 0.7 * self._latency + 0.3 * latency
            self._rate = rate if self._rate is None else 0.7 * self._rate + 0.3 * rate
            want = int(self._latency * self._rate / START_SHARE)
            self.piece = max(self._piece_floor, min(MAX_PIECE, want // ALIGN * ALIGN))
            self._worth = max(self.min_split, min(MAX_PIECE, want))

    def bounds(self, piece: Piece) -> tuple[int, int]:
        with self._cond:
            return piece.pos, piece.end

    def hand_back_tails(self) -> None:
        """Cut each piece in flight to one piece's length and hand the rest out again in file order.

        For connections that open after the first one has run alone (HttpEngine's ramp): that one
        asked for the whole file, and stealing halves of it would put the new connections far ahead
        of the hash, which then reads most of the file after the last byte is in."""
        with self._cond:
            for p in self.pieces:
                end = max(p.pos, (p.pos + self.piece) // ALIGN * ALIGN)
                if p.end - end < self.min_split:
                    continue  # (a short tail is not worth a request of its own)
                self._gaps.append([end, p.end])
                self._unassigned += p.end - end
                p.end = end
            self._gaps = merge_intervals(self._gaps)
            self._cond.notify_all()

    def advance(self, piece: Piece, n: int) -> None:
        with self._cond:
            piece.pos += n
            self._cond.notify_all()

    def release(self, piece: Piece) -> None:
        with self._cond:
            piece.active = False
            self._cond.notify_all()

    def done_ranges(self) -> list[list[int]]:
        with self._cond:
            return merge_intervals(self._done + [[p.start, p.pos] for p in self.pieces])

    def frontier(self) -> int:
        """End of the finished prefix that starts at byte 0."""
        done = self.done_ranges()
        return done[0][1] if done and done[0][0] == 0 else 0

    def wait_progress(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait(timeout)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
