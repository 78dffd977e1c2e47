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

``plain_socket()`` is the socket under such a body when the rest of it can be spliced into its
file (vlmdata.net.splice: not TLS). Its caller first takes what http.client has already read
ahead (``take_buffered``: the header's last read brings the body's first bytes) and then counts
each byte it moves past this reader (``consumed``), so the same bookkeeping holds.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import socket


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
            self._end()
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
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self.raw.read(decode_content=False)  # b"": urllib3 closes the body and pools the connection
