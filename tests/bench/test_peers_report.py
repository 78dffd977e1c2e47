"""bench.peers records each run's CPU time beside its wall time, and RESULTS.md shows both (the
CPU says whether a two-core box, not the tool, set the time)."""
from __future__ import annotations

import os
import sys

from bench.peers import report, timing


def test_a_run_records_the_cpu_of_its_command(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(timing, "REPORTED_KIB", tmp_path / "absent")  # (not this VM's page reporting)
    busy = timing.timed("spin", [sys.executable, "-c", "import time\nt = time.process_time()\n"
                                 "while time.process_time() - t < 0.3: pass"])
    idle = timing.timed("sleep", [sys.executable, "-c", "import time; time.sleep(0.3)"])
    assert busy.rc == idle.rc == 0
    # (user + system: the loop's clock reads are system calls)
    assert busy.cpu_user + busy.cpu_sys >= 0.25 and idle.cpu_user + idle.cpu_sys < busy.cpu_user + busy.cpu_sys
    assert idle.seconds >= 0.3


def test_every_run_shows_its_cpu_and_older_results_still_render() -> None:
    result = {"machine": {"cpu": "test"}, "started": 0, "seconds": 1, "command": "x", "repeat": 1, "rows": [],
              "notes": [], "runs": {"case": [
                  {"tool": "new", "seconds": 1.5, "rc": 0, "load1": 0.5, "max_rss_mb": 10, "cpu_user": 1.2,
                   "cpu_sys": 0.3, "extra": {}},
                  {"tool": "old", "seconds": 2.0, "rc": 0, "load1": 0.5, "max_rss_mb": 10, "extra": {}}]}}
    text = report.section(result)
    assert "- case / new: 1.50 (load 0.5; cpu 1.20 + 0.30)" in text
    assert "- case / old: 2.00 (load 0.5)" in text


def test_settle_waits_for_the_hand_back_to_stop(tmp_path, monkeypatch) -> None:
    import threading
    import time

    counter = tmp_path / "reported_kib"
    counter.write_text("0\n")
    monkeypatch.setattr(timing, "REPORTED_KIB", counter)
    stop = time.monotonic() + 1.0

    def report_for_a_second() -> None:  # a reporting pass in progress: the counter grows
        n = 0
        while time.monotonic() < stop:
            n += 2048
            # replaced whole, as the kernel's counter reads: written in place, a read between the
            # truncation and the write saw an empty file and settle took it for a kernel without one
            (tmp_path / "next").write_text(f"{n}\n")
            os.replace(tmp_path / "next", counter)
            time.sleep(0.1)

    t = threading.Thread(target=report_for_a_second)
    t.start()
    waited = timing.settle(quiet=0.5, limit=10)
    t.join()
    assert waited >= 1.0 + 0.5 - 0.3 and time.monotonic() >= stop
    assert timing.settle(quiet=0.5, limit=0.2) <= 0.6  # never longer than the limit
    monkeypatch.setattr(timing, "REPORTED_KIB", tmp_path / "absent")
    assert timing.settle() == 0.0  # a kernel without the counter: nothing to wait for


def test_a_run_shows_what_the_vm_reported_during_it() -> None:
    run = {"tool": "t", "seconds": 2.0, "rc": 0, "load1": 0.5, "max_rss_mb": 10, "cpu_user": 1.0, "cpu_sys": 2.0,
           "settle_s": 2.5, "reported_mib": 512.0, "extra": {}}
    quiet = {**run, "tool": "q", "reported_mib": 0.0}
    text = report.section({"machine": {}, "started": 0, "seconds": 1, "command": "x", "repeat": 1, "rows": [],
                           "notes": [], "runs": {"case": [run, quiet]}})
    assert "- case / t: 2.00 (load 0.5; cpu 1.00 + 2.00; reported 512 MiB)" in text
    assert "- case / q: 2.00 (load 0.5; cpu 1.00 + 2.00)" in text


def test_a_miss_whose_goal_is_under_the_floor_is_said_out_of_reach() -> None:
    """The URL list's goal is 3x img2dataset's images/s; when img2dataset is fast, 3x asks for less time
    than 20,000 requests at 20 ms with 64 in flight take (6.25 s), and the table says so beside the miss."""
    from bench.peers.__main__ import Bench

    def runs(tool: str, *seconds: float) -> list[timing.Run]:
        return [timing.Run(tool=tool, seconds=s, rc=0, load1=0.1, max_rss_mb=1.0) for s in seconds]

    b = Bench(repeat=3)
    kw = dict(rate=20_000, limit=3.0, floor=6.25)
    b.row("list, fast peer", runs("ours", 6.8, 6.79, 6.83), "peer", runs("peer", 17.3, 17.06, 16.9), ">= 3x", **kw)
    b.row("list, slow peer", runs("ours", 6.8, 6.79, 6.83), "peer", runs("peer", 19.5, 19.8, 19.9), ">= 3x", **kw)
    b.row("list, met", runs("ours", 6.8, 6.79, 6.83), "peer", runs("peer", 21.0, 21.5, 22.0), ">= 3x", **kw)
    b.row("time row", runs("ours", 0.95), "peer", runs("peer", 3.5), "<= 0.25x", limit=0.25)
    text = report.table({"rows": b.rows}).splitlines()
    assert text[2].endswith("| **no** (out of reach: the goal asks for 5.69 s, under the 6.25 s floor) |")
    assert text[3].endswith("| **no** |")  # 3x asks 6.60 s: above the floor, a miss of ours
    assert text[4].endswith("| yes |") and text[5].endswith("| **no** |")
