"""What makes a record bad, as stable reason keys (they are the keys of blend.json's drop counts).

The checks themselves run inline in records.py (one pass per record, no extra copies); this
module holds the reasons, the image-path rule, and the `Bad` signal they raise.
"""
from __future__ import annotations

import posixpath
from typing import Any

# record-level reasons (found while reading)
NOT_OBJECT = "record is not a JSON object"
NO_CONVERSATIONS = "no conversations"
BAD_TURN = "malformed turn"
UNKNOWN_ROLE = "unknown role"
NOT_ALTERNATING = "turns do not alternate human/gpt"
ENDS_WITH_HUMAN = "last turn is from human (no answer)"
EMPTY_VALUE = "empty turn value"
VIDEO = "video not supported"
BAD_ID = "id is not a string or number"
BAD_IMAGE_FIELD = "image is not a string or a list of strings"
BAD_IMAGE_PATH = "image path is empty, absolute or leaves the image root"
TOKEN_MISMATCH = "<image> count differs from the number of images"
TOKEN_IN_GPT = "<image> in a gpt turn"
TOKEN_TEXT_ONLY = "<image> in a text-only record"
NOT_UNICODE = "text is not valid Unicode"
# image-level reasons (found by the image check)
MISSING_IMAGE = "missing image"
CORRUPT_IMAGE = "corrupt image"

# fixes applied to records that are kept (counted per source)
FIX_LEADING_TURN = "leading non-human turn removed"
FIX_TOKEN_ADDED = "<image> added to the first human turn"
FIXES = (FIX_LEADING_TURN, FIX_TOKEN_ADDED)


class Bad(Exception):
    """A record that cannot be used: a reason key from above and a detail for the user."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def clean_image_path(path: str) -> str:
    """The image path as stored: relative, '/'-separated, inside the image root; else Bad.

    The common case (a plain relative path) is returned as is after a few substring tests; only
    paths with '.', '//' or '\\' pieces go through normpath.
    """
    if not path:
        raise Bad(BAD_IMAGE_PATH, "empty image path")
    if path[0] == "/" or "\\" in path or (len(path) > 1 and path[1] == ":"):
        if path[0] != "/" and path[1:2] != ":":  # (not absolute: a Windows-made relative path)
            raise Bad(BAD_IMAGE_PATH, f"image path {path!r} has '\\' separators (paths are '/'-separated)")
        raise Bad(BAD_IMAGE_PATH, f"absolute image path {path!r}")
    if "//" in path or path[0] == "." or "/." in path:
        norm = posixpath.normpath(path)
        if norm == ".." or norm.startswith("../") or norm == ".":
            raise Bad(BAD_IMAGE_PATH, f"image path {path!r} leaves the image root")
        return norm
    return path


def check_unicode(rec: Any) -> None:
    """Bad if a string of ``rec`` (a key or a value, at any depth) holds a lone surrogate.

    JSON can spell one (``"\\ud800"`` without its low half: a cut emoji in scraped chat text), and
    Python's decoder keeps it in a str that no UTF-8 writer takes: the blend's Arrow columns
    stopped with a UnicodeEncodeError traceback. Only records the standard library decoded are
    asked (msgspec refuses such text), so this costs nothing on the common path.
    """
    stack: list[tuple[str, Any]] = [("record", rec)]
    while stack:
        where, v = stack.pop()
        if type(v) is str:
            try:
                v.encode()
            except UnicodeEncodeError as e:
                raise Bad(NOT_UNICODE, f"{where}: a lone surrogate (\\u{ord(v[e.start]):04x}) at character {e.start}") from None
        elif type(v) is dict:
            for k, x in v.items():
                stack.append((f"{where} key {k!r:.40}", k))
                stack.append((f"{where}[{k!r:.40}]", x))
        elif type(v) is list:
            stack.extend((f"{where}[{i}]", x) for i, x in enumerate(v))
