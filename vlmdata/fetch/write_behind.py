"""Writing a download to its file in a thread of its own, so receiving and writing overlap.

The receiving thread reads the socket into the hasher's buffers (vlmdata.fetch.hashing) and
hands each read to ``WriteBehind.put`` at once; this thread writes it, and passes each full
buffer on to the hasher once it is written. Why: copying 1 GiB into the page cache cost the
receiving thread 1.2 s of kernel time on the project's machine (the read out of the socket 0.5 s),
so with both in one thread (as curl does) a loopback download took 1.5-2.4 s; with the write here
1.33-1.35 s, against curl's 1.45-1.89 s (bench/RESULTS.md).

Bytes still go to the file as they arrive: what a kill loses is what was queued here, at most the
hasher's few buffers, which the receiving thread cannot get ahead by (it waits for a free one).
A write that fails (a full disk) is raised to the receiving thread at its next ``put``, and by
``close`` (or the end of a ``with`` block), which waits for every write: the caller closes the
file only after it.
"""
from __future__ import annotations

import queue
import threading

from vlmdata.atomic import WRITE_PIECE, write_all
from vlmdata.fetch.hashing import StreamHasher

# (slot, start, end, full): bytes start:end of the slot; full: the slot ends there, hash it
_Item = tuple[int, int, int, bool]


class WriteBehind:
    def __init__(self, fd: int, hasher: StreamHasher) -> None:
        self.fd = fd
        self.hasher = hasher
        self._q: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="vlmdata-write", daemon=True)
        self._thread.start()

    def put(self, slot: int, start: int, end: int, *, full: bool = False) -> None:
        """Write bytes ``start:end`` of ``slot`` (after everything put before); ``full``: then
        hand the slot's first ``end`` bytes to the hasher."""
        if self._error is not None:
            self._raise()
        self._q.put((slot, start, end, full))

    def __enter__(self) -> "WriteBehind":
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.close(quiet=exc_type is not None)  # (a write's error does not hide the one being raised)

    def close(self, *, quiet: bool = False) -> None:
        """Wait until every byte put is written; raise the error of a write that failed (unless
        ``quiet``: the receiving thread is already raising an error of its own)."""
        self._q.put(None)
        self._thread.join()
        if self._error is not None and not quiet:
            self._raise()

    def _raise(self) -> None:
        err = self._error
        assert err is not None
        raise err.with_traceback(None)

    def _run(self) -> None:
        view = self.hasher.view
        while True:
            item = self._q.get()
            if item is None:
                return
            slot, start, end, full = item
            if self._error is None:
                try:
                    for a in range(start, end, WRITE_PIECE):  # (atomic.WRITE_PIECE says why in pieces)
                        write_all(self.fd, view(slot)[a:min(end, a + WRITE_PIECE)])
                except BaseException as e:  # raised in the receiving thread
                    self._error = e
            if full:  # (after an error too: the hasher gives the slot back, the receiver never waits forever)
                self.hasher.commit(slot, end if self._error is None else 0)
