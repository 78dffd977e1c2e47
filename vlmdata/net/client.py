"""GET requests on the standard library's http.client: connections kept alive per host, redirects,
proxies and credentials from the environment, certificates always verified.

Why not requests: importing requests and urllib3 costs ~380M instructions (~0.2 s on the project's
2-core machine) in every command that sends a request, a tenth of a 1 GiB download over loopback;
http.client costs ~90M. The engine already reads bodies through http.client's own response
(vlmdata.net.body: into a buffer, or spliced into the file), so what requests added on top is what
this module keeps, the way requests does it:

- connections kept alive per (scheme, host, port, proxy), looked at before reuse (one the server
  has closed is dropped), and a GET whose reused connection turns out dead is sent once more on a
  fresh one;
- redirects, at most MAX_REDIRECTS, relative ones too; ``Authorization`` is dropped once a redirect
  leaves the origin (a Hub token never reaches its CDN), except for an http -> https upgrade of the
  same host; credentials in the URL, else ``~/.netrc`` (``$NETRC``), for each origin;
- ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``ALL_PROXY`` and ``NO_PROXY`` (http:// proxies; https
  through a CONNECT tunnel);
- TLS verified against ``REQUESTS_CA_BUNDLE``, else ``CURL_CA_BUNDLE``, else ``SSL_CERT_FILE`` /
  ``SSL_CERT_DIR``, else certifi's bundle (a file or a folder), one context per bundle (loading a
  bundle costs ~250M instructions).

Whatever fails below a status line (the name does not resolve, the connection is refused or cut,
a timeout, a malformed answer, a certificate) is raised as ``RequestError`` from the original, so
vlmdata.net.retry can tell what another try may fix. The connect timeout bounds the connecting; the
read timeout bounds each wait for bytes after it (the socket's own timeout, which a splice obeys too).

Why one file of ~400 lines: the pool, the redirect loop, the proxy tunnel and the credentials all act on
one request's connection and its headers; split, each part would take the others' state as arguments.
"""
from __future__ import annotations

import base64
import os
import select
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable
from urllib.parse import quote, unquote, urljoin, urlsplit

from vlmdata import __version__
from vlmdata.net.urls import shown

if TYPE_CHECKING:
    import http.client
    import netrc
    import ssl

