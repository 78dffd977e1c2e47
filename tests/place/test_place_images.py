"""Image sniffing/conversion and `vlmdata normalize` on a folder downloaded by hand."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vlmdata.place.images import check_file, normalize_bytes, sniff
from vlmdata.place.normalize import normalize_folder
from vlmdata.place.subset import referenced_names

from place_helpers import decodes_as_jpeg, image_bytes


@pytest.mark.parametrize("fmt, sniffed", [("jpeg", "jpeg"), ("png", "png"), ("gif", "gif"), ("webp", "webp"),
                                          ("palette", "png"), ("alpha", "png"), ("png16", "png")])
def test_sniff_and_normalize_bytes(fmt, sniffed):
    data = image_bytes(fmt)
    assert sniff(data[:16]) == sniffed
    n = normalize_bytes(data)
    assert n.source_format == sniffed
    assert n.data[:3] == b"\xff\xd8\xff"
    if fmt == "jpeg":
        assert not n.converted and n.data == data  # a real JPEG is kept byte for byte
    else:
        assert n.converted


def test_alpha_is_composited_on_white(tmp_path):
    p = tmp_path / "a.jpg"
    p.write_bytes(normalize_bytes(image_bytes("alpha")).data)
    im = decodes_as_jpeg(p).convert("RGB")
    assert all(c > 245 for c in im.getpixel((3, 3)))


def write(folder: Path, name: str, data: bytes) -> Path:
    p = folder / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def test_normalize_folder_converts_renames_and_is_idempotent(tmp_path, cli):
    d = tmp_path / "ocr_vqa" / "images"
    jpeg = image_bytes("jpeg")
    write(d, "100.jpg", jpeg)                       # already right
    write(d, "101.gif", image_bytes("gif"))         # GIF with its own name
    write(d, "102.png", image_bytes("png"))
    write(d, "103.webp", image_bytes("webp"))
    write(d, "104.png", image_bytes("palette"))
    write(d, "105.png", image_bytes("alpha"))
    write(d, "106.jpg", image_bytes("gif"))         # GIF bytes named .jpg
    write(d, "107.jpeg", jpeg)                      # JPEG, other name: renamed, bytes kept
    write(d, "108.jpg", b"")                        # empty
    write(d, "109.jpg", jpeg[: len(jpeg) // 2])     # truncated
    write(d, "notes.txt", b"not an image")
    r = cli("normalize", "ocr_vqa", str(d), "--json")
    assert r.code == 1, r.err  # undecodable files remain: exit 1
    rep = r.json()
    assert sorted(Path(c["from"]).name for c in rep["converted"]) == ["101.gif", "102.png", "103.webp", "104.png",
                                                                     "105.png", "106.jpg"]
    assert [Path(x["from"]).name for x in rep["renamed"]] == ["107.jpeg"]
    assert rep["ok"] == 1 and rep["not_images"] == 1
    assert sorted((Path(u["path"]).name, u["status"]) for u in rep["undecodable"]) == [("108.jpg", "empty"),
                                                                                      ("109.jpg", "truncated")]
    names = sorted(p.name for p in d.iterdir())
    assert names == [f"{i}.jpg" for i in range(100, 110)] + ["notes.txt"]  # originals gone, no temporaries
    for i in range(100, 108):
        decodes_as_jpeg(d / f"{i}.jpg")
    assert (d / "107.jpg").read_bytes() == jpeg and (d / "100.jpg").read_bytes() == jpeg
    before = {p.name: p.read_bytes() for p in d.iterdir()}

    again = cli("normalize", "ocr_vqa", str(d), "--json").json()
    assert again["converted"] == [] and again["renamed"] == [] and again["ok"] == 8
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


def test_normalize_leaves_both_when_the_target_name_is_taken(tmp_path):
    d = tmp_path / "imgs"
    write(d, "5.jpg", image_bytes("jpeg"))
    write(d, "5.gif", image_bytes("gif"))
    rep = normalize_folder(d)
    assert [Path(x["path"]).name for x in rep.duplicates] == ["5.gif"]
    assert sorted(p.name for p in d.iterdir()) == ["5.gif", "5.jpg"]


def test_normalize_human_output_and_errors(tmp_path, cli):
    d = tmp_path / "imgs"
    write(d, "1.gif", image_bytes("gif"))
    r = cli("normalize", "ocr_vqa", str(d))
    assert r.code == 0
    assert "1 converted to JPEG" in r.out and (d / "1.jpg").exists() and not (d / "1.gif").exists()
    assert cli("normalize", "ocr_vqa", str(tmp_path / "nope")).code == 2
    assert cli("normalize", "coco", str(d)).code == 2  # coco has no per-image placement


def test_check_file_statuses(tmp_path):
    jpeg = image_bytes("jpeg")
    cases = {"ok.jpg": jpeg, "empty.jpg": b"", "cut.jpg": jpeg[:-40], "gif.jpg": image_bytes("gif"),
             "junk.jpg": b"hello world, not an image", "fine.png": image_bytes("png")}
    got = {n: check_file(write(tmp_path, n, b)).status for n, b in cases.items()}
    assert got == {"ok.jpg": "ok", "empty.jpg": "empty", "cut.jpg": "truncated", "gif.jpg": "wrong_format",
                   "junk.jpg": "undecodable", "fine.png": "ok"}


def test_referenced_names_handles_strings_lists_and_text_only(tmp_path):
    recs = [
        {"id": "1", "image": "sam/images/sa_1.jpg", "conversations": []},
        {"id": 2, "image": ["sam/images/sa_2.jpg", "coco/train2017/000000000009.jpg"]},
        {"id": "t", "conversations": [{"from": "human", "value": "text only"}]},
        {"id": "e", "image": ""},
    ]
    a = tmp_path / "a.json"
    a.write_text(json.dumps(recs))
    b = tmp_path / "b.jsonl"
    b.write_text(json.dumps({"image": "web-celebrity/images/x.jpg"}) + "\n")
    assert referenced_names([a, b]) == {"sa_1.jpg", "sa_2.jpg", "000000000009.jpg", "x.jpg"}


def test_png16_becomes_8bit_rgb(tmp_path):
    p = tmp_path / "x.jpg"
    p.write_bytes(normalize_bytes(image_bytes("png16")).data)
    im = decodes_as_jpeg(p)
    assert im.mode == "RGB" and isinstance(im, Image.Image)
