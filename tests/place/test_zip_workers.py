"""Zips read by our own central-directory reader and written by several processes: the same
records as zipfile, the same bytes as the archive, and a failure in any worker is the same clear
error with nothing placed."""
from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest

import vlmdata.place.zip_workers as zip_workers
from vlmdata.errors import OperationError, UserError
from vlmdata.place import place_download
from vlmdata.place.zipdir import BadZip, read_directory

from place_helpers import make_spec

MANY = 4 * zip_workers.MIN_PER_PROCESS  # enough members for two worker processes


def members(n: int = MANY) -> dict[str, bytes]:
    rng = __import__("random").Random(n)
    out = {f"top/d{i % 3}/{i:05d}.jpg": rng.randbytes(rng.randint(50, 3000)) * rng.randint(1, 3) for i in range(n)}
    out["top/stored.bin"] = rng.randbytes(5000)
    return out


def write_zip(path: Path, files: dict[str, bytes], **kw) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, **kw) as zf:
        for name, data in files.items():
            zf.writestr(name, data, compress_type=zipfile.ZIP_STORED if name.endswith(".bin") else None)
    return path


def records(path: Path) -> list[tuple]:
    with zipfile.ZipFile(path) as zf:
        mine = [(e.name, e.flags, e.method, e.crc, e.csize, e.usize, e.offset) for e in read_directory(path.read_bytes())]
        theirs = [(i.filename, i.flag_bits, i.compress_type, i.CRC, i.compress_size, i.file_size, i.header_offset)
                  for i in zf.infolist()]
    assert mine == theirs
    return mine


def assert_nothing_placed(root) -> None:
    assert not root.store_path("ds/images").exists()
    assert not any(p.name.startswith(".tmp-") for p in root.path.rglob("*"))


def patched_members(monkeypatch, tmp_path: Path, wrap) -> Path:
    """A zip for two workers whose extract_member is ``wrap(real, in_parent, args, kw)``."""
    z = write_zip(tmp_path / "a.zip", members())
    parent, real = os.getpid(), zip_workers.extract_member
    monkeypatch.setattr(zip_workers, "extract_member", lambda *a, **kw: wrap(real, os.getpid() == parent, a, kw))
    return z


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_directory_reader_agrees_with_zipfile(tmp_path):
    files = {"a.txt": b"x" * 100, "ünïcode/名前.jpg": b"y" * 10, "dir/": b"", "empty": b""}
    assert len(records(write_zip(tmp_path / "plain.zip", files))) == 4
    z64 = tmp_path / "z64.zip"
    with zipfile.ZipFile(z64, "w") as zf:  # zip64 extra fields on every member
        for name, data in files.items():
            with zf.open(name, "w", force_zip64=True) as fh:
                fh.write(data)
    records(z64)
    sfx = tmp_path / "sfx.zip"  # bytes before the zip (a self-extracting archive): offsets shift
    sfx.write_bytes(b"#!/bin/sh\nexit 0\n" * 50 + (tmp_path / "plain.zip").read_bytes())
    assert records(sfx)[0][6] > 0
    legacy = tmp_path / "cp437.zip"  # a name without the UTF-8 flag is cp437, as zipfile reads it
    legacy.write_bytes((tmp_path / "plain.zip").read_bytes().replace(b"a.txt", b"\x81.txt"))
    records(legacy)
    assert read_directory(legacy.read_bytes())[0].name == "ü.txt"


@pytest.mark.skipif(shutil.which("zip") is None, reason="needs Info-ZIP's zip")
def test_directory_reader_agrees_on_an_info_zip_archive(tmp_path):
    src = tmp_path / "src"
    (src / "eval").mkdir(parents=True)
    for i in range(20):
        (src / "eval" / f"{i}.bin").write_bytes(os.urandom(100) * i)
    os.symlink("0.bin", src / "eval" / "link.bin")
    for flags in ([], ["-fz"]):
        out = tmp_path / f"info{len(flags)}.zip"
        subprocess.run(["zip", "-q", "-r", "-y", *flags, str(out), "eval"], cwd=src, check=True)
        assert len(records(out)) == 22


def test_not_a_zip_is_refused_by_the_reader():
    with pytest.raises(BadZip):
        read_directory(b"PK\x03\x04" + b"\0" * 100)


def test_nul_in_a_member_name_is_refused_not_cut(tmp_path, root):
    z = write_zip(tmp_path / "nul.zip", {"good.jpg": b"ok", "evil.jpgX../../x": b"pwned"})
    z.write_bytes(z.read_bytes().replace(b"evil.jpgX", b"evil.jpg\0"))  # zipfile would read 'evil.jpg'
    with pytest.raises(UserError, match="NUL"):
        place_download(make_spec(inner=""), z, root, merge=False)
    assert not root.store_path("ds/images").exists()


