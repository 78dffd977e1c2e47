"""A loopback HTTP server for the URL-list tests: 127.0.0.1, port 0, routes set by the test.

Each route is a list of responses served in turn (the last one repeats), so "500 then 200" is
``[(500, b""), (200, data)]``; a body given as a list of byte strings goes out with chunked
transfer encoding, one chunk each (no Content-Length); a third item, a dict, adds headers (a
redirect's Location). Every request is counted per path. With ``tls`` (a server-side SSL context) it
serves HTTPS.
"""
from __future__ import annotations

import ssl
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator


class LoopbackServer:
    def __init__(self, latency: float = 0.0, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, list[tuple[int, bytes | list[bytes]]]] = {}
        self.hits: Counter[str] = Counter()
        self.latency = latency
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with outer._lock:
                    n = outer.hits[self.path]
                    outer.hits[self.path] += 1
                    responses = outer.routes.get(self.path)
                if outer.latency:
                    time.sleep(outer.latency)
                status, body, *extra = (404, b"not found") if not responses else responses[min(n, len(responses) - 1)]
                self.send_response(status)
                for name, value in (extra[0] if extra else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/octet-stream")
                if isinstance(body, list):
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for chunk in body:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.scheme = "https" if tls else "http"
        if tls:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def start(self) -> "LoopbackServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def serve(latency: float = 0.0) -> Iterator[LoopbackServer]:
    srv = LoopbackServer(latency).start()
    try:
        yield srv
    finally:
        srv.stop()
