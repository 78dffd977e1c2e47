"""A loopback HTTP server for the fetch tests: a static mirror tree with injectable faults, and an
HF-style hub endpoint that redirects LFS files to a second "CDN" origin.

Everything listens on 127.0.0.1, port 0, in daemon threads; ``stop()`` shuts it down. Every
wait inside it is bounded (sleeps are short and capped), so no test can hang on it.

Faults (``server.fault(path, Fault(...))``), applied to the next ``times`` matching requests:
- ``status``: answer ``status`` (500, 503, 429 with ``retry_after``...) with no body;
- ``drop``: send the headers and ``after`` body bytes (or ``share`` of the body), then cut the connection;
- ``wrong``: serve the right length with some bytes changed;
- ``norange``: ignore ``Range`` (always 200 with the whole file);
- ``slow``: wait ``delay`` seconds before answering;
- ``stall``: send ``after`` body bytes, then wait ``delay`` seconds before the rest;
- ``throttle``: send at most ``rate`` bytes/s on this connection.
Counters: ``bytes_sent[path]`` (body bytes), ``requests`` (method, path, Range header) and
``max_in_flight`` (the most response bodies sent at once).

Why one file of ~500 lines: one handler class answers the mirror, the hub and the CDN, and every
fault applies to all three through the same send path.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

MAX_SLEEP = 5.0


@dataclass
class Fault:
    kind: str  # status | drop | wrong | norange | slow | stall | throttle
    times: int = 1  # requests it applies to; -1 = every request
    status: int = 500
    retry_after: str | None = None
    after: int = 0  # drop: body bytes sent before the cut
    share: float = 0.0  # drop: when set, the share of each response's body sent before the cut (not ``after``)
    delay: float = 0.0  # slow, stall: seconds
    rate: int = 0  # throttle: bytes per second per connection
    methods: tuple[str, ...] = ("GET",)


@dataclass
class Blob:
    """Content served at a path: a file on disk or bytes in memory."""

    data: bytes | None = None
    path: Path | None = None
    tag: str | None = None  # the ETag to send (None: one made from the bytes or the file's stat)

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.path.stat().st_size  # type: ignore[union-attr]

    def etag(self) -> str:
        if self.tag is not None:
            return f'"{self.tag}"'
        if self.data is not None:
            return '"' + hashlib.sha256(self.data).hexdigest()[:32] + '"'
        st = self.path.stat()  # type: ignore[union-attr]
        return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'

    def last_modified(self) -> str:
        t = self.path.stat().st_mtime if self.path is not None else 1_700_000_000
        return formatdate(t, usegmt=True)

    def read(self, start: int, end: int):
        """Yield the bytes [start, end) in blocks."""
        if self.data is not None:
            for i in range(start, end, 64 << 10):
                yield self.data[i:min(end, i + (64 << 10))]
            return
        with open(self.path, "rb") as fh:  # type: ignore[arg-type]
            fh.seek(start)
            left = end - start
            while left > 0:
                b = fh.read(min(left, 256 << 10))
                if not b:
                    return
                left -= len(b)
                yield b


_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, fmt, *args):  # quiet
        pass

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_GET(self):
        self._dispatch("GET")

    def _dispatch(self, method: str) -> None:
        owner: LoopbackServer = self.server.owner
        path = unquote(urlsplit(self.path).path).lstrip("/")
        with owner.lock:
            owner.requests.append((method, path, self.headers.get("Range")))
            owner.ports.append(self.client_address[1])
            owner.auth_seen.append((path, self.headers.get("Authorization")))
        for route in owner.routes:
            if route(self, method, path):
                return
        blob = owner.blob(path)
        if blob is None:
            self.send_plain(404, b"not found\n")
            return
        self.serve(method, path, blob)

    # -- helpers the routes use
    def send_plain(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def serve(self, method: str, path: str, blob: Blob, extra: dict[str, str] | None = None) -> None:
        owner: LoopbackServer = self.server.owner
        faults = owner.take_faults(path, method)
        kinds = {f.kind: f for f in faults}
        if "slow" in kinds:
            time.sleep(min(MAX_SLEEP, kinds["slow"].delay))
        if "status" in kinds:
            f = kinds["status"]
            hdrs = {"Retry-After": f.retry_after} if f.retry_after else {}
            self.send_plain(f.status, b"", hdrs)
            return
        size = blob.size
        etag = blob.etag()
        start, end, status = 0, size, 200
        rng = self.headers.get("Range")
        if rng and "norange" not in kinds and owner.ranges:
            if_range = self.headers.get("If-Range")
            if if_range is None or if_range in (etag, blob.last_modified()):
                m = _RANGE.match(rng.strip())
                if m and (m.group(1) or m.group(2)):
                    if m.group(1):
                        start = int(m.group(1))
                        end = min(size, int(m.group(2)) + 1) if m.group(2) else size
                    else:
                        start, end = max(0, size - int(m.group(2))), size
                    if start >= size:
                        self.send_plain(416, b"", {"Content-Range": f"bytes */{size}"})
                        return
                    status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        if owner.validators:
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", blob.last_modified())
        if owner.ranges and "norange" not in kinds:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if method == "HEAD":
            return
        self.generation = owner.generation  # bytes of a request from before a reset() do not count after it
        with owner.lock:
            owner.in_flight += 1
            owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
        try:
            self._send_body(path, blob, start, end, kinds, owner)
        finally:
            with owner.lock:
                owner.in_flight -= 1

    def _send_body(self, path: str, blob: Blob, start: int, end: int, kinds: dict, owner: "LoopbackServer") -> None:
        sent = 0
        t0 = time.monotonic()
        pos = start
        drop = kinds.get("drop")
        cut_at = None if drop is None else int((end - start) * drop.share) if drop.share else drop.after
        wrong = "wrong" in kinds
        rate = kinds["throttle"].rate if "throttle" in kinds else owner.throttle.get(path, owner.default_throttle)
        stall = kinds.get("stall")
        for block in blob.read(start, end):
            if stall is not None and sent + len(block) > stall.after:
                cut = max(0, stall.after - sent)
                if not self._write(path, block[:cut]):
                    return
                self.wfile.flush()
                time.sleep(min(MAX_SLEEP, stall.delay))
                sent += cut
                block, stall = block[cut:], None
            if wrong:
                block = bytes(b ^ 0x5A for b in block[:16]) + block[16:]
            if cut_at is not None and sent + len(block) > cut_at:
                block = block[: max(0, cut_at - sent)]
                self._write(path, block)
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if rate:
                # send in small slices so a throttled connection stays smooth
                for i in range(0, len(block), 16 << 10):
                    piece = block[i:i + (16 << 10)]
                    if not self._write(path, piece):
                        return
                    sent += len(piece)
                    ahead = sent / rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(min(MAX_SLEEP, ahead))
            else:
                if not self._write(path, block):
                    return
                sent += len(block)
            pos += len(block)

    def _write(self, path: str, data: bytes) -> bool:
        owner: LoopbackServer = self.server.owner
        try:
            self.wfile.write(data)
        except OSError:
            self.close_connection = True
            return False
        with owner.lock:
            if getattr(self, "generation", owner.generation) == owner.generation:
                owner.bytes_sent[path] = owner.bytes_sent.get(path, 0) + len(data)
        return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "LoopbackServer"

    def handle_error(self, request, client_address) -> None:  # clients that hang up are normal here
        pass


class LoopbackServer:
    """Serves ``folder`` (paths map to files under it) and in-memory ``blobs`` on 127.0.0.1; over
    HTTPS with ``tls`` (a server-side context holding the certificate)."""

    def __init__(self, folder: Path | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.folder = Path(folder) if folder else None
        self.blobs: dict[str, Blob] = {}
        self.routes: list[Callable[[_Handler, str, str], bool]] = []
        self.faults: dict[str, list[Fault]] = {}
        self.throttle: dict[str, int] = {}
        self.default_throttle = 0
        self.ranges = True
        self.validators = True  # False: no ETag, no Last-Modified (some static hosts and proxies)
        self.lock = threading.Lock()
        self.bytes_sent: dict[str, int] = {}
        self.generation = 0  # bumped by reset(): a connection still sending from before it is not counted
        self.in_flight = self.max_in_flight = 0  # response bodies being sent at once (and the most seen)
        self.requests: list[tuple[str, str, str | None]] = []
        self.ports: list[int] = []  # the client's port of each request (one port: one connection)
        self.auth_seen: list[tuple[str, str | None]] = []
        self._srv = _Server(("127.0.0.1", 0), _Handler)
        self._srv.owner = self
        self.scheme = "https" if tls is not None else "http"
        if tls is not None:  # (a client that refuses the certificate fails the accept: socketserver drops it)
            self._srv.socket = tls.wrap_socket(self._srv.socket, server_side=True)
        self._thread = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def redirect(self, path: str, location: str) -> None:
        """Answer ``path`` with a 302 to ``location`` (another server, a downgrade, a loop, a bad one)."""
        def route(h, method, asked):
            if asked != path:
                return False
            h.send_plain(302, b"", {"Location": location})
            return True
        self.routes.append(route)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._srv.server_address[1]}"

    def start(self) -> "LoopbackServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def blob(self, path: str) -> Blob | None:
        if path in self.blobs:
            return self.blobs[path]
        if self.folder is not None:
            p = (self.folder / path).resolve()
            if p.is_file() and (p == self.folder.resolve() or self.folder.resolve() in p.parents):
                return Blob(path=p)
        return None

    def fault(self, path: str, f: Fault) -> None:
        with self.lock:
            self.faults.setdefault(path, []).append(f)

    def take_faults(self, path: str, method: str) -> list[Fault]:
        out = []
        with self.lock:
            for key in (path, "*"):
                for f in self.faults.get(key, []):
                    if method in f.methods and f.times != 0:
                        if f.times > 0:
                            f.times -= 1
                        out.append(f)
        return out

    def reset(self) -> None:
        with self.lock:
            self.generation += 1
            self.bytes_sent.clear()
            self.requests.clear()
            self.ports.clear()
            self.auth_seen.clear()
            self.faults.clear()

    def sent(self, suffix: str = "") -> int:
        with self.lock:
            return sum(v for k, v in self.bytes_sent.items() if k.endswith(suffix))

    def count(self, suffix: str = "", method: str | None = None) -> int:
        with self.lock:
            return sum(1 for m, p, _ in self.requests if p.endswith(suffix) and (method is None or m == method))


def git_blob_id(data: bytes) -> str:
    """The id git gives ``data`` as a blob: what the Hub sends as a file kept in git's ETag and blobId."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubServer:
    """An HF-style endpoint (``HF_ENDPOINT``) plus a second origin standing in for the LFS CDN.

    ``add(repo_id, path, data, lfs=True, repo_type="dataset")``. LFS files answer HEAD/GET on
    ``resolve/<rev>/<path>`` with 302 to ``<cdn>/cdn/<sha256>`` plus X-Repo-Commit, X-Linked-Etag
    (the sha256) and X-Linked-Size, as the Hub does; small files are served directly. With
    ``token`` set the repos are private: requests without ``Authorization: Bearer <token>`` get 401.
    ``api/{models,datasets}/<repo>/revision/<rev>`` answers the repo's info with its file list
    (``siblings``: rfilename, size, and for LFS files ``lfs: {sha256, size, pointerSize}``), as
    ``repo_info(files_metadata=True)`` asks for it.

    With ``tls`` both origins speak HTTPS; ``cdn_base`` sends LFS files elsewhere (a plain-http CDN);
    ``redirect_gets``: a GET of a file kept in git is redirected to the CDN as well.
    ``gated``: repos whose files need a token in ``granted`` (401 without a token, 403 with another).
    A file kept in git answers with its git blob id as ETag, as the Hub does (``blob_etags = False``: an
    ETag that is no content hash, as some mirrors send; ``"plain-sha1"``: 40 hex digits that are not the
    bytes' git blob id).

    History: ``add`` changes the newest commit (``COMMIT`` until ``push``); ``push(changes)`` makes a
    new commit that ``main`` then points to (a path mapped to None is deleted). Older commits keep
    answering with their own files, as the Hub keeps every revision.
    """

    COMMIT = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, token: str | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.hub = LoopbackServer(tls=tls)
        self.cdn = LoopbackServer(tls=tls)
        self.token = token
        self.files: dict[tuple[str, str], tuple[bytes, bool, str | None]] = {}  # the files at ``head``
        self.head = self.COMMIT
        self.cdn_base: str | None = None  # where LFS files are redirected to (None: the ``cdn`` server)
        self.gated: set[str] = set()  # repos ("owner/name", "datasets/owner/name") whose files need accepted terms
        self.granted: set[str] = set()  # tokens of users who accepted them
        self.redirect_gets = False  # GETs of files kept in git answer 302 to the CDN too (a mirror serving its store)
        self.blob_etags: bool | str = True  # a file kept in git: its git blob id as ETag, as on the Hub
        self.history: dict[str, dict[tuple[str, str], tuple[bytes, bool, str | None]]] = {self.COMMIT: self.files}
        self.hub.routes.append(self._route)

    def add(self, repo_id: str, path: str, data: bytes, *, lfs: bool = True, repo_type: str = "dataset",
            advertised_sha256: str | None = None) -> None:
        key = (f"{repo_type}s/{repo_id}" if repo_type != "model" else repo_id, path)
        self.files[key] = (data, lfs, advertised_sha256)
        sha = advertised_sha256 or hashlib.sha256(data).hexdigest()
        self.cdn.blobs[f"cdn/{sha}"] = Blob(data=data)

    def push(self, repo_id: str, changes: dict[str, bytes | None], *, repo_type: str = "dataset") -> str:
        """A new commit on ``main``: each path of ``changes`` added or replaced (LFS for ``.safetensors``
        and ``.bin``, as a repo's .gitattributes would say), or deleted (None). Returns its sha."""
        self.files = dict(self.files)
        for path, data in changes.items():
            if data is None:
                del self.files[(f"{repo_type}s/{repo_id}" if repo_type != "model" else repo_id, path)]
            else:
                self.add(repo_id, path, data, lfs=path.endswith((".safetensors", ".bin")), repo_type=repo_type)
        self.head = hashlib.sha1(f"{self.head}{len(self.history)}".encode()).hexdigest()
        self.history[self.head] = self.files
        return self.head

    def _at(self, rev: str) -> dict[tuple[str, str], tuple[bytes, bool, str | None]] | None:
        """The files at ``rev`` (``main`` or a commit); None: no such revision."""
        return self.history.get(self.head if rev == "main" else rev)

    def start(self) -> "HubServer":
        self.hub.start()
        self.cdn.start()
        return self

    def stop(self) -> None:
        self.hub.stop()
        self.cdn.stop()

    def _api(self, h: _Handler, path: str) -> bool:
        m = re.match(r"^api/(models|datasets)/([^/]+/[^/]+)/revision/([^/?]+)$", path)
        if not m:
            return False
        kind, repo_id, rev = m.groups()
        repo = f"datasets/{repo_id}" if kind == "datasets" else repo_id
        if self.token and h.headers.get("Authorization") != f"Bearer {self.token}":
            h.send_plain(401, b"", {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Invalid credentials"})
        elif not any(r == repo for r, _ in self.files):
            h.send_plain(404, b"", {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
        elif self._at(rev) is None:
            h.send_plain(404, b"", {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"})
        else:
            siblings = []
            for (r, fpath), (data, lfs, advertised) in sorted(self._at(rev).items()):  # type: ignore[union-attr]
                if r != repo:
                    continue
                sib = {"rfilename": fpath, "size": len(data),
                       "blobId": git_blob_id(data)}
                if lfs:
                    sib["lfs"] = {"sha256": advertised or hashlib.sha256(data).hexdigest(), "size": len(data),
                                  "pointerSize": 134}
                siblings.append(sib)
            body = json.dumps({"id": repo_id, "sha": self.head if rev == "main" else rev, "private": bool(self.token),
                               "siblings": siblings}).encode()
            h.send_plain(200, body, {"Content-Type": "application/json"})
        return True

    def _granted(self, h: _Handler, repo: str) -> bool:
        """A gated repo's file, as the Hub answers it: 401 without a token, 403 with one whose user has not
        accepted the terms (both X-Error-Code GatedRepo); its listing stays public."""
        auth = h.headers.get("Authorization") or ""
        if auth.removeprefix("Bearer ") in self.granted:
            return True
        status, why = (403, "you are not in the authorized list") if auth else (401, "you must be authenticated")
        h.send_plain(status, b"", {"X-Error-Code": "GatedRepo",
                                   "X-Error-Message": f"Access to model {repo} is restricted: {why}"})
        return False

    def _route(self, h: _Handler, method: str, path: str) -> bool:
        if self._api(h, path):
            return True
        m = re.match(r"^((?:datasets/)?[^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if not m:
            return False
        repo, rev, fpath = m.groups()
        if self.token and h.headers.get("Authorization") != f"Bearer {self.token}":
            h.send_plain(401, b"", {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Invalid credentials"})
            return True
        if not any(r == repo for r, _ in self.files):
            h.send_plain(404, b"", {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
            return True
        if repo in self.gated and not self._granted(h, repo):
            return True
        files = self._at(rev)
        if files is None:
            h.send_plain(404, b"", {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"})
            return True
        commit = self.head if rev == "main" else rev
        entry = files.get((repo, fpath))
        if entry is None:
            h.send_plain(404, b"", {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"})
            return True
        data, lfs, advertised = entry
        if lfs:
            sha = advertised or hashlib.sha256(data).hexdigest()
            h.send_plain(302, b"", {"Location": f"{self.cdn_base or self.cdn.url}/cdn/{sha}", "X-Repo-Commit": commit,
                                    "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data)), "ETag": f'"{sha}"'})
            return True
        if method == "GET" and self.redirect_gets:
            where = f"{self.cdn_base or self.cdn.url}/cdn/{hashlib.sha256(data).hexdigest()}"
            h.send_plain(302, b"", {"Location": where})
            return True
        tag = {True: git_blob_id(data), "plain-sha1": hashlib.sha1(data).hexdigest()}.get(self.blob_etags)
        h.serve(method, path, Blob(data=data, tag=tag),
                {"X-Repo-Commit": commit})
        return True


__all__ = ["Blob", "Fault", "HubServer", "LoopbackServer", "git_blob_id"]


if __name__ == "__main__":  # serve a folder by hand: python tests/fetch/server.py DIR
    import sys

    s = LoopbackServer(Path(sys.argv[1])).start()
    print(s.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        s.stop()
        os._exit(0)
