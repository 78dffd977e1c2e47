"""A write the system refuses (read-only, not ours, full) names the path and the option that chose it,
never options the command does not have ("--root, --out" for `stats --png`), and a read-only mount is
said as such before who owns the folder ("it belongs to root: run as that user", said to root)."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.ro_mount import read_only_mount
from vlmdata.errors import OperationError, UserError, describe_os_error, writing
from vlmdata.state import root as root_mod
from vlmdata.state.root import Root


def _refused(code: int, path: Path | str) -> OSError:
    return OSError(code, os.strerror(code), str(path))


def test_the_generic_hint_names_the_path_and_no_option(tmp_path):
    for code in (errno.EROFS, errno.EACCES, errno.ENOSPC, errno.EFBIG):
        _, what, hint = describe_os_error(_refused(code, tmp_path / "s.png"))
        assert what.startswith(f"{tmp_path / 's.png'}: ") and "--" not in hint, (code, hint)
    assert str(tmp_path / "s.png") in describe_os_error(_refused(errno.EROFS, tmp_path / "s.png"))[2]


@pytest.mark.parametrize("at, code, kind", [
    ("s.png", errno.EROFS, UserError),         # the file itself
    ("sub", errno.EACCES, UserError),          # a folder above it, made on the way
    (".tmp-s.png.1-ab", errno.ENOSPC, OperationError),  # its temporary sibling: said as the path given
])
def test_a_write_the_caller_names_says_its_option(tmp_path, at, code, kind):
    out = tmp_path / "sub" / "s.png" if at == "sub" else tmp_path / "s.png"
    with pytest.raises(kind) as e, writing(out, "--png"):
        raise _refused(code, tmp_path / at)
    assert "another --png" in e.value.hint and "--root" not in e.value.hint and "--out" not in e.value.hint
    assert ".tmp-" not in str(e.value) and e.value.exit_code == (1 if code == errno.ENOSPC else 2)


def test_an_error_elsewhere_is_not_blamed_on_the_option(tmp_path):
    with pytest.raises(PermissionError), writing(tmp_path / "out.json", "OUT"):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "blend" / "data-0.arrow"))
    with pytest.raises(KeyError), writing(tmp_path / "out.json", "OUT"):
        raise KeyError("not an OSError")


class _ReadOnly:
    f_flag = os.ST_RDONLY


def test_a_read_only_root_says_read_only_before_its_owner(tmp_path, monkeypatch):
    """Root on a read-only mount: the mkdir fails with EROFS, and the owner is the user running it."""
    def refuse(self, *a, **kw):
        raise _refused(errno.EROFS, self)

    monkeypatch.setattr(Path, "mkdir", refuse)
    monkeypatch.setattr(root_mod.os, "statvfs", lambda p: _ReadOnly())
    with pytest.raises(UserError) as e:
        Root(tmp_path).ensure_writable()
    assert f"the root {tmp_path} is not writable (read-only file system)" in str(e.value)
    assert "mounted read-only" in e.value.hint and "remount" in e.value.hint and "belongs to" not in e.value.hint


def test_a_folder_of_ones_own_is_not_said_to_belong_to_someone_else(tmp_path):
    hint = root_mod._not_writable_hint(tmp_path)  # (tmp_path is this user's, on a writable mount)
    assert "belongs to" not in hint and "fix its permissions" in hint


def test_a_real_read_only_mount(tmp_path):
    with read_only_mount(tmp_path / "ro") as ro:
        with pytest.raises(UserError) as e:
            Root(ro).ensure_writable()
        assert "mounted read-only" in e.value.hint and "belongs to" not in e.value.hint
        with pytest.raises(UserError) as e, writing(ro / "s.png", "--png"):
            (ro / "s.png").write_bytes(b"x")
        assert "another --png" in e.value.hint and str(ro / "s.png") in e.value.hint
