"""A streamed response's body, read into buffers the caller owns, as soon as bytes arrive.

``requests``/urllib3 hand a body out as new ``bytes`` per read: ``raw.read(n)`` waits for all
``n`` bytes (so a killed download loses up to ``n`` bytes it had already received, and a file
smaller than ``n`` cannot resume at all), then http.client copies them once more
(``bytearray`` -> ``bytes``), and every read allocates a fresh megabyte that the kernel must
fault in page by page. For a 1 GiB download that is most of the system time.

``BodyReader.readinto(view)`` instead asks the socket for what has arrived (at most one
``recv``), straight into the caller's buffer, and keeps http.client's and urllib3's byte counts
right, so the end of the body is handled by urllib3 as usual (its Content-Length check, the
connection back to the pool). This uses their private attributes (``raw._fp``, ``fp``,
``length``, ``length_remaining``, ``_fp_bytes_read``); each is checked first, and any response
that does not have them all (a chunked body, another urllib3) is read through the public
``read1``/``read`` instead, with the same result.

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
        self.raw = resp.raw
        self.hcr = getattr(self.raw, "_fp", None)  # the http.client.HTTPResponse
        self.sock = getattr(self.hcr, "fp", None)  # its buffered socket file
        self.fast = (
            self.sock is not None and hasattr(self.sock, "readinto1")
            and getattr(self.hcr, "chunked", True) is False
            and isinstance(getattr(self.hcr, "length", None), int)
            and isinstance(getattr(self.raw, "length_remaining", None), int)
            and isinstance(getattr(self.raw, "_fp_bytes_read", None), int)
        )
        self._ended = False

    def readinto(self, view: memoryview) -> int:
        """Up to ``len(view)`` bytes of the body into ``view``; waits for at least one; 0 at its end.

        A body cut short raises ConnectionError (or urllib3's errors on the public path)."""
        if not self.fast:
            read1 = getattr(self.raw, "read1", None)
            data = read1(len(view), decode_content=False) if read1 is not None else \
                self.raw.read(len(view), decode_content=False)
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
        """The socket the rest of this body can be spliced from, or None (TLS, chunked, another
        urllib3, no splice here)."""
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
        """``n`` more bytes of the body were taken from the socket by the caller."""
        self.hcr.length -= n
        self.raw.length_remaining -= n
        self.raw._fp_bytes_read += n

    def finish(self) -> None:
        """The whole body has been taken: urllib3 closes it and pools the connection."""
        if not self._ended:
            self._ended = True
            self.raw.read(decode_content=False)  # b"": urllib3 closes the body and pools the connection


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
