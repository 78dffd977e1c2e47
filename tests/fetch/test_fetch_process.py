"""`vlmdata fetch` as a real process: SIGKILL mid-download, Ctrl-C, two fetches on one root."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from fetch_helpers import file_toml, http, kill, sent_settled, sha256, start_fetch, wait_for

from vlmdata.state.partial import part_path, state_path
from vlmdata.state import Root

SIZE = 12 << 20


@pytest.fixture
def big(manifests, files_server, root):
    data = os.urandom(SIZE)
    (files_server.folder / "big.bin").write_bytes(data)
    manifests.dataset("t", file_toml("big.bin", size=len(data), sha=sha256(data), sources=[http(f"{files_server.url}/big.bin")],
                                     place='{ kind = "file", to = "t/big.bin" }'))
    return data


def args(manifests, root, *extra):
    return ["fetch", "t", "--manifests", str(manifests.folder), "--root", str(root), *extra]


def test_sigkill_then_rerun_fetches_only_the_rest(big, manifests, files_server, root, cli):
    # 1 MiB/s: the kill lands ~10 s before the download could finish, even on a starved CI machine.
    files_server.default_throttle = 1 << 20
    part = part_path(Root(root).download_path("t", "big.bin"))
    proc = start_fetch(*args(manifests, root, "--connections", "1"))
    try:
        wait_for(lambda: part.exists() and part.stat().st_size >= 2 << 20, what="2 MiB in the .part")
    finally:
        kill(proc, signal.SIGKILL)
    kept = part.stat().st_size
    assert kept < SIZE and not (root / "t/big.bin").exists()
    files_server.default_throttle = 0
    files_server.reset()
    r = cli(*args(manifests, root, "--connections", "1"))
    assert r.code == 0, r.err
    assert (root / "t/big.bin").read_bytes() == big
    assert sent_settled(files_server, "big.bin") == SIZE - kept  # the finished bytes were not fetched again
    assert files_server.requests[0][2] == f"bytes={kept}-"


@pytest.mark.parametrize("given", [["--connections", "4"], []], ids=["x4", "default"])
def test_sigkill_segmented_then_rerun(given, big, manifests, files_server, root, cli):
    # (the default ramps: at 1 MiB/s its first connection soon brings the other three)
    files_server.default_throttle = 1 << 20  # per connection
    part = part_path(Root(root).download_path("t", "big.bin"))
    side = state_path(part)

    def done_bytes() -> int:
        try:
            return sum(b - a for a, b in json.loads(side.read_text())["done"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    proc = start_fetch(*args(manifests, root, *given))
    try:
        wait_for(lambda: done_bytes() >= 4 << 20, what="4 MiB recorded in the sidecar")
    finally:
        kill(proc, signal.SIGKILL)
    done = done_bytes()
    # plan/status count the ranges done, not the (sparse, full-size) .part
    plan = cli("plan", "t", "--json", "--manifests", str(manifests.folder), "--root", str(root)).json()["items"][0]
    assert plan["state"] == "partial" and plan["partial_bytes"] == done and plan["download_bytes"] == SIZE - done
    files_server.default_throttle = 0
    files_server.reset()
    r = cli(*args(manifests, root, *given, "--json"))
    assert r.code == 0, r.err
    assert (root / "t/big.bin").read_bytes() == big
    sent = sent_settled(files_server, "big.bin")
    assert sent <= SIZE - done + (512 << 10), (sent, done)  # (+ a last slice the killed connections left in flight)
    assert r.json()["files"][0]["resumed_from"] >= done


def test_ctrl_c_stops_cleanly_and_resumes(big, manifests, files_server, root, cli):
    files_server.default_throttle = 1 << 20  # the interrupt lands ~11 s before the download could finish
    part = part_path(Root(root).download_path("t", "big.bin"))
    proc = start_fetch(*args(manifests, root, "--connections", "1"))
    try:
        wait_for(lambda: part.exists() and part.stat().st_size >= 1 << 20, what="1 MiB in the .part")
    finally:
        out, err = kill(proc, signal.SIGINT)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "run the same command again" in err
    assert part.exists()
    files_server.default_throttle = 0
    r = cli(*args(manifests, root))
    assert r.code == 0, r.err
    assert (root / "t/big.bin").read_bytes() == big


def test_sigterm_stops_as_ctrl_c_does_and_gives_its_claims_back(big, manifests, files_server, root, cli):
    """Found by trying: SLURM's scancel and time limits send SIGTERM, which ended the process where it
    stood: no message, no --json document, and its claim left on a root other machines share."""
    files_server.default_throttle = 1 << 20
    part = part_path(Root(root).download_path("t", "big.bin"))
    proc = start_fetch(*args(manifests, root, "--connections", "1", "--json"))
    try:
        wait_for(lambda: part.exists() and part.stat().st_size >= 1 << 20, what="1 MiB in the .part")
    finally:
        out, err = kill(proc, signal.SIGTERM)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM; finished files are placed, partial downloads are kept as .part" in err
    assert "Traceback" not in err and json.loads(out)["exit_code"] == 143
    assert part.exists() and list((root / ".vlmdata" / "claims").glob("*.claim")) == []
    files_server.default_throttle = 0
    r = cli(*args(manifests, root))
    assert r.code == 0, r.err
    assert (root / "t/big.bin").read_bytes() == big


def test_two_fetches_on_one_root_share_it_and_the_second_takes_over_from_a_killed_first(big, manifests, files_server,
                                                                                           root, cli):
    """Fetches share a root (each file is claimed): the second waits for the file the first is on;
    when the first is killed, its claim is stale at once (its pid is gone) and the second resumes its .part."""
    files_server.default_throttle = 2 << 20
    part = part_path(Root(root).download_path("t", "big.bin"))
    first = start_fetch(*args(manifests, root, "--connections", "1"))
    second = None
    try:
        wait_for(lambda: part.exists() and part.stat().st_size > 0, what="the first fetch to start")
        second = start_fetch(*args(manifests, root, "--connections", "1"))
        time.sleep(1.5)
        assert second.poll() is None and files_server.count("big.bin") == 1  # waiting, not downloading
        kill(first, signal.SIGKILL)
        kept = part.stat().st_size
        files_server.default_throttle = 0
        out, err = second.communicate(timeout=60)
    finally:
        kill(first, signal.SIGKILL)
        if second is not None and second.poll() is None:
            kill(second, signal.SIGKILL)
    assert second.returncode == 0, err
    assert "is on it" in err.decode()  # it said whom it was waiting for
    assert (root / "t/big.bin").read_bytes() == big
    assert files_server.requests[-1][2] == f"bytes={kept}-"  # resumed where the killed one stopped


def test_a_layout_build_waits_for_no_fetch(big, manifests, files_server, root, cli):
    """`layout build` rewrites what fetches read: it is refused while a fetch runs on the root, and
    the fetch is not disturbed."""
    (manifests.folder / "layouts").mkdir()
    (manifests.folder / "layouts" / "v.toml").write_text('name = "v"\ntitle = "v"\nimage_folder = "."\n\n[[entries]]\n'
                                             'path = "big.bin"\nstore = "t/big.bin"\ndataset = "t"\nkind = "file"\n')
    files_server.default_throttle = 2 << 20
    part = part_path(Root(root).download_path("t", "big.bin"))
    proc = start_fetch(*args(manifests, root, "--connections", "1"))
    try:
        wait_for(lambda: part.exists() and part.stat().st_size > 0, what="the fetch to start")
        r = cli("layout", "build", "--layout", "v", "--manifests", str(manifests.folder), "--root", str(root))
        assert r.code == 1
        assert "another vlmdata command is changing" in r.err and "vlmdata fetch t" in r.err
        files_server.default_throttle = 0
        _, err = proc.communicate(timeout=60)
    finally:
        kill(proc, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert (root / "t/big.bin").read_bytes() == big


def _kill_once_it_has(part, n: int, cmd: list[str], files_server) -> int:
    """Start `vlmdata CMD`, kill -9 it once ``part`` holds ``n`` bytes; the bytes kept. The server is then
    unthrottled and its counters reset, for the rerun."""
    proc = start_fetch(*cmd)
    try:
        wait_for(lambda: part.exists() and part.stat().st_size >= n, what=f"{n} bytes in the .part")
    finally:
        kill(proc, signal.SIGKILL)
    files_server.default_throttle = 0
    files_server.reset()
    return part.stat().st_size


def _one_file(manifests, files_server, root, ds: str, name: str, data: bytes, *, sha: str | None,
              extra: tuple[str, ...] = ()) -> tuple[list[str], Path]:
    """Dataset ``ds`` of one file ``name`` (``data``, served by files_server; ``sha``: the manifest's
    sha256 or None for "unknown"): the fetch command and the file's .part path."""
    (files_server.folder / name).write_bytes(data)
    manifests.dataset(ds, file_toml(name, size=len(data), sha=sha, sources=[http(f"{files_server.url}/{name}")],
                                    place=f'{{ kind = "file", to = "{ds}/{name}" }}'))
    cmd = ["fetch", ds, "--manifests", str(manifests.folder), "--root", str(root), *extra]
    return cmd, part_path(Root(root).download_path(ds, name))


