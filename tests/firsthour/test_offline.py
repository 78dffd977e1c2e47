"""Items 14 and 15: a file no source can even try says one cause and one path; offline (a name that
does not resolve, a refused connection) fails in seconds, without the hub's retry lines, and says
--mirror, --hf-endpoint and HF_HUB_OFFLINE=1."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, run_vlmdata
from vlmdata.net.retry import GaveUp, RetryPolicy, Transient, retry


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connections are refused
    return port


def test_links_file_missing_is_one_cause_and_one_path(tmp_path, demo):
    root = tmp_path / "root"
    r = run_vlmdata("--root", root, "fetch", "sam:sa_000000.tar")  # the shipped SA-1B manifest
    assert r.code == 1
    links = root / "sam" / "sa1b_links.txt"
    assert f"the links file {links} is not there" in r.err and f"save it as: {links}" in r.err
    paths = set(re.findall(r"(/\S+?)(?=[\s,;)]|$)", r.err.split("error:", 1)[1]))
    assert {p for p in paths if p.startswith(str(root))} == {str(links)}  # one path: no .vlmdata/downloads
    assert "network" not in r.err.replace("this is not a network problem", "")
    r = run_vlmdata("--root", root, "fetch", "sam", "--force")  # 51 tars: one problem, said once
    assert r.code == 1 and r.err.count("is not there") == 1 and "and 47 more)" in r.err
    # doing what it says works (the demo's links file and mirror stand in for Meta's)
    links.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(demo.sam_links, links)
    r = run_vlmdata("--root", root, "--manifests", demo.manifests, "--mirror", demo.mirror, "fetch", "sam:sa_000000.tar")
    assert r.code == 0, r.err


def test_a_refused_mirror_fails_in_seconds_and_names_the_ways_out(tmp_path, demo):
    mirror = f"http://127.0.0.1:{_closed_port()}/"
    t0 = time.monotonic()
    r = run_vlmdata("--root", tmp_path / "root", "--manifests", demo.manifests, "--mirror", mirror,
                    "fetch", "coco", "gqa", "textvqa", "vg")
    took = time.monotonic() - t0
    assert r.code == 1
    assert took < 10, took  # was 6 tries with backoff per file (~15 s each)
    assert "the connection was refused" in r.err and "Max retries exceeded" not in r.err
    for way_out in ("--mirror", "--hf-endpoint", "HF_HUB_OFFLINE=1"):
        assert way_out in r.err
    assert r.err.count("offline or behind a firewall?") == 1  # said once for all the files


def test_an_unreachable_hub_fails_fast_without_retry_lines(tmp_path):
    # a child process: huggingface_hub reads HF_HUB_OFFLINE (set for the tests) when imported
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(PYTHONPATH=str(REPO), HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}")
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "vlmdata.cli.app", "--root", str(tmp_path / "root"), "fetch",
                        "llava_instruct"], env=env, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - t0
    assert p.returncode == 1, p.stderr
    assert took < 20, took  # the hub's own backoff took ~45 s for the file's two hub sources
    assert "Retrying in" not in p.stderr and "[Retry" not in p.stderr
    assert p.stderr.count("cannot reach 127.0.0.1") == 2 and "HF_HUB_OFFLINE=1" in p.stderr


def test_unreachable_gets_one_short_retry():
    calls, waits = [], []

    def refused():
        calls.append(1)
        raise Transient("cannot reach x: refused", unreachable=True)

    with pytest.raises(GaveUp) as e:
        retry(refused, RetryPolicy(attempts=6), wait=waits.append)
    assert len(calls) == 2 and len(waits) == 1 and waits[0] <= 1.0 and e.value.unreachable
    calls.clear()

    def flaky():
        calls.append(1)
        raise Transient("HTTP 503")

    with pytest.raises(GaveUp):
        retry(flaky, RetryPolicy(attempts=4, base=0), wait=lambda s: None)
    assert len(calls) == 4  # other transient failures keep the whole policy


def test_a_url_list_stops_when_no_host_can_be_reached(tmp_path):
    port = _closed_port()
    root = tmp_path / "root"
    (root / "offl").mkdir(parents=True)
    (root / "offl" / "dataset.json").write_text(json.dumps(
        {f"{i:06d}": {"imageURL": f"http://127.0.0.1:{port}/img/{i}.jpg"} for i in range(400)}))
    man = tmp_path / "manifests" / "datasets"
    man.mkdir(parents=True)
    (man / "offl.toml").write_text(
        'name = "offl"\ntitle = "t"\nlicense = "t"\n[[files]]\nname = "images"\nsize = "unknown"\nsha256 = "unknown"\n'
        'sources = [{ kind = "urllist", path = "offl/dataset.json", list_format = "json-dict", url_key = "imageURL" }]\n'
        'place = { kind = "images", to = "offl/images", ext = "jpg" }\n')
    t0 = time.monotonic()
    r = run_vlmdata("--root", root, "--manifests", tmp_path / "manifests", "fetch", "offl", "--url-jobs", "4")
    assert r.code == 1 and "stopped after 64 images in a row could not be reached" in r.err
    assert "HF_HUB_OFFLINE=1" in r.err and time.monotonic() - t0 < 60
