"""What placing a file reports back to the fetch orchestration."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PlaceResult:
    to: str  # the placement target, relative to the root
    files: int  # files placed by this call
    warnings: list[str] = field(default_factory=list)
