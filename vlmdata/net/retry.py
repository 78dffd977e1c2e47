"""When to retry an HTTP request, and how long to wait first.

Connection errors, timeouts, 5xx and 429 are transient; everything else (404, 403, ...) is not.
Waits grow exponentially with jitter, capped, and honour a server's Retry-After.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import requests

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def is_transient_status(status: int) -> bool:
    return status in TRANSIENT_STATUS or 500 <= status < 600


def is_transient_error(exc: BaseException) -> bool:
    return isinstance(exc, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                            ConnectionError, TimeoutError))


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@dataclass
class RetryPolicy:
    attempts: int = 6  # total tries, the first included
    base: float = 0.5  # seconds before the 2nd try
    cap: float = 60.0  # longest wait between tries
    max_retry_after: float = 300.0  # longest Retry-After we are willing to honour

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before try number ``attempt + 1`` (attempt counts from 1)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        d = min(self.cap, self.base * (2 ** (attempt - 1)))
        return d * (0.5 + random.random() / 2)
