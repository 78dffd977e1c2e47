"""`vlmdata fetch` on three local Ray nodes and as three `--shard` processes, beside one process.

    python -m bench.distributed.run [--repeat 2] [--archives 32] [--archive-mib 16] [--images 20000]

Cases (one nginx on loopback serves every file, bench/peers/nginx.py):
1. ``archives``: 32 zips of 16 MiB (400 members each), from an origin without limits;
2. ``archives, 8 MB/s per connection``: the same zips from nginx's ``limit_rate`` location, every
   command with ``--connections 1`` (an origin that limits each connection, as CDNs do);
3. ``url list``: 20,000 JPEGs of 3-12 kB from a json-dict list like OCR-VQA's (chunks of 2,000).

Modes: one process (the defaults: 4 files at once, 128 image requests in flight); ``--shard i/3``
in three processes started together; ``--ray`` on a local cluster of three nodes (a head and two
workers, 2 CPUs each declared, so 6 tasks at once) started before the runs (not timed). Each run
is the whole command (start-up, Ray's connection, sha256, placement, journal) into an empty root
(removed before each run, not timed); the modes alternate run by run. The load average is read
before every run. Output: a table and every run on stdout, and bench/out/distributed/results.json.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "bench" / "out" / "distributed"
VLMDATA = [sys.executable, "-m", "vlmdata.cli.app"]


def make_files(www: Path, archives: int, mib: int, images: int) -> None:
    """The origin's files: zips of stored random members (what extraction does not care about), and
    JPEG covers for the URL list (a pool of 200, as bench/place's latency server)."""
    files = www / "files"
    if (files / "done").exists():
        return
    shutil.rmtree(www, ignore_errors=True)
    files.mkdir(parents=True)
    member = (mib << 20) // 400
    for a in range(archives):
        rnd = hashlib.sha256(f"archive {a}".encode()).digest()
        with zipfile.ZipFile(files / f"a{a:02d}.zip", "w") as zf:
            for m in range(400):
                zf.writestr(f"a{a:02d}/{m:04d}.jpg", (rnd * (member // 32 + 1))[:member - 4] + m.to_bytes(4, "big"))
    from bench.place.latency_server import pool

    covers = pool()
    (files / "img").mkdir()
    for i in range(images):
        (files / "img" / f"{i}.jpg").write_bytes(covers[i % len(covers)])
    (files / "done").write_text("")
    for view in ("plain", "throttled"):  # the same files at two locations of the server
        (www / view).symlink_to(files)


def write_manifests(folder: Path, www: Path, base: str, archives: int, images: int) -> None:
    ds = folder / "datasets"
    shutil.rmtree(folder, ignore_errors=True)
    ds.mkdir(parents=True)
    for name, where in (("arch", "plain"), ("archt", "throttled")):
        rows = [f'name = "{name}"\ntitle = "bench archives ({where})"\nlicense = "test"\n']
        for a in range(archives):
            p = www / "files" / f"a{a:02d}.zip"
            rows.append(f'[[files]]\nname = "a{a:02d}.zip"\nsize = {p.stat().st_size}\n'
                        f'sha256 = "{hashlib.sha256(p.read_bytes()).hexdigest()}"\n'
                        f'sources = [{{ kind = "http", url = "{base}/{where}/a{a:02d}.zip" }}]\n'
                        f'place = {{ kind = "extract", inner = "a{a:02d}", to = "{name}/a{a:02d}", count = 400 }}\n')
        (ds / f"{name}.toml").write_text("\n".join(rows))
    lst = www / "files" / "list.json"
    lst.write_text(json.dumps({f"{i:06d}": {"url": f"{base}/plain/img/{i}.jpg"} for i in range(images)}))
    (ds / "urls.toml").write_text(
        'name = "urls"\ntitle = "bench URL list"\nlicense = "test"\n\n'
        f'[[files]]\nname = "list.json"\nsize = {lst.stat().st_size}\n'
        f'sha256 = "{hashlib.sha256(lst.read_bytes()).hexdigest()}"\n'
        f'sources = [{{ kind = "http", url = "{base}/plain/list.json" }}]\n'
        'place = { kind = "file", to = "urls/list.json" }\n\n'
        '[[files]]\nname = "images"\nsize = "unknown"\nsha256 = "unknown"\n'
        'sources = [{ kind = "urllist", path = "urls/list.json", list_format = "json-dict", url_key = "url" }]\n'
        f'place = {{ kind = "images", to = "urls/images", ext = "jpg", count = {images} }}\n')


def start_cluster():
    """Three Ray nodes on this machine, on 127.0.0.1, 2 CPUs declared each (started once, not timed)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only
    from ray.cluster_utils import Cluster

    temp = Path("/tmp") / f"vlmray-bench-{os.getpid()}"
    # Ray writes "the current cluster" into RAY_TMPDIR/ray (/tmp/ray by default, absent on a fresh machine)
    os.environ["RAY_TMPDIR"] = str(temp)
    (temp / "ray").mkdir(parents=True, exist_ok=True)
    node = dict(num_cpus=2, object_store_memory=100 << 20)
    c = Cluster(initialize_head=True, head_node_args=dict(include_dashboard=False, temp_dir=str(temp), **node))
    for _ in range(2):
        c.add_node(**node)
    c.wait_for_nodes()
    return c, temp


def timed(cmds: list[list[str]], root: Path, env: dict) -> dict:
    """Run ``cmds`` together into an empty ``root``; the wall time until the last one ends."""
    shutil.rmtree(root, ignore_errors=True)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    errs = [p.communicate()[1].decode(errors="replace") for p in procs]
    secs = time.perf_counter() - t0
    rc = max(p.returncode for p in procs)
    if rc:
        print(errs[-1][-2000:], file=sys.stderr)
    return {"seconds": round(secs, 3), "rc": rc, "load1": round(load, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--archives", type=int, default=32)
    ap.add_argument("--archive-mib", type=int, default=16)
    ap.add_argument("--images", type=int, default=20000)
    a = ap.parse_args()
    from bench.peers import nginx as ngx

    ngx.RATE = "8m"  # nginx's per-connection limit on /throttled/
    www = OUT / "www"
    make_files(www, a.archives, a.archive_mib, a.images)
    cluster, temp = start_cluster()
    rows: dict[str, list[dict]] = {}
    try:
        with ngx.Nginx(www, OUT / "nginx") as server:
            mans = OUT / "manifests"
            write_manifests(mans, www, server.url, a.archives, a.images)
            env = dict(os.environ, PYTHONPATH=str(REPO), VLMDATA_MANIFESTS=str(mans))
            root = OUT / "root"

            def fetch(*args: str) -> list[str]:
                return [*VLMDATA, "-q", "fetch", *args, "--root", str(root)]

            cases = {
                "archives": (["arch"], []),
                "archives, 8 MB/s per connection": (["archt"], ["--connections", "1"]),
                "url list": (["urls"], []),
            }
            for case, (names, extra) in cases.items():
                modes = {
                    "one process": [fetch(*names, *extra)],
                    "3 x --shard": [fetch(*names, *extra, "--shard", f"{i}/3") for i in range(3)],
                    "--ray, 3 nodes": [fetch(*names, *extra, "--ray", cluster.address)],
                }
                if "per connection" in case:
                    modes["one process --jobs 12"] = [fetch(*names, *extra, "--jobs", "12")]
                for r in range(a.repeat):
                    for mode, cmds in modes.items():
                        run = timed(cmds, root, env)
                        rows.setdefault(f"{case} | {mode}", []).append(run)
                        print(f"{case:<34} {mode:<22} run {r + 1}: {run['seconds']:7.2f} s  rc {run['rc']}  "
                              f"load {run['load1']}", flush=True)
    finally:
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(OUT / "root", ignore_errors=True)
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
              "args": vars(a), "runs": rows}
    (OUT / "results.json").write_text(json.dumps(result, indent=2))
    print("\n| case | mode | runs (s) | best (s) |\n| --- | --- | --- | ---: |")
    for key, runs in rows.items():
        case, mode = key.split(" | ")
        secs = [x["seconds"] for x in runs]
        print(f"| {case} | {mode} | {', '.join(f'{s:.2f}' for s in secs)} | {min(secs):.2f} |")


if __name__ == "__main__":
    main()
