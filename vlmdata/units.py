"""Human-readable sizes."""
from __future__ import annotations


def human_bytes(n: int | None, approx: bool = False) -> str:
    if n is None:
        return "unknown"
    step = 1000.0  # decimal units, like the Hub and most publishers
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    x = float(n)
    for u in units:
        if abs(x) < step or u == units[-1]:
            s = f"{x:.0f} {u}" if u == "B" else f"{x:.1f} {u}"
            return ("~" + s) if approx else s
        x /= step
    return str(n)