def test_sigkill_of_a_small_file_then_rerun(manifests, files_server, root, cli):
    # 300 KiB at 64 KiB/s: every byte is written as it arrives, so a kill -9 keeps them all.
    data = os.urandom(300 << 10)
    cmd, part = _one_file(manifests, files_server, root, "s", "small.bin", data, sha=sha256(data))
    files_server.default_throttle = 64 << 10
    kept = _kill_once_it_has(part, 64 << 10, cmd, files_server)
    assert 64 << 10 <= kept < len(data)
    r = cli(*cmd)
    assert r.code == 0, r.err
    assert (root / "s/small.bin").read_bytes() == data
    assert files_server.requests == [("GET", "small.bin", f"bytes={kept}-")]


def test_resume_without_validators_is_reported(manifests, files_server, root, cli):
    data = os.urandom(3 << 20)
    cmd, part = _one_file(manifests, files_server, root, "n", "nv.bin", data, sha=sha256(data),
                          extra=("--connections", "1"))
    files_server.validators = False
    files_server.default_throttle = 1 << 20
    kept = _kill_once_it_has(part, 256 << 10, cmd, files_server)
    r = cli(*cmd, "--json")
    assert r.code == 0, r.err
    assert (root / "n/nv.bin").read_bytes() == data
    out = r.json()["files"][0]
    assert out["resumed_from"] == kept
    assert any("no ETag or Last-Modified" in w and "size" in w for w in out["warnings"])
    assert files_server.requests == [("GET", "nv.bin", f"bytes={kept}-")]


def test_no_validators_and_no_known_sha256_starts_over(manifests, files_server, root, cli):
    # Only the size would tie the .part to the server's file, and no sha256 (manifest, pin, hub)
    # would catch a stitched result, which the first download would then pin: start from byte 0.
    data = os.urandom(3 << 20)
    cmd, part = _one_file(manifests, files_server, root, "h", "nh.bin", data, sha=None, extra=("--connections", "1"))
    files_server.validators = False
    files_server.default_throttle = 1 << 20
    kept = _kill_once_it_has(part, 256 << 10, cmd, files_server)
    assert kept >= 256 << 10
    r = cli(*cmd, "--json")
    assert r.code == 0, r.err
    assert (root / "h/nh.bin").read_bytes() == data
    out = r.json()["files"][0]
    assert out["resumed_from"] == 0
    assert not any("no ETag or Last-Modified" in w for w in out["warnings"])
    assert files_server.requests == [("GET", "nh.bin", None)]
