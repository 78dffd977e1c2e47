"""An independent reference for the pixels LLaVA-1.5 feeds its CLIP tower (for the parity tests).

Written from the facts of LLaVA's data path and of the CLIP processor of transformers 4.37 (the
version LLaVA-1.5 pins), not from either code base:

- ``pad``: the image is centred on a square of side max(w, h) filled with the colour
  ``int(m * 255)`` of each channel mean m; the offset along the short side is (long - short) // 2.
- resize: the short side becomes ``size`` and the long side ``int(size * long / short)`` (truncated);
  a side already at ``size`` leaves the image alone. PIL bicubic on the uint8 RGB image.
- centre crop to crop x crop at top = (h - crop) // 2, left = (w - crop) // 2.
- rescale: uint8 -> float64 x (1/255) -> float32; normalise in float32: (x - mean) / std per channel.
- channels first.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def centre_on_square(img: Image.Image, mean: tuple[float, ...] = CLIP_MEAN) -> Image.Image:
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), tuple(int(m * 255) for m in mean))
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


def clip_pixels(img: Image.Image, size: int = 336, crop: int = 336, mean: tuple[float, ...] = CLIP_MEAN,
                std: tuple[float, ...] = CLIP_STD) -> np.ndarray:
    """float32 [3, crop, crop], as LLaVA-1.5's CLIPImageProcessor.preprocess gives it."""
    img = img.convert("RGB")
    w, h = img.size
    short, long = min(w, h), max(w, h)
    if short != size:
        new_long = int(size * long / short)
        new_w, new_h = (size, new_long) if w <= h else (new_long, size)
        img = img.resize((new_w, new_h), resample=Image.Resampling.BICUBIC, reducing_gap=None)
    a = np.asarray(img)  # H, W, 3 uint8
    top, left = (a.shape[0] - crop) // 2, (a.shape[1] - crop) // 2
    a = a[top:top + crop, left:left + crop]
    x = (a.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def llava_pixels(img: Image.Image, aspect: str, size: int = 336) -> np.ndarray:
    return clip_pixels(centre_on_square(img) if aspect == "pad" else img, size, size)


# Sizes like the images LLaVA-1.5's mix665k points at: COCO landscape/portrait, GQA/VG, TextVQA,
# OCR-VQA book covers (tall, sometimes tiny), a square one, a panorama, and odd sides.
LLAVA_LIKE_SIZES = [(640, 480), (427, 640), (500, 333), (800, 600), (1024, 768), (300, 475), (75, 120),
                    (512, 512), (1200, 300), (337, 211)]


def textured_jpeg(path, size: tuple[int, int], seed: int) -> None:
    """A JPEG with edges, gradients and noise, so the resize filter's every tap matters."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx ^ yy) & 255)], axis=-1)
    noise = rng.integers(0, 64, size=(h, w, 3))
    a = np.clip(base + noise - 32, 0, 255).astype(np.uint8)
    a[h // 3: h // 2, w // 4: w // 2] = (250, 20, 20)  # a hard-edged block
    Image.fromarray(a, "RGB").save(path, "JPEG", quality=88)
