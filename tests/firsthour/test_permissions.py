"""Item 13 (and what trying it found): a root or folder that is not the user's to write (or read)
gets a message that says so and names the path; never "cannot create" for a root that exists,
never "delete it" for a journal one may not read, never a raw PermissionError."""
from __future__ import annotations

import shutil

import pytest

from firsthour_helpers import shared_tmp, unprivileged_runner

run_as_user = unprivileged_runner()
pytestmark = pytest.mark.skipif(run_as_user is None, reason="modes cannot bite: running as root without setpriv, or the checkout "
                                "is in a folder user nobody may not enter")


@pytest.fixture
def shared(fetched):
    """A copy of the fetched root in a folder other users can reach, and its demo arguments."""
    base = shared_tmp()
    root = base / "root"
    shutil.copytree(fetched.root, root, symlinks=True)
    shutil.copytree(fetched.demo.manifests, base / "manifests")  # pytest's tmp_path is private to its owner
    shutil.copytree(fetched.demo.mirror, base / "mirror")
    yield base, root, ["--manifests", str(base / "manifests"), "--mirror", str(base / "mirror")]
    for p in [base, *base.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    shutil.rmtree(base)


def _lock_down(folder):
    """Every folder under ``folder`` read-only for everyone (files stay readable)."""
    for p in [folder, *folder.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o555)


def test_a_root_that_exists_but_is_not_writable(shared):
    base, root, demo = shared
    fresh = base / "fresh"  # an existing folder, not ours to write, that vlmdata never used (no .vlmdata)
    fresh.mkdir()
    fresh.chmod(0o555)
    for r_ in (fresh, root):
        _lock_down(r_)
        r = run_as_user("--root", r_, *demo, "fetch", "coco")
        assert r.code == 2, r.err
        assert f"the root {r_} is not writable" in r.err and "cannot create" not in r.err
    base.chmod(0o555)
    r = run_as_user("--root", base / "new", *demo, "fetch", "coco")
    assert r.code == 2 and f"cannot create the root {base / 'new'}" in r.err


def test_commands_that_write_into_a_read_only_place_name_it(shared, tmp_path):
    base, root, demo = shared
    _lock_down(root)
    r = run_as_user("--root", root, *demo, "blend", "llava-665k", "--max-drop", "100")
    assert r.code == 2 and f"{root / 'blends'}: permission denied" in r.err and "Traceback" not in r.err
    out = base / "mine"
    out.mkdir()
    out.chmod(0o777)
    good = run_as_user("--root", root, *demo, "blend", "llava-665k", "--max-drop", "100", "--out", out / "b")
    assert good.code == 0, good.err
    r = run_as_user("--root", root, *demo, "export", out / "b", root / "x.json")
    assert r.code == 2 and f"{root / 'x.json'}: permission denied" in r.err and ".tmp-" not in r.err
    # reading a store one may not write: verify checks it (and says it records nothing), a view goes elsewhere
    r = run_as_user("--root", root, *demo, "verify")
    assert r.code == 0, r.out + r.err
    assert "is not writable: the result is not recorded" in r.out
    r = run_as_user("--root", root, *demo, "layout", "build", "--layout", "llava", "--out", out / "view")
    assert r.code == 0, r.err
    assert (out / "view" / "coco" / "train2017").is_dir()


def test_a_journal_one_may_not_read(shared):
    base, root, demo = shared
    (root / ".vlmdata" / "journal.json").chmod(0o000)
    r = run_as_user("--root", root, *demo, "status")
    assert r.code == 2
    assert "cannot read the journal: permission denied" in r.err and "delete it" not in r.err
