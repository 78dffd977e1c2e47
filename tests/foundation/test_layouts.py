"""`layout check` against every shipped layout, and `layout build` from a store."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vlmdata.errors import UserError
from vlmdata.layouts.build import build_layout
from vlmdata.layouts.check import check_layout
from vlmdata.manifest import load_catalog
from vlmdata.state import Root

SHIPPED = ["llava", "sharegpt4v", "moe-llava", "llava-pretrain-case"]


def make_tree(folder: Path, layout, files_per_dir: int = 2, optional: bool = True) -> None:
    """A tree with the layout's shape: every folder with a few files, every file non-empty."""
    for e in layout.entries:
        if e.optional and not optional:
            continue
        p = folder / e.path
        if e.kind == "file":
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("[]")
        else:
            p.mkdir(parents=True, exist_ok=True)
            if e.kind == "dir":
                for i in range(files_per_dir):
                    (p / f"{i}.jpg").write_bytes(b"\xff\xd8\xff")


@pytest.mark.parametrize("name", SHIPPED)
def test_empty_folder_fails_listing_every_required_path(cli, tmp_path, name):
    lay = load_catalog().layout(name)
    r = cli("layout", "check", "--layout", name, str(tmp_path))
    assert r.code == 1
    required = [e.path for e in lay.entries if not e.optional]
    assert required
    for path in required:
        assert f"[FAIL] {path} " in r.out or f"[FAIL] {path}\n" in r.out, f"{path} not reported"
    assert f"{len(required)} problem(s)" in r.out


@pytest.mark.parametrize("name", SHIPPED)
def test_tree_with_the_right_shape_passes(cli, tmp_path, name):
    make_tree(tmp_path, load_catalog().layout(name))
    r = cli("layout", "check", "--layout", name, str(tmp_path), "--no-counts")
    assert r.code == 0, r.out
    assert "all good" in r.out


@pytest.mark.parametrize("name", SHIPPED)
def test_json_output_is_valid_and_precise(cli, tmp_path, name):
    lay = load_catalog().layout(name)
    make_tree(tmp_path, lay, optional=False)
    first_dir = next(e for e in lay.entries if e.kind == "dir" and not e.optional)
    for f in (tmp_path / first_dir.path).iterdir():
        f.unlink()
    r = cli("layout", "check", "--layout", name, str(tmp_path), "--json", "--no-counts")
    assert r.code == 1
    doc = r.json()
    assert doc["ok"] is False and doc["problems"] == 1
    bad = [e for e in doc["entries"] if e["status"] not in ("ok", "skipped")]
    assert [(e["path"], e["status"]) for e in bad] == [(first_dir.path, "empty")]


def test_counts_are_compared(cli, tmp_path, manifests):
    lay = load_catalog([manifests]).layout("tinylay")
    make_tree(tmp_path, lay, files_per_dir=3)
    r = cli("layout", "check", "--layout", "tinylay", str(tmp_path), "--manifests", str(manifests), "--json")
    assert r.code == 0, r.out
    (tmp_path / "data" / "pics" / "0.jpg").unlink()
    r = cli("layout", "check", "--layout", "tinylay", str(tmp_path), "--manifests", str(manifests))
    assert r.code == 1
    assert "has 2 files, expected 3 (1 missing)" in r.out


def test_file_entry_problems(tmp_path, manifests):
    lay = load_catalog([manifests]).layout("tinylay")
    make_tree(tmp_path, lay, files_per_dir=3)
    (tmp_path / "data" / "labels.json").write_text("")
    res = check_layout(lay, tmp_path)
    assert [(e.path, e.status) for e in res.problems] == [("data/labels.json", "empty")]
    (tmp_path / "data" / "labels.json").unlink()
    (tmp_path / "data" / "labels.json").symlink_to(tmp_path / "nowhere")
    res = check_layout(lay, tmp_path)
    assert [(e.path, e.status) for e in res.problems] == [("data/labels.json", "broken_link")]


def _store(root: Path) -> None:
    (root / "tiny" / "pics" / "sub").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "sub/c.jpg"):
        (root / "tiny" / "pics" / name).write_bytes(name.encode())
    (root / "tiny" / "labels.json").write_text("[1]")


def test_build_makes_hard_links_not_copies_and_is_idempotent(tmp_path, manifests):
    root = Root(tmp_path / "root")
    _store(root.path)
    lay = load_catalog([manifests]).layout("tinylay")
    res = build_layout(lay, root)
    view = root.layout_dir("tinylay")
    assert res.hardlinks == 4 and res.symlinks == 0
    assert res.missing == ["tiny/extra"]  # optional and not fetched: reported, not invented
    assert (view / "out").is_dir()
    src, dst = root.path / "tiny/pics/sub/c.jpg", view / "data/pics/sub/c.jpg"
    assert os.stat(src).st_ino == os.stat(dst).st_ino  # same bytes on disk, no second copy
    assert check_layout(lay, view).ok
    again = build_layout(lay, root)
    assert again.hardlinks == 0 and again.existing == 4


def test_build_falls_back_to_symlinks_across_filesystems(tmp_path, manifests, monkeypatch):
    import errno

    root = Root(tmp_path / "root")
    _store(root.path)

    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    res = build_layout(load_catalog([manifests]).layout("tinylay"), root, tmp_path / "view")
    assert res.symlinks == 4 and res.hardlinks == 0
    link = tmp_path / "view" / "data" / "pics" / "a.jpg"
    assert link.is_symlink() and link.read_bytes() == b"a.jpg"


