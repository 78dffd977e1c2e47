"""A stand-in torchvision package, so the image-backend tests run where the real one cannot be installed.

PyPI's torchvision does not import beside this machine's torch 2.13.0 CPU wheel. What transformers
needs to believe torchvision is there: a findable ``torchvision`` package with distribution
metadata (its version gates the backend choice), and the names its modules import at load time
(``transforms.InterpolationMode``, ``transforms.functional.pil_to_tensor``, ``transforms.v2.functional``).
Any real use of it (a resize, a tensor conversion) raises, so a processor that ends up on the
torchvision backend cannot go unnoticed.
"""
from __future__ import annotations

from pathlib import Path

VERSION = "0.29.1"

_TRAP = '''
class FakeTorchvisionUsed(RuntimeError):
    pass


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise FakeTorchvisionUsed(f"the fake torchvision's {__name__}.{name} was used: a processor ran on torchvision")
'''

FILES = {
    "torchvision/__init__.py": f'__version__ = "{VERSION}"\n',
    "torchvision/transforms/__init__.py": (
        "import enum\n\n\n"
        "class InterpolationMode(enum.Enum):\n"
        + "".join(f'    {m} = "{m.lower()}"\n' for m in
                  ("NEAREST", "NEAREST_EXACT", "BOX", "BILINEAR", "HAMMING", "BICUBIC", "LANCZOS"))),
    "torchvision/transforms/functional.py": _TRAP + "\n\ndef pil_to_tensor(*a, **k):\n"
                                            "    raise FakeTorchvisionUsed('pil_to_tensor')\n",
    "torchvision/transforms/v2/__init__.py": "from . import functional\n",
    "torchvision/transforms/v2/functional.py": _TRAP,
    "torchvision/io.py": _TRAP,
    f"torchvision-{VERSION}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: torchvision\nVersion: {VERSION}\n",
    f"torchvision-{VERSION}.dist-info/top_level.txt": "torchvision\n",
}


def write_fake_torchvision(root: Path) -> Path:
    """Write the package under ``root`` (put ``root`` on PYTHONPATH) and return ``root``."""
    for rel, text in FILES.items():
        p = Path(root) / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return Path(root)
