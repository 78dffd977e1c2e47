"""A run stopped by its disk: a checkpoint, the final weights or a log line that could not be written.

Checkpoints are the largest writes a run makes, and a full disk (or quota, or file size limit)
is the commonest way a long run dies. The libraries that write them say so each in their own
words: Python an OSError with its errno, safetensors "I/O error: No space left on device (os
error 28)", PyTorch's zip writer only "unexpected pos N vs M" (a short write, the errno lost).
This module recognises those and turns them into one message: what happened, where, how much
is free now, the last complete checkpoint (the one cut short is skipped on resume: rundir.py)
and the command that continues, instead of a traceback ending in one of the three.
"""
from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path

from vlmdata.errors import DISK_ERRNOS, OperationError, os_error_advice
ALMOST_FULL = 16 << 20  # bytes free below which a write that failed without saying why is taken for a full disk
# What a library's message says when the errno itself is not at hand (safetensors, Rust's io::Error,
# PyTorch's C++ writer); None: a short write whose cause the message does not give.
_SAID = ((re.compile(r"No space left on device|os error 28\b"), errno.ENOSPC),
         (re.compile(r"Disk quota exceeded|os error 122\b"), errno.EDQUOT),
         (re.compile(r"File too large|os error 27\b"), errno.EFBIG),
         (re.compile(r"Read-only file system|os error 30\b"), errno.EROFS),
         (re.compile(r"unexpected pos \d+ vs \d+"), None))


def exception_chain(e: BaseException) -> list[BaseException]:
    """``e`` and the exceptions it was raised from or while handling, innermost last."""
    seen: list[BaseException] = []
    while e is not None and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return seen


def failed_write(e: BaseException) -> tuple[bool, int | None]:
    """(whether ``e`` is a write the disk refused, its errno where known)."""
    chain = exception_chain(e)
    for x in chain:
        if isinstance(x, OSError) and x.errno in DISK_ERRNOS:
            return True, x.errno
    for x in chain:
        for pattern, code in _SAID:
            if pattern.search(str(x)):
                return True, code
    return False, None


def _size(n: int) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e9 else f"{n / 1e6:,.1f} MB"


def _free(path: Path) -> int | None:
    p = path
    while not p.exists() and p.parent != p:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def disk_failure(e: BaseException, output_dir: str | Path, resume: str, again: str) -> OperationError | None:
    """The error to show for ``e`` when the disk stopped the run writing into ``output_dir``, else None.
    ``resume``: the command that continues from a checkpoint; ``again``: the one that starts over."""
    from vlmtrain.train.chain import DONE
    from vlmtrain.train.rundir import FINAL_OUTPUTS, last_complete_checkpoint

    refused, code = failed_write(e)
    if not refused:
        return None
    out = Path(output_dir)
    free = _free(out)
    if code is None and free is not None and free < ALMOST_FULL:  # (a short write onto a disk with no room left)
        code = errno.ENOSPC
    advice = os_error_advice(code) if code is not None else None
    what = advice[0] if advice else "a write failed (a full disk, a quota or a file size limit: the library does not say which)"
    said = (str(e).strip().splitlines() or [""])[0][:200]
    now = f"{_size(free)} free there now; " if free is not None else ""
    msg = f"{what} while the run wrote into {out} ({now}{type(e).__name__}: {said})"
    if code == errno.EFBIG:
        fix = "raise `ulimit -f` (or choose an output_dir on a file system that holds larger files)"
    elif code == errno.EROFS:
        fix = "choose an output_dir on a writable file system (or remount this one read-write)"
    elif code == errno.EIO:
        fix = "check the disk (dmesg, mount), or choose an output_dir on another disk"
    else:
        fix = "free some space (keep fewer checkpoints: save_total_limit; or choose an output_dir on a larger disk)"
    last = last_complete_checkpoint(out)
    if last is not None:
        hint = f"{fix}, then continue from {last.name} (a checkpoint cut short is skipped) with:\n  {resume}"
    else:
        # a final save cut short looks like a finished run to the next start (rundir.prepare): say to remove it
        cut = [f for f in FINAL_OUTPUTS if (out / f).is_file()] if not (out / DONE).is_file() else []
        drop = f", delete {', '.join(str(out / f) for f in cut)} (the final save, cut short)" if cut else ""
        hint = f"{fix}{drop}, then start again with:\n  {again}"
    return OperationError(msg, hint=hint)


__all__ = ["disk_failure", "failed_write"]
