"""Item 10: `layout build` with something of the wrong kind in the way: a clear message naming the
path, exit 2, and the view left as it was (checked first, or what was made removed again)."""
from __future__ import annotations

import shutil


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else None


def test_a_file_where_a_folder_goes(full):
    view = full.root / "layouts" / "llava"
    shutil.rmtree(view)
    view.mkdir()
    (view / "coco").write_text("not a folder")
    r = full.run("layout", "build", "--layout", "llava")
    assert r.code == 2, r.err
    assert f"{view / 'coco'} is a file, where a folder goes" in r.err and "Traceback" not in r.err
    assert _tree(view) == ["coco"]  # nothing built
    (full.root / "layouts" / "llava" / "coco").unlink()
    shutil.rmtree(full.root / "layouts")
    (full.root / "layouts").write_text("")
    r = full.run("layout", "build", "--layout", "llava")
    assert r.code == 2 and f"{full.root / 'layouts'} is a file, where a folder goes" in r.err


def test_a_folder_where_a_file_goes(full):
    view = full.root / "layouts" / "llava"
    shutil.rmtree(view)
    (view / "llava_v1_5_mix665k.json").mkdir(parents=True)
    r = full.run("layout", "build", "--layout", "llava")
    assert r.code == 2 and "llava_v1_5_mix665k.json is a folder, where the file" in r.err


def test_deep_in_a_folder_the_build_is_rolled_back(full):
    view = full.root / "layouts" / "llava"
    shutil.rmtree(view)
    name = sorted(p.name for p in (full.root / "gqa" / "images").iterdir())[-1]
    (view / "gqa" / "images" / name).mkdir(parents=True)
    before = _tree(view)
    r = full.run("fetch", "gqa", "--layout", "llava")  # also through fetch --layout
    assert r.code == 2, r.err
    assert f"{view / 'gqa' / 'images' / name} is a folder where the link to" in r.err
    assert "already here" in r.err  # the fetch part is reported before the view's error
    assert _tree(view) == before
    shutil.rmtree(view / "gqa" / "images" / name)
    r = full.run("layout", "build", "--layout", "llava", "--json")
    assert r.code == 0 and (view / "gqa" / "images" / name).is_file()
