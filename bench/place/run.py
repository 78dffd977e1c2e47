"""Run the placement benchmarks side by side and print a Markdown table for bench/RESULTS.md.

    python -m bench.place.run [--quick]

1. unzip: a zip of 20,000 JPEGs, `unzip -q` vs place_download (on disk under bench/out/, and on
   tmpfs /dev/shm to take the disk out of the comparison);
2. urllist: 20,000 small images, 20 ms server latency, 64 threads, img2dataset vs fetch_url_list.

Goals: unzip time ratio <= 1.0; URL-list images/s ratio >= 1.0. Raw results: bench/out/place-results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from bench.place import bench_unzip, bench_urllist

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,000 files/images, one repeat (a smoke run)")
    a = ap.parse_args()
    n = ["--files", "2000", "--repeat", "1"] if a.quick else []
    m = ["--images", "2000", "--repeat", "1"] if a.quick else []
    results = {
        "unzip_disk": bench_unzip.main(n),
        "unzip_tmpfs": bench_unzip.main(n + ["--dir", "/dev/shm/vlmdata-bench"]) if Path("/dev/shm").is_dir() else None,
        "urllist": bench_urllist.main(m),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_avg_at_end": os.getloadavg()},
    }
    out = REPO / "bench" / "out" / "place-results.json"
    out.write_text(json.dumps(results, indent=2))
    print("\n| benchmark | vlmdata | peer | ratio | goal |")
    print("| --- | --- | --- | --- | --- |")
    for key in ("unzip_disk", "unzip_tmpfs"):
        r = results[key]
        if r is None:
            continue
        med = r["median_s"]
        ratio = r["ratio_vlmdata_over_unzip"]
        print(f"| unzip {r['files']:,} JPEGs ({r['archive_bytes'] / 1e6:.0f} MB, {r['method']}, {key.split('_')[1]}) "
              f"| {med['vlmdata place_download']:.2f} s | unzip -q {med['unzip -q']:.2f} s | {ratio:.2f}x time "
              f"| <= 1.0 {'met' if ratio <= 1.0 else 'NOT met'} |")
    r = results["urllist"]
    rate = r["median_images_per_s"]
    ratio = r["ratio_vlmdata_over_img2dataset"]
    print(f"| URL list {r['images']:,} images, {r['latency_s'] * 1000:.0f} ms latency, {r['threads']} threads "
          f"| {rate['vlmdata fetch_url_list']:.0f} img/s | img2dataset {rate['img2dataset']:.0f} img/s "
          f"| {ratio:.2f}x img/s | >= 1.0 {'met' if ratio >= 1.0 else 'NOT met'} |")
    print(f"\nraw: {out}")


if __name__ == "__main__":
    main()
