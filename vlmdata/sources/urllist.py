"""``kind = "urllist"``: a list of per-image URLs (OCR-VQA's dataset.json), fetched by vlmdata.fetch.urllist."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vlmdata.manifest import Source
from vlmdata.net.urls import shown
from vlmdata.sources.base import Candidate, SourceKind, Unavailable

if TYPE_CHECKING:
    from vlmdata.state import Root


class UrllistKind(SourceKind):
    name = "urllist"
    lists_images = True

    def describe(self, src: Source) -> str:
        # (as the journal and the report keep it: a presigned list URL's signature is a credential)
        return f"urllist {src.path or shown(src.url or '')} ({src.list_format}, key {src.url_key})"

    def candidate(self, src: Source, name: str, root: "Root", *, download_path: Path,
                  mirror: str | None) -> Candidate:
        return Unavailable(src, self.describe(src), reason="a URL list cannot deliver a single file")


KIND = UrllistKind()
