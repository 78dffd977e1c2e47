"""What a client that trusts the environment looks up for every request, looked up once per host.

aiohttp's ``trust_env=True`` reads ``~/.netrc`` (in an executor thread) and the proxy variables
(in another) for every request: two thread hand-offs, a stat and an environment scan per image,
about a third of the CPU a URL list cost. ``EnvAccess`` gives the same answers (aiohttp's own
proxy lookup; the netrc entry as aiohttp reads it) from a cache keyed by scheme and host, read
when a host is first seen; the session is then made with ``trust_env=False``.
"""
from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any


class EnvAccess:
    """``kwargs(url)``: the proxy, proxy_auth and auth arguments for a request to ``url``."""

    def __init__(self) -> None:
        self._by_host: dict[tuple[str, str], dict[str, Any]] = {}
        self._netrc: netrc.netrc | None = read_netrc()

    def kwargs(self, url: Any) -> dict[str, Any]:
        """``url``: a yarl URL (aiohttp's). Same answers as aiohttp's per-request lookups."""
        key = (url.scheme, url.host or "")
        got = self._by_host.get(key)
        if got is None:
            got = self._by_host[key] = self._lookup(url)
        return got

    def _lookup(self, url: Any) -> dict[str, Any]:
        from aiohttp import BasicAuth
        from aiohttp.helpers import get_env_proxy_for_url

        out: dict[str, Any] = {}
        try:
            out["proxy"], out["proxy_auth"] = get_env_proxy_for_url(url)
        except LookupError:
            pass
        found = netrc_login(self._netrc, url.host)
        if found is not None:
            out["auth"] = BasicAuth(*found)
        return out


def read_netrc() -> netrc.netrc | None:
    """``$NETRC`` or ``~/.netrc``, when there is one that parses (as aiohttp and requests read it)."""
    try:
        return netrc.netrc(os.environ.get("NETRC") or str(Path.home() / ".netrc"))
    except (OSError, RuntimeError, netrc.NetrcParseError):  # (RuntimeError: no home folder)
        return None


def netrc_login(rc: netrc.netrc | None, host: str | None) -> tuple[str, str] | None:
    """(user, password) that ``rc`` gives ``host``, as requests and aiohttp pick them (the login, else
    the account), or None."""
    entry = rc.authenticators(host) if rc is not None and host else None
    if entry is None:
        return None
    login, account, password = entry
    return (login if (login or account is None) else account) or "", password or ""
