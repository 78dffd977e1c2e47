"""Helpers for the placement tests: small real images and FileSpecs built in the test.

(A module of its own, not conftest.py: `from conftest import ...` would find another folder's conftest.)
"""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from vlmdata.manifest import FileSpec, Placement, Source


def image_bytes(fmt: str, size=(24, 16), color=(200, 40, 10)) -> bytes:
    """A small real image: jpeg, png, gif, webp, palette (PNG, P mode), alpha (RGBA PNG), png16."""
    out = io.BytesIO()
    if fmt == "jpeg":
        Image.new("RGB", size, color).save(out, "JPEG", quality=90)
    elif fmt == "png":
        Image.new("RGB", size, color).save(out, "PNG")
    elif fmt == "gif":
        Image.new("RGB", size, color).convert("P").save(out, "GIF")
    elif fmt == "webp":
        Image.new("RGB", size, color).save(out, "WEBP")
    elif fmt == "palette":
        Image.new("RGB", size, color).quantize(4).save(out, "PNG")
    elif fmt == "alpha":
        Image.new("RGBA", size, (*color, 0)).save(out, "PNG")  # fully transparent: white after conversion
    elif fmt == "png16":
        im = Image.new("I;16", size)
        im.putdata([i * 97 % 65536 for i in range(size[0] * size[1])])
        im.save(out, "PNG")
    else:
        raise ValueError(fmt)
    return out.getvalue()


def decodes_as_jpeg(path: Path) -> Image.Image:
    data = Path(path).read_bytes()
    assert data[:3] == b"\xff\xd8\xff", f"{path} is not JPEG bytes"
    im = Image.open(io.BytesIO(data))
    im.load()
    assert im.format == "JPEG" and im.mode in ("RGB", "L", "CMYK")
    return im


def make_spec(kind: str = "extract", to: str = "ds/images", *, dataset: str = "ds", name: str = "a.zip",
              inner: str | None = "", count: int | None = None, include=(), flatten=False, fmt="auto",
              unpacked_size: int | None = None, ext: str | None = None, size: int | None = None,
              sources: tuple[Source, ...] = ()) -> FileSpec:
    place = Placement(kind=kind, to=to, inner=inner if kind == "extract" else None, format=fmt, flatten=flatten,
                      count=count, unpacked_size=unpacked_size, ext=ext, include=tuple(include))
    return FileSpec(dataset=dataset, name=name, size=size, size_approx=None, sha256=None, md5=None, optional=False,
                    description=None, sources=sources, parts=(), place=place)
