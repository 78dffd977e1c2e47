"""GETs of many small files (one URL list's images) from many threads, each with its tries.

When no proxy is configured, requests go straight through urllib3 (the transport requests itself
uses) with a pool of ``jobs`` keep-alive connections; see ``ImageClient``. ``get_image`` is one
image: from a local mirror folder, or over HTTP with vlmdata.net.retry's loop (404/410: dead;
other 4xx: failed; timeouts, dropped connections, 5xx, 429: tried again).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit
from urllib.request import getproxies

import certifi
import requests
import urllib3
from requests.adapters import HTTPAdapter

from vlmdata.net.retry import (GaveUp, RetryPolicy, Transient, is_transient_error, is_transient_status, is_unreachable,
                               retry, retry_after_seconds, unreachable_reason)
from vlmdata.net.urls import is_local, rewrite

DEAD_STATUS = frozenset({404, 410})
CONNECT_TIMEOUT = 10.0  # seconds; the read timeout is the caller's (`vlmdata fetch --timeout`)


class Outcome:
    """What became of one record: saved | converted | dead | failed (with the status, the error, the format)."""

    __slots__ = ("kind", "status", "error", "source_format", "unreachable")

    def __init__(self, kind: str, *, status: int | None = None, error: str = "", source_format: str = "",
                 unreachable: bool = False) -> None:
        self.kind, self.status, self.error, self.source_format = kind, status, error, source_format
        self.unreachable = unreachable  # the host could not be reached at all


class ImageClient:
    """GETs of many small files from ``jobs`` threads.

    When no proxy is configured, requests go straight through urllib3 (the transport requests
    itself uses) with a pool of ``jobs`` keep-alive connections: requests' per-call work
    (environment, netrc, cookies, hooks) costs several times the CPU of the request itself, and
    with thousands of images per second the CPU is the limit. Certificates are verified (the
    session's CA bundle, else certifi's). With a proxy, auth or cookies on the session, the
    session is used, its pool enlarged to ``jobs``.
    """

    _RETRY = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5, raise_on_status=False)

    def __init__(self, session: requests.Session, jobs: int, timeout: float) -> None:
        self.session = session
        self.timeout = (CONNECT_TIMEOUT, timeout)
        self._timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT, read=timeout)
        self.pool: urllib3.PoolManager | None = None
        if _uses_proxy(session) or session.auth is not None or len(session.cookies) or session.verify is False:
            for prefix in ("http://", "https://"):
                adapter = session.get_adapter(prefix + "x")
                if getattr(adapter, "_pool_maxsize", 0) < jobs:
                    session.mount(prefix, HTTPAdapter(pool_connections=16, pool_maxsize=jobs, max_retries=0))
            return
        ca = session.verify if isinstance(session.verify, str) else certifi.where()
        self.pool = urllib3.PoolManager(num_pools=64, maxsize=jobs, block=False, headers=dict(session.headers),
                                        cert_reqs="CERT_REQUIRED", ca_certs=ca)

    def get(self, url: str) -> tuple[int, Mapping[str, str], bytes]:
        if self.pool is None:
            r = self.session.get(url, timeout=self.timeout)
            return r.status_code, r.headers, r.content
        r = self.pool.request("GET", url, retries=self._RETRY, timeout=self._timeout, preload_content=True)
        return r.status, r.headers, r.data

    def close(self) -> None:
        if self.pool is not None:
            self.pool.clear()


def _uses_proxy(session: requests.Session) -> bool:
    if session.proxies:
        return True
    return bool(session.trust_env and ({"http", "https", "all"} & set(getproxies())))


def _is_transient(e: BaseException) -> bool:
    if isinstance(e, requests.RequestException):
        return is_transient_error(e)
    if isinstance(e, urllib3.exceptions.MaxRetryError):
        if e.reason is None:  # too many redirects
            return False
        e = e.reason
    if isinstance(e, (urllib3.exceptions.SSLError, urllib3.exceptions.LocationValueError)):
        return False  # a certificate problem or a bad URL does not go away by retrying
    return isinstance(e, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


def get_image(url: str, client: ImageClient, mirror: str | None, policy: RetryPolicy,
              stop: threading.Event) -> tuple[bytes | None, Outcome | None]:
    """The body of ``url``, or an outcome saying why there is none."""
    where = rewrite(url, mirror) if mirror else url
    if mirror and is_local(mirror):
        try:
            return Path(where).read_bytes(), None
        except FileNotFoundError:
            return None, Outcome("dead", status=None, error="not in the mirror")
        except OSError as e:
            return None, Outcome("failed", error=f"cannot read {where}: {e.strerror}")

    def attempt() -> tuple[bytes | None, Outcome | None]:
        if stop.is_set():
            return None, Outcome("failed", error="interrupted")
        try:
            status, headers, body = client.get(where)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
            if not _is_transient(e):
                return None, Outcome("failed", error=f"{type(e).__name__}: {e}")
            if is_unreachable(e):
                raise Transient(f"cannot reach {urlsplit(where).netloc}: {unreachable_reason(e)}", unreachable=True) from None
            cause = e.reason if isinstance(e, urllib3.exceptions.MaxRetryError) and e.reason is not None else e
            raise Transient(type(cause).__name__) from None  # the cause (ReadTimeoutError), not the wrapper
        if status == 200:
            return body, None
        if status in DEAD_STATUS:
            return None, Outcome("dead", status=status, error=f"HTTP {status}")
        if not is_transient_status(status):
            return None, Outcome("failed", status=status, error=f"HTTP {status}")
        raise Transient(f"HTTP {status}", retry_after_seconds(headers.get("Retry-After")))

    try:
        return retry(attempt, policy, wait=stop.wait)
    except GaveUp as e:
        return None, Outcome("failed", error=f"{e.last} after {e.tries} tries", unreachable=e.unreachable)
