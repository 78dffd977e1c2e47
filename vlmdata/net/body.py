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
"""
from __future__ import annotations

from typing import Any


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
        self.hcr.length -= n
        self.raw.length_remaining -= n
        self.raw._fp_bytes_read += n
        return n

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self.raw.read(decode_content=False)  # b"": urllib3 closes the body and pools the connection
