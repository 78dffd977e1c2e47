"""Put ShareGPT4V's own ``share4v`` package into a reference environment that build_env prepared.

``python -m tools.reference_code.sharegpt4v_env DIR --sharegpt4v SRC`` (SRC: a ShareGPT4Omni/ShareGPT4V
checkout, or its bare git folder) adds one folder to DIR, touching nothing else (no network needed):
``src-sharegpt4v/share4v`` at the snapshot docs/original-repos.md cites. It gets a folder of its own, not
``src``, so that its child path holds no other repo's package (LLaVA's ``llava`` and MoE-LLaVA's are in ``src``).

The libraries are build_env's: transformers 4.31.0 with tokenizers 0.13.3 (ShareGPT4V's pyproject pins
``transformers==4.31.0``, ``tokenizers<0.14``: the ``site431`` overlay) over ``site`` (accelerate 0.21.0,
which its builder's ``device_map`` needs, sentencepiece, numpy < 2), and DeepSpeed 0.9.5's source (transformers
imports whichever DeepSpeed is importable, and ours needs the pydantic 2 that ``site`` shadows), on our torch.
``sharegpt4v_paths`` is the child Python's path; ``tools/reference_code/sharegpt4v_side.py`` runs in it.
"""
from __future__ import annotations

from pathlib import Path

from tools.reference_code.build_env import EnvError, add_on_main, paths, replace_folder, require_prepared

SHAREGPT4V_COMMIT = "b6f70e9"  # ShareGPT4Omni/ShareGPT4V, the snapshot docs/original-repos.md cites
SRC = "src-sharegpt4v"


def sharegpt4v_paths(root: Path) -> list[Path]:
    """The child Python's path, first wins: ``share4v``, then build_env's libraries under the 4.31 overlay
    (without ``src`` and MoE-LLaVA's ``shim``: not needed here)."""
    return [root / SRC] + [p for p in paths(root, overlay="site431") if p not in (root / "src", root / "shim")]


def _fill(source: Path, into: Path) -> None:
    from tools.reference_code.build_env import place_package

    try:
        place_package(into.parent, source, "share4v", SHAREGPT4V_COMMIT, folder=into.name)
    except Exception as e:  # git archive's error says which: no such commit, not a git folder
        raise EnvError(f"{source}: no ShareGPT4V code at {SHAREGPT4V_COMMIT}: {e}") from e
    if not (into / "share4v" / "train" / "train.py").is_file():
        raise EnvError(f"{source}: holds no share4v/train/train.py (not a ShareGPT4V checkout?)")


def place(root: Path, source: Path) -> None:
    require_prepared(root, "site431")
    replace_folder(root, SRC, lambda tmp: _fill(source, tmp))


def main(argv: list[str] | None = None) -> int:
    return add_on_main(argv, __doc__, "sharegpt4v",
                       "a ShareGPT4V checkout, or its bare git folder (github.com/ShareGPT4Omni/ShareGPT4V)", place,
                       "tests/train/test_sharegpt4v_reference_code.py")


if __name__ == "__main__":
    raise SystemExit(main())
