"""bench.peers' bare client, the URL-list case's floor in practice: it asks for every image of its
share against the bench's own latency server, and says so when the server does not answer them all."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LATENCY = 0.005


@pytest.fixture
def latency_server(tmp_path: Path):
    port_file = tmp_path / "port"
    srv = subprocess.Popen([sys.executable, "-m", "bench.peers.latency_server", "--latency", str(LATENCY),
                            "--port-file", str(port_file), "--max-seconds", "60"], cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text()):
            assert srv.poll() is None and time.monotonic() < deadline, "the latency server did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text()}"
    finally:
        srv.terminate()
        srv.wait(timeout=10)


def _bare(base: str, images: int, jobs: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.peers.bare_client", "--base", base, "--images", str(images),
                           "--jobs", str(jobs)], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_every_image_asked_for_and_no_faster_than_the_latency_allows(latency_server):
    images, jobs = 40, 4
    r = _bare(latency_server, images, jobs)
    assert r.returncode == 0, r.stderr
    # each connection asks for its 10 images one after another, each answered LATENCY s after it arrived
    assert float(r.stdout) >= images / jobs * LATENCY
    # the server's own account: every request answered (this one too), lateness a histogram's figures
    with urllib.request.urlopen(f"{latency_server}/stats", timeout=10) as resp:
        stats = json.loads(resp.read())
    assert stats["requests"] == stats["answered"] == images + 1
    assert 0 <= stats["late_ms_mean"] <= stats["late_ms_p99"]


def test_a_server_that_is_gone_fails_the_run(tmp_path):
    r = _bare("http://127.0.0.1:9", 4, 2)  # (the discard port: nothing listens there)
    assert r.returncode != 0 and r.stdout == ""
