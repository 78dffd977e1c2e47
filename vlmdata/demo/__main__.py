"""`python -m vlmdata.demo [--out DIR] [--steps N]`: run demo/run.py of the source checkout this package is in."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def main() -> None:
    if not (CHECKOUT / "demo" / "run.py").is_file() or not (CHECKOUT / "configs").is_dir():
        raise SystemExit("the demo runs from a source checkout of vlmdata (it needs demo/ and configs/): "
                         "clone the repository and run `make demo` there")
    sys.path.insert(0, str(CHECKOUT))
    runpy.run_module("demo.run", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
