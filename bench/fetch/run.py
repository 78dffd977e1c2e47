"""HTTP download benchmarks for `vlmdata fetch`, side by side with curl and aria2c in one run.

    python -m bench.fetch.run [--size-mib 1024] [--rate-mib 32] [--repeat 3]

1. one file (1 GiB) over loopback from an unthrottled server: `vlmdata fetch` (one connection)
   vs `curl -o` (goal: time <= 1.05x curl);
2. the same file from a server that throttles every connection to --rate-mib MiB/s:
   `vlmdata fetch --connections 8` vs `aria2c -x8 -s8` (goal <= 1.0x) and `curl`.

The server is a small Python server that sends file bytes with sendfile(2) (zero-copy), so the
client is what is measured. `vlmdata fetch` is timed as a whole command (start-up, sha256 of
every byte, fsync, placement), curl and aria2c only download. Times are medians of --repeat runs
(curl over the throttled server runs once: it takes size/rate seconds). curl and aria2 come
from Debian's packages and are installed here when missing. Output: a table on stdout and
bench/out/fetch/results.json. The machine and the command go into bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "bench" / "out" / "fetch"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        srv = self.server
        path = srv.folder / self.path.lstrip("/").split("?")[0]
        if not path.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = path.stat().st_size
        start, end, status = 0, size, 200
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            if a:
                start = int(a)
                end = min(size, int(b) + 1) if b else size
                status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{size:x}-{int(path.stat().st_mtime)}"')
        self.send_header("Last-Modified", formatdate(path.stat().st_mtime, usegmt=True))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if head:
            return
        self.wfile.flush()
        rate = srv.rate
        sock = self.connection
        with open(path, "rb") as fh:
            try:
                if not rate:
                    sock.sendfile(fh, start, end - start)
                    return
                t0, sent, pos = time.monotonic(), 0, start
                while pos < end:
                    n = min(256 << 10, end - pos)
                    sock.sendfile(fh, pos, n)
                    pos += n
                    sent += n
                    ahead = sent / rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
            except OSError:
                self.close_connection = True


class BenchServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: Path, rate: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.folder, self.rate = folder, rate
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address):
        pass

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in (("curl", "curl"), ("aria2c", "aria2")) if shutil.which(tool) is None]
    if missing:
        print(f"installing {' '.join(missing)} from Debian's packages", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True)


def make_file(path: Path, size: int) -> str:
    h = hashlib.sha256()
    if path.exists() and path.stat().st_size == size and path.with_suffix(".sha256").exists():
        return path.with_suffix(".sha256").read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        left = size
        block = os.urandom(16 << 20)
        i = 0
        while left:
            chunk = block[: min(left, len(block))]
            chunk = i.to_bytes(8, "little") + chunk[8:]  # every block differs
            fh.write(chunk)
            h.update(chunk)
            left -= len(chunk)
            i += 1
    digest = h.hexdigest()
    path.with_suffix(".sha256").write_text(digest + "\n")
    return digest


def write_manifest(folder: Path, url: str, size: int, sha: str) -> None:
    (folder / "datasets").mkdir(parents=True, exist_ok=True)
    (folder / "datasets" / "benchfile.toml").write_text(
        'name = "benchfile"\ntitle = "benchmark file"\nlicense = "none"\n\n[[files]]\nname = "file.bin"\n'
        f'size = {size}\nsha256 = "{sha}"\nsources = [{{ kind = "http", url = "{url}" }}]\n'
        'place = { kind = "file", to = "bench/file.bin" }\n')


ENGINE = """
import sys, time
from pathlib import Path
from vlmdata.fetch.http import HttpEngine
url, dest, conns, sha = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
t0 = time.perf_counter()
got = HttpEngine(connections=conns).download(url, dest)
dt = time.perf_counter() - t0
assert got.digests.sha256 == sha, "wrong bytes"
print(dt)
"""


def timed(cmd: list[str], env: dict | None = None) -> float:
    subprocess.run(["sync"], check=False)  # start every run with no dirty pages from the last one
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({r.returncode}): {r.stderr.decode()[-2000:]}")
    return dt


def drop_output(*paths: Path) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rate-mib", type=float, default=32.0, help="per-connection limit of the throttled server")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    ensure_tools()
    size = args.size_mib << 20
    srv_dir, work = OUT / "srv", OUT / "work"
    src = srv_dir / "file.bin"
    print(f"making a {args.size_mib} MiB file ...", file=sys.stderr)
    sha = make_file(src, size)
    vlm = [sys.executable, "-m", "vlmdata.cli.app"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    results: dict = {"size_bytes": size, "rate_per_connection": int(args.rate_mib * (1 << 20)), "repeat": args.repeat,
                     "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                     "runs": {}}

    def vlm_run(url: str, conns: int) -> float:
        man, root = work / "manifests", work / "root"
        drop_output(root)
        write_manifest(man, url, size, sha)
        dt = timed(vlm + ["fetch", "benchfile", "--root", str(root), "--manifests", str(man),
                          "--connections", str(conns)], env)
        assert (root / "bench/file.bin").stat().st_size == size
        drop_output(root)
        return dt

    def engine_run(url: str, conns: int) -> float:
        """The download alone (receive, write, sha256, verify), without interpreter start-up."""
        out = work / "engine.bin"
        drop_output(out)
        subprocess.run(["sync"], check=False)
        r = subprocess.run([sys.executable, "-c", ENGINE, url, str(out), str(conns), sha], env=env,
                           capture_output=True, text=True, check=True)
        drop_output(out)
        return float(r.stdout.strip().splitlines()[-1])

    def curl_run(url: str) -> float:
        out = work / "curl.bin"
        dt = timed(["curl", "-sS", "-f", "-o", str(out), url])
        assert out.stat().st_size == size
        drop_output(out)
        return dt

    def aria_run(url: str) -> float:
        out = work / "aria"
        drop_output(out)
        dt = timed(["aria2c", "-q", "-x8", "-s8", "--allow-overwrite=true", "--auto-file-renaming=false",
                    "-d", str(out), "-o", "file.bin", url])
        assert (out / "file.bin").stat().st_size == size
        drop_output(out)
        return dt

    work.mkdir(parents=True, exist_ok=True)
    # 1. loopback, no throttling
    srv = BenchServer(srv_dir)
    url = f"{srv.url}/file.bin"
    runs: dict[str, list[float]] = {"vlmdata -x1": [], "engine -x1": [], "curl": []}
    for _ in range(args.repeat):
        runs["curl"].append(curl_run(url))
        runs["vlmdata -x1"].append(vlm_run(url, 1))
        runs["engine -x1"].append(engine_run(url, 1))
    srv.stop()
    results["runs"]["loopback"] = runs
    # 2. throttled per connection
    srv = BenchServer(srv_dir, rate=int(args.rate_mib * (1 << 20)))
    url = f"{srv.url}/file.bin"
    truns: dict[str, list[float]] = {"vlmdata -x8": [], "engine -x8": [], "aria2c -x8 -s8": [], "curl": []}
    for _ in range(args.repeat):
        truns["aria2c -x8 -s8"].append(aria_run(url))
        truns["vlmdata -x8"].append(vlm_run(url, 8))
        truns["engine -x8"].append(engine_run(url, 8))
    truns["curl"].append(curl_run(url))
    srv.stop()
    results["runs"]["throttled"] = truns

    med = {k: {n: statistics.median(v) for n, v in r.items()} for k, r in results["runs"].items()}
    best = {k: {n: min(v) for n, v in r.items()} for k, r in results["runs"].items()}
    results["median_seconds"], results["best_seconds"] = med, best
    gib = f"{size / (1 << 30):g} GiB"
    thr = f"{gib}, {args.rate_mib:g} MiB/s/conn"
    rows = [  # (case, ours, peer, goal, which runs)
        (f"{gib}, loopback", "vlmdata -x1", "curl", 1.05, "loopback"),
        (f"{gib}, loopback", "engine -x1", "curl", 1.05, "loopback"),
        (thr, "vlmdata -x8", "aria2c -x8 -s8", 1.0, "throttled"),
        (thr, "engine -x8", "aria2c -x8 -s8", 1.0, "throttled"),
        (thr, "vlmdata -x8", "curl", None, "throttled"),
    ]
    results["table"] = []
    print(f"\nload average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; medians (best of {args.repeat} in brackets)")
    print(f"{'case':<28} {'ours':<12} {'s':>13} {'peer':<15} {'s':>13} {'ratio':>12} {'goal':>6}")
    for case, ours, peer, goal, which in rows:
        m_o, m_p = med[which][ours], med[which][peer]
        b_o, b_p = best[which][ours], best[which][peer]
        ratio, bratio = m_o / m_p, b_o / b_p
        verdict = "" if goal is None else ("met" if ratio <= goal else "NOT met")
        print(f"{case:<28} {ours:<12} {m_o:6.2f} ({b_o:5.2f}) {peer:<15} {m_p:6.2f} ({b_p:5.2f}) "
              f"{ratio:5.2f} ({bratio:4.2f}) {('<=' + str(goal)) if goal else '':>6} {verdict}")
        results["table"].append({"case": case, "ours": ours, "peer": peer, "ours_median_s": m_o, "peer_median_s": m_p,
                                 "ratio_median": ratio, "ours_best_s": b_o, "peer_best_s": b_p, "ratio_best": bratio,
                                 "goal": goal})
    results["load_average_end"] = os.getloadavg()[0]
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nraw runs: {json.dumps(results['runs'])}")
    print(f"wrote {OUT / 'results.json'}")


if __name__ == "__main__":
    main()
