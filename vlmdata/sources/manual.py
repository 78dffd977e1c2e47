"""``kind = "manual"``: nothing to try; its note becomes part of the error if nothing else works."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vlmdata.manifest import Source
from vlmdata.sources.base import Candidate, SourceKind, Unavailable

if TYPE_CHECKING:
    from vlmdata.state import Root


class ManualKind(SourceKind):
    name = "manual"

    def describe(self, src: Source) -> str:
        return f"manual: {src.note or src.url}"

    def candidate(self, src: Source, name: str, root: "Root", *, download_path: Path,
                  mirror: str | None) -> Candidate:
        where = f" ({src.url})" if src.url else ""
        return Unavailable(src, self.describe(src), manual=True, reason=(
            f"needs a person: {src.note or 'download it by hand'}{where}; then save the file as "
            f"{download_path} and run the same command again"))


KIND = ManualKind()
