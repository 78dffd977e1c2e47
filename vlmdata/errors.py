"""Errors a user can act on.

Every error carries what went wrong, where (file, record, line) and what to do next. The CLI
prints the message without a traceback and exits with the error's code: 2 for bad input (a typo,
a broken manifest, a root that is a file), 1 for an operation that failed (a download, a disk
that is too small).

``run_app`` is that rule for a console script, shared by `vlmdata` and `vlmtrain`: user mistakes
become one clear message and exit code 2 (a VlmdataError carries its own code), usage errors print
click's usage text with exit code 2, Ctrl-C prints how to resume and exits 130; with ``os_errors``,
a permission, read-only or disk-full error names its path (exit 2, or 1 for a full disk); anything
else is a bug and keeps its traceback. With ``json_error`` (the user asked for --json), each of
those also goes to stdout as ``{"error", "where", "hint", "exit_code"}``, so a pipe into ``jq`` or
``json.tool`` reads an error object instead of breaking on empty input.
"""
from __future__ import annotations

import errno
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


class VlmdataError(Exception):
    """Base class: a message for the user and an exit code."""

    exit_code = 1

    def __init__(self, what: str, *, where: str | None = None, hint: str | None = None) -> None:
        self.what = what
        self.where = where
        self.hint = hint
        super().__init__(self.render())

    def __reduce__(self):  # pickled whole (an extraction worker process sends its error back)
        return _rebuild, (type(self), self.what, self.where, self.hint)

    def render(self) -> str:
        parts = [self.what if not self.where else f"{self.where}: {self.what}"]
        if self.hint:
            parts.append(f"  -> {self.hint}")
        return "\n".join(parts)


def _rebuild(cls: type, what: str, where: str | None, hint: str | None) -> VlmdataError:
    return cls(what, where=where, hint=hint)


class UserError(VlmdataError):
    """The input is wrong: a name, a path, a manifest, a record. Exit code 2."""

    exit_code = 2


class OperationError(VlmdataError):
    """The input is fine but the operation failed (network, disk, checksum). Exit code 1."""

    exit_code = 1


class Interrupted(VlmdataError):
    """Ctrl-C, after the command has made its state safe: the message says what was kept. Exit code 130."""

    exit_code = 130


JsonError = Callable[[dict[str, Any]], None]

_TERMINATED = [False]  # a SIGTERM arrived (stop_on_sigterm): the exit code is 143, not Ctrl-C's 130


def stop_on_sigterm() -> None:
    """From now on SIGTERM (a batch scheduler's stop or time limit, `kill`) stops the command as Ctrl-C
    does: the main thread gets a KeyboardInterrupt, so the same clean-up runs (downloads kept as .part,
    claims on a shared root given back, the message, the --json document), and run_app exits 143.
    Python's default ended the process where it stood, leaving claims that held other machines back."""
    import signal

    def handler(signum: int, frame: object) -> None:
        _TERMINATED[0] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    # Forked workers (extraction, blend scans) keep the default: a pool that ends its workers with
    # SIGTERM must see them end, not turn it into an exception a worker loop catches and survives.
    os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))


def _stop_code() -> int:
    return 128 + 15 if _TERMINATED[0] else 130


def _stop_words(text: str) -> str:
    """``interrupted: what was kept`` (Ctrl-C's words) as ``stopped by SIGTERM; what was kept``."""
    if not _TERMINATED[0]:
        return text
    rest = text.removeprefix("interrupted").lstrip(":; ")
    return "stopped by SIGTERM" + (f"; {rest}" if rest else "")


# What the system says when a folder is not the user's to write, or a disk is full: no bug, and a
# traceback would hide the one line that matters (the path). Exit code and advice per errno; the
# advice names the path ({path}) and, where the caller knows it, the option that chose it
# ({another}: "another --png"): a hint naming options the command does not have misleads.
_OS_ERRORS = {
    errno.EACCES: (2, "permission denied", "this user may not use {path}: fix its permissions, or give {another}"),
    errno.EPERM: (2, "operation not permitted", "this user may not use {path}: fix its permissions, or give {another}"),
    errno.EROFS: (2, "read-only file system", "{path} is on a file system mounted read-only: give {another} on a "
                                              "writable one, or remount it read-write"),
    errno.ENOSPC: (1, "no space left on the device", "free some space, or give {another} on a disk with room"),
    errno.EDQUOT: (1, "disk quota exceeded", "free some space, or give {another} on a disk with room"),
    errno.EFBIG: (1, "file too large for this file system or for the process's size limit (ulimit -f)",
                  "raise `ulimit -f`, or give {another} on a file system that holds larger files"),
    errno.EIO: (1, "input/output error (the disk or its connection failed)",
                "check the disk (dmesg, mount), or give {another} on another disk"),
}


# A write the disk refused (full, a quota, a size limit, read-only, failing): another try cannot fix it.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


def os_error_advice(code: int | None, *, path: str | None = None, option: str | None = None) -> tuple[str, str] | None:
    """(what, hint) for an errno a user can act on (a full disk, a path not theirs), else None.
    ``path``: the path at fault, named in the hint; ``option``: the option or argument that chose it
    (``--png``, ``OUT``), which the hint then tells the user to change."""
    known = _OS_ERRORS.get(code or 0)
    if known is None:
        return None
    another = f"another {option}" if option else "another path"
    return known[1], known[2].format(path=path or "that path", another=another)


