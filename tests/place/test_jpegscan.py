"""The JPEG structure check that replaces a decode when an image keeps its bytes: every cut is
found, whole files pass, and what only a decode can judge is left to it."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from vlmdata.place import jpegscan
from vlmdata.place.images import ImageProblem, save_image


def jpeg(mode: str = "RGB", size=(37, 23), **save) -> bytes:
    out = io.BytesIO()
    im = Image.linear_gradient("L").resize(size).convert(mode)
    im.save(out, "JPEG", quality=80, **save)
    return out.getvalue()


WHOLE = {
    "baseline": jpeg(),
    "progressive": jpeg(progressive=True),
    "grey": jpeg("L"),
    "cmyk": jpeg("CMYK"),
    "restart markers": jpeg(size=(64, 64), restart_marker_blocks=1),
    "exif thumbnail": None,  # below: a whole JPEG inside an APP1 segment, EOI and all
}
WHOLE["exif thumbnail"] = (WHOLE["baseline"][:2] + b"\xff\xe1" + (len(WHOLE["grey"]) + 2).to_bytes(2, "big")
                           + WHOLE["grey"] + WHOLE["baseline"][2:])


@pytest.mark.parametrize("name", list(WHOLE))
def test_whole_jpegs_pass_and_pillow_agrees(name):
    data = WHOLE[name]
    assert jpegscan.scan(data, Image.MAX_IMAGE_PIXELS) == ("ok", "")
    Image.open(io.BytesIO(data)).load()


@pytest.mark.parametrize("name", list(WHOLE))
def test_every_cut_is_truncated(name):
    data = WHOLE[name]
    for k in range(4, len(data)):
        assert jpegscan.scan(data[:k], None)[0] == "truncated", k


def test_what_a_decode_must_judge_is_left_to_it():
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, "PNG")
    assert jpegscan.scan(png.getvalue(), None) is None
    base = WHOLE["baseline"]
    sof = base.index(b"\xff\xc0")
    lossless = base[:sof + 1] + b"\xc3" + base[sof + 2:]
    assert jpegscan.scan(lossless, None) is None
    twelve_bit = base[:sof + 4] + b"\x0c" + base[sof + 5:]
    assert jpegscan.scan(twelve_bit, None) is None


def test_too_many_pixels_is_refused_like_pillow():
    assert jpegscan.scan(WHOLE["baseline"], 37 * 23 - 1)[0] == "undecodable"
    assert jpegscan.scan(WHOLE["baseline"], 37 * 23) == ("ok", "")


def test_headers_out_of_order_are_undecodable():
    base = WHOLE["baseline"]
    assert jpegscan.scan(base[:2] + b"\xff\xd9" + base[2:], None)[0] == "undecodable"
    assert jpegscan.scan(base[:2] + b"\x00\x00" + base[2:], None)[0] == "undecodable"


def test_save_image_refuses_a_cut_jpeg_and_keeps_a_whole_one(tmp_path):
    data = WHOLE["progressive"]
    with pytest.raises(ImageProblem) as ei:
        save_image(data[:-10], tmp_path / "a.jpg", to_jpeg=True)
    assert ei.value.status == "truncated" and not list(tmp_path.iterdir())
    for to_jpeg in (True, False):
        norm = save_image(data, tmp_path / "a.jpg", to_jpeg=to_jpeg)
        assert not norm.converted and (tmp_path / "a.jpg").read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["a.jpg"]


@pytest.mark.parametrize("unnamed", [True, False])
def test_an_image_appears_whole_under_its_name_and_replaces_a_leftover(tmp_path, monkeypatch, unnamed):
    # Linux: an unnamed file (O_TMPFILE) linked under its name once written; elsewhere, or where
    # the file system has no O_TMPFILE, a temporary name renamed. Either way no other name is left.
    import vlmdata.place.images as images

    monkeypatch.setattr(images, "_unnamed", [unnamed and images._unnamed[0]])
    data = WHOLE["baseline"]
    (tmp_path / "b.jpg").write_bytes(b"")  # a 0-byte leftover of an earlier run is fetched again
    for name in ("a.jpg", "b.jpg"):
        save_image(data, tmp_path / name, to_jpeg=True)
        assert (tmp_path / name).read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "b.jpg"]
