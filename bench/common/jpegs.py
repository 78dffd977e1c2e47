"""Photo-like JPEGs for the benchmarks' archives, URL lists and image servers: a gradient blended
with noise, each of its own size and quality, the same for the same seed (so a cached input stays
valid)."""
from __future__ import annotations

import io
import random


def photo_jpegs(n: int, *, seed: int = 0, width: tuple[int, int], height: tuple[int, int],
                noise: float | tuple[float, float], blend: float, quality: int | tuple[int, int]) -> list[bytes]:
    """n JPEGs. ``width``, ``height`` are inclusive ranges drawn per image; ``noise`` and ``quality``
    are a fixed value or such a range. Draws go in the order width, height, noise, quality."""
    from PIL import Image

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        w, h = rng.randint(*width), rng.randint(*height)
        sigma = rng.uniform(*noise) if isinstance(noise, tuple) else noise
        base = Image.linear_gradient("L").resize((w, h)).convert("RGB")
        im = Image.blend(base, Image.effect_noise((w, h), sigma).convert("RGB"), blend)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=rng.randint(*quality) if isinstance(quality, tuple) else quality)
        out.append(buf.getvalue())
    return out
