"""bench.peers records each run's CPU time beside its wall time, and RESULTS.md shows both (the
CPU says whether a two-core box, not the tool, set the time)."""
from __future__ import annotations

import sys

from bench.peers import report, timing


def test_a_run_records_the_cpu_of_its_command() -> None:
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
