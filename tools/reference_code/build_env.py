"""Prepare the folder MoE-LLaVA's, LLaVA's and ConvLLaVA's own code run from (see the package's docstring).

What goes where, and why not simply ``pip install``: neither is on the package index, and their pins
(torch 2.0.1 / 2.1.2, CUDA builds) would replace our torch. So their Python lives in ``DIR/src``
(``moellava``, ``llava``), the libraries they import at the versions they pin in ``DIR/site``
(``pip --target``, without touching our environment), and a child Python gets ``paths(DIR)`` in front of
its path.

- transformers 4.37.0 (its pin) in ``site``; 4.34.0 in ``site434``, put in front for its Mistral / openchat
  classes: their MoE forward calls ``_prepare_decoder_attention_mask``, which 4.36 removed (its docs/TRAIN.md
  asks for 4.34 for OpenChat).
- transformers 4.37.2 in ``site4372`` (LLaVA's pin today) and 4.31.0 with tokenizers 0.13.3 in ``site431``
  (its pin when LLaVA-1.5 was trained, whose tokenizers < 0.14 turn its train.py's non-legacy correction off).
- DeepSpeed 0.9.5 (its pin) as the sdist's source tree: ``pip install`` of it runs its setup.py, which
  imports DeepSpeed and fails with pydantic 2; MoE-LLaVA only imports its Python modules.
- numpy < 2: DeepSpeed 0.9.5 imports ``numpy.BUFSIZE``; pydantic 1 for DeepSpeed's configs.
- ``shim/timm``: MoE-LLaVA's projector builder imports ``timm``'s ViT Block for its pool / qformer
  projectors, which exports never use; timm 0.6.13 would pull torchvision.
- ConvLLaVA (``--convllava``): its package is called ``llava`` too, so it lives in ``src-convllava`` and
  never shares a path with LLaVA's (``convllava_paths``); transformers 4.39.3 and tokenizers 0.15.1 (its
  pyproject pins) in ``site4393``. ``shim-convllava/timm``: its tower builder imports every encoder, and
  the UniRepLKNet one imports ten names from ``timm.models.layers`` and decorates its factories with
  ``register_model`` at import time; the ConvNeXt tower uses none of them.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

MOELLAVA_COMMIT = "6cb5f66"  # the commit docs/moe-llava.md and the reference notes cite
LLAVA_COMMIT = "c121f04"  # haotian-liu/LLaVA, docs/original-repos.md
CONVLLAVA_COMMIT = "3e7ae57"  # alibaba/conv-llava, docs/original-repos.md
SITE = ["transformers==4.37.0", "tokenizers==0.15.1", "huggingface-hub==0.24.7", "safetensors==0.4.2",
        "accelerate==0.21.0", "einops==0.6.1", "tiktoken==0.5.2", "sentencepiece==0.1.99", "numpy==1.26.4",
        "pydantic==1.10.27", "hjson==3.1.0", "py-cpuinfo==9.0.0"]  # the rest (regex, requests, ...) from ours
OVERLAYS = {"site434": ["transformers==4.34.0", "tokenizers==0.14.1"],
            "site4372": ["transformers==4.37.2", "tokenizers==0.15.1"],
            "site431": ["transformers==4.31.0", "tokenizers==0.13.3"],
            "site4393": ["transformers==4.39.3", "tokenizers==0.15.1"]}
DEEPSPEED = "deepspeed==0.9.5"


def paths(root: Path, *, overlay: str | None = None) -> list[Path]:
    """The folders a child Python needs in front of its path, first wins; ``overlay`` one of OVERLAYS."""
    deepspeed = next((root / "deepspeed-src").glob("deepspeed-*"))
    return ([root / overlay] if overlay else []) + [root / "site", deepspeed, root / "src", root / "shim"]


def convllava_paths(root: Path) -> list[Path]:
    """ConvLLaVA's child path: its pins, then the libraries shared with the others; no ``src`` (LLaVA's
    ``llava``). DeepSpeed 0.9.5 too, though ConvLLaVA's forward never calls it: transformers' generation
    module imports whichever DeepSpeed is importable, and ours needs the pydantic 2 that ``site`` shadows."""
    deepspeed = next((root / "deepspeed-src").glob("deepspeed-*"))
    return [root / "site4393", root / "site", deepspeed, root / "src-convllava", root / "shim-convllava"]


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *args], check=True)


def install_site(root: Path) -> None:
    _pip("--target", str(root / "site"), *SITE)
    for folder, pins in OVERLAYS.items():
        _pip("--target", str(root / folder), *pins)


def install_deepspeed(root: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        "-d", tmp, DEEPSPEED], check=True)
        (sdist,) = Path(tmp).glob("deepspeed-*.tar.gz")
        with tarfile.open(sdist) as tar:
            tar.extractall(root / "deepspeed-src", filter="data")


def place_package(root: Path, source: Path, package: str, commit: str, *, folder: str = "src") -> None:
    """A repo's Python package (``moellava``, ``llava``) into ``root/folder``: from a checkout, or from a
    bare git folder at ``commit``."""
    dest = root / folder
    shutil.rmtree(dest / package, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    if (source / package).is_dir():
        shutil.copytree(source / package, dest / package)
        return
    archive = subprocess.run(["git", "--git-dir", str(source), "archive", commit, package],
                             check=True, capture_output=True).stdout
    with tempfile.NamedTemporaryFile(suffix=".tar") as fh:
        fh.write(archive)
        fh.flush()
        with tarfile.open(fh.name) as tar:
            tar.extractall(dest, filter="data")


def write_shim(root: Path) -> None:
    vit = root / "shim" / "timm" / "models"
    vit.mkdir(parents=True, exist_ok=True)
    (root / "shim" / "timm" / "__init__.py").write_text("")
    (vit / "__init__.py").write_text("")
    (vit / "vision_transformer.py").write_text("Block = None  # MoE-LLaVA's pool / qformer projectors only\n")


# what ConvLLaVA's unireplknet_encoder.py imports from timm (0.6.13) at the top, never called for a ConvNeXt
UNIREPLKNET_NAMES = ("trunc_normal_", "SelectAdaptivePool2d", "DropPath", "ConvMlp", "Mlp", "LayerNorm2d",
                     "LayerNorm", "create_conv2d", "get_act_layer", "make_divisible", "to_ntuple", "to_2tuple")


def write_convllava_shim(root: Path) -> None:
    models = root / "shim-convllava" / "timm" / "models"
    models.mkdir(parents=True, exist_ok=True)
    (root / "shim-convllava" / "timm" / "__init__.py").write_text("")
    (models / "__init__.py").write_text("")
    (models / "layers.py").write_text("".join(f"{n} = None\n" for n in UNIREPLKNET_NAMES))
    # its factories are decorated at import time: the decorator must hand each back
    (models / "registry.py").write_text("def register_model(fn):\n    return fn\n")


class EnvError(Exception):
    """DIR is not a build_env folder, or SRC holds no code of the repo asked for."""


def require_prepared(root: Path, overlay: str) -> None:
    """An add-on (internvl_env, sharegpt4v_env) needs the folder build_env made: ``overlay`` and DeepSpeed."""
    if not (root / overlay).is_dir() or not (root / "deepspeed-src").is_dir():
        raise EnvError(f"{root} was not prepared by build_env (no {overlay} / deepspeed-src): run "
                       f"`python -m tools.reference_code.build_env {root} --moellava SRC --llava SRC` first")


def replace_folder(root: Path, name: str, fill) -> None:
    """Build ``root/name`` beside it (``fill(tmp)``) and swap it in, so an interrupted run leaves the old
    folder or none."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        fill(tmp)
        old = root / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if (root / name).exists():
            (root / name).rename(old)
        tmp.rename(root / name)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def add_on_main(argv: list[str] | None, doc: str, flag: str, source_help: str, place, test: str) -> int:
    """The command line of an add-on: ``DIR --FLAG SRC``; ``place(DIR, SRC)``; exit 2 with the error's words."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("dir", type=Path, help="a folder build_env prepared")
    ap.add_argument(f"--{flag}", type=Path, required=True, help=source_help)
    args = ap.parse_args(argv)
    try:
        place(args.dir.resolve(), getattr(args, flag).resolve())
    except EnvError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"ready: VLMTRAIN_TEST_REFERENCE_ENV={args.dir.resolve()} pytest {test}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path, help="the folder to prepare")
    ap.add_argument("--moellava", type=Path, required=True,
                    help="a MoE-LLaVA checkout, or its bare git folder (github.com/PKU-YuanGroup/MoE-LLaVA)")
    ap.add_argument("--llava", type=Path, required=True,
                    help="a LLaVA checkout, or its bare git folder (github.com/haotian-liu/LLaVA)")
    ap.add_argument("--convllava", type=Path,
                    help="a ConvLLaVA checkout, or its bare git folder (github.com/alibaba/conv-llava); optional")
    args = ap.parse_args(argv)
    root = args.dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    place_package(root, args.moellava.resolve(), "moellava", MOELLAVA_COMMIT)
    place_package(root, args.llava.resolve(), "llava", LLAVA_COMMIT)
    if args.convllava:
        place_package(root, args.convllava.resolve(), "llava", CONVLLAVA_COMMIT, folder="src-convllava")
        write_convllava_shim(root)
    write_shim(root)
    install_deepspeed(root)
    install_site(root)
    print(f"ready: VLMTRAIN_TEST_REFERENCE_ENV={root} pytest tests/train/test_moellava_reference_code.py "
          "tests/train_data/test_llava_reference_code.py tests/train/test_convllava_reference_code.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