USER_AGENT = f"vlmdata/{__version__} (+https://github.com/vlmdata)"
MAX_REDIRECTS = 30
REDIRECTS = frozenset({301, 302, 303, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}
_SAFE = "!#$%&'()*+,/:;=?@[]~"  # what a request line keeps as it is (requests' requote_uri)
DRAIN = 64 << 10  # a redirect's (or an error's) body up to this is read, so its connection can be reused

Origin = tuple[str, str, int]  # scheme, host, port


class RequestError(Exception):
    """A request that got no answer to use; ``__cause__`` is what failed. ``transient``: another
    try may fix it (a timeout, a cut connection), not a certificate or a malformed URL."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class Response:
    """One answer: ``status_code``, ``reason``, ``headers`` (case-insensitive ``get``), ``url`` (after
    redirects) and ``raw``, http.client's response, whose body is read as it arrives. Closing it (or
    leaving its ``with`` block) gives its connection back for reuse when the body was read to its
    end, and closes the connection otherwise."""

    def __init__(self, raw: "http.client.HTTPResponse", url: str,
                 release: Callable[["http.client.HTTPResponse"], None]) -> None:
        self.raw = raw
        self.status_code: int = raw.status
        self.reason: str = raw.reason
        self.headers = raw.headers
        self.url = url
        self._release: Callable[["http.client.HTTPResponse"], None] | None = release

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes of the body, b"" at its end. A body cut short raises ConnectionError
        (http.client's own ``read(n)`` would end it quietly)."""
        left = self.raw.length  # (None: no length given, or chunked: http.client checks those)
        data = self.raw.read(n)
        if not data and n and left:
            raise ConnectionError(f"connection closed with {left} bytes of the body still to come")
        return data

    def read_all(self) -> bytes:
        """The whole body (then the response is closed)."""
        try:
            return self.raw.read()
        finally:
            self.close()

    def discard(self) -> None:
        """Close, reading a small rest of the body first so the connection can be reused."""
        try:
            if not self.raw.chunked and self.raw.length is not None and self.raw.length <= DRAIN:
                self.raw.read()
        except Exception:  # noqa: BLE001 - a body we do not want failed to arrive: the close below drops it
            pass
        self.close()

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release(self.raw)

    def __enter__(self) -> "Response":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Client:
    """GETs with shared keep-alive connections (at most ``pool_size`` idle per origin); thread-safe.
    ``headers`` are sent with every request (a request's own headers win)."""

    def __init__(self, pool_size: int = 16, headers: dict[str, str] | None = None) -> None:
        self.pool_size = pool_size
        # Byte ranges and sizes must refer to the bytes on the wire: no compression asked for.
        self.headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})}
        self._idle: dict[tuple, list["http.client.HTTPConnection"]] = {}
        self._lock = threading.Lock()
        self._env: _Environment | None = None

    # ------------------------------------------------------------------ public
    def get(self, url: str, headers: dict[str, str] | None = None, timeout: tuple[float, float] = (15.0, 60.0),
            allow_redirects: bool = True) -> Response:
        """GET ``url``, following redirects; the answer's body is left to read. RequestError when no answer came."""
        import http.client

        env = self._environment()
        given = _merged(self.headers, headers or {})
        keep_auth = True
        try:
            for _ in range(MAX_REDIRECTS + 1):
                resp = self._once(url, env.authorised(url, given, keep_auth), timeout, env)
                location = resp.headers.get("Location")
                if not allow_redirects or resp.status_code not in REDIRECTS or not location:
                    return resp
                resp.discard()
                new = urljoin(url, location)
                if url.lower().startswith("https://") and not new.lower().startswith("https://"):
                    # (not followed, so nothing, not even a netrc login, goes out in the clear; a later
                    # hop back to https would hide the downgrade from a caller that looks at the last URL)
                    raise RequestError(f"redirected to {shown(new)}, which is not HTTPS: refused", transient=False)
                keep_auth = keep_auth and _same_origin(url, new)
                url = new
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise RequestError(f"{type(e).__name__}: {e}", transient=_transient(e)) from e
        raise RequestError(f"more than {MAX_REDIRECTS} redirects (the last to {shown(url)})", transient=False)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for c in conns:
                c.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ one request
    def _environment(self) -> "_Environment":
        if self._env is None:
            self._env = _Environment()
        return self._env

    def _once(self, url: str, headers: dict[str, str], timeout: tuple[float, float], env: "_Environment") -> Response:
        import http.client

        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            raise RequestError(f"cannot request {shown(url)!r}: only http:// and https:// URLs with a host",
                               transient=False)
        host, port = parts.hostname, parts.port or DEFAULT_PORTS[scheme]
        proxy = env.proxy_for(scheme, host, port)
        # (a space or a non-ASCII character quoted as requests does; escapes already there are kept)
        target = quote(parts.path or "/", safe=_SAFE) + ("?" + quote(parts.query, safe=_SAFE) if parts.query else "")
        if proxy is not None and scheme == "http":  # a plain request through a proxy names the whole URL
            target = f"http://{_netloc(host, port, scheme)}{target}"
            headers = {**headers, **proxy.headers}
        key = (scheme, host, port, proxy)
        conn, reused = self._checkout(key)
        if conn is None:
            conn = _connect(scheme, host, port, proxy, timeout)
        else:
            conn.sock.settimeout(timeout[1])
        try:
            raw = _send(conn, target, headers)
        except (ConnectionError, http.client.BadStatusLine):
            conn.close()
            if not reused:
                raise
            conn = _connect(scheme, host, port, proxy, timeout)  # the server had closed the idle connection
            try:
                raw = _send(conn, target, headers)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            conn.close()
            raise
        return Response(raw, url, lambda r: self._checkin(key, conn, r))

    def _checkout(self, key: tuple) -> tuple["http.client.HTTPConnection | None", bool]:
        with self._lock:
            idle = self._idle.get(key)
            while idle:
                conn = idle.pop()
                if _alive(conn):
                    return conn, True
                conn.close()
        return None, False

    def _checkin(self, key: tuple, conn: "http.client.HTTPConnection", raw: "http.client.HTTPResponse") -> None:
        # Reusable only once the body has been read to its end and the server keeps the connection open
        # (http.client hands the socket to a response that ends with the connection: conn.sock is None).
        if raw.isclosed() and conn.sock is not None:
            with self._lock:
                idle = self._idle.setdefault(key, [])
                if len(idle) < self.pool_size:
                    idle.append(conn)
                    return
        raw.close()
        conn.close()


# ---------------------------------------------------------------------- connections


def _connect(scheme: str, host: str, port: int, proxy: "_Proxy | None",
             timeout: tuple[float, float]) -> "http.client.HTTPConnection":
    import http.client

    if scheme == "https":
        if proxy is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                proxy.host, proxy.port, timeout=timeout[0], context=tls_context())
            conn.set_tunnel(host, port, headers=proxy.headers)
        else:
            conn = http.client.HTTPSConnection(host, port, timeout=timeout[0], context=tls_context())
    else:
        conn = http.client.HTTPConnection(proxy.host if proxy else host, proxy.port if proxy else port,
                                          timeout=timeout[0])
    try:
        conn.connect()
        conn.sock.settimeout(timeout[1])
    except BaseException:
        conn.close()
        raise
    return conn


def _send(conn: "http.client.HTTPConnection", target: str, headers: dict[str, str]) -> "http.client.HTTPResponse":
    conn.putrequest("GET", target, skip_accept_encoding=True)
    for k, v in headers.items():
        conn.putheader(k, v)
    conn.endheaders()
    return conn.getresponse()


