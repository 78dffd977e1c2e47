"""The one retry loop of every download, and what counts as worth another try.

``retry(attempt, policy)`` calls ``attempt`` until it returns. The caller says what is retryable:
its attempt raises ``Transient`` for a failure another try may fix (the helpers below classify
HTTP statuses and connection errors: timeouts, dropped connections, 5xx, 408/425/429), and any
other exception goes straight through. Waits grow exponentially with jitter, are capped, and
honour a server's Retry-After (up to ``max_retry_after``). When every try failed, ``GaveUp``
carries the last failure. (huggingface_hub's ``http_backoff`` has the same shape: one loop, the
caller names what to retry.)
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Callable, TypeVar

import requests

T = TypeVar("T")

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


class Transient(Exception):
    """An attempt failed in a way that another try may fix; ``retry_after``: what the server asked for."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GaveUp(Exception):
    """Every try failed; ``last`` is the last failure."""

    def __init__(self, tries: int, last: Transient) -> None:
        super().__init__(f"gave up after {tries} tries: {last}")
        self.tries = tries
        self.last = last


def retry(attempt: Callable[[], T], policy: RetryPolicy, *, wait: Callable[[float], object] = time.sleep,
          progress: Callable[[], int] | None = None) -> T:
    """``attempt()``, tried again after each ``Transient`` until it returns or ``policy.attempts`` are spent.

    ``wait(seconds)`` sleeps between tries; it may raise to stop early (Ctrl-C). ``progress`` is a
    counter an attempt moves when it gets somewhere (bytes received): a failed try that moved it
    starts the count again, so a large download over a flaky link is not given up while it advances.
    """
    failures = 0
    while True:
        before = progress() if progress is not None else 0
        try:
            return attempt()
        except Transient as e:
            moved = progress is not None and progress() > before
            failures = 1 if moved else failures + 1
            if failures >= policy.attempts:
                raise GaveUp(failures, e) from None
            wait(policy.delay(failures, e.retry_after))
