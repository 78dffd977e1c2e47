"""``kind = "http"``: a URL; under ``--mirror`` its mirrored location instead (the origin is not contacted)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vlmdata.manifest import Source
from vlmdata.net.urls import is_local, rewrite, shown
from vlmdata.sources.base import Candidate, Location, MirrorFile, Ready, SourceKind

if TYPE_CHECKING:
    from vlmdata.state import Root


def url_candidate(url: str, source: Source, mirror: str | None, via: str = "") -> Candidate:
    """``url`` as fetch tries it: itself, or its place in the mirror (a URL, or a file of a local folder)."""
    if mirror:
        loc = rewrite(url, mirror)
        if is_local(mirror):
            return MirrorFile(source, f"{loc} (local mirror{via})", path=Path(loc))
        label = f"{shown(loc)} (mirror{via})"  # (the request keeps a user:password the mirror URL has; the label not)
        return Ready(source, label, Location(label, url=loc))
    label = shown(url) + via
    return Ready(source, label, Location(label, url=url))


class HttpKind(SourceKind):
    name = "http"

    def describe(self, src: Source) -> str:
        return str(src.url)

    def plan_label(self, src: Source, mirror: str | None, hf_endpoint: str | None) -> str:
        return shown(rewrite(src.url or "", mirror)) if mirror else self.describe(src)

    def candidate(self, src: Source, name: str, root: "Root", *, download_path: Path,
                  mirror: str | None) -> Candidate:
        return url_candidate(src.url or "", src, mirror)


KIND = HttpKind()
