"""Hostile archives: every one is refused with a UserError naming archive and member, and
nothing is placed anywhere (target absent, temp folder removed, nothing outside written)."""
from __future__ import annotations

import io
import stat
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

import vlmdata.place.safety as safety
from vlmdata.errors import UserError
from vlmdata.place import extract_tar_stream, place_download

from place_helpers import make_spec


def zip_with(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def unix_info(name: str, mode: int) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name)
    zi.create_system = 3
    zi.external_attr = mode << 16
    return zi


def tar_with(path: Path, members: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w") -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if ti.isfile() else None)
    path.write_bytes(buf.getvalue())
    return path


def tinfo(name: str, *, type=tarfile.REGTYPE, linkname: str = "", data: bytes = b"ok") -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.type = type
    ti.linkname = linkname
    if type == tarfile.REGTYPE:
        ti.size = len(data)
    return ti, data


def assert_nothing_placed(root, tmp_path: Path) -> None:
    assert not root.store_path("ds/images").exists()
    assert not any(p.name.startswith(".tmp-") for p in root.path.rglob("*"))
    assert not (tmp_path / "evil").exists() and not (root.path / "evil").exists()
    assert not (root.path / "ds" / "evil").exists()


def refused(root, tmp_path, archive: Path, match: str, **spec_kw):
    spec = make_spec(inner=spec_kw.pop("inner", ""), **spec_kw)
    with pytest.raises(UserError, match=match) as ei:
        place_download(spec, archive, root, merge=spec_kw.get("merge", False))
    msg = str(ei.value)
    assert archive.name in msg  # names the archive
    assert_nothing_placed(root, tmp_path)
    return msg


@pytest.mark.parametrize("member, why", [
    ("../evil", "zip-slip"),
    ("ok/../../evil", "zip-slip"),
    ("/tmp/evil", "absolute"),
    ("C:/evil", "drive letter"),
    ("..\\evil", "backslash"),
])
def test_zip_member_names_that_escape_are_refused(tmp_path, root, member, why):
    z = zip_with(tmp_path / "bad.zip", [("good.jpg", b"fine"), (member, b"pwned")])
    msg = refused(root, tmp_path, z, why)
    assert repr(member) in msg  # names the member


def test_tar_member_names_that_escape_are_refused(tmp_path, root):
    t = tar_with(tmp_path / "bad.tar", [tinfo("good.jpg"), tinfo("../evil")])
    refused(root, tmp_path, t, "zip-slip")
    t = tar_with(tmp_path / "bad2.tar", [tinfo("/abs/evil")])
    refused(root, tmp_path, t, "absolute")


def test_zip_symlink_escape_is_refused(tmp_path, root):
    link = unix_info("images/passwd.jpg", stat.S_IFLNK | 0o777)
    z = zip_with(tmp_path / "link.zip", [("images/a.jpg", b"a"), (link, b"../../../etc/passwd")])
    msg = refused(root, tmp_path, z, "symlink pointing outside", inner="images")
    assert "images/passwd.jpg" in msg
    link = unix_info("x.jpg", stat.S_IFLNK | 0o777)
    z = zip_with(tmp_path / "link2.zip", [(link, b"/etc/passwd")])
    refused(root, tmp_path, z, "absolute")


def test_tar_symlink_and_hardlink_escapes_are_refused(tmp_path, root):
    t = tar_with(tmp_path / "sym.tar", [tinfo("a/x.jpg", type=tarfile.SYMTYPE, linkname="../../evil")])
    refused(root, tmp_path, t, "symlink pointing outside")
    t = tar_with(tmp_path / "symabs.tar", [tinfo("a/x.jpg", type=tarfile.SYMTYPE, linkname="/etc/shadow")])
    refused(root, tmp_path, t, "absolute")
    t = tar_with(tmp_path / "hard.tar", [tinfo("x.jpg", type=tarfile.LNKTYPE, linkname="../evil")])
    refused(root, tmp_path, t, "hardlink pointing outside")
    t = tar_with(tmp_path / "hardabs.tar", [tinfo("x.jpg", type=tarfile.LNKTYPE, linkname="/etc/passwd")])
    refused(root, tmp_path, t, "hardlink to an absolute")


def test_symlink_inside_archive_but_outside_inner_folder_is_refused(tmp_path, root):
    t = tar_with(tmp_path / "sym.tar", [tinfo("top/a.jpg"), tinfo("other/b.jpg"),
                                         tinfo("top/x.jpg", type=tarfile.SYMTYPE, linkname="../other/b.jpg")])
    refused(root, tmp_path, t, "outside the target folder", inner="top")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_device_nodes_and_fifos_in_a_tar_are_refused(tmp_path, root, kind):
    t = tar_with(tmp_path / "dev.tar", [tinfo("ok.jpg"), tinfo("dev/null0", type=kind)])
    msg = refused(root, tmp_path, t, "device file, fifo")
    assert "dev/null0" in msg


def test_device_node_in_a_zip_is_refused(tmp_path, root):
    z = zip_with(tmp_path / "dev.zip", [(unix_info("fifo", stat.S_IFIFO | 0o644), b"")])
    refused(root, tmp_path, z, "device file, fifo")


def test_zip_bomb_declared_sizes_refused_before_writing(tmp_path, root):
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("zeros.bin", "w") as fh:
            block = b"\0" * (1 << 20)
            for _ in range(64):  # 64 MiB of zeros, ~64 kB compressed
                fh.write(block)
    assert z.stat().st_size < 200_000
    msg = refused(root, tmp_path, z, "archive bomb")
    assert "limit of" in msg and "50x the archive size" in msg


def test_zip_bomb_with_lying_headers_is_caught_while_unpacking(tmp_path, root):
    z = tmp_path / "liar.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", b"\0" * (8 << 20))
    data = bytearray(z.read_bytes())
    # Rewrite the uncompressed size to 1000 bytes in the local header and the central directory.
    lo = data.find(b"PK\x03\x04")
    struct.pack_into("<I", data, lo + 22, 1000)
    cd = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, 1000)
    z.write_bytes(bytes(data))
    with zipfile.ZipFile(z) as zf:
        assert zf.infolist()[0].file_size == 1000  # the header now lies
    refused(root, tmp_path, z, "past the 1000 bytes its header declares")


