"""A plain-HTTP body moved from its socket into its file inside the kernel (Linux ``splice``).

Why: received with ``recv`` and written with ``write``, every byte is copied out of the kernel
and back in; on the project's 2-core machine that was ~1 s of system time per GiB in the
receiving thread and ~0.5 s in the writing one, beside the 0.75 s of sha256. Spliced, the
socket's pages go to a pipe without a copy and from the pipe into the page cache with one; the
hasher then reads them from the page cache into a small buffer (vlmdata.fetch.hashing). A
stand-alone prototype moved and hashed 1 GiB over loopback in 0.96-1.03 s of wall time and
~1.5 CPU-s, against the recv/write/hash threads' 1.6 s and 2.6-2.8 CPU-s (bench/RESULTS.md).

Only for what the kernel can see as bytes of the body: a socket that is not TLS (TLS is
decrypted in user space), a body that is not chunked and whose length is known (vlmdata.net.body
decides). ``VLMDATA_NO_SPLICE=1`` turns it off (every download then takes the recv path, as on
other systems). The socket's own timeout (what requests set for reads) bounds each wait, as it
bounds a ``recv``; a wait also ends within ``CHECK_EVERY`` seconds of the caller's stop signal
(Ctrl-C, another connection's failure) with ``Cancelled``, where a ``recv`` would sit out the
timeout on a server that went quiet. A file system whose files cannot be spliced into gets the pipe's bytes by
``read``/``pwrite`` instead.
"""
from __future__ import annotations

import errno
import os
import select
import time
from typing import TYPE_CHECKING, Callable

from vlmdata.atomic import WRITE_PIECE  # (bytes per move into the file: atomic says why)
from vlmdata.net.errors import Cancelled

if TYPE_CHECKING:
    import socket

PIPE_SIZE = 1 << 20  # bytes per move out of the socket (the default pipe holds 64 KiB; an unprivileged process may ask for 1 MiB)
CHECK_EVERY = 0.2  # seconds between looks at the stop signal while the socket is quiet


def available() -> bool:
    """Whether this system splices (Linux, Python 3.10+) and the user has not turned it off."""
    return hasattr(os, "splice") and os.environ.get("VLMDATA_NO_SPLICE", "") in ("", "0")


class SocketToFile:
    """Moves bytes from ``sock`` to a file through a pipe of its own (``close`` it after)."""

    def __init__(self, sock: socket.socket, stopped: Callable[[], bool] | None = None) -> None:
        import fcntl

        self.stopped = stopped
        self.sfd = sock.fileno()
        self.timeout = sock.gettimeout()
        self.r, self.w = os.pipe2(os.O_CLOEXEC)
        try:
            self.cap = fcntl.fcntl(self.w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # above /proc/sys/fs/pipe-max-size: keep the default
            self.cap = fcntl.fcntl(self.w, fcntl.F_GETPIPE_SZ)
        self._poll = select.poll()
        self._poll.register(self.sfd, select.POLLIN)
        self._copy = False  # the file system refused a splice: copy out of the pipe instead

    def close(self) -> None:
        """Close the pipe (bytes still in it were never written: the caller is giving up)."""
        if self.r >= 0:
            os.close(self.r)
            os.close(self.w)
            self.r = self.w = -1

    def move(self, fd: int, pos: int, limit: int) -> int:
        """Up to ``limit`` bytes from the socket into ``fd`` at offset ``pos``; waits for at least
        one (at most the socket's timeout: TimeoutError); 0 when the peer has closed."""
        n = self._take(min(limit, self.cap))
        left = n
        while left:
            k = self._put(fd, pos, left)
            pos += k
            left -= k
        return n

    def _take(self, limit: int) -> int:
        while True:
            try:
                return os.splice(self.sfd, self.w, limit, flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
            except BlockingIOError:
                self._wait()

    def _wait(self) -> None:
        """Until the socket has bytes (or its end); TimeoutError after its timeout, Cancelled
        when the caller stops meanwhile."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"read timed out (no byte for {self.timeout:g} s)")
            step = CHECK_EVERY if left is None or (self.stopped is not None and left > CHECK_EVERY) else left
            if self._poll.poll(max(1, int(step * 1000))):
                return
            if self.stopped is not None and self.stopped():
                raise Cancelled()

    def _put(self, fd: int, pos: int, n: int) -> int:
        if not self._copy:
            try:
                return os.splice(self.r, fd, min(n, WRITE_PIECE), offset_dst=pos, flags=os.SPLICE_F_MOVE)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                self._copy = True
        data = os.read(self.r, n)
        k = 0
        while k < len(data):
            k += os.pwrite(fd, data[k:], pos + k)
        return k
