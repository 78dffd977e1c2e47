"""A loopback image server with a fixed latency per request, cheap and punctual enough never to be the limit.

    python -m bench.peers.latency_server --latency 0.02 --port-file PORT_FILE

Serves ``/img/<n>.jpg`` for any n (a pool of 200 distinct small JPEGs, chosen by n) over HTTP/1.1
keep-alive on 127.0.0.1. One event loop (uvloop's where installed) reads the requests; each is
due ``latency`` seconds after it arrived. The due requests wait in one queue in arrival order (a
constant latency keeps it sorted) and a timer thread sleeps until the head is due and hands
every due one back to the loop to answer. Why a thread: an event loop's own timers wake through
epoll, whose timeout is whole milliseconds rounded up; with them, a bare client's 20 ms requests
took 21.6 ms (uvloop's timers) to 22.8 ms (asyncio's) a round trip, 8-14% over what the case asks
for. The thread's sleep is the kernel's high-resolution one: 20.8 ms a round trip.

``GET /stats`` answers ``{"requests": N, "cpu_s": S, "answered": A, "late_ms_mean": M,
"late_ms_p99": P}``: this process's CPU time (the harness turns it into the server's ceiling,
requests per second of one core) and how late the answers were against their due time, so the
harness can show the server kept to the latency it claims.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import threading
import time
from pathlib import Path

from bench.place.latency_server import pool

LATE_BUCKET = 0.0001  # seconds: lateness is counted in 0.1 ms buckets (a histogram, not one float per answer)
# Seconds between two hand-offs to the loop at least: each wakes the loop, so a hand-off per request
# (3,000 a second) cost the server twice the CPU of the loop's own timers, CPU the clients on the
# same two cores lose; batches half a millisecond apart cost 0.1 ms of mean lateness.
BATCH = 0.0005


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
            self.server.arrived(self, path)

    def answer(self, path: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        status, body, ctype = self.server.body(path)
        self.transport.write(b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                             % (status, ctype, len(body)) + body)


class Server:
    def __init__(self, latency: float, loop: asyncio.AbstractEventLoop) -> None:
        self.latency, self.loop = latency, loop
        self.images = pool()
        self.requests = 0
        self.due: collections.deque[tuple[float, _Conn, bytes]] = collections.deque()  # (due time, connection, path)
        self.wake = threading.Event()
        self.last = 0.0  # when the timer last handed requests to the loop
        self.late: collections.Counter[int] = collections.Counter()  # lateness bucket -> answers
        threading.Thread(target=self._timer, name="latency-timer", daemon=True).start()

    def arrived(self, conn: _Conn, path: bytes) -> None:
        self.requests += 1
        self.due.append((time.monotonic() + self.latency, conn, path))
        self.wake.set()

    def _timer(self) -> None:
        """Sleep until the oldest request is due (and BATCH after the last hand-off), then hand every
        due request to the loop."""
        while True:
            if not self.due:
                self.wake.wait()
                self.wake.clear()
                continue
            left = max(self.due[0][0], self.last + BATCH) - time.monotonic()
            if left > 0:
                time.sleep(left)
            now = self.last = time.monotonic()
            batch = []
            while self.due and self.due[0][0] <= now:
                batch.append(self.due.popleft())
            self.loop.call_soon_threadsafe(self._answer, batch)

    def _answer(self, batch: list[tuple[float, _Conn, bytes]]) -> None:
        now = time.monotonic()
        for when, conn, path in batch:
            self.late[int((now - when) / LATE_BUCKET)] += 1
            conn.answer(path)

    def stats(self) -> dict:
        t = os.times()
        answered = sum(self.late.values())
        mean = sum(k * n for k, n in self.late.items()) / answered * LATE_BUCKET if answered else 0.0
        p99, seen = 0, 0
        for k in sorted(self.late):
            seen += self.late[k]
            if seen >= 0.99 * answered:
                p99 = k + 1
                break
        return {"requests": self.requests, "cpu_s": t.user + t.system, "answered": answered,
                "late_ms_mean": round(mean * 1000, 3), "late_ms_p99": round(p99 * LATE_BUCKET * 1000, 3)}

    def body(self, path: bytes) -> tuple[bytes, bytes, bytes]:
        if path == b"/stats":
            return b"200 OK", json.dumps(self.stats()).encode(), b"application/json"
        try:
            n = int(path.rsplit(b"/", 1)[1].split(b".")[0])
        except (ValueError, IndexError):
            return b"404 Not Found", b"not found", b"text/plain"
        return b"200 OK", self.images[n % len(self.images)], b"image/jpeg"


async def serve(latency: float, port_file: Path, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    srv = Server(latency, loop)
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
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    run(serve(a.latency, a.port_file, a.max_seconds))


if __name__ == "__main__":
    main()
