"""A requests session configured the same way everywhere.

Certificates are always verified (requests' default; we never pass ``verify=False``); the
connection pool is sized for the number of concurrent requests the caller plans to make.
"""
from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter

from vlmdata import __version__

USER_AGENT = f"vlmdata/{__version__} (+https://github.com/vlmdata)"


def make_session(pool_size: int = 16) -> requests.Session:
    s = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    s.headers["User-Agent"] = USER_AGENT
    # Byte ranges and sizes must refer to the bytes on the wire: no transparent decompression.
    s.headers["Accept-Encoding"] = "identity"
    return s
