"""Helpers shared by the fetch tests (imported as ``fetch_helpers``; ``server`` is loaded under a unique name)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tls_cert import self_signed  # noqa: F401 - the fetch tests take it from here

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _load_server():
    name = "vlmdata_tests_fetch_server"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "server.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


_srv = _load_server()
Blob, Fault, HubServer, LoopbackServer = _srv.Blob, _srv.Fault, _srv.HubServer, _srv.LoopbackServer


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Manifests:
    """A folder of dataset manifests written by the test."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        (folder / "datasets").mkdir(parents=True, exist_ok=True)

    def dataset(self, name: str, *files: str) -> None:
        text = f'name = "{name}"\ntitle = "test {name}"\nlicense = "test"\n\n' + "\n".join(files)
        (self.folder / "datasets" / f"{name}.toml").write_text(text)


def file_toml(name: str, *, sources: list[str], place: str, size: int | str | None = None,
              sha: str | None = None, md5: str | None = None, extra: str = "") -> str:
    size_s = json.dumps(size) if isinstance(size, str) else (str(size) if size is not None else '"unknown"')
    lines = ["[[files]]", f'name = "{name}"', f"size = {size_s}", f'sha256 = "{sha or "unknown"}"']
    if md5:
        lines.append(f'md5 = "{md5}"')
    if extra:
        lines.append(extra)
    lines.append("sources = [" + ", ".join(sources) + "]")
    lines.append(f"place = {place}")
    return "\n".join(lines) + "\n"


def http(url: str) -> str:
    return f'{{ kind = "http", url = "{url}" }}'


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def start_fetch(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`vlmdata ARGS` in a child process (for kills and concurrent runs)."""
    return subprocess.Popen([sys.executable, "-m", "vlmdata.cli.app", *map(str, args)], cwd=REPO,
                            env=env or subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=_ctrl_c_as_a_terminal_sends_it)


def _ctrl_c_as_a_terminal_sends_it() -> None:
    """The child starts with SIGINT at its default, as under a terminal: a shell without job control
    that runs the tests in the background (`make test &` in a script) ignores SIGINT for them, the
    child would inherit that, and Python leaves an ignored SIGINT ignored (no KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stamp(path: Path) -> tuple[int, int, int]:
    """What changes when a file is written or replaced (its inode, mtime and ctime): a file left alone keeps it."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_ctime_ns


def wait_for(cond, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def sent_settled(server, suffix: str = "", *, timeout: float = 20.0) -> int:
    """``server.sent(suffix)`` once no response body is still being sent. The server counts a block after
    the socket has taken it, so a client (an in-process fetch above all) can have received every byte
    and returned while the thread that sent the last block has not counted it yet: on a loaded machine
    that thread may wait for the CPU or the GIL for tens of milliseconds. A body is counted as in flight
    before its first byte, so once none is, everything a finished run received is counted (an early
    read can only count less: an `== 0` or an upper bound would pass on it as falsely as an `==` fails).
    For the count after the client finished, not for one taken while a transfer is meant to be running."""
    wait_for(lambda: server.in_flight == 0, timeout, "the server to finish sending")
    return server.sent(suffix)


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> tuple[str, str]:
    try:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
    return out.decode(errors="replace"), err.decode(errors="replace")




def store_tree(root: Path) -> dict[str, str]:
    """Every file a fetch placed under ``root`` (its state folder aside): relative path -> sha256."""
    return {p.relative_to(root).as_posix(): sha256(p.read_bytes()) for p in sorted(Path(root).rglob("*"))
            if p.is_file() and ".vlmdata" not in p.relative_to(root).parts}


def root_state(root: Path) -> dict:
    """What the journal, vlmdata.lock and the URL-list reports say, less times and paths (which differ by run)."""
    from vlmdata.state import Journal, LockFile, Root

    r = Root(root)
    journal = {k: (e.size, e.sha256, e.to, e.files) for k, e in Journal(r.state_dir).entries().items()}
    pins = {k: (e.sha256, e.size) for k, e in LockFile(r.lock_path).entries().items()}
    reports = {}
    for p in sorted((r.state_dir / "reports").glob("*-urllist.json")):
        d = json.loads(p.read_text())
        reports[p.name] = {k: d[k] for k in ("total", "saved", "skipped", "converted", "conversions", "dead", "failed")}
    return {"journal": journal, "pins": pins, "reports": reports}


def split_dataset(manifests: "Manifests", server, parts: int = 3, size: int = 96 << 10) -> bytes:
    """A dataset `split` whose one file is published in ``parts`` pieces, served by ``server`` under the host
    parts.example.org (reached through --mirror like the demo's origins). Returns the whole file's bytes."""
    data = os.urandom(size)
    step = -(-size // parts)
    pieces = [data[i:i + step] for i in range(0, size, step)]
    rows = []
    for i, piece in enumerate(pieces):
        name = f"whole.bin.{i + 1:03d}"
        server.blobs[f"parts.example.org/split/{name}"] = Blob(data=piece)
        rows.append(f'{{ name = "{name}", size = {len(piece)}, sha256 = "{sha256(piece)}", '
                    f'sources = [{http(f"http://parts.example.org/split/{name}")}] }}')
    text = ('name = "split"\ntitle = "split"\nlicense = "test"\n\n[[files]]\nname = "whole.bin"\n'
            f'size = {size}\nsha256 = "{sha256(data)}"\nparts = [' + ", ".join(rows) + ']\n'
            'place = { kind = "file", to = "split/whole.bin" }\n')
    (manifests.folder / "datasets" / "split.toml").write_text(text)
    return data
