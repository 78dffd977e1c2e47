"""The cases of bench.peers: for each, what is prepared before a run (not timed), the `vlmdata`
command, the peer commands, and the rows they make. Each function takes the Bench and the shared
fixtures (nginx, the output folder, the zip, img2dataset's command)."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.peers import inputs
from bench.peers.timing import rm as _rm
from bench.peers.timing import user_env, warm

REPO = Path(__file__).resolve().parents[2]
# Runs per tool at least, for the rows of a few seconds: their margins are a few percent, and one
# slow minute of this shared VM among three runs moved a median across a goal (the URL-list and
# blend rows, at 3, take half a minute a run and have wide margins).
STEADY = 5
LATENCY, JOBS = 0.02, 64  # the URL list: seconds per request at the latency server, requests in flight


def _placed(path: Path, size: int) -> dict:
    if not path.is_file() or path.stat().st_size != size:
        raise SystemExit(f"{path} was not placed with {size} bytes")
    return {}


def startup(b: Any, *, out: Path, **_: Any) -> None:
    root = out / "root-startup"
    _rm(root)
    subprocess.run(b.vlmdata(root, "fetch", "bench:tiny.bin"), check=True, env=user_env(b.env),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = b.alternate("startup", {
        "vlmdata --help": {"argv": [b.vlmdata(root)[0], "--help"]},
        "vlmdata fetch (nothing to do)": {"argv": b.vlmdata(root, "fetch", "bench:tiny.bin")},
    }, times=max(STEADY, b.repeat))
    b.row("start-up: `vlmdata --help`", runs["vlmdata --help"], "-", None, "< 0.15 s", limit=0.15)
    b.row("start-up: `vlmdata fetch` with nothing to do", runs["vlmdata fetch (nothing to do)"], "-", None,
          "< 0.15 s", limit=0.15)
    _rm(root)


def fetch1g(b: Any, *, ngx: Any, out: Path, **_: Any) -> None:
    root = out / "root-1g"
    dest = root / "bench" / "big.bin"
    url = f"{ngx.url}/big.bin"
    size = inputs.GIB
    for busy in (False, True):
        tools_ = {
            "vlmdata fetch -x1": {"argv": b.vlmdata(root, "fetch", "bench:big.bin", "--connections", "1"),
                                  "prepare": lambda: _rm(root), "check": lambda: _placed(dest, size), "busy": busy},
            "curl -o": {"argv": ["curl", "-sS", "-o", str(root / "big.bin"), url],
                        "prepare": lambda: (_rm(root), root.mkdir(parents=True)), "busy": busy},
            "curl | tee | sha256sum": {"argv": ["sh", "-c", f"curl -sS {url} | tee {root / 'big.bin'} | sha256sum"],
                                       "prepare": lambda: (_rm(root), root.mkdir(parents=True)), "busy": busy},
        }
        if busy:
            del tools_["curl | tee | sha256sum"]
        warm(ngx.root / "big.bin")
        runs = b.alternate("fetch1g-busy" if busy else "fetch1g", tools_, times=max(STEADY, b.repeat))
        if not busy:
            b.notes.append(f"1 GiB: sha256 alone (hashlib, OpenSSL) takes {_sha256_seconds(ngx.root / 'big.bin'):.2f} s "
                           "here, a floor for any verified download of it on one stream")
        label = "1 GiB over loopback, verified" + (", one core kept busy" if busy else "")
        b.row(label, runs["vlmdata fetch -x1"], "`curl -o`", runs["curl -o"], "<= 1.05x", limit=1.05)
        if not busy:
            b.row(label, runs["vlmdata fetch -x1"], "`curl | tee | sha256sum`", runs["curl | tee | sha256sum"],
                  "<= 0.25x", limit=0.25)
    _rm(root)


def _sha256_seconds(path: Path) -> float:
    """The best of 3 sha256 passes over ``path`` from the page cache, in a child process, read as
    vlmdata.fetch.hashing reads it (256 KiB at a time into one buffer; on the 2-core VM a memory map
    of the page cache hashed at half that speed). A child, so that no large buffer or map of this
    process's raises the peak RSS that every command spawned after it inherits (see Run.rss_floor_mb)."""
    code = ("import hashlib, os, sys, time\n"
            "best, buf = float('inf'), memoryview(bytearray(256 << 10))\n"
            "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
            "for _ in range(3):\n"
            "    t, h, pos = time.perf_counter(), hashlib.sha256(), 0\n"
            "    while n := os.preadv(fd, [buf], pos):\n"
            "        h.update(buf[:n]); pos += n\n"
            "    best = min(best, time.perf_counter() - t)\n"
            "print(best)\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    return float(done.stdout)


def aria2(b: Any, *, ngx: Any, out: Path, **_: Any) -> None:
    root = out / "root-aria2"
    url = f"{ngx.url}/throttled/mid.bin"
    warm(ngx.root / "throttled" / "mid.bin")
    runs = b.alternate("aria2", {
        "vlmdata fetch -x8": {"argv": b.vlmdata(root, "fetch", "bench:mid.bin", "--connections", "8"),
                              "prepare": lambda: _rm(root), "check": lambda: _placed(root / "bench" / "mid.bin", 256 << 20)},
        "aria2c -x8 -s8": {"argv": ["aria2c", "-q", "-x8", "-s8", "--allow-overwrite=true", "--auto-file-renaming=false",
                                    "-d", str(root), "-o", "mid.bin", url],
                           "prepare": lambda: (_rm(root), root.mkdir(parents=True))},
    }, times=max(STEADY, b.repeat))
    b.row("256 MiB, server limits each connection to 16 MiB/s", runs["vlmdata fetch -x8"], "`aria2c -x8 -s8`",
          runs["aria2c -x8 -s8"], "<= 1.0x", limit=1.0)
    _rm(root)


def zip(b: Any, *, out: Path, zipf: Path, **_: Any) -> None:  # noqa: A001 - the case's name
    """On the disk (what users have), and on tmpfs, where the disk's writeback does not scatter the runs."""
    shm = Path("/dev/shm")
    for where in ("disk", "tmpfs") if shm.is_dir() else ("disk",):
        base = out if where == "disk" else shm / "vlmdata-bench-peers"
        src = zipf
        if where == "tmpfs":
            base.mkdir(parents=True, exist_ok=True)
            src = base / zipf.name
            if not src.exists():
                shutil.copyfile(zipf, src)
        _zip_rows(b, base / "root-zip", src, where)
        if where == "tmpfs":
            _rm(base)


def _zip_rows(b: Any, root: Path, zipf: Path, where: str) -> None:
    dl = root / ".vlmdata" / "downloads" / "bench" / "imgs.zip"

    def prepare_ours() -> None:
        _rm(root)
        dl.parent.mkdir(parents=True)
        os.link(zipf, dl)  # already downloaded (a link: nothing copied), as after `--keep-archives`

    def check() -> dict:
        n = len(os.listdir(root / "bench" / "imgs"))
        if n != inputs.ZIP_MEMBERS:
            raise SystemExit(f"vlmdata placed {n} files")
        return {}

    for pin in (None, "0"):
        warm(zipf)
        pre = ["taskset", "-c", pin] if pin else []
        key = f"zip-{where}" + ("-1core" if pin else "")
        runs = b.alternate(key, {
            "vlmdata fetch": {"argv": pre + b.vlmdata(root, "fetch", "bench:imgs.zip"), "prepare": prepare_ours,
                              "check": check},
            "unzip -q": {"argv": pre + ["unzip", "-q", str(zipf), "-d", str(root / "unzipped")],
                         "prepare": lambda: (_rm(root), root.mkdir(parents=True))},
        }, times=max(STEADY, b.repeat))
        mb = zipf.stat().st_size / 1e6
        b.row(f"zip of {inputs.ZIP_MEMBERS:,} small JPEGs ({mb:.0f} MB), {where}, " + ("one core" if pin else "two cores"),
              runs["vlmdata fetch"], "`unzip -q`", runs["unzip -q"], "<= 0.8x" if not pin else "< 1.0x",
              limit=0.8 if not pin else 1.0)
    _rm(root)


def urllist(b: Any, *, out: Path, i2d: Path, **_: Any) -> None:
    port_file = out / "latency.port"
    port_file.unlink(missing_ok=True)
    srv = subprocess.Popen([sys.executable, "-m", "bench.peers.latency_server", "--latency", str(LATENCY),
                            "--port-file", str(port_file), "--max-seconds", "3000"], cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text()):
            if time.monotonic() > deadline or srv.poll() is not None:
                raise SystemExit("the latency server did not start")
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port_file.read_text()}"
        root = out / "root-urllist"
        lst = inputs.url_list(out / "data" / "urls" / "list.json", base)
        txt = out / "data" / "urls" / "list.txt"
        txt.write_text("".join(f"{base}/img/{i}.jpg\n" for i in range(inputs.LIST_IMAGES)))
        i2d_out = root / "img2dataset"

        def prepare_ours() -> None:
            _rm(root)
            (root / "urls").mkdir(parents=True)
            os.link(lst, root / "urls" / "list.json")

        def check_ours() -> dict:
            n = len(os.listdir(root / "bench" / "images"))
            if n != inputs.LIST_IMAGES:
                raise SystemExit(f"vlmdata saved {n} images")
            return {"images": n}

        def check_i2d() -> dict:
            ok = sum(json.loads(p.read_text())["successes"] for p in i2d_out.glob("*_stats.json"))
            if ok != inputs.LIST_IMAGES:
                raise SystemExit(f"img2dataset saved {ok} images")
            return {"images": ok}

        stats0 = _stats(base)
        runs = b.alternate("urllist", {
            "vlmdata fetch --url-jobs 64": {"argv": b.vlmdata(root, "fetch", "bench:images", "--url-jobs", str(JOBS)),
                                            "prepare": prepare_ours, "check": check_ours},
            "img2dataset, 64 threads": {"argv": [str(i2d), f"--url_list={txt}", f"--output_folder={i2d_out}",
                                                 f"--thread_count={JOBS}", "--processes_count=1", "--resize_mode=no",
                                                 "--skip_reencode=True", "--output_format=files", "--input_format=txt",
                                                 "--timeout=10", "--retries=0", "--number_sample_per_shard=10000",
                                                 "--enable_wandb=False", "--compute_hash=None", "--extract_exif=False"],
                                        "prepare": lambda: (_rm(root), root.mkdir(parents=True)), "check": check_i2d},
        })
        stats1 = _stats(base)
        bare = _bare_client(base)
        served = stats1["requests"] - stats0["requests"]
        cpu = stats1["cpu_s"] - stats0["cpu_s"]
        ceiling = served / cpu if cpu > 0 else float("inf")
        fastest = max(inputs.LIST_IMAGES / r.seconds for rs in runs.values() for r in rs if r.rc == 0)
        floor = inputs.LIST_IMAGES * LATENCY / JOBS
        peer = statistics.median(r.seconds for r in runs["img2dataset, 64 threads"] if r.rc == 0)  # (as the row's)
        b.notes.append(f"URL list: no client can finish under {floor:.2f} s ({inputs.LIST_IMAGES:,} requests x "
                       f"{LATENCY * 1000:.0f} ms / {JOBS} in flight); 3x img2dataset's median ({peer:.2f} s) asks for "
                       f"{peer / 3:.2f} s, {peer / 3 - floor:+.2f} s from that floor")
        b.notes.append(f"URL list: a bare client (bench/peers/bare_client.py: {JOBS} keep-alive connections on one loop, "
                       f"bodies read and dropped, nothing written, no start-up) took {min(bare):.2f}-{max(bare):.2f} s "
                       f"against the same server ({len(bare)} runs after the others; "
                       f"{min(bare) * JOBS / inputs.LIST_IMAGES * 1000:.1f} ms a request on each connection where "
                       f"{LATENCY * 1000:.0f} are asked for): the floor in practice, "
                       f"{peer / 3 - min(bare):+.2f} s from 3x img2dataset's median")
        b.notes.append(f"latency server: {served:,} requests for {cpu:.1f} CPU-seconds, a ceiling of "
                       f"{ceiling:,.0f} requests/s on one core; the fastest client reached {fastest:,.0f}/s "
                       f"({100 * fastest / ceiling:.0f}% of it); its answers left {stats1['late_ms_mean']:.2f} ms "
                       f"after they were due on average, {stats1['late_ms_p99']:.1f} ms at the 99th percentile "
                       f"(both tools' runs)")
        b.row(f"{inputs.LIST_IMAGES:,} images from a URL list, 20 ms per request, 64 in flight",
              runs["vlmdata fetch --url-jobs 64"], "img2dataset, 64 threads", runs["img2dataset, 64 threads"],
              ">= 3x images/s", rate=inputs.LIST_IMAGES, limit=3.0, floor=floor)
        _rm(root)
    finally:
        srv.terminate()
        srv.wait()


