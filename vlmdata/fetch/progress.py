"""Progress for a fetch run: tqdm bars on a terminal, plain log lines otherwise.

On a TTY: one bar for the total bytes (with ETA) and one per file in flight, in the decimal
units (kB, MB, GB) every summary line uses (vlmdata.units). Not on a TTY (CI,
a log file, ``nohup``): a line when a file starts and ends, and one every ``interval`` seconds per
file with bytes, percent and rate. Everything goes to stderr, so ``--json`` keeps stdout clean.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from vlmdata.units import human_bytes


class FileBar:
    def __init__(self, owner: "Progress", label: str, total: int | None, unit: str) -> None:
        self.owner = owner
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self.started = time.monotonic()
        self._last_log = self.started
        self._bar = None
        if owner.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=_short(label), unit="B" if unit == "B" else unit,
                             unit_scale=unit == "B", leave=False, file=owner.stream,
                             dynamic_ncols=True, mininterval=0.5)

    def update(self, n: int) -> None:
        with self.owner.lock:
            self.done += n
            self.owner.counted(self.unit, n)
            if self.unit == "B":
                self.owner._add(n)
            if self._bar is not None:
                self._bar.update(n)
            else:
                now = time.monotonic()
                if now - self._last_log >= self.owner.interval:
                    self._last_log = now
                    self.owner._line(f"  {self.label}: {self._amount()}")

    def _amount(self) -> str:
        rate = self.done / max(1e-6, time.monotonic() - self.started)
        if self.unit != "B":
            pct = f" of {self.total:,}" if self.total else ""
            return f"{self.done:,}{pct} {self.unit}, {rate:.0f} {self.unit}/s"
        pct = f" of {human_bytes(self.total)} ({100 * self.done / self.total:.0f}%)" if self.total else ""
        return f"{human_bytes(self.done)}{pct}, {human_bytes(int(rate))}/s"

    def close(self) -> None:
        with self.owner.lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None


class Progress:
    def __init__(self, *, total_bytes: int | None = None, stream: TextIO | None = None, tty: bool | None = None,
                 interval: float = 10.0, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.tty = (self.stream.isatty() if tty is None else tty) and not quiet
        self.quiet = quiet
        self.interval = interval
        self.lock = threading.RLock()
        self.total_bytes = total_bytes
        self.bytes = 0
        self._overall = None
        self._started = time.monotonic()
        self._last_overall = self._started

    def file(self, label: str, total: int | None, unit: str = "B") -> FileBar:
        with self.lock:
            if self.tty and self._overall is None:  # made on first use, once total_bytes is known
                from tqdm import tqdm

                self._overall = tqdm(total=self.total_bytes or None, desc="total", unit="B", unit_scale=True,
                                     file=self.stream, dynamic_ncols=True, mininterval=0.5)
            if not self.tty:
                self._line(f"start {label}" + (f" ({human_bytes(total)})" if total and unit == "B" else ""))
        return FileBar(self, label, total, unit)

    def counted(self, unit: str, n: int) -> None:
        """``n`` more bytes (unit "B") or images ("img") done; a subclass passes them on (a Ray worker
        to its driver's view)."""

    def _add(self, n: int) -> None:
        self.bytes += n
        if self._overall is not None:
            self._overall.update(n)
        elif self.total_bytes and time.monotonic() - self._last_overall >= self.interval * 3:
            self._last_overall = time.monotonic()
            left = max(0, self.total_bytes - self.bytes)
            rate = self.bytes / max(1e-6, time.monotonic() - self._started)
            eta = f", ETA {left / rate:.0f} s" if rate > 0 else ""
            self._line(f"total: {human_bytes(self.bytes)} of {human_bytes(self.total_bytes)}{eta}")

    def _line(self, msg: str) -> None:
        if not self.quiet:
            write_line(self.stream, msg, over_bars=self._overall is not None)

    def message(self, msg: str) -> None:
        with self.lock:
            self._line(msg)

    def close(self) -> None:
        with self.lock:
            if self._overall is not None:
                self._overall.close()
                self._overall = None


def write_line(stream: TextIO, msg: str, *, over_bars: bool) -> None:
    """One line of progress; above the bars (tqdm.write) while bars are drawn."""
    if over_bars:
        from tqdm import tqdm

        tqdm.write(msg, file=stream)
    else:
        stream.write(msg + "\n")
        stream.flush()


def _short(label: str, width: int = 40) -> str:
    return label if len(label) <= width else "…" + label[-(width - 1):]
