"""Whole `vlmdata` commands beside the tools users would pick instead, timed as users run them.

    python -m bench.peers [--repeat 3] [--only fetch1g,aria2,zip,urllist,blend,startup]

Installs what it needs (Debian's nginx-light, aria2, unzip, curl; img2dataset in its own venv
under bench/out/), makes the inputs once (bench/out/peers/), serves the files from nginx on
127.0.0.1 and the URL list's images from a latency server (bench/peers/latency_server.py, whose
own ceiling and punctuality are measured and reported, as is what a bare client with nothing else
to do takes against it: bench/peers/bare_client.py), and times each `vlmdata` command and each peer command as
a process: the tools take turns run by run, outputs are removed (folders of many files set
aside until the end: timing.rm says why), `sync` runs before each run and the VM's hand-back of
freed memory to its host is let finish (timing.settle; neither timed), and the
1-minute load average is recorded with every run. It writes every run to
bench/out/peers/results.json and the table, the machine and every run to bench/RESULTS.md
(between the ``bench.peers`` markers).

Rows (goal: the ratio vlmdata/peer of wall time; for URL lists of images per second):
- 1 GiB over loopback, sha256 checked against the manifest: ``vlmdata fetch -x1`` vs ``curl -o``
  (<= 1.05) and vs ``curl | tee | sha256sum`` (<= 0.25); the same with one core kept busy;
- 256 MiB from /throttled/ (16 MiB/s per connection): ``vlmdata fetch -x8`` vs ``aria2c -x8 -s8`` (<= 1.0);
- a zip of 20,000 small JPEGs already downloaded: ``vlmdata fetch`` (sha256, safe extraction,
  placement, journal) vs ``unzip -q`` (<= 0.8), on both cores and on one (``taskset -c 0``);
- 20,000 images from an OCR-VQA-style list, 20 ms per request, 64 in flight: ``vlmdata fetch
  --url-jobs 64`` vs img2dataset with 64 threads in one process (>= 3x images/s);
- the 665k-record mix JSON to Arrow: ``vlmdata blend`` vs json.load + Dataset.from_list +
  save_to_disk (<= 0.25);
- start-up: ``vlmdata --help`` and a fetch with nothing to do (< 0.15 s).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bench.peers import inputs, report, tools
from bench.peers.nginx import Nginx
from bench.peers.timing import Run, empty_trash, timed

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "bench" / "out" / "peers"
VLMDATA = str(Path(sys.executable).parent / "vlmdata")
CASES = ("startup", "fetch1g", "aria2", "zip", "urllist", "blend")


class Bench:
    def __init__(self, repeat: int) -> None:
        self.repeat = repeat
        self.rows: list[dict] = []
        self.runs: dict[str, list[dict]] = {}
        self.notes: list[str] = []
        self.env = {"VLMDATA_CACHE_DIR": str(OUT / "cache"), "NO_ALBUMENTATIONS_UPDATE": "1"}

    def vlmdata(self, root: Path, *args: str) -> list[str]:
        return [VLMDATA, "--manifests", str(OUT / "manifests"), "--root", str(root), *args]

    def alternate(self, key: str, tools_: dict[str, dict], times: int | None = None) -> dict[str, list[Run]]:
        """Each tool once per repeat, in turn; tools_: name -> timed() keyword arguments."""
        out: dict[str, list[Run]] = {t: [] for t in tools_}
        print(f"[{key}]", flush=True)
        for _ in range(times or self.repeat):
            for name, kw in tools_.items():
                out[name].append(timed(name, env=self.env, **kw))
        self.runs[key] = [r.as_dict() for rs in out.values() for r in rs]
        return out

    def row(self, job: str, ours: list[Run], peer_name: str, peer: list[Run] | None, goal: str, *,
            rate: float | None = None, limit: float | None = None, floor: float | None = None) -> None:
        """A table row: medians of the runs that succeeded; ``rate``: compare work/s instead of time;
        ``floor``: the fewest seconds any client can take (the URL list's latency), which a goal set as a
        multiple of the peer's speed may ask to beat: such a miss is said as out of reach."""
        mo = statistics.median(r.seconds for r in ours if r.rc == 0) if any(r.rc == 0 for r in ours) else None
        mp = statistics.median(r.seconds for r in peer if r.rc == 0) if peer and any(r.rc == 0 for r in peer) else None
        ratio = None
        if mo and mp:
            ratio = (mp / mo) if rate else (mo / mp)
        met = None
        if ratio is not None and limit is not None:
            met = ratio >= limit if rate else ratio <= limit
        elif peer is None and mo is not None and limit is not None:
            met = mo < limit
        asked = (mp / limit if rate else mp * limit) if mp and limit else None  # the time the goal allows us
        reach = (f"out of reach: the goal asks for {asked:.2f} s, under the {floor:.2f} s floor"
                 if met is False and floor is not None and asked is not None and asked < floor else None)
        self.rows.append({"job": job, "peer": peer_name, "ours_s": mo, "peer_s": mp, "ratio": ratio, "goal": goal,
                          "met": met, "out_of_reach": reach, "rate": rate, "ours_runs": [r.seconds for r in ours],
                          "peer_runs": [r.seconds for r in peer] if peer else [],
                          "loads": [r.load1 for r in ours] + ([r.load1 for r in peer] if peer else [])})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default=",".join(CASES), help=f"comma-separated, from {','.join(CASES)}")
    ap.add_argument("--no-results-md", action="store_true", help="do not touch bench/RESULTS.md")
    a = ap.parse_args()
    cases = [c for c in a.only.split(",") if c]
    bad = [c for c in cases if c not in CASES]
    if bad:
        raise SystemExit(f"unknown case(s) {bad}; choose from {CASES}")
    tools.ensure_debian(["nginx", "aria2c", "unzip", "curl", "taskset"])
    i2d = tools.ensure_img2dataset(REPO / "bench" / "out" / "img2dataset-venv") if "urllist" in cases else None
    OUT.mkdir(parents=True, exist_ok=True)
    b = Bench(a.repeat)
    started = time.time()
    www = OUT / "www"
    big = inputs.random_file(www / "big.bin", inputs.GIB)
    mid = inputs.random_file(www / "throttled" / "mid.bin", 256 << 20)
    tiny = inputs.random_file(www / "tiny.bin", 4096)
    zipf = inputs.jpeg_zip(OUT / "data" / "imgs.zip")
    from bench.peers import cases as c

    with Nginx(www, OUT / "nginx") as ngx:
        files = {}
        for name, path, url, place in (
                ("big.bin", big, f"{ngx.url}/big.bin", '{ kind = "file", to = "bench/big.bin" }'),
                ("mid.bin", mid, f"{ngx.url}/throttled/mid.bin", '{ kind = "file", to = "bench/mid.bin" }'),
                ("tiny.bin", tiny, f"{ngx.url}/tiny.bin", '{ kind = "file", to = "bench/tiny.bin" }'),
                ("imgs.zip", zipf, f"{ngx.url}/imgs.zip",
                 f'{{ kind = "extract", to = "bench/imgs", inner = "train2017", count = {inputs.ZIP_MEMBERS} }}')):
            size, sha = inputs.digest(path, OUT / "digests.json")
            files[name] = {"size": size, "sha256": sha, "source": f'{{ kind = "http", url = "{url}" }}', "place": place}
        files["images"] = {"source": '{ kind = "urllist", path = "urls/list.json", list_format = "json-dict", '
                                     'url_key = "imageURL" }',
                           "place": f'{{ kind = "images", to = "bench/images", ext = "jpg", count = {inputs.LIST_IMAGES} }}'}
        inputs.manifest(OUT / "manifests", files)
        time.sleep(2.1)  # let the manifest settle, so its parse is cached as it would be on a user's machine
        try:
            for case in cases:
                getattr(c, case)(b, ngx=ngx, out=OUT, zipf=zipf, i2d=i2d)
        finally:
            empty_trash(OUT)  # (the many-file outputs of every run, set aside by timing.rm)
    result = {"machine": tools.machine(REPO, OUT), "command": " ".join(["python -m bench.peers", *sys.argv[1:]]),
              "started": started, "seconds": round(time.time() - started), "repeat": a.repeat, "rows": b.rows,
              "notes": b.notes, "runs": b.runs}
    (OUT / "results.json").write_text(json.dumps(result, indent=1))
    print(report.table(result))
    if not a.no_results_md:
        report.write_results_md(REPO / "bench" / "RESULTS.md", result)
        print("wrote bench/RESULTS.md and", OUT / "results.json")


if __name__ == "__main__":
    main()
