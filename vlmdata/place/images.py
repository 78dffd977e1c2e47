"""Images: sniff the real format, prove the file is whole, convert to a real JPEG.

Whole means not cut short: a JPEG proves it by its marker structure (vlmdata.place.jpegscan: a
frame, a scan and the end-of-image marker after it, with Pillow's pixel limit), anything else,
and any JPEG that scan cannot judge, by a decode of every pixel (``verify --deep`` always decodes).

The LLaVA JSONs reference every OCR-VQA image as ``<id>.jpg`` while the originals are JPEG, GIF,
PNG (and the odd WebP): a GIF named ``.jpg`` opens in PIL but fails ``jpeginfo`` and other
decoders. Here anything that is not JPEG becomes a real RGB JPEG (quality 95); a real JPEG is
kept byte for byte.
"""
from __future__ import annotations

import errno
import io
import os
import struct
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vlmdata import atomic
from vlmdata.place import jpegscan

JPEG_QUALITY = 95
IMAGE_EXTS = {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
# What each sniffed format may be named.
EXTS_OF = {
    "jpeg": {".jpg", ".jpeg", ".jpe"},
    "png": {".png"},
    "gif": {".gif"},
    "webp": {".webp"},
    "bmp": {".bmp"},
    "tiff": {".tif", ".tiff"},
}


def sniff(head: bytes) -> str | None:
    """The image format from the first bytes (12 are enough), or None."""
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


class ImageProblem(Exception):
    """status is one of: empty, truncated, undecodable."""

    def __init__(self, status: str, detail: str) -> None:
        self.status, self.detail = status, detail
        super().__init__(f"{status}: {detail}")


def _classify(e: BaseException) -> ImageProblem:
    msg = str(e) or type(e).__name__
    low = msg.lower()
    if "truncat" in low or isinstance(e, EOFError) or "premature end" in low:
        return ImageProblem("truncated", msg)
    return ImageProblem("undecodable", msg)


def decode(data: bytes, *, fast: bool = False) -> Image.Image:
    """Decode every pixel (so a cut-off file fails). ``fast`` decodes JPEGs at 1/8 scale: the
    entropy-coded data is still read to the end, which is what catches truncation."""
    if not data:
        raise ImageProblem("empty", "0 bytes")
    try:
        with warnings.catch_warnings():
            # Pillow's decompression-bomb check stays on, as an error we report rather than a warning.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            # (checked here too: the warnings filter above is process-wide, and another thread leaving its own
            # catch_warnings block can put back the filters without it while this one is between the two lines)
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and im.width * im.height > limit:
                raise ImageProblem("undecodable", f"{im.width}x{im.height} pixels, past the limit of {limit} "
                                                  "(a decompression bomb?)")
            if fast and im.format == "JPEG":
                im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
        return im
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as e:
        raise _classify(e) from e


def to_rgb(im: Image.Image) -> Image.Image:
    """An RGB image: transparency composited on white, palettes expanded, CMYK and 16-bit mapped."""
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "I" or mode.startswith("I;16"):  # 16-bit greyscale: scale to 8 bits
        im = im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    elif mode == "F":
        im = im.convert("L")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    if im.mode == "RGB":
        return im
    return im.convert("RGB")


def encode_jpeg(im: Image.Image) -> bytes:
    out = io.BytesIO()
    to_rgb(im).save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


@dataclass
class Normalized:
    data: bytes  # the bytes to save (the original ones for a real JPEG)
    source_format: str  # what the input was: jpeg, png, gif, ...
    converted: bool


def normalize_bytes(data: bytes) -> Normalized:
    """Prove ``data`` is a whole image and return JPEG bytes for it. Raises ImageProblem."""
    fmt = sniff(data[:16])
    if not data:
        raise ImageProblem("empty", "0 bytes")
    if fmt == "jpeg" and _whole_jpeg(data):  # a JPEG that keeps its bytes only has to prove it is whole
        return Normalized(data, "jpeg", False)
    im = decode(data, fast=fmt == "jpeg")  # (1/8 scale still reads all of a JPEG's data)
    if fmt == "jpeg" and im.format == "JPEG":
        return Normalized(data, "jpeg", False)
    try:
        return Normalized(encode_jpeg(im), fmt or (im.format or "unknown").lower(), True)
    except (OSError, ValueError) as e:
        raise ImageProblem("undecodable", f"cannot convert {im.format} {im.mode} to JPEG: {e}") from e


def _whole_jpeg(data: bytes) -> bool:
    """True when the JPEG's structure proves it whole (vlmdata.place.jpegscan); ImageProblem when it
    proves it is not; False when only a decode can tell."""
    verdict = jpegscan.scan(data, Image.MAX_IMAGE_PIXELS)
    if verdict is None:
        return False
    status, detail = verdict
    if status != "ok":
        raise ImageProblem(status, detail)
    return True


# (O_NOFOLLOW: the temporary's name is predictable, and a link planted under it in a folder others may
# write must not be written through; the write then fails instead)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


def save_image(data: bytes, final: Path | str, *, to_jpeg: bool) -> Normalized:
    """Write ``data`` at ``final`` once it is proven whole, as JPEG bytes when ``to_jpeg``; ImageProblem otherwise.

    Written with no name (Linux) or under a temporary one, and given its name once whole, so a kill
    never leaves half an image under its name;
    no fsync per image (the caller fsyncs the folder once at the end).
    """
    if to_jpeg:
        norm = normalize_bytes(data)
    else:  # no forced extension: keep the bytes, but only once they are proven whole
        fmt = sniff(data[:16])
        if not (data and fmt == "jpeg" and _whole_jpeg(data)):
            decode(data, fast=True)
        norm = Normalized(data, fmt or "unknown", False)
    _write(norm.data, os.fspath(final))
    return norm


def quick_save(data: bytes, final: Path | str) -> Normalized | None:
    """``save_image`` for an image whose bytes prove it whole without a decode (a JPEG: a few
    microseconds, fine on an event loop); None when it needs a decode or a conversion (then
    ``save_image``, off the loop). ImageProblem for an empty or cut JPEG."""
    if not data:
        raise ImageProblem("empty", "0 bytes")
    if sniff(data[:16]) != "jpeg" or not _whole_jpeg(data):
        return None
    _write(data, os.fspath(final))
    return Normalized(data, "jpeg", False)


def _write(data: bytes, final: str) -> None:
    if _unnamed[0] and _write_unnamed(data, final):
        return
    head, sep, name = final.rpartition(os.sep)
    tmp = f"{head}{sep}{atomic.TMP_PREFIX}{name}.{threading.get_ident()}"
    fd = os.open(tmp, _CREATE, 0o644)
    try:
        atomic.write_all(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, final)


# Linux: a file with no name (O_TMPFILE) in the target folder, linked under its name once whole.
# One directory operation per image instead of two (a temporary name's create, then its rename):
# on ext4 a folder of 20,000 new images costs 0.6 instead of 0.8-1.5 s of system time.
_unnamed = [bool(getattr(os, "O_TMPFILE", 0)) and os.path.isdir("/proc/self/fd")]
_UNNAMED = getattr(os, "O_TMPFILE", 0) | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)


