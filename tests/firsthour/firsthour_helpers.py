"""Helpers for the first-hour tests: run `vlmdata` on a root fed by the demo mirror."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.cli_runner import CliResult
from tests.conftest import REPO, run_vlmdata


class DemoRoot:
    """A data root whose commands use the demo's manifests and its mirror (a local folder)."""

    def __init__(self, demo, root: Path) -> None:
        self.demo = demo
        self.root = Path(root)

    def args(self, *args: str) -> list[str]:
        return ["--root", str(self.root), "--manifests", str(self.demo.manifests),
                "--mirror", str(self.demo.mirror), *map(str, args)]

    def run(self, *args: str, env: dict[str, str] | None = None) -> CliResult:
        return run_vlmdata(*self.args(*args), env=env)


def unprivileged_runner():
    """A function running `vlmdata ARGS` as a user the file modes apply to, or None when that is
    impossible here (root without `setpriv`, or a checkout nobody may read). As root (modes do not
    stop root) the command runs in a child process under `setpriv` as nobody; otherwise in-process."""
    if os.geteuid() != 0:
        return lambda *args: run_vlmdata(*args)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None

    def as_nobody(*argv: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLMDATA_")}
        env["PYTHONPATH"] = str(REPO)
        env["HOME"] = tempfile.gettempdir()
        return subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, *argv],
                              cwd=tempfile.gettempdir(), env=env, capture_output=True, text=True, timeout=120)

    # A clone inside a folder only its owner may enter (`mktemp -d` makes 0700 ones): nobody cannot
    # start this interpreter or import the package, so there is no one the modes could stop.
    if as_nobody("-c", "import vlmdata.cli.app").returncode != 0:
        return None

    def run(*args: str) -> CliResult:
        p = as_nobody("-m", "vlmdata.cli.app", *map(str, args))
        return CliResult(p.returncode, p.stdout, p.stderr)

    return run


def shared_tmp() -> Path:
    """A folder every user can reach (pytest's tmp_path is private to its owner)."""
    d = Path(tempfile.mkdtemp(prefix="vlmdata-firsthour-"))
    d.chmod(0o755)
    return d


def run_in_terminal(*args: str, timeout: float = 120) -> tuple[int, str]:
    """`vlmdata ARGS` in a child process whose stdout and stderr are a pseudo-terminal (so progress
    bars are drawn); returns its exit code and everything it wrote there."""
    import pty
    import select

    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # a 0x0 terminal gets no bars
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="100")
    proc = subprocess.Popen([sys.executable, "-m", "vlmdata.cli.app", *map(str, args)], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=timeout), b"".join(chunks).decode("utf-8", "replace")
