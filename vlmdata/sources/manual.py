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
        return f"manual: {src.note or src.url}" + (f" (saved as {src.path} under the root)" if src.path else "")

    def candidate(self, src: Source, name: str, root: "Root", *, download_path: Path,
                  mirror: str | None) -> Candidate:
        where = f" ({src.url})" if src.url else ""
        # what the person saves: the manifest's `path` under the root (e.g. a links file another
        # source reads), else the file itself where fetch looks for finished downloads
        save_as = root.store_path(src.path) if src.path else download_path
        todo = f"{src.note or 'download it by hand'}{where}"
        return Unavailable(src, self.describe(src), manual=True, save_as=save_as, todo=todo,
                           reason=f"needs a person{where}; then save it as {save_as} and run the same command again")


KIND = ManualKind()