def _write_unnamed(data: bytes, final: str) -> bool:
    """True once ``final`` holds ``data``; False where this cannot be done (a file system without
    O_TMPFILE: then never tried again; ``final`` already there: it is replaced by the caller)."""
    final = os.path.abspath(final)
    try:
        fd = os.open(os.path.dirname(final), _UNNAMED, 0o644)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            _unnamed[0] = False
        return False
    try:
        atomic.write_all(fd, data)
        # linkat(AT_SYMLINK_FOLLOW) through /proc is how an unnamed file gets a name without
        # privileges; Python calls linkat (not link) only when given a folder fd, which an
        # absolute target path makes the kernel ignore.
        os.link(f"/proc/self/fd/{fd}", final, dst_dir_fd=fd)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP):  # no /proc, or not allowed here
            _unnamed[0] = False
            return False
        raise
    finally:
        os.close(fd)


@dataclass
class ImageCheck:
    path: Path
    status: str  # ok | empty | truncated | undecodable | wrong_format
    format: str | None  # the sniffed format
    detail: str = ""


def check_file(path: Path, *, fast: bool = True) -> ImageCheck:
    """Decode one file and compare its real format with its name."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return ImageCheck(path, "undecodable", None, f"cannot read: {e.strerror}")
    fmt = sniff(data[:16])
    try:
        decode(data, fast=fast)
    except ImageProblem as p:
        return ImageCheck(path, p.status, fmt, p.detail)
    ext = os.path.splitext(str(path))[1].lower()
    if fmt is not None and ext in IMAGE_EXTS and ext not in EXTS_OF.get(fmt, set()):
        return ImageCheck(path, "wrong_format", fmt, f"{fmt.upper()} bytes named {ext}")
    return ImageCheck(path, "ok", fmt)
