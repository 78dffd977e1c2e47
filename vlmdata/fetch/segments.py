"""Byte-range bookkeeping for downloads over several connections.

The missing ranges of a file are cut into pieces, at least one per connection. A connection that
runs out of work takes the second half of the largest piece still in flight (the piece's owner
stops at the new end), so every connection stays busy until the end, as aria2c does. What is
done is always ``[piece.start, piece.pos)`` of every piece plus what an earlier run finished; it
goes into the .part's sidecar so a killed download resumes, and its contiguous prefix from byte 0
is what the hashing thread may read.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

ALIGN = 64 << 10


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
        gaps = missing_intervals(self._done, size)
        # Cut the largest gap in two until there is a piece per connection (or pieces get too small).
        while gaps and len(gaps) < connections:
            gaps.sort(key=lambda r: r[1] - r[0])
            a, b = gaps[-1]
            if b - a < 2 * self.min_split:
                break
            mid = a + ((b - a) // 2) // ALIGN * ALIGN
            gaps[-1:] = [[a, mid], [mid, b]]
        self.pieces = [Piece(a, a, b) for a, b in sorted(gaps)]

    @property
    def pending(self) -> list[Piece]:
        with self._cond:
            return [p for p in self.pieces if p.pos < p.end]

    def take(self) -> Piece | None:
        """An idle unfinished piece, else half of the largest piece in flight, else None."""
        with self._cond:
            idle = [p for p in self.pieces if not p.active and p.pos < p.end]
            if idle:
                p = min(idle, key=lambda x: x.pos)
                p.active = True
                return p
            busy = [p for p in self.pieces if p.active and p.end - p.pos >= 2 * self.min_split]
            if not busy:
                return None
            victim = max(busy, key=lambda x: x.end - x.pos)
            mid = victim.pos + ((victim.end - victim.pos) // 2) // ALIGN * ALIGN
            new = Piece(mid, mid, victim.end, active=True)
            victim.end = mid
            self.pieces.append(new)
            return new

    def bounds(self, piece: Piece) -> tuple[int, int]:
        with self._cond:
            return piece.pos, piece.end

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
