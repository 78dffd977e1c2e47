"""The URL-list case's floor in practice: the least any client can take against the latency server here.

    python -m bench.peers.bare_client --base http://127.0.0.1:PORT --images 20000 --jobs 64

``jobs`` keep-alive connections on one event loop (uvloop's where installed), each asking for its
share of ``/img/<n>.jpg`` one after another; a body is read by its Content-Length and dropped:
no parsing beyond that, no file written, no start-up timed. Prints the seconds from the first
request to the last byte. ``images x latency / jobs`` is the floor on paper; this one adds what
the server and the loopback cost per request (the server's timers among them), which every client
pays too.
"""
from __future__ import annotations

import argparse
import asyncio
import time
from urllib.parse import urlsplit


async def _one_connection(host: str, port: int, ids: range) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    got = 0
    try:
        for i in ids:
            writer.write(f"GET /img/{i}.jpg HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            got += 1
    finally:
        writer.close()
    return got


async def _all(host: str, port: int, images: int, jobs: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    counts = await asyncio.gather(*(_one_connection(host, port, range(k, images, jobs)) for k in range(jobs)))
    return time.perf_counter() - t0, sum(counts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--images", type=int, required=True)
    ap.add_argument("--jobs", type=int, required=True)
    a = ap.parse_args()
    url = urlsplit(a.base)
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    seconds, got = run(_all(url.hostname, url.port, a.images, a.jobs))
    if got != a.images:
        raise SystemExit(f"the bare client got {got} of {a.images} images")
    print(f"{seconds:.4f}")


if __name__ == "__main__":
    main()
