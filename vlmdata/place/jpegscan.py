"""Whether a JPEG is whole, from its marker structure, without decoding it.

Saving an image of a URL list has to prove it was not cut short. Decoding it (even at 1/8 scale,
which still Huffman-decodes every byte of the scan data) costs more CPU than fetching it; the
structure says the same thing for a fraction: the segments before the first scan must chain by
their lengths to a frame header (SOF) and a scan header (SOS), and an end-of-image marker must
follow the scan data. Inside entropy-coded data a 0xFF byte is always followed by 0x00 (stuffing)
or a restart marker, so ``FF D9`` after the first scan header is the end of the image and
nothing else (an EXIF thumbnail's own EOI sits in an APP segment before it, and is skipped by
that segment's length). A download cut anywhere lacks it.

Only what Pillow (libjpeg) decodes is judged here: 8-bit baseline, extended and progressive
frames (SOF0-2) with 1, 3 or 4 components. Anything else (lossless, arithmetic, 12-bit, odd
component counts) gets ``None`` and is decoded as before, so its verdict does not change.
"""
from __future__ import annotations

_SOF_DECODED = (0xC0, 0xC1, 0xC2)  # baseline, extended sequential, progressive (Huffman)
_SOF_ANY = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7})


def scan(data: bytes, max_pixels: int | None) -> tuple[str, str] | None:
    """("ok", "") for a whole JPEG, (status, detail) for one that is not (status: truncated or
    undecodable, as a decode would say), None when only a decode can tell (see the module's docstring).
    ``max_pixels``: Pillow's decompression-bomb limit, applied to the frame's size as Pillow does."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    pos, frame = 2, None
    while True:
        while pos < n and data[pos] == 0xFF and pos + 1 < n and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes before a marker
        if pos + 2 > n:
            return "truncated", f"ends inside its headers at byte {n}"
        if data[pos] != 0xFF:
            return "undecodable", f"no marker at byte {pos} of its headers"
        marker = data[pos + 1]
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker == 0xD9:
            return "undecodable", "an end-of-image marker before any scan"
        if pos + 4 > n:
            return "truncated", f"ends inside its headers at byte {n}"
        end = pos + 2 + (data[pos + 2] << 8 | data[pos + 3])
        if end > n:
            return "truncated", f"a header segment runs past the end (byte {n})"
        if marker in _SOF_ANY:
            if frame is not None or marker not in _SOF_DECODED or end - pos < 10:
                return None
            frame = data[pos + 4], data[pos + 5] << 8 | data[pos + 6], data[pos + 7] << 8 | data[pos + 8], data[pos + 9]
        elif marker == 0xDA:
            if frame is None:
                return None
            bits, height, width, comps = frame
            if bits != 8 or comps not in (1, 3, 4) or height == 0 or width == 0:
                return None
            if max_pixels is not None and width * height > max_pixels:
                return "undecodable", f"{width}x{height} pixels, past the limit of {max_pixels} (a decompression bomb?)"
            if data.find(b"\xff\xd9", end) < 0:
                return "truncated", f"no end-of-image marker after its scan data ({n} bytes)"
            return "ok", ""
        pos = end
