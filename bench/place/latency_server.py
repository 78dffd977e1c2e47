"""A loopback image server with a fixed latency per request, for the URL-list benchmark.

    python -m bench.place.latency_server --latency 0.02 --port-file PORT_FILE

Serves ``/img/<n>.jpg`` for any n (a pool of 200 distinct small JPEGs, chosen by n), HTTP/1.1
with keep-alive, one thread per connection, on 127.0.0.1 (port 0: the chosen port is written to
PORT_FILE). Stops by itself after --max-seconds.
"""
from __future__ import annotations

import argparse
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.common.jpegs import photo_jpegs


def pool(n: int = 200, seed: int = 1) -> list[bytes]:
    """Book-cover-like thumbnails, 3-12 kB."""
    return photo_jpegs(n, seed=seed, width=(80, 160), height=(100, 200), noise=30, blend=0.3, quality=85)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.02)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--max-seconds", type=float, default=1800)
    a = ap.parse_args()
    images = pool()
    latency = a.latency

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            time.sleep(latency)
            try:
                n = int(self.path.rsplit("/", 1)[1].split(".")[0])
                body, status = images[n % len(images)], 200
            except (ValueError, IndexError):
                body, status = b"not found", 404
            self.send_response(status)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    ThreadingHTTPServer.request_queue_size = 1024
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    Path(a.port_file).write_text(str(srv.server_address[1]))
    threading.Timer(a.max_seconds, srv.shutdown).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