def _bare_client(base: str, runs: int = 3) -> list[float]:
    """Seconds a client with nothing but the requests takes for the list (bench/peers/bare_client.py)."""
    argv = [sys.executable, "-m", "bench.peers.bare_client", "--base", base, "--images", str(inputs.LIST_IMAGES),
            "--jobs", str(JOBS)]
    return [float(subprocess.run(argv, cwd=REPO, check=True, capture_output=True, text=True).stdout) for _ in range(runs)]


def _stats(base: str) -> dict:
    with urllib.request.urlopen(f"{base}/stats", timeout=10) as r:
        return json.loads(r.read())


def blend(b: Any, *, out: Path, **_: Any) -> None:
    from bench.blend.bench_blend import prepare
    from bench.common import mix665k

    src, images, recipe = prepare(out / "blend", mix665k.FULL)
    work = out / "root-blend"
    warm(src)
    runs = b.alternate("blend", {
        "vlmdata blend": {"argv": [b.vlmdata(work)[0], "--root", str(work), "blend", str(recipe), "--image-root",
                                   str(images), "--out", str(work / "ours")],
                          "prepare": lambda: _rm(work)},
        "json.load + from_list + save_to_disk": {
            "argv": [sys.executable, "-m", "bench.blend.bench_blend", "--peer", "from_list", "--src", str(src),
                     "--dest", str(work / "peer")],
            "prepare": lambda: (_rm(work), work.mkdir(parents=True))},
    })
    b.row(f"{mix665k.FULL:,}-record mix JSON -> Arrow", runs["vlmdata blend"], "json.load + from_list + save_to_disk",
          runs["json.load + from_list + save_to_disk"], "<= 0.25x time", limit=0.25)
    ok = [r for r in runs["vlmdata blend"] if r.rc == 0]
    peer = [r.max_rss_mb for r in runs["json.load + from_list + save_to_disk"] if r.rc == 0]
    if ok and peer:
        ours, floor = max(r.max_rss_mb for r in ok), max(r.rss_floor_mb for r in ok)
        told = (f"at most {ours:,.0f} MB (vlmdata: the harness's own peak, {floor:,.0f} MB, hides it)" if ours <= floor + 1
                else f"{ours:,.0f} MB (vlmdata)")
        b.notes.append(f"blend: largest process RSS {told} vs {max(peer):,.0f} MB (peer), {ours / max(peer):.3f}x")
    _rm(work)
