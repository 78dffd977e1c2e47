"""vlmdata.heap: freed memory stays in the process for its next allocations (no fresh, zeroed
pages from the kernel each time), measured as the minor page faults of a second round of the
same allocations, in a child process of its own."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

ROUND = """
import resource, sys
from vlmdata.heap import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def one_round():
    blocks = [bytearray(1 << 20) for _ in range(100)]  # 100 MiB, written (zeroed) by bytearray
    del blocks
one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
one_round()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", ROUND, mode], capture_output=True, text=True, check=True, timeout=60)
    return int(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_a_second_round_of_allocations_reuses_the_first_rounds_memory():
    plain, kept = _faults("plain"), _faults("keep")
    assert plain > 10_000  # 100 MiB given back and faulted in again: ~25,600 pages
    assert kept < plain // 10
