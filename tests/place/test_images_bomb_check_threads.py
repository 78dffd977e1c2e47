"""Pillow's decompression-bomb limit holds for every image decoded, also while other threads decode (the URL
list's saver threads, `normalize`'s workers). vlmdata.place.images.decode turned Pillow's warning into an error
with warnings.catch_warnings(), which is process-wide state: another thread leaving its own catch_warnings
block in between put back filters without that error, and the image was decoded anyway (seen with a probe:
about 1 decode in 6,000 of an image past the limit, two threads)."""
from __future__ import annotations

import io
import warnings

import pytest
from PIL import Image, ImageFile

from vlmdata.place.images import ImageProblem, decode


class _RacyImage(ImageFile.ImageFile):
    """A 40x40 grey image whose opening does what another thread's catch_warnings exit does at that moment:
    the warnings filters go back to what they were before this thread's block began."""

    format = "RACYTEST"

    def _open(self) -> None:
        if self.fp.read(8) != b"RACYTEST":
            raise SyntaxError("not a test image")
        warnings.filters = [f for f in warnings.filters
                            if not (f[0] == "error" and f[2] is Image.DecompressionBombWarning)]
        warnings._filters_mutated()
        self._size = (40, 40)
        self._mode = "L"
        self.tile = [ImageFile._Tile("raw", (0, 0, 40, 40), 8, ("L", 0, 1))]


@pytest.fixture
def racy_format(monkeypatch):
    Image.init()
    monkeypatch.setitem(Image.OPEN, "RACYTEST", (_RacyImage, lambda prefix: prefix[:8] == b"RACYTEST"))
    monkeypatch.setattr(Image, "ID", ["RACYTEST", *Image.ID])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,600 pixels: past the limit, under twice it


def test_an_image_past_the_limit_is_refused_whatever_other_threads_do_to_the_warnings(racy_format):
    with warnings.catch_warnings():  # (this test's own changes to the filters end with it)
        with pytest.raises(ImageProblem, match="pixels"):
            decode(b"RACYTEST" + bytes(1600))


def test_a_real_image_past_the_limit_is_refused(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (1, 2, 3)).save(buf, "PNG")
    with pytest.raises(ImageProblem):
        decode(buf.getvalue())
    Image.new("RGB", (20, 20), (1, 2, 3)).save(buf := io.BytesIO(), "PNG")
    assert decode(buf.getvalue()).size == (20, 20)  # (under the limit: decoded)