def describe_os_error(e: OSError, *, option: str | None = None) -> tuple[int, str, str] | None:
    """(exit code, message, hint) for an OSError a user can act on, else None (``option``: os_error_advice's)."""
    where = str(e.filename) if e.filename is not None else None
    advice = os_error_advice(e.errno, path=where, option=option)
    if advice is None:
        return None
    what, hint = advice
    return _OS_ERRORS[e.errno or 0][0], (f"{where}: {what}" if where else what), hint


@contextmanager
def writing(path: Path | str, option: str) -> Iterator[None]:
    """A write to ``path``, which the user chose with ``option``: a permission, read-only or full-disk
    error there (or at a folder above it, made on the way) says to change that option. Errors at
    other paths (an input being read) pass on unchanged."""
    try:
        yield
    except OSError as e:
        blamed = _blamed(e.filename, path)
        known = describe_os_error(OSError(e.errno, e.strerror, blamed), option=option) if blamed else None
        if known is None:
            raise
        code, what, hint = known
        raise (UserError if code == 2 else OperationError)(what, hint=hint) from None


def _blamed(filename: Any, path: Path | str) -> str | None:
    """The path an error at ``filename`` is said at: ``filename`` when it is ``path`` or a folder above
    it, ``path`` for its temporary sibling (atomic.py's ``.tmp-<name>.*``: a name the user never
    gave), else None (not this write's)."""
    if filename is None:
        return None
    target, at = os.path.abspath(path), os.path.abspath(os.fsdecode(filename))
    if target == at or target.startswith(at.rstrip(os.sep) + os.sep):
        return os.fsdecode(filename)
    head, name = os.path.split(target)
    if os.path.dirname(at) == head and os.path.basename(at).startswith(f".tmp-{name}."):
        return str(path)
    return None


def run_app(invoke: Callable[[], Any], *, interrupted: str,
            user_error: Callable[[BaseException], bool] = lambda e: False,
            json_error: JsonError | None = None, os_errors: bool = False, explain_interrupt: bool = False) -> None:
    """Run ``invoke()`` (a typer app called with ``standalone_mode=False``, or what stands for one:
    its return value is the exit code); ``user_error(e)`` marks other exception types whose
    message is for the user (exit 2); ``os_errors``: permission / read-only / disk-full errors
    become a message naming the path; ``explain_interrupt``: exit code 130 means an unhandled
    Ctrl-C (commands that handle one raise Interrupted), so say ``interrupted``. typer is not
    imported here: its exceptions can only come from a run that imported it."""

    def fail(code: int, what: str, *, where: str | None = None, hint: str | None = None) -> None:
        if json_error is not None:
            json_error({"error": what, "where": where, "hint": hint, "exit_code": code})
        sys.exit(code)

    try:
        # Without standalone mode click returns (not raises) the code of a typer.Exit.
        rc = invoke()
        if rc == 130 and explain_interrupt:
            # typer turns a Ctrl-C that no command handled into a silent exit code 130
            _say(_stop_words(interrupted))
            fail(_stop_code(), _stop_words("interrupted"), hint=interrupted)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except Interrupted as e:
        _say(_stop_words(e.render()))
        fail(_stop_code(), _stop_words(e.what), where=e.where, hint=e.hint)
    except VlmdataError as e:
        _say(f"error: {e.render()}")
        fail(e.exit_code, e.what, where=e.where, hint=e.hint)
    except KeyboardInterrupt:
        _say(_stop_words(interrupted))
        fail(_stop_code(), _stop_words("interrupted"), hint=interrupted)
    except BrokenPipeError:
        if not _reader_gone():
            raise
        # `vlmdata list | head -1`: what reads the output has stopped, as it may. End quietly, with
        # the status a shell gives a tool that SIGPIPE ended, and nothing more written there.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(128 + 13)
    except OSError as e:
        known = describe_os_error(e) if os_errors else None
        if known is None:
            if not user_error(e):
                raise
            _say(f"error: {e}")
            fail(2, str(e))
        else:
            code, what, hint = known
            _say(f"error: {what}\n  -> {hint}")
            fail(code, what, hint=hint)
    except Exception as e:
        typer = sys.modules.get("typer")
        if typer is not None and isinstance(e, typer.Exit):
            sys.exit(e.exit_code)
        if typer is not None and isinstance(e, typer.Abort):
            fail(130, "aborted")
        if typer is not None and _usage_error(e):
            e.show()  # usage errors: missing argument, unknown option
            ctx = getattr(e, "ctx", None)
            fail(2, e.format_message(), where=ctx.command_path if ctx is not None else None,
                 hint=(ctx.get_usage() if ctx is not None else None))
        if not user_error(e):
            raise
        _say(f"error: {e}")
        fail(2, str(e))


def _usage_error(e: BaseException) -> bool:
    """A command-line usage error (missing argument, unknown option) that can show itself. By class name:
    typer 0.28 names its base TyperException, the typers that vendor click or depend on it ClickException."""
    named = any(c.__name__ in ("TyperException", "ClickException") for c in type(e).__mro__)
    return named and callable(getattr(e, "show", None)) and callable(getattr(e, "format_message", None))


def _reader_gone() -> bool:
    """Is stdout a pipe whose reading end is closed (poll says POLLERR on its writing end)?"""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # (no real stdout: a test's capture)
        return False


def _say(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()
