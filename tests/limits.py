"""A command run under a file size limit (RLIMIT_FSIZE, `ulimit -f`): the tests' stand-in for a full
disk, which cannot be made without root. A write past the limit fails with EFBIG, as one on a full
disk fails with ENOSPC, and takes the same paths.

The limit is set by a small Python that then execs the command, not by a ``preexec_fn``: the test
process has threads (loopback servers), and code between fork and exec in a threaded process can
deadlock."""
from __future__ import annotations

import sys

_WRAP = ("import os, resource, sys; n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
         "os.execv(sys.argv[2], sys.argv[2:])")


def with_file_size_limit(limit: int, argv: list[str]) -> list[str]:
    """``argv`` (its first item an executable's path) run with files limited to ``limit`` bytes."""
    return [sys.executable, "-c", _WRAP, str(limit), *map(str, argv)]