@pytest.mark.parametrize("jobs", [1, 2])
def test_every_member_is_written_whole_by_one_or_two_processes(tmp_path, root, monkeypatch, jobs):
    monkeypatch.setattr(zip_workers, "SMALL_MEMBER", 4000)  # some members take the chunked path
    files = members()
    z = write_zip(tmp_path / "many.zip", files)
    pids = tmp_path / "pids"
    pids.mkdir()
    real = zip_workers.extract_member

    def noted(*args, **kw):
        (pids / str(os.getpid())).touch()
        return real(*args, **kw)

    monkeypatch.setattr(zip_workers, "extract_member", noted)
    res = place_download(make_spec(inner="top"), z, root, merge=False, jobs=jobs)
    assert tree(root.store_path("ds/images")) == {k[len("top/"):]: v for k, v in files.items()}
    assert res.files == len(files)
    assert len(os.listdir(pids)) == jobs  # the second share really was written by another process
    assert not any(p.name.startswith(".tmp-") for p in root.path.rglob("*"))


def _damage_last(z: Path) -> None:
    """Flip a byte of the last member's data (stored; it belongs to the second worker's share)."""
    name = "top/stored.bin"
    with zipfile.ZipFile(z) as zf:
        info = zf.getinfo(name)
    data = bytearray(z.read_bytes())
    n_name, n_extra = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + n_name + n_extra + info.compress_size // 2] ^= 0xFF
    z.write_bytes(bytes(data))


def test_a_damaged_member_in_another_process_fails_the_whole_zip(tmp_path, root):
    final = root.store_path("ds/images")
    final.mkdir(parents=True)
    (final / "old.jpg").write_bytes(b"the old tree")
    files = members()
    z = write_zip(tmp_path / "bad.zip", files)
    _damage_last(z)
    with pytest.raises(OperationError, match="member 'top/stored.bin' fails its CRC check") as ei:
        place_download(make_spec(inner="top"), z, root, merge=False, jobs=2)
    assert "bad.zip" in str(ei.value) and ei.value.hint == "the zip is damaged; fetch it again"
    assert tree(final) == {"old.jpg": b"the old tree"}
    assert not any(p.name.startswith(".tmp-") for p in root.path.rglob("*"))


def test_a_lying_size_in_another_process_is_refused_as_a_bomb(tmp_path, root):
    files = members()
    name = list(files)[-2]
    files[name] = b"\0" * 50_000
    z = write_zip(tmp_path / "liar.zip", files)
    with zipfile.ZipFile(z) as zf:
        info = zf.getinfo(name)
    data = bytearray(z.read_bytes())
    struct.pack_into("<I", data, info.header_offset + 22, 1000)  # local header and central directory lie
    cd = data.rfind(name.encode()) - 46  # its central-directory entry (after every local header)
    assert data[cd:cd + 4] == b"PK\x01\x02"
    struct.pack_into("<I", data, cd + 24, 1000)
    z.write_bytes(bytes(data))
    with pytest.raises(UserError, match="past the 1000 bytes its header declares"):
        place_download(make_spec(inner="top"), z, root, merge=False, jobs=2)
    assert_nothing_placed(root)


def test_a_worker_that_dies_fails_the_zip_with_a_clear_error(tmp_path, root, monkeypatch):
    def killed(real, in_parent, args, kw):
        if not in_parent:
            os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does
        return real(*args, **kw)

    z = patched_members(monkeypatch, tmp_path, killed)
    with pytest.raises(OperationError, match="extraction worker died \\(killed by signal 9\\)"):
        place_download(make_spec(inner="top"), z, root, merge=False, jobs=2)
    assert_nothing_placed(root)


def test_a_failure_here_stops_the_other_process(tmp_path, root, monkeypatch):
    calls = {"n": 0}

    def interrupted(real, in_parent, args, kw):
        if in_parent:
            calls["n"] += 1
            if calls["n"] == 10:
                raise KeyboardInterrupt
        return real(*args, **kw)

    z = patched_members(monkeypatch, tmp_path, interrupted)
    forked = []
    real_fork = zip_workers._fork

    def fork(*args):
        forked.append(real_fork(*args))
        return forked[-1]

    monkeypatch.setattr(zip_workers, "_fork", fork)
    with pytest.raises(KeyboardInterrupt):
        place_download(make_spec(inner="top"), z, root, merge=False, jobs=2)
    assert_nothing_placed(root)
    assert len(forked) == 1
    for pid, _ in forked:
        with pytest.raises(ChildProcessError):  # the worker was stopped and reaped, not left behind
            os.waitpid(pid, os.WNOHANG)
