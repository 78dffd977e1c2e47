"""Put InternVL-LLaVA's own InternViT-6B code into a reference environment that build_env prepared.

``python -m tools.reference_code.internvl_env DIR --internvl SRC`` (SRC: an OpenGVLab/InternVL checkout, or
its bare git folder) adds two folders to DIR, touching nothing else (no network needed):

- ``src-internvl``: ``internvl_chat_llava/llava/model/multimodal_encoder/`` at the snapshot docs/original-repos.md
  cites, only ``clip_encoder.py`` (its tower class: processor built in code, feature selection) and the
  ``intern_vit_6b`` folder. The folder ``multimodal_encoder`` is imported as a package of its own (its modules
  use relative imports), not as part of InternVL's ``llava``, whose name LLaVA's own package in ``DIR/src`` has.
- ``shim-internvl/timm``: its modeling_intern_vit.py imports ``timm.models.layers.DropPath`` at the top
  (InternVL pins timm 0.9.12, which would pull torchvision) and builds one only where ``drop_path_rate`` > 0.
  The comparison runs with 0, where it builds ``nn.Identity``; the stand-in raises if it is ever built, so a
  run that needed real stochastic depth fails instead of computing something else.

The libraries are build_env's: transformers 4.37.2 (InternVL-LLaVA's pyproject pins ``>=4.37.2``; the
``site4372`` overlay) over ``site`` (einops, safetensors, numpy < 2), on our torch. ``internvl_paths`` is
the child Python's path; ``tools/reference_code/internvl_side.py`` runs in it.
"""
from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from tools.reference_code.build_env import EnvError, add_on_main, paths, replace_folder, require_prepared

INTERNVL_COMMIT = "2410d1d"  # OpenGVLab/InternVL, the snapshot docs/original-repos.md cites
MODEL_DIR = "internvl_chat_llava/llava/model"
ENCODER = f"{MODEL_DIR}/multimodal_encoder"
PLACED = (f"{ENCODER}/clip_encoder.py", f"{ENCODER}/intern_vit_6b")
SRC = "src-internvl"
SHIM = "shim-internvl"

DROP_PATH = '''"""Stand-in for timm 0.9.12's DropPath (see tools/reference_code/internvl_env.py): never built at
drop_path_rate 0, where InternViT uses nn.Identity."""


class DropPath:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("timm stand-in: InternViT with drop_path_rate > 0 needs the real timm 0.9.12")
'''


def internvl_paths(root: Path) -> list[Path]:
    """The child Python's path, first wins: InternVL's encoder folder, its timm stand-in, then build_env's
    libraries under the 4.37.2 overlay (without LLaVA's ``src`` and MoE-LLaVA's ``shim``: not needed here)."""
    ours = [root / SRC / MODEL_DIR, root / SHIM]
    return ours + [p for p in paths(root, overlay="site4372") if p not in (root / "src", root / "shim")]


def _extract(source: Path, into: Path) -> None:
    """PLACED from a checkout, or from a bare git folder at INTERNVL_COMMIT, under ``into`` (paths kept)."""
    if (source / ENCODER).is_dir():
        for rel in PLACED:
            dest = into / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            copy = shutil.copytree if (source / rel).is_dir() else shutil.copy2
            copy(source / rel, dest)
        return
    done = subprocess.run(["git", "--git-dir", str(source), "archive", INTERNVL_COMMIT, *PLACED], capture_output=True)
    if done.returncode != 0:
        raise EnvError(f"{source}: no InternVL code at {INTERNVL_COMMIT}: {done.stderr.decode().strip()}")
    with tempfile.NamedTemporaryFile(suffix=".tar") as fh:
        fh.write(done.stdout)
        fh.flush()
        with tarfile.open(fh.name) as tar:
            tar.extractall(into, filter="data")


def _write_shim(into: Path) -> None:
    (into / "timm" / "models").mkdir(parents=True)
    (into / "timm" / "__init__.py").write_text("")
    (into / "timm" / "models" / "__init__.py").write_text("")
    (into / "timm" / "models" / "layers.py").write_text(DROP_PATH)


def place(root: Path, source: Path) -> None:
    require_prepared(root, "site4372")
    replace_folder(root, SRC, lambda tmp: _extract(source, tmp))
    replace_folder(root, SHIM, _write_shim)


def main(argv: list[str] | None = None) -> int:
    return add_on_main(argv, __doc__, "internvl",
                       "an InternVL checkout, or its bare git folder (github.com/OpenGVLab/InternVL)", place,
                       "tests/models/test_internvit_reference_code.py")


if __name__ == "__main__":
    raise SystemExit(main())
