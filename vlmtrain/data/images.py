"""Image loading and processing, as LLaVA's dataset does it.

``pad``: ``expand2square`` centres the image on a square filled with the processor's mean colour
(``tuple(int(x * 255) for x in processor.image_mean)``), then the processor resizes/crops/normalises.
``square``: the processor's own resize and crop on the image as it is.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

ASPECT_RATIOS = ("pad", "square")


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


def open_rgb(path: Path, data: bytes | None = None) -> Image.Image:
    """Decode fully (so a truncated file fails here, not later) and convert to RGB."""
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise BadImage(str(path), "file not found") from None
    except Exception as e:  # PIL raises many kinds: UnidentifiedImageError, OSError (truncated), ...
        raise BadImage(str(path), f"cannot decode: {type(e).__name__}: {e}") from None


class ImageLoader:
    def __init__(self, processor: Any, image_aspect_ratio: str = "pad") -> None:
        if image_aspect_ratio not in ASPECT_RATIOS:
            raise ValueError(f"image_aspect_ratio must be one of {ASPECT_RATIOS}, not {image_aspect_ratio!r}")
        self.processor = processor
        self.aspect = image_aspect_ratio
        self.background = pad_color(processor) if image_aspect_ratio == "pad" else None

    def process(self, images: Sequence[Image.Image]):
        """PIL images -> FloatTensor [n, 3, H, W]."""
        if self.background is not None:
            images = [expand2square(im, self.background) for im in images]
        return self.processor(images=list(images), return_tensors="pt")["pixel_values"]

    def load(self, root: Path, rel_paths: Sequence[str], blobs: Sequence[bytes | None] | None = None):
        ims = [open_rgb(Path(root) / rel, blobs[i] if blobs else None) for i, rel in enumerate(rel_paths)]
        return self.process(ims)
