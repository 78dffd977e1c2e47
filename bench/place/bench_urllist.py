"""20,000 small images from a URL list, 20 ms server latency: vlmdata's fetch_url_list vs img2dataset.

    python -m bench.place.bench_urllist [--images 20000] [--threads 64] [--latency 0.02] [--repeat 2]

One loopback server (bench/place/latency_server.py, its own process) serves both tools. Same
thread count for both: img2dataset runs with processes_count=1, thread_count=THREADS,
resize_mode="no", skip_reencode=True (keeps the bytes, like vlmdata keeps a real JPEG),
output_format="files"; vlmdata runs fetch_url_list with jobs=THREADS (every image is still
sniffed and fully decoded before it is written). img2dataset is installed from PyPI into its own
venv under bench/out/ (never into the project's .venv). Each tool's time is measured inside its
own process around the download call (imports excluded); the median over the repeats is used.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "bench" / "out" / "place"
VENV = REPO / "bench" / "out" / "img2dataset-venv"
IMG2DATASET = "img2dataset==1.47.0"

I2D_SCRIPT = """
import json, sys, time
from img2dataset import download
url_list, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = time.perf_counter()
download(url_list=url_list, output_folder=out, processes_count=1, thread_count=threads, resize_mode="no",
         skip_reencode=True, output_format="files", input_format="txt", timeout=10, retries=0,
         number_sample_per_shard=10000, enable_wandb=False, compute_hash=None, extract_exif=False)
dt = time.perf_counter() - t
ok = 0
for stats in __import__("glob").glob(out + "/*_stats.json"):
    ok += json.load(open(stats))["successes"]
print(json.dumps({"seconds": dt, "ok": ok}))
"""


def ensure_img2dataset() -> Path:
    py = VENV / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import img2dataset"], capture_output=True).returncode == 0:
        return py
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", IMG2DATASET], check=True)
    return py


def start_server(latency: float) -> tuple[subprocess.Popen, int]:
    port_file = OUT / "server.port"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "bench.place.latency_server", "--latency", str(latency),
                             "--port-file", str(port_file), "--max-seconds", "1500"], cwd=REPO)
    deadline = time.time() + 30
    while not port_file.exists() or not port_file.read_text():
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("the benchmark server did not start")
        time.sleep(0.05)
    return proc, int(port_file.read_text())


VLMDATA_SCRIPT = """
import json, sys, time
from pathlib import Path
from vlmdata.manifest import FileSpec, Placement, Source
from vlmdata.net.client import Client
from vlmdata.fetch.urllist import fetch_url_list
from vlmdata.state import Root
root_dir, threads = sys.argv[1], int(sys.argv[2])
root = Root(root_dir)
src = Source("urllist", path="ocr_vqa/dataset.json", list_format="json-dict", url_key="imageURL")
spec = FileSpec("ocr_vqa", "images-from-urls", None, None, None, None, False, None, (src,), (),
                Placement("images", "ocr_vqa/images", ext="jpg"))
t = time.perf_counter()
res = fetch_url_list(spec, src, root, session=Client(pool_size=threads), jobs=threads, mirror=None)
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "ok": res.saved, "failed": len(res.failed), "dead": len(res.dead)}))
"""


def run_vlmdata(port: int, n: int, threads: int) -> dict:
    root = OUT / "urllist-vlmdata"
    shutil.rmtree(root, ignore_errors=True)
    lst = root / "ocr_vqa" / "dataset.json"
    lst.parent.mkdir(parents=True)
    lst.write_text(json.dumps({f"{i:010d}": {"imageURL": f"http://127.0.0.1:{port}/img/{i}.jpg"} for i in range(n)}))
    (root / ".vlmdata").mkdir()
    r = subprocess.run([sys.executable, "-c", VLMDATA_SCRIPT, str(root), str(threads)], cwd=REPO,
                       capture_output=True, text=True, check=True)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["files"] = sum(1 for _ in (root / "ocr_vqa" / "images").iterdir())
    shutil.rmtree(root, ignore_errors=True)
    return out


def run_img2dataset(py: Path, port: int, n: int, threads: int) -> dict:
    work = OUT / "urllist-img2dataset"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    urls = work / "urls.txt"
    urls.write_text("".join(f"http://127.0.0.1:{port}/img/{i}.jpg\n" for i in range(n)))
    r = subprocess.run([str(py), "-c", I2D_SCRIPT, str(urls), str(work / "out"), str(threads)],
                       capture_output=True, text=True, check=True)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["files"] = sum(1 for p in (work / "out").rglob("*.jpg"))
    shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.02)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    py = ensure_img2dataset()
    proc, port = start_server(a.latency)
    runs: dict[str, list[dict]] = {"vlmdata fetch_url_list": [], "img2dataset": []}
    try:
        for _ in range(a.repeat):
            runs["vlmdata fetch_url_list"].append(run_vlmdata(port, a.images, a.threads))
            runs["img2dataset"].append(run_img2dataset(py, port, a.images, a.threads))
    finally:
        proc.terminate()
        proc.wait(10)
    rate = {k: statistics.median(r["ok"] / r["seconds"] for r in v) for k, v in runs.items()}
    result = {
        "bench": "urllist",
        "images": a.images,
        "threads": a.threads,
        "latency_s": a.latency,
        "runs": runs,
        "median_images_per_s": rate,
        "ratio_vlmdata_over_img2dataset": rate["vlmdata fetch_url_list"] / rate["img2dataset"],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
