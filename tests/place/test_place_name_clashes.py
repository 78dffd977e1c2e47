"""Archives whose members claim one path twice in incompatible ways (a file and a symlink of the same name,
a file where other members need a folder, a symlink a later member's path runs through), and member names
too long for the file system: refused before anything is placed, with a UserError naming the archive and the
member, never an OSError about a temporary path (which the streamed tar subset took for a dropped stream and
downloaded the whole tar again for, up to six times). Found in the security audit."""
from __future__ import annotations

import io
import stat
import tarfile
import zipfile

import pytest

from vlmdata.errors import UserError
from vlmdata.place import extract_tar_stream, place_download

from place_helpers import make_spec
from test_place_safety import assert_nothing_placed, tar_with, tinfo, unix_info, zip_with

SYM, HARD = tarfile.SYMTYPE, tarfile.LNKTYPE


def _link(name: str, target: str):
    return unix_info(name, stat.S_IFLNK | 0o777), target.encode()


TAR_CLASHES = {
    "symlink, then a file of its name": ([tinfo("l", type=SYM, linkname="x"), tinfo("x"), tinfo("l")], "l"),
    "file, then a symlink of its name": ([tinfo("x"), tinfo("l"), tinfo("l", type=SYM, linkname="x")], "l"),
    "symlink, then a file under it": ([tinfo("e/z"), tinfo("d", type=SYM, linkname="e"), tinfo("d/f")], "d/f"),
    "a file under a name, then a symlink of that name": ([tinfo("e/z"), tinfo("d/f"), tinfo("d", type=SYM, linkname="e")], "d"),
    "a folder's file, then a file of the folder's name": ([tinfo("a/b/c"), tinfo("a")], "a"),
    "a file, then a file under it": ([tinfo("a"), tinfo("a/b")], "a/b"),
    "hardlink where a folder is": ([tinfo("x"), tinfo("a/b"), tinfo("a", type=HARD, linkname="x")], "a"),
}

ZIP_CLASHES = {
    "a file and a file under it": ([("a", b"1"), ("a/b", b"2")], "a"),
    "a symlink and a file under it": ([_link("d", "e"), ("e/z", b"1"), ("d/f", b"2")], "d"),
    "a symlink and a file of its name": ([_link("l", "x"), ("x", b"1"), ("l", b"2")], "l"),
    "a symlink where a folder is": ([("e/z", b"1"), _link("e", "z2"), ("z2", b"3")], "e"),
}


@pytest.mark.parametrize("kind, case", [("tar", c) for c in TAR_CLASHES] + [("zip", c) for c in ZIP_CLASHES])
def test_archive_members_that_clash_are_refused(tmp_path, root, kind, case):
    members, member = (TAR_CLASHES if kind == "tar" else ZIP_CLASHES)[case]
    archive = (tar_with if kind == "tar" else zip_with)(tmp_path / f"clash.{kind}", members)
    with pytest.raises(UserError, match="refusing to extract") as ei:
        place_download(make_spec(inner="", name=f"clash.{kind}"), archive, root, merge=False)
    msg = str(ei.value)
    assert f"clash.{kind}" in msg and repr(member) in msg and ".tmp-" not in msg, msg
    assert_nothing_placed(root, tmp_path)


def test_a_streamed_tar_that_clashes_is_refused_not_retried(tmp_path, root):
    raw = tar_with(tmp_path / "s.tar", TAR_CLASHES["symlink, then a file of its name"][0]).read_bytes()
    spec = make_spec(inner="", size=len(raw), name="s.tar")
    with pytest.raises(UserError, match="refusing to extract"):  # (a VlmdataError: the subset fetch does not retry it)
        extract_tar_stream(io.BytesIO(raw), spec, root, wanted=None, merge=True)
    assert_nothing_placed(root, tmp_path)


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_a_member_name_too_long_for_the_file_system_is_refused(tmp_path, root, fmt):
    long = "d/" + "a" * 300 + ".jpg"
    if fmt == "zip":
        archive = zip_with(tmp_path / "long.zip", [("ok.jpg", b"1"), (long, b"2")])
    else:
        archive = tar_with(tmp_path / "long.tar", [tinfo("ok.jpg"), tinfo(long)])
    with pytest.raises(UserError, match="longer than 255 bytes") as ei:
        place_download(make_spec(inner="", name=archive.name), archive, root, merge=False)
    assert archive.name in str(ei.value)
    assert_nothing_placed(root, tmp_path)


def test_duplicate_symlinks_keep_the_last_like_duplicate_files(tmp_path, root):
    t = tar_with(tmp_path / "dup.tar", [tinfo("x"), tinfo("y"), tinfo("l", type=SYM, linkname="x"),
                                         tinfo("l", type=SYM, linkname="y")])
    res = place_download(make_spec(inner="", name="dup.tar"), t, root, merge=False)
    final = root.store_path("ds/images")
    assert (final / "l").is_symlink() and (final / "l").resolve() == (final / "y").resolve()
    assert any("more than once" in w for w in res.warnings)
    z = zip_with(tmp_path / "dup.zip", [("x", b"1"), ("y", b"2"), _link("l", "x"), _link("l", "y")])
    res = place_download(make_spec(inner="", name="dup.zip", to="ds/z"), z, root, merge=False)
    assert (root.store_path("ds/z") / "l").read_bytes() == b"2"
    assert any("more than once" in w for w in res.warnings)
