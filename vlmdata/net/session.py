"""A requests session configured the same way everywhere, made when it is first used.

Certificates are always verified (requests' default; we never pass ``verify=False``); the
connection pool is sized for the number of concurrent requests the caller plans to make.

``make_session`` returns a stand-in that builds the real ``requests.Session`` on its first use:
importing requests, urllib3 and http.client costs ~80 ms, and a fetch whose files are all in the
downloads folder already (placement only) or journalled as placed never sends a request.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from vlmdata import __version__

if TYPE_CHECKING:
    import requests

USER_AGENT = f"vlmdata/{__version__} (+https://github.com/vlmdata)"


def new_session(pool_size: int = 16) -> "requests.Session":
    """A configured requests.Session, now."""
    import requests
    from requests.adapters import HTTPAdapter

    s = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    s.headers["User-Agent"] = USER_AGENT
    # Byte ranges and sizes must refer to the bytes on the wire: no transparent decompression.
    s.headers["Accept-Encoding"] = "identity"
    return s


class LazySession:
    """Behaves as the ``requests.Session`` it makes on first use (every attribute is the real one's)."""

    def __init__(self, pool_size: int) -> None:
        self._pool_size = pool_size
        self._real: requests.Session | None = None
        self._lock = threading.Lock()

    def real(self) -> "requests.Session":
        if self._real is None:
            with self._lock:
                if self._real is None:
                    self._real = new_session(self._pool_size)
        return self._real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)

    def close(self) -> None:
        if self._real is not None:
            self._real.close()


def make_session(pool_size: int = 16) -> "requests.Session":
    """The session (made on first use: see the module's docstring)."""
    return LazySession(pool_size)  # type: ignore[return-value]
