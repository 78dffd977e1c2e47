"""Item 10: `layout build` with something of the wrong kind in the way: a clear message naming the
path, exit 2, and the view left as it was (checked first, or what was made removed again)."""
from __future__ import annotations

import json
import os
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


def test_a_refetch_renews_the_views_built_on_the_store(full):
    """A hard link is the old file, not the path: after `fetch --refetch` (no --layout) replaced a
    damaged image and JSON, the llava view links the new ones, and the fetch says it renewed them."""
    r = full.run("layout", "build", "--layout", "llava")  # (the fixture's copy holds copies: link them)
    assert r.code == 0, r.err
    view = full.root / "layouts" / "llava"
    image = sorted((full.root / "coco" / "train2017").iterdir())[0]
    mix = full.root / "LLaVA-Instruct-150K" / "llava_v1_5_mix665k.json"
    linked = [view / "coco" / "train2017" / image.name, view / "llava_v1_5_mix665k.json"]
    assert mix.exists() and all(os.path.samefile(p, q) for p, q in zip(linked, [image, mix]))
    good = [image.read_bytes(), mix.read_bytes()]
    image.write_bytes(good[0][: len(good[0]) // 2])  # damaged in place: the view's link shares it
    mix.write_bytes(b"[" + good[1][1:])
    r = full.run("fetch", "coco", "gqa", "llava_instruct", "--refetch", "--json")
    assert r.code == 0, r.err
    assert [p.read_bytes() for p in linked] == good
    assert all(os.path.samefile(p, q) for p, q in zip(linked, [image, mix]))
    renewed = json.loads(r.out)["renewed_views"]
    assert [v["name"] for v in renewed] == ["llava"] and renewed[0]["links"] >= 2
    r = full.run("fetch", "coco", "--refetch")
    assert r.code == 0 and "layout llava:" in r.err and "renewed to what was placed" in r.err


def test_layout_check_ends_with_what_to_run(full, tmp_path):
    """A folder missing the GQA images: the fetch and the build that make it whole, with their names."""
    here = tmp_path / "playground" / "data"
    assert full.run("layout", "build", "--layout", "llava", "--out", str(here)).code == 0
    shutil.rmtree(here / "gqa")
    r = full.run("layout", "check", "--layout", "llava", str(here))
    assert r.code == 1
    assert f"-> fetch what is missing, then build the view here: vlmdata fetch gqa; vlmdata layout build " \
           f"--layout llava --out {here}" in r.out
    assert full.run("layout", "build", "--layout", "llava", "--out", str(here)).code == 0  # (gqa is in the store)
    assert full.run("layout", "check", "--layout", "llava", str(here)).code == 0


def test_a_view_inside_the_store_is_refused_before_anything_is_made(full):
    # `--out` inside a folder the view links made it link itself, ever deeper, until the OS refused a name
    # (a traceback); inside another store folder or the state folder its links mixed with what vlmdata placed.
    before = _tree(full.root)
    inside = [full.root / "coco" / "train2017" / "view", full.root / "coco", full.root / ".vlmdata" / "view"]
    for out in inside:
        r = full.run("layout", "build", "--layout", "llava", "--out", str(out))
        assert r.code == 2 and "Traceback" not in r.err, r.err
        assert f"cannot build the llava layout in {out}: {out} is " in r.err and "leave out --out" in r.err
    assert "inside " + str(full.root / "coco") + ", a folder of the store" in full.run(
        "layout", "build", "--layout", "llava", "--out", str(inside[0])).err
    assert _tree(full.root) == before
    # the store itself, where it has the layout's shape, and a folder of one's own are still views
    r = full.run("layout", "build", "--layout", "llava", "--out", str(full.root))
    assert r.code == 0 and "already there" in r.out, r.err
    r = full.run("layout", "build", "--layout", "llava", "--out", str(full.root.parent / "playground" / "data"))
    assert r.code == 0 and (full.root.parent / "playground" / "data" / "coco" / "train2017").is_dir()
