"""The one retry loop of every download, and what counts as worth another try.

``retry(attempt, policy)`` calls ``attempt`` until it returns (``aretry``: the same for a
coroutine, with the same bookkeeping, ``Tries``). The caller says what is retryable:
its attempt raises ``Transient`` for a failure another try may fix (the helpers below classify
HTTP statuses and connection errors: timeouts, dropped connections, 5xx, 408/425/429), and any
other exception goes straight through. A server that cannot be reached at all (its name does not
resolve, the connection is refused: ``Transient(..., unreachable=True)``) gets one short retry,
not the whole backoff: offline, a fetch fails in seconds, not minutes. Waits grow exponentially with jitter, are capped, and
honour a server's Retry-After (up to ``max_retry_after``). When every try failed, ``GaveUp``
carries the last failure. (huggingface_hub's ``http_backoff`` has the same shape: one loop, the
caller names what to retry.)
"""
from __future__ import annotations

import errno
import time
from typing import Awaitable, Callable, TypeVar

import msgspec

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def is_transient_status(status: int) -> bool:
    return status in TRANSIENT_STATUS or 500 <= status < 600


def is_transient_error(exc: BaseException) -> bool:
    """A failed request another try may fix: a timeout, a connection refused, cut or reset, a malformed
    answer; not a certificate that fails verification or a URL that cannot be requested."""
    from vlmdata.net.client import RequestError

    if isinstance(exc, RequestError):
        return exc.transient
    return isinstance(exc, (ConnectionError, TimeoutError))


# What "no route to the server at all" looks like through http.client, aiohttp and httpx (the hub client):
# the name does not resolve, nothing listens, or the network is down. Another try a second later
# rarely helps, so these get one short retry, not the full backoff (minutes of waiting offline).
_UNREACHABLE_TYPES = frozenset({"NameResolutionError", "NewConnectionError", "ConnectError", "gaierror",
                                "ConnectionRefusedError"})
_UNREACHABLE_ERRNO = frozenset({errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN})


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the server cannot be reached at all."""
    import socket  # (here: a fetch with nothing to do never imports the network stack)

    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        e = stack.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if type(e).__name__ in _UNREACHABLE_TYPES or isinstance(e, socket.gaierror):
            return True
        if isinstance(e, OSError) and e.errno in _UNREACHABLE_ERRNO:
            return True
        stack += [e.__cause__, e.__context__, getattr(e, "reason", None), *getattr(e, "args", ())]
    return False


OFFLINE_HINT = ("offline or behind a firewall? fetch from a copy you can reach: --mirror BASE (an http(s) mirror "
                "or a local folder; VLMDATA_MIRROR), --hf-endpoint URL (a Hub mirror; HF_ENDPOINT), and "
                "HF_HUB_OFFLINE=1 to skip the Hub altogether; then run the same command again")


def unreachable_reason(exc: BaseException) -> str:
    """A few words for an is_unreachable error: why the server could not be reached."""
    text = repr(exc) + " " + str(exc)
    for e in (exc, exc.__cause__, exc.__context__):
        if e is not None:
            text += " " + repr(e)
    low = text.lower()
    if "name or service not known" in low or "nodename nor servname" in low or "getaddrinfo" in low \
            or "nameresolution" in low or "temporary failure in name resolution" in low or "name resolution" in low:
        return "its name does not resolve (no network, or no DNS)"
    if "refused" in low:
        return "the connection was refused (nothing listens there)"
    if "unreachable" in low or "network is down" in low:
        return "the network is unreachable"
    return "no connection could be made"


def transient_request(exc: BaseException, url: str) -> "Transient | None":
    """The Transient a request to ``url`` that got no answer is (a server that cannot be reached at
    all: unreachable, one short retry), or None when another try would fail the same way."""
    from vlmdata.net.urls import host_of, scrub

    if is_unreachable(exc):
        return Transient(f"cannot reach {host_of(url)}: {unreachable_reason(exc)}", unreachable=True)
    if is_transient_error(exc):
        return Transient(scrub(str(exc)))
    return None


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # ("²".isdigit() is true, and float() refuses it)
        return float(value)
    from email.utils import parsedate_to_datetime  # rare: most servers send seconds

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class RetryPolicy(msgspec.Struct):
    attempts: int = 6  # total tries, the first included
    base: float = 0.5  # seconds before the 2nd try
    cap: float = 60.0  # longest wait between tries
    max_retry_after: float = 300.0  # longest Retry-After we are willing to honour

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before try number ``attempt + 1`` (attempt counts from 1)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        import random  # (here: a command that never waits never imports it)

        d = min(self.cap, self.base * (2 ** (attempt - 1)))
        return d * (0.5 + random.random() / 2)


class Transient(Exception):
    """An attempt failed in a way that another try may fix; ``retry_after``: what the server asked for;
    ``unreachable``: the server could not be reached at all (is_unreachable), worth one short retry only."""

    def __init__(self, message: str, retry_after: float | None = None, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.unreachable = unreachable


class GaveUp(Exception):
    """Every try failed; ``last`` is the last failure."""

    def __init__(self, tries: int, last: Transient) -> None:
        super().__init__(f"gave up after {tries} tries: {last}")
        self.tries = tries
        self.last = last

    @property
    def unreachable(self) -> bool:
        return self.last.unreachable


class Tries:
    """The bookkeeping of one retry loop, shared by the blocking loop and the asyncio one."""

    def __init__(self, policy: RetryPolicy, progress: Callable[[], int] | None = None) -> None:
        self.policy, self.progress = policy, progress
        self.failures = 0
        self.unreachable = 0  # tries in a row whose server could not be reached at all
        self._before = 0

    def starting(self) -> None:
        self._before = self.progress() if self.progress is not None else 0

    def failed(self, e: Transient) -> float:
        """Seconds to wait before the next try; GaveUp when the policy's tries are spent (an
        unreachable server: after one short retry)."""
        moved = self.progress is not None and self.progress() > self._before
        self.failures = 1 if moved else self.failures + 1
        self.unreachable = self.unreachable + 1 if e.unreachable else 0
        if self.failures >= self.policy.attempts or self.unreachable >= min(2, self.policy.attempts):
            raise GaveUp(self.failures, e) from None
        return min(self.policy.delay(1), 1.0) if e.unreachable else self.policy.delay(self.failures, e.retry_after)


def retry(attempt: Callable[[], T], policy: RetryPolicy, *, wait: Callable[[float], object] = time.sleep,
          progress: Callable[[], int] | None = None) -> T:
    """``attempt()``, tried again after each ``Transient`` until it returns or ``policy.attempts`` are spent.

    ``wait(seconds)`` sleeps between tries; it may raise to stop early (Ctrl-C). ``progress`` is a
    counter an attempt moves when it gets somewhere (bytes received): a failed try that moved it
    starts the count again, so a large download over a flaky link is not given up while it advances.
    """
    tries = Tries(policy, progress)
    while True:
        tries.starting()
        try:
            return attempt()
        except Transient as e:
            wait(tries.failed(e))


async def aretry(attempt: Callable[[], Awaitable[T]], policy: RetryPolicy, *,
                 wait: Callable[[float], Awaitable[object]] | None = None) -> T:
    """``retry`` for a coroutine: ``await attempt()`` until it returns; the waits are ``asyncio.sleep``."""
    import asyncio

    tries = Tries(policy)
    while True:
        tries.starting()
        try:
            return await attempt()
        except Transient as e:
            await (wait or asyncio.sleep)(tries.failed(e))
