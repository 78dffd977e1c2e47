"""A download's disk side (vlmdata.fetch.disk): the space it still needs set aside before its first
byte, and a failing disk that stops it at once instead of being retried as a network error.

A full disk cannot be made here without root, so the process's file size limit (RLIMIT_FSIZE,
`ulimit -f`) stands in for it: a write past it fails with EFBIG, as one on a full disk fails with
ENOSPC, and both take the same path. A server announcing more than the disk holds is a sparse file."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import zipfile

import pytest
from fetch_helpers import REPO, file_toml, http, sent_settled, sha256, subprocess_env

from tests.limits import with_file_size_limit
from vlmdata.fetch.disk import reserve, still_needed
from vlmdata.state import Root
from vlmdata.state.partial import part_path

MIB = 1 << 20


def _dataset(manifests, files_server, root, name: str, size: int | None, sha: str | None):
    manifests.dataset("d", file_toml(name, size=size, sha=sha, sources=[http(f"{files_server.url}/{name}")],
                                     place=f'{{ kind = "file", to = "d/{name}" }}'))
    return ["--manifests", str(manifests.folder), "--root", str(root)], part_path(Root(root).download_path("d", name))


def _fetch_with_size_limit(limit: int, *args: str) -> subprocess.CompletedProcess:
    """`vlmdata ARGS` in a process whose files may not grow past ``limit`` bytes."""
    return subprocess.run(with_file_size_limit(limit, [sys.executable, "-m", "vlmdata.cli.app", *args]), cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)


def _allocated(path) -> int:
    return os.stat(path).st_blocks * 512


@pytest.mark.parametrize("connections", ["1", "4"])
def test_a_disk_limit_stops_the_download_at_once_and_the_rerun_resumes(connections, manifests, files_server, root, cli):
    data = os.urandom(10 * MIB)  # (over 2 x the 4 MiB split: four connections do cut it)
    (files_server.folder / "x.bin").write_bytes(data)
    where, part = _dataset(manifests, files_server, root, "x.bin", len(data), sha256(data))
    r = _fetch_with_size_limit(2 * MIB, "fetch", "d", *where, "--connections", connections)
    assert r.returncode == 1, r.stderr
    assert f"{part}: file too large for this file system or for the process's size limit" in r.stderr, r.stderr
    assert "gave up" not in r.stderr and "network" not in r.stderr  # not taken for a network failure
    assert "give another --root" in r.stderr, r.stderr  # the option that chose the place
    assert files_server.count("x.bin") == 1  # not tried again: another try cannot fix a disk
    assert not (root / "d" / "x.bin").exists()
    if connections == "1":  # what arrived before the limit is kept, and said so
        assert part.stat().st_size == 2 * MIB
        assert "2,097,152 bytes already downloaded are kept" in r.stderr
    files_server.reset()
    r = cli("fetch", "d", *where, "--connections", connections)
    assert r.code == 0, r.err
    assert (root / "d" / "x.bin").read_bytes() == data
    if connections == "1":
        assert files_server.requests == [("GET", "x.bin", f"bytes={2 * MIB}-")]


def test_a_disk_limit_while_unpacking_says_so_keeps_the_archive_and_leaves_no_half_folder(manifests, files_server, root):
    z = files_server.folder / "imgs.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train2017/small.jpg", os.urandom(4096))
        zf.writestr("train2017/big.raw", bytes(6 * MIB))  # (zeros: a few kB in the zip, 6 MiB unpacked)
    manifests.dataset("d", file_toml("imgs.zip", size=z.stat().st_size, sha=sha256(z.read_bytes()),
                                     sources=[http(f"{files_server.url}/imgs.zip")],
                                     place='{ kind = "extract", to = "d/imgs", inner = "train2017" }'))
    r = _fetch_with_size_limit(2 * MIB, "fetch", "d", "--manifests", str(manifests.folder), "--root", str(root))
    assert r.returncode == 1, r.stderr
    assert "d:imgs.zip: file too large for this file system" in r.stderr and "(placing it into d/imgs)" in r.stderr, r.stderr
    assert "ulimit -f" in r.stderr and "OSError" not in r.stderr
    assert Root(root).download_path("d", "imgs.zip").read_bytes() == z.read_bytes()  # downloaded once, kept
    assert not (root / "d").exists() or list((root / "d").iterdir()) == []  # nothing half unpacked


def test_a_disk_limit_on_a_copy_from_a_local_mirror_is_said_as_such(manifests, root, tmp_path):
    data = os.urandom(3 * MIB)
    mirror = tmp_path / "mirror"
    (mirror / "host.example").mkdir(parents=True)
    (mirror / "host.example" / "m.bin").write_bytes(data)
    manifests.dataset("d", file_toml("m.bin", size=len(data), sha=sha256(data), sources=[http("http://host.example/m.bin")],
                                     place='{ kind = "file", to = "d/m.bin" }'))
    part = part_path(Root(root).download_path("d", "m.bin"))
    args = ["fetch", "d", "--manifests", str(manifests.folder), "--root", str(root), "--mirror", str(mirror)]
    r = _fetch_with_size_limit(MIB, *args)
    assert r.returncode == 1, r.stderr
    assert f"{part}: file too large for this file system" in r.stderr and "OSError" not in r.stderr, r.stderr
    r = _fetch_with_size_limit(8 * MIB, *args)  # room again: the copy is made whole
    assert r.returncode == 0, r.stderr
    assert (root / "d" / "m.bin").read_bytes() == data


def test_plan_counts_the_space_a_download_set_aside_as_taken(manifests, files_server, root, cli):
    data = os.urandom(6 * MIB)
    (files_server.folder / "x.bin").write_bytes(data)
    where, part = _dataset(manifests, files_server, root, "x.bin", len(data), sha256(data))
    r = _fetch_with_size_limit(2 * MIB, "fetch", "d", *where, "--connections", "1")
    assert r.returncode == 1 and part.stat().st_size == 2 * MIB, r.stderr
    if _allocated(part) < len(data):
        pytest.skip("this file system sets no space aside (no fallocate)")
    plan = cli("plan", "d", *where, "--json")
    assert plan.code == 0, plan.err
    item = plan.json()["items"][0]
    assert item["download_bytes"] == 4 * MIB  # still to come over the network
    assert item["disk_bytes"] == 0  # but its blocks are already the file's


@pytest.mark.parametrize("connections", ["1", "4"])
def test_a_server_announcing_more_than_the_disk_holds_fails_before_a_byte_and_takes_no_space(
        connections, manifests, files_server, root, cli, tmp_path):
    st = os.statvfs(tmp_path)
    huge = st.f_bfree * st.f_frsize + (1 << 40)  # a terabyte more than the disk has free
    try:
        with open(files_server.folder / "huge.bin", "wb") as fh:
            fh.truncate(huge)  # (sparse: no space used)
    except OSError as e:
        pytest.skip(f"this file system holds no sparse file of {huge:,} bytes ({e})")
    where, part = _dataset(manifests, files_server, root, "huge.bin", None, None)  # (size unknown: plan cannot refuse it)
    r = cli("fetch", "d", *where, "--connections", connections)
    assert r.code == 1
    assert f"{part}: no space left on the device (" in r.err and "more to come" in r.err, r.err
    assert files_server.count("huge.bin") == 1
    assert sent_settled(files_server, "huge.bin") < 16 * MIB  # (the first answer's start, not its body)
    assert _allocated(part) < MIB  # nothing was set aside, not even for a moment's try


def test_reserve_allocates_the_gaps_and_keeps_the_length_and_the_bytes(tmp_path):
    one = tmp_path / "one.part"  # one connection: the length is what arrived, the rest lies past it
    fd = os.open(one, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"x" * 100)
        if not reserve(fd, [(100, 4 * MIB)]):
            pytest.skip("no fallocate on this file system")
        assert os.fstat(fd).st_size == 100
        assert _allocated(one) >= 4 * MIB
        assert still_needed(fd, [(100, 4 * MIB)]) == 0  # (a resume asks the disk for nothing more)
        assert still_needed(fd, [(100, 6 * MIB)]) <= 2 * MIB
    finally:
        os.close(fd)
    assert one.read_bytes() == b"x" * 100
    seg = tmp_path / "seg.part"  # several connections: the file has its length, with holes still to fill
    head = os.urandom(MIB)
    with open(seg, "wb") as fh:
        fh.write(head)
        fh.truncate(8 * MIB)
    fd = os.open(seg, os.O_RDWR)
    try:
        assert still_needed(fd, [(MIB, 8 * MIB)]) >= 7 * MIB - 4096
        assert reserve(fd, [(MIB, 8 * MIB)])
        assert still_needed(fd, [(MIB, 8 * MIB)]) == 0
    finally:
        os.close(fd)
    assert seg.stat().st_size == 8 * MIB and _allocated(seg) >= 8 * MIB
    with open(seg, "rb") as fh:
        assert fh.read(MIB) == head and fh.read() == bytes(7 * MIB)


def test_reserve_of_more_than_the_disk_has_raises_enospc_and_takes_nothing(tmp_path):
    p = tmp_path / "f.part"
    st = os.statvfs(tmp_path)
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        with pytest.raises(OSError) as e:
            reserve(fd, [(0, st.f_bfree * st.f_frsize + (1 << 40))])
    finally:
        os.close(fd)
    assert e.value.errno == errno.ENOSPC and "more to come" in e.value.strerror
    assert _allocated(p) == 0


def test_small_gaps_are_not_worth_a_reservation(tmp_path):
    p = tmp_path / "f.part"
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        assert reserve(fd, [(0, 64 << 10)]) is False
    finally:
        os.close(fd)
    assert _allocated(p) == 0