def test_build_cli_reports_the_image_folder(cli, tmp_path, manifests):
    root = tmp_path / "root"
    _store(root)
    r = cli("layout", "build", "--layout", "tinylay", "--root", str(root), "--manifests", str(manifests), "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["image_folder"] == str(root / "layouts" / "tinylay" / "data")
    assert doc["hardlinks"] == 4


def test_build_over_a_folder_of_ones_own_keeps_the_users_files(tmp_path, manifests, cli):
    """`layout build --out ./playground/data` into a folder that already holds files where links go:
    a file with other bytes (an edited JSON, an image of one's own) used to be deleted without a
    word; now the build stops (exit 2), names it, and leaves everything as it was. A copy with the
    store's bytes and a symbolic link are replaced (nothing is lost); files elsewhere are kept."""
    root = Root(tmp_path / "root")
    _store(root.path)
    out = tmp_path / "playground"
    (out / "data" / "pics").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "data" / "pics" / "mine.jpg").write_text("mine")
    (out / "data" / "labels.json").write_text("[1, 2, 3]  my own edit")
    args = ("layout", "build", "--layout", "tinylay", "--root", str(root.path), "--manifests", str(manifests),
            "--out", str(out))
    r = cli(*args)
    assert r.code == 2 and "Traceback" not in r.err
    assert f"{out / 'data' / 'labels.json'} is a file of its own" in r.err
    assert (out / "data" / "labels.json").read_text() == "[1, 2, 3]  my own edit"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "data", "data/labels.json", "data/pics", "data/pics/mine.jpg", "notes.txt"]
    # deeper in a folder: the same, and what the build had made is removed again
    (out / "data" / "labels.json").write_text("[1]")  # the store's bytes: replaced by the link
    (out / "data" / "pics" / "b.jpg").write_text("my b")
    r = cli(*args)
    assert r.code == 2 and f"{out / 'data' / 'pics' / 'b.jpg'} is a file of its own" in r.err
    assert (out / "data" / "pics" / "b.jpg").read_text() == "my b" and not (out / "data" / "pics" / "a.jpg").exists()
    (out / "data" / "pics" / "b.jpg").unlink()
    (out / "data" / "pics" / "a.jpg").symlink_to(tmp_path / "nowhere")  # a link holds nothing: replaced
    r = cli(*args)
    assert r.code == 0, r.err
    assert os.path.samefile(out / "data" / "labels.json", root.path / "tiny" / "labels.json")
    assert os.path.samefile(out / "data" / "pics" / "a.jpg", root.path / "tiny" / "pics" / "a.jpg")
    assert (out / "notes.txt").read_text() == "mine" and (out / "data" / "pics" / "mine.jpg").read_text() == "mine"


def test_the_roots_own_view_replaces_a_stale_link(tmp_path, manifests):
    """In ROOT/layouts/NAME (vlmdata's own folder) a file that is not the store's is a link from
    before a refetch: replaced, as views_using/refresh_views expect."""
    root = Root(tmp_path / "root")
    _store(root.path)
    lay = load_catalog([manifests]).layout("tinylay")
    build_layout(lay, root)
    label = root.path / "tiny" / "labels.json"
    label.unlink()
    label.write_text("[2]")  # fetched again: a new inode; the view still holds the old one
    res = build_layout(lay, root)
    assert res.hardlinks == 1 and os.path.samefile(root.layout_dir("tinylay") / "data" / "labels.json", label)


def test_a_store_path_linked_at_several_places_is_missing_once(tmp_path):
    """sharegpt4v links Vision-Flan's images at three paths: `layout build` listed the folder three
    times under 'not fetched yet (N)', and counted it so."""
    root = Root(tmp_path / "root")
    (root.path / "coco" / "train2017").mkdir(parents=True)
    (root.path / "coco" / "train2017" / "1.jpg").write_bytes(b"x")
    res = build_layout(load_catalog().layout("sharegpt4v"), root)
    assert "vflan/images_191task_1k" in res.missing and len(res.missing) == len(set(res.missing))


def test_a_view_folder_linked_to_a_folder_of_ones_own_is_not_vlmdatas(tmp_path, manifests):
    """ROOT/layouts/NAME made a symbolic link to one's own playground/data: the files there are the
    user's, so one with other bytes is in the way, not a stale link to replace."""
    root = Root(tmp_path / "root")
    _store(root.path)
    mine = tmp_path / "playground"
    (mine / "data").mkdir(parents=True)
    (mine / "data" / "labels.json").write_text("my own labels")
    (root.path / "layouts").mkdir()
    root.layout_dir("tinylay").symlink_to(mine)
    with pytest.raises(UserError) as e:
        build_layout(load_catalog([manifests]).layout("tinylay"), root)
    assert "labels.json is a file of its own" in str(e.value)
    assert (mine / "data" / "labels.json").read_text() == "my own labels"


def test_llava_eval_has_mmbench_cn_where_each_script_reads_it(tmp_path):
    """LLaVA's scripts/v1_5/eval/mmbench_cn.sh reads eval/mmbench_cn/mmbench_dev_cn_20231003.tsv
    (its docs/Evaluation.md says eval/mmbench, which MoE-LLaVA's mmbench_cn.sh reads): the view
    links the one stored file at both paths."""
    root = Root(tmp_path / "root")
    stored = root.path / "llava_eval" / "mmbench" / "mmbench_dev_cn_20231003.tsv"
    stored.parent.mkdir(parents=True)
    stored.write_text("index\tquestion\n0\tq\n")
    build_layout(load_catalog().layout("llava-eval"), root)
    view = root.layout_dir("llava-eval")
    for path in ("mmbench_cn/mmbench_dev_cn_20231003.tsv", "mmbench/mmbench_dev_cn_20231003.tsv"):
        assert os.path.samefile(view / path, stored), path