def test_tar_gz_bomb_is_caught_by_counting_bytes_written(tmp_path, root):
    big = tinfo("zeros.bin", data=b"\0" * (40 << 20))
    t = tar_with(tmp_path / "bomb.tar.gz", [big], mode="w:gz")
    assert t.stat().st_size < 200_000
    refused(root, tmp_path, t, "unpacked to more than")


def test_stream_bomb_uses_the_known_size(tmp_path, root):
    raw = tar_with(tmp_path / "b.tar.gz", [tinfo("zeros.bin", data=b"\0" * (20 << 20))], mode="w:gz").read_bytes()
    spec = make_spec(inner="", size=len(raw), unpacked_size=1 << 20, name="b.tar.gz")
    with pytest.raises(UserError, match="4x the manifest's unpacked size"):
        extract_tar_stream(io.BytesIO(raw), spec, root, wanted=None, merge=True)
    assert_nothing_placed(root, tmp_path)


def test_too_many_members_is_a_bomb(tmp_path, root):
    z = tmp_path / "many.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for i in range(1100):
            zf.writestr(f"f{i}.jpg", b"")
    msg = refused(root, tmp_path, z, "more than 1,030 members", count=10)
    assert "place.count" in msg


def test_too_many_members_in_a_tar_without_a_count(tmp_path, root, monkeypatch):
    monkeypatch.setattr(safety, "MAX_MEMBERS", 50)
    t = tar_with(tmp_path / "many.tar", [tinfo(f"f{i}.jpg") for i in range(60)])
    refused(root, tmp_path, t, "more than 50 members")


def test_encrypted_zip_member_is_refused(tmp_path, root):
    z = zip_with(tmp_path / "enc.zip", [("a.jpg", b"data")])
    data = bytearray(z.read_bytes())
    struct.pack_into("<H", data, data.find(b"PK\x01\x02") + 8, 1)  # set the encryption flag
    z.write_bytes(bytes(data))
    refused(root, tmp_path, z, "encrypted")
