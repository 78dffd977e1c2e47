"""A loopback image server with a fixed latency per request, cheap enough never to be the limit.

    python -m bench.peers.latency_server --latency 0.02 --port-file PORT_FILE

Serves ``/img/<n>.jpg`` for any n (a pool of 200 distinct small JPEGs, chosen by n) over HTTP/1.1
keep-alive on 127.0.0.1. One asyncio event loop, no thread per connection: each request is
answered ``latency`` seconds after it arrived by a timer, so thousands can wait at once. ``GET
/stats`` answers ``{"requests": N, "cpu_s": S}`` (this process's CPU time): the harness turns
that into the server's ceiling, requests per second of one core, and checks it stays far above
what the clients reached.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from bench.place.latency_server import pool


class _Conn(asyncio.Protocol):
    def __init__(self, server: "Server") -> None:
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end], self.buf[end + 4:]
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            path = parts[1] if len(parts) > 1 else b"/"
            if b"://" in path:  # a proxy-style absolute URL
                path = b"/" + path.split(b"/", 3)[-1]
            self.server.requests += 1
            self.server.loop.call_later(self.server.latency, self.answer, path)

    def answer(self, path: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        status, body, ctype = self.server.body(path)
        self.transport.write(b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                             % (status, ctype, len(body)) + body)


class Server:
    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.images = pool()
        self.requests = 0
        self.loop = asyncio.get_event_loop()

    def body(self, path: bytes) -> tuple[bytes, bytes, bytes]:
        if path == b"/stats":
            t = os.times()
            return b"200 OK", json.dumps({"requests": self.requests, "cpu_s": t.user + t.system}).encode(), \
                b"application/json"
        try:
            n = int(path.rsplit(b"/", 1)[1].split(b".")[0])
        except (ValueError, IndexError):
            return b"404 Not Found", b"not found", b"text/plain"
        return b"200 OK", self.images[n % len(self.images)], b"image/jpeg"


async def serve(latency: float, port_file: Path, max_seconds: float) -> None:
    srv = Server(latency)
    loop = asyncio.get_running_loop()
    srv.loop = loop
    server = await loop.create_server(lambda: _Conn(srv), "127.0.0.1", 0, backlog=4096)
    port_file.write_text(str(server.sockets[0].getsockname()[1]))
    async with server:
        await asyncio.sleep(max_seconds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.02)
    ap.add_argument("--port-file", type=Path, required=True)
    ap.add_argument("--max-seconds", type=float, default=3600)
    a = ap.parse_args()
    asyncio.run(serve(a.latency, a.port_file, a.max_seconds))


if __name__ == "__main__":
    main()
