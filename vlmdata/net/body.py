"""A streamed response's body, read into buffers the caller owns, as soon as bytes arrive.

http.client hands a body out as new ``bytes`` per read: ``read(n)`` waits for all ``n`` bytes (so
a killed download loses up to ``n`` bytes it had already received, and a file smaller than ``n``
cannot resume at all), and every read allocates a fresh megabyte that the kernel must fault in
page by page. For a 1 GiB download that was most of the system time.

``BodyReader.readinto(view)`` instead asks the socket for what has arrived (at most one
``recv``), straight into the caller's buffer, and keeps http.client's count of the bytes still to
come (``length``) right, so the end of the body is handled by http.client as usual (the
connection is then free for the next request: vlmdata.net.client). A body that is chunked, or
whose length is not given, is read through http.client's ``read1`` instead, with the same result.

``BodyToFile`` moves a body into a file at the offsets its caller gives: spliced by the kernel
when the body allows it (``plain_socket()``: not TLS; vlmdata.net.splice), else read into the
caller's buffer and written with ``pwrite``. Spliced, the bytes http.client has already read
ahead (the header's last read brings the body's first bytes) are written first, and each byte
moved past this reader is counted (``consumed``), so the same bookkeeping holds.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import socket

    from vlmdata.net.splice import SocketToFile


class BodyReader:
    def __init__(self, resp: Any) -> None:
        """``resp``: a vlmdata.net.client.Response."""
        self.hcr = resp.raw  # the http.client.HTTPResponse
        self.sock = getattr(self.hcr, "fp", None)  # its buffered socket file
        self.fast = (
            self.sock is not None and hasattr(self.sock, "readinto1")
            and getattr(self.hcr, "chunked", True) is False
            and isinstance(getattr(self.hcr, "length", None), int)
        )
        self._ended = False

    def readinto(self, view: memoryview) -> int:
        """Up to ``len(view)`` bytes of the body into ``view``; waits for at least one; 0 at its end.

        A body cut short raises ConnectionError (http.client's IncompleteRead when not fast)."""
        if not self.fast:
            data = self.hcr.read1(len(view))
            view[:len(data)] = data
            return len(data)
        left = self.hcr.length
        if left <= 0:
            self.finish()
            return 0
        n = self.sock.readinto1(view[:left] if left < len(view) else view)
        if not n:
            raise ConnectionError(f"connection closed with {left} bytes of the body still to come")
        self.consumed(n)
        return n

    @property
    def left(self) -> int:
        """Bytes of the body still to come (a fast reader's)."""
        return self.hcr.length

    def plain_socket(self) -> socket.socket | None:
        """The socket the rest of this body can be spliced from, or None (TLS, chunked, no splice here)."""
        import socket

        from vlmdata.net import splice

        if not self.fast or not splice.available():
            return None
        sock = getattr(getattr(self.sock, "raw", None), "_sock", None)
        return sock if type(sock) is socket.socket else None  # (an SSLSocket is a subclass: excluded)

    def take_buffered(self) -> bytes:
        """What http.client has read ahead of the body (at most ``left`` bytes; waits for one
        read of the socket when nothing is buffered); afterwards its buffer is empty."""
        left = self.hcr.length
        if left <= 0:
            return b""
        ahead = len(self.sock.peek(1))  # the whole buffer (a peek at an empty one reads once)
        if not ahead:
            raise ConnectionError(f"connection closed with {left} bytes of the body still to come")
        data = self.sock.read1(min(ahead, left))
        self.consumed(len(data))
        return data

    def consumed(self, n: int) -> None:
        """``n`` more bytes of the body were taken from the socket by the caller; after its last
        byte the body is over at once (finish), so a caller that stops at the end of what it asked
        for, without the read that returns 0, still gives its connection back for the next request."""
        self.hcr.length -= n
        if self.hcr.length <= 0:
            self.finish()

    def finish(self) -> None:
        """The whole body has been taken: http.client closes it (its connection can serve the next request)."""
        if not self._ended:
            self._ended = True
            self.hcr.read()  # b"": http.client marks the response closed


class BodyToFile:
    """A body moved into a file: ``move(fd, pos, limit)`` until it returns 0 (the body's end). A
    context manager (the splice's pipe is closed at its end)."""

    def __init__(self, body: BodyReader, buf: memoryview, stopped: Callable[[], bool] | None = None) -> None:
        """``stopped``: while the socket is quiet, a spliced move checks it and raises Cancelled
        when it says so (vlmdata.net.splice)."""
        self.body = body
        self.buf = buf  # (for a body that is not spliced)
        sock = body.plain_socket()
        self.mover: SocketToFile | None = None
        if sock is not None:
            from vlmdata.net.splice import SocketToFile

            self.mover = SocketToFile(sock, stopped)
        self._ahead: memoryview | None = None  # what http.client read ahead, not yet written

    def __enter__(self) -> "BodyToFile":
        return self

    def __exit__(self, *_: object) -> None:
        if self.mover is not None:
            self.mover.close()

    def move(self, fd: int, pos: int, limit: int) -> int:
        """Up to ``limit`` (> 0) bytes of the body into ``fd`` at offset ``pos``; waits for at
        least one; 0 at the body's end. A body cut short raises ConnectionError."""
        if self.mover is None:
            n = self.body.readinto(self.buf[:limit] if limit < len(self.buf) else self.buf)
            pwrite_all(fd, self.buf[:n], pos)
            return n
        if self._ahead is None:
            self._ahead = memoryview(self.body.take_buffered())
        if self._ahead:
            chunk, self._ahead = self._ahead[:limit], self._ahead[limit:]
            pwrite_all(fd, chunk, pos)
            return len(chunk)
        left = self.body.left
        if left <= 0:
            self.body.finish()
            return 0
        n = self.mover.move(fd, pos, min(limit, left))
        if not n:
            raise ConnectionError(f"connection closed with {left} bytes of the body still to come")
        self.body.consumed(n)
        return n


def pwrite_all(fd: int, data: memoryview, pos: int) -> None:
    """All of ``data`` into ``fd`` at offset ``pos``."""
    while data:
        n = os.pwrite(fd, data, pos)
        data, pos = data[n:], pos + n
