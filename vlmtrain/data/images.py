"""Image loading and processing, as LLaVA's dataset does it.

``pad``: ``expand2square`` centres the image on a square filled with the processor's mean colour
(``tuple(int(x * 255) for x in processor.image_mean)``), then the processor resizes/crops/normalises.
``square``: the processor's own resize and crop on the image as it is.

Decoding is exact by default: the same pixels as LLaVA's ``Image.open(...).convert("RGB")``. With
``draft=True`` (the config's ``image_decode: draft``, opt-in), a JPEG at least twice as large as the
processor's target (in the dimension the resize scales to the target) is decoded at 1/2, 1/4 or 1/8
scale by libjpeg (``Image.draft``: the DCT does the first downscale, most of the decode work is
skipped), never below the target; the processor's resize does the rest. The pixels differ from the
exact path's: bench/throughput/bench_jpeg_draft.py measures by how much and how much time it saves.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

ASPECT_RATIOS = ("pad", "square")
IMAGE_DECODES = ("exact", "draft")


class BadImage(Exception):
    """An image that is missing or cannot be decoded."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def expand2square(img: Image.Image, background_color: tuple[int, ...]) -> Image.Image:
    width, height = img.size
    if width == height:
        return img
    side = max(width, height)
    result = Image.new(img.mode, (side, side), background_color)
    result.paste(img, ((side - width) // 2, (side - height) // 2))
    return result


def pad_color(processor: Any) -> tuple[int, int, int]:
    return tuple(int(x * 255) for x in processor.image_mean)  # type: ignore[return-value]


def target_side(processor: Any) -> int:
    """The side the processor resizes to (CLIP: the shortest edge; SigLIP: height x width)."""
    for key in ("size", "crop_size"):  # a dict, or transformers' SizeDict
        size = getattr(processor, key, None)
        if isinstance(size, int):
            return size
        for k in ("shortest_edge", "height", "width"):
            value = size.get(k) if isinstance(size, dict) else getattr(size, k, None)
            if value:
                return int(value)
    raise ValueError(f"cannot tell the target size of {type(processor).__name__}")


def draft_size(width: int, height: int, target: int, pad: bool) -> tuple[int, int] | None:
    """The size to ask ``Image.draft`` for, or None where the image is not at least twice the target.

    With ``pad`` the image becomes a square of its longer side, which is resized to the target; else
    its shorter side is resized to the target. The request keeps that side >= the target."""
    governing = max(width, height) if pad else min(width, height)
    if governing < 2 * target:
        return None
    return -(-width * target // governing), -(-height * target // governing)  # integer ceil: never below the target


def open_rgb(path: Path, data: bytes | None = None, *, draft: tuple[int, bool] | None = None) -> Image.Image:
    """Decode fully (so a truncated file fails here, not later) and convert to RGB.

    ``draft``: (target side, pad) to let libjpeg decode a large JPEG at a reduced scale (see module doc)."""
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            if draft is not None and im.format == "JPEG":
                size = draft_size(im.width, im.height, *draft)
                if size is not None:
                    im.draft("RGB", size)
            return im.convert("RGB")
    except FileNotFoundError:
        raise BadImage(str(path), "file not found") from None
    except Exception as e:  # PIL raises many kinds: UnidentifiedImageError, OSError (truncated), ...
        raise BadImage(str(path), f"cannot decode: {type(e).__name__}: {e}") from None


class ImageLoader:
    def __init__(self, processor: Any, image_aspect_ratio: str = "pad", *, draft: bool = False) -> None:
        if image_aspect_ratio not in ASPECT_RATIOS:
            raise ValueError(f"image_aspect_ratio must be one of {ASPECT_RATIOS}, not {image_aspect_ratio!r}")
        self.processor = processor
        self.aspect = image_aspect_ratio
        self.background = pad_color(processor) if image_aspect_ratio == "pad" else None
        self.draft = (target_side(processor), image_aspect_ratio == "pad") if draft else None

    def process(self, images: Sequence[Image.Image]):
        """PIL images -> FloatTensor [n, 3, H, W]."""
        if self.background is not None:
            images = [expand2square(im, self.background) for im in images]
        return self.processor(images=list(images), return_tensors="pt")["pixel_values"]

    def load(self, root: Path, rel_paths: Sequence[str], blobs: Sequence[bytes | None] | None = None):
        ims = [open_rgb(Path(root) / rel, blobs[i] if blobs else None, draft=self.draft)
               for i, rel in enumerate(rel_paths)]
        return self.process(ims)
