"""nginx on loopback, serving the benchmark's files: the same server for vlmdata and every peer.

``/throttled/`` limits each response to RATE bytes/s (``limit_rate``). nginx's limit lets the
first ``sendfile_max_chunk`` bytes of every response out at full speed (2 MiB by default), which
would reward a client for cutting a file into many small requests; 128 KiB keeps that head start
negligible, so the limit is per connection, as on a server that really limits connections.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from bench.peers.tools import nginx_binary

RATE = "16m"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    def __init__(self, root: Path, work: Path) -> None:
        self.root, self.work = root, work
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _conf(self) -> str:
        w = self.work
        user = "user root;\n" if os.geteuid() == 0 else ""  # (workers must read the files)
        temps = " ".join(f"{k}_temp_path {w}/tmp-{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        return f"""{user}worker_processes 1;
daemon off;
pid {w}/nginx.pid;
error_log {w}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  {temps}
  server {{
    listen 127.0.0.1:{self.port};
    root {self.root};
    location /throttled/ {{ limit_rate {RATE}; sendfile_max_chunk 128k; }}
  }}
}}
"""

    def start(self) -> "Nginx":
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        conf = self.work / "nginx.conf"
        conf.write_text(self._conf())
        self.proc = subprocess.Popen([nginx_binary(), "-p", str(self.work), "-c", str(conf), "-e",
                                      str(self.work / "error.log")])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(f"nginx did not start: {(self.work / 'error.log').read_text()[-2000:]}")
                time.sleep(0.1)
        raise SystemExit("nginx did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def __enter__(self) -> "Nginx":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