def _alive(conn: "http.client.HTTPConnection") -> bool:
    """An idle connection is usable when its socket has nothing to read: readable means the server
    closed it (or sent bytes nobody asked for)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        return not select.select([sock], [], [], 0)[0]
    except (OSError, ValueError):
        return False


def _transient(e: BaseException) -> bool:
    """Worth another try: not a certificate that fails verification, not a URL http.client refuses
    (both ValueErrors, as is a name that cannot be encoded)."""
    return not isinstance(e, ValueError)


_TLS: dict[str | None, "ssl.SSLContext"] = {}
_TLS_LOCK = threading.Lock()


def ca_bundle() -> str | None:
    """The CA bundle the environment names, by requests' rule first: REQUESTS_CA_BUNDLE, else
    CURL_CA_BUNDLE, else the SSL_CERT_FILE / SSL_CERT_DIR that httpx (huggingface_hub's client) and
    OpenSSL read (a file, or a folder of hashed certificates); None: none named."""
    return (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            or os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR") or None)


def tls_context() -> "ssl.SSLContext":
    """Certificates verified against ``ca_bundle()``, else certifi's. One per bundle."""
    bundle = ca_bundle()
    if not bundle:
        try:
            import certifi

            bundle = certifi.where()
        except ImportError:  # (then the system's store)
            bundle = None
    with _TLS_LOCK:
        ctx = _TLS.get(bundle)
        if ctx is None:
            import ssl

            if bundle is not None and os.path.isdir(bundle):
                ctx = ssl.create_default_context(capath=bundle)
            else:
                ctx = ssl.create_default_context(cafile=bundle)
            _TLS[bundle] = ctx
    return ctx


# ---------------------------------------------------------------------- the environment


@dataclass(frozen=True)
class _Proxy:
    """An http:// proxy; ``auth``: the Proxy-Authorization its URL's credentials give."""

    host: str
    port: int
    auth: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Proxy-Authorization": self.auth} if self.auth else {}


class _Environment:
    """What the environment says about requests: the proxies (read once) and ``~/.netrc``."""

    def __init__(self) -> None:
        self.proxies: dict[str, str] = {}
        if any(k.lower() in ("http_proxy", "https_proxy", "all_proxy") for k in os.environ):
            import urllib.request  # (only then: it costs a few ms)

            self.proxies = urllib.request.getproxies_environment()
        self._netrc: netrc.netrc | None | bool = False  # False: not read yet

    def proxy_for(self, scheme: str, host: str, port: int) -> _Proxy | None:
        url = self.proxies.get(scheme) or self.proxies.get("all")
        if not url:
            return None
        import urllib.request

        if urllib.request.proxy_bypass_environment(host if ":" in host else f"{host}:{port}", self.proxies):
            return None
        p = urlsplit(url if "://" in url else "http://" + url)
        if p.scheme.lower() != "http" or not p.hostname:
            raise RequestError(f"the proxy {p.scheme}://{p.hostname} is not supported: set an http:// proxy "
                               f"in {scheme.upper()}_PROXY", transient=False)
        auth = _basic(unquote(p.username), unquote(p.password or "")) if p.username else ""
        return _Proxy(p.hostname, p.port or 80, auth)

    def authorised(self, url: str, headers: dict[str, str], keep_auth: bool) -> dict[str, str]:
        """``headers`` for a request to ``url``: a caller's Authorization only while on its origin, else
        the URL's credentials or the netrc entry of its host."""
        out = {k: v for k, v in headers.items() if keep_auth or k.lower() != "authorization"}
        if any(k.lower() == "authorization" for k in out):
            return out
        p = urlsplit(url)
        if p.username:
            out["Authorization"] = _basic(unquote(p.username), unquote(p.password or ""))
            return out
        entry = self._netrc_entry(p.hostname)
        if entry is not None:
            out["Authorization"] = entry
        return out

    def _netrc_entry(self, host: str | None) -> str | None:
        from vlmdata.net.env_access import netrc_login, read_netrc

        if self._netrc is False:
            self._netrc = read_netrc()
        found = netrc_login(self._netrc, host)  # type: ignore[arg-type]
        return _basic(*found) if found is not None else None


def _merged(base: dict[str, str], given: dict[str, str]) -> dict[str, str]:
    """``base`` with ``given`` on top; header names compared without case (a caller's "user-agent"
    replaces the default "User-Agent" instead of going out beside it)."""
    replaced = {g.lower() for g in given}
    out = {k: v for k, v in base.items() if k.lower() not in replaced}
    out.update(given)
    return out


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode("latin-1", "replace")).decode()


def _netloc(host: str, port: int, scheme: str) -> str:
    h = f"[{host}]" if ":" in host else host
    return h if port == DEFAULT_PORTS[scheme] else f"{h}:{port}"


def _origin(url: str) -> Origin:
    p = urlsplit(url)
    scheme = p.scheme.lower()
    return scheme, (p.hostname or ""), p.port or DEFAULT_PORTS.get(scheme, 0)


def _same_origin(old: str, new: str) -> bool:
    """Whether a redirect from ``old`` to ``new`` may keep the caller's Authorization (requests' rule:
    the same scheme, host and port, or http -> https on the default ports of the same host)."""
    a, b = _origin(old), _origin(new)
    if a == b:
        return True
    return a[1] == b[1] and (a[0], a[2], b[0], b[2]) == ("http", 80, "https", 443)
