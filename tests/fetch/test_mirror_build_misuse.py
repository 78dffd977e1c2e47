"""`vlmdata mirror build` misused, and a mirror gone bad: each is refused or repaired, never written half-way.

An empty folder argument (`mirror build "$MIRROR"` with MIRROR unset), a folder that is a file, a root
that does not exist or holds nothing fetched: exit 2, nothing written. A file already in the mirror
with the right size but other bytes is read, found wrong and replaced. The index gives sizes in bytes
for URL lists too, with the image count beside.
"""
from __future__ import annotations

import json

import pytest

SETS = ["coco", "ocr_vqa"]


@pytest.fixture
def near(cli, demo, server, tmp_path):
    """A root that fetched coco (archive kept) and ocr_vqa (a JSON and the images of a URL list)."""
    root = tmp_path / "near"
    r = cli("fetch", *SETS, "--keep-archives", "--manifests", str(demo.manifests), "--root", str(root),
            "--mirror", server.url)
    assert r.code == 0, r.err
    return root


def _build(cli, demo, out, root, *extra):
    return cli("mirror", "build", str(out), "--root", str(root), "--manifests", str(demo.manifests), *extra)


@pytest.mark.parametrize("given", ["", "  "])
def test_an_empty_mirror_folder_is_refused_and_nothing_is_written(cli, demo, near, tmp_path, monkeypatch, given):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    r = _build(cli, demo, given, near)
    assert r.code == 2, r.out + r.err
    assert "the mirror folder is empty" in r.err and "nothing was written" in r.err and "->" in r.err
    assert list(here.iterdir()) == []


def test_a_mirror_folder_that_is_a_file_is_refused(cli, demo, near, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    r = _build(cli, demo, afile, near)
    assert r.code == 2, r.out + r.err
    assert f"{afile} is a file, not a folder" in r.err and "Traceback" not in r.err
    assert afile.read_text() == "keep me\n"
    inside = _build(cli, demo, afile / "mirror", near)  # a folder under a file: the same, named
    assert inside.code == 2 and f"{afile} is a file, not a folder" in inside.err
    assert afile.read_text() == "keep me\n"


def test_a_root_that_does_not_exist_is_refused_before_the_mirror_is_made(cli, demo, tmp_path):
    out = tmp_path / "m9"
    r = _build(cli, demo, out, tmp_path / "nonexist")
    assert r.code == 2, r.out + r.err
    assert f"the root {tmp_path / 'nonexist'} does not exist" in r.err
    assert "pass the --root (or VLMDATA_ROOT) you fetched into" in r.err
    assert not out.exists() and not (tmp_path / "nonexist").exists()


def test_a_root_with_nothing_fetched_is_refused_with_what_to_do(cli, demo, tmp_path):
    empty, out = tmp_path / "empty", tmp_path / "m9"
    empty.mkdir()
    for names in ([], ["coco"]):
        r = _build(cli, demo, out, empty, *names)
        assert r.code == 2, r.out + r.err
        assert f"nothing has been fetched into {empty}" in r.err and "--keep-archives" in r.err
        assert not out.exists()


def test_a_damaged_file_of_the_right_size_is_found_and_replaced(cli, demo, near, tmp_path):
    out = tmp_path / "mirror"
    assert _build(cli, demo, out, near).code == 0
    zip_ = out / "images.cocodataset.org/zips/train2017.zip"
    good = zip_.read_bytes()
    zip_.unlink()  # (a hard link to the root's file: writing into it would damage the root too)
    zip_.write_bytes(good[::-1])
    again = _build(cli, demo, out, near, "--json")
    assert again.code == 0, again.out + again.err
    hows = {m["key"]: m["how"] for m in again.json()["files"]}
    assert hows["coco:train2017.zip"] == "replaced"
    assert zip_.read_bytes() == good
    assert again.json()["replaced"] == 1 and again.json()["checked"] == 0  # the rest are the root's own files
    said = _build(cli, demo, out, near)
    assert said.code == 0 and "0 replaced" in said.out


def test_copies_already_there_are_read_and_counted_as_checked(cli, demo, near, tmp_path):
    out = tmp_path / "mirror"
    assert _build(cli, demo, out, near).code == 0
    copies = [p for p in out.rglob("*") if p.is_file() and p.stat().st_nlink > 1]
    assert copies
    for p in copies:  # as if on a USB disk: copies, not links to the root's files
        data = p.read_bytes()
        p.unlink()
        p.write_bytes(data)
    image = next(p for p in copies if p.suffix == ".jpg")
    image.write_bytes(bytes(b ^ 0xFF for b in image.read_bytes()))  # an image of a URL list, no hash known
    r = _build(cli, demo, out, near, "--json")
    assert r.code == 0, r.out + r.err
    summary = r.json()
    assert summary["replaced"] == 1 and summary["checked"] == len(copies) - 1
    assert {m["how"] for m in summary["files"] if "images" not in m} == {"there"}
    assert image.stat().st_nlink > 1  # replaced by a hard link to the root's image, as a new one is
    text = _build(cli, demo, out, near)
    right = len(copies) - 1
    assert f"{right} file(s) already in the mirror checked: {right} with the right bytes" in text.out
    assert "0 replaced (other bytes or size)" in text.out


def test_the_index_gives_bytes_as_size_and_the_image_count_apart(cli, demo, near, tmp_path):
    out = tmp_path / "mirror"
    assert _build(cli, demo, out, near).code == 0
    index = {m["key"]: m for m in json.loads((out / "vlmdata-mirror.json").read_text())["files"]}
    images = sorted((near / "ocr_vqa/images").iterdir())
    listed = index["ocr_vqa:images-from-urls"]
    assert listed["images"] == len(images) == demo.counts["ocr_vqa/images"]
    assert listed["size"] == sum(p.stat().st_size for p in images)
    assert index["coco:train2017.zip"]["size"] == (near / ".vlmdata/downloads/coco/train2017.zip").stat().st_size
    assert "images" not in index["coco:train2017.zip"]
