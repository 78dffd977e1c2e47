"""The vision tower's image processor, on the backend the config names: PIL unless told otherwise.

Why the backend is pinned: transformers 5 gives most image processors two backends, PIL/NumPy and
torchvision, and ``AutoImageProcessor`` picks torchvision whenever it is importable. Their bicubic
resizes differ (torchvision antialiases and rounds differently), so without a pin the same config
feeds the model different pixels on a GPU machine that has torchvision than on one that has not.
LLaVA, MoE-LLaVA and ShareGPT4V trained with ``CLIPImageProcessor``'s PIL path, so ``pil`` is the
default everywhere; ``image_backend: torchvision`` is an opt-in for speed.

    processor = build_image_processor("openai/clip-vit-large-patch14-336", vision_cfg, backend="pil")
    backend_of(processor)   # "pil"
"""
from __future__ import annotations

import importlib.util
import logging
from typing import Any

log = logging.getLogger("vlmtrain.data")

BACKENDS = ("pil", "torchvision")
DEFAULT_BACKEND = "pil"


class ImageBackendError(ValueError):
    """The backend asked for cannot be built here (torchvision missing, or the processor has no such backend)."""


def torchvision_installed() -> bool:
    """Whether torchvision can be found (not imported: a broken install is found when the processor is built)."""
    return importlib.util.find_spec("torchvision") is not None


def backend_of(processor: Any) -> str:
    """``pil`` or ``torchvision`` for transformers' backend processors; the class name for anything else."""
    backend = getattr(processor, "backend", None)
    if isinstance(backend, str):
        return backend
    return type(processor).__name__


def describe(processor: Any) -> str:
    """One line for the run log: class, backend, output size."""
    crop = getattr(processor, "crop_size", None) or getattr(processor, "size", None)
    size = ""
    if crop is not None:
        h, w = _get(crop, "height"), _get(crop, "width")
        size = f", {w}x{h} px" if h and w else ""
    return f"{type(processor).__name__} ({backend_of(processor)} backend{size})"


def _get(d: Any, key: str) -> Any:
    return d.get(key) if isinstance(d, dict) else getattr(d, key, None)


def dry_run_line(backend: str, aspect: str) -> str:
    """What ``vlmtrain run --dry-run`` says about the images."""
    missing = backend == "torchvision" and not torchvision_installed()
    return (f"images: {aspect}, {backend} image-processor backend"
            + (" (torchvision is not installed here)" if missing else "")
            + (" (LLaVA's pixels)" if backend == "pil" else ""))


def check_backend(backend: str) -> None:
    """Raise ImageBackendError when ``backend`` cannot work on this machine."""
    if backend not in BACKENDS:
        raise ImageBackendError(f"image_backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "torchvision" and not torchvision_installed():
        raise ImageBackendError(
            "`image_backend: torchvision` but torchvision is not installed; install it beside your torch "
            "build, or use `image_backend: pil` (LLaVA's pixels, the default)")


def build_image_processor(vision_tower: str | None, vision_config: Any, *, backend: str = DEFAULT_BACKEND,
                          from_pretrained: bool = True) -> Any:
    """The tower's own processor (``from_pretrained``) or, failing that, CLIP / SigLIP defaults at the tower's size.

    Either way on ``backend``; a processor that comes out on another backend (a remote-code
    processor with one backend only) is refused rather than used silently.
    """
    check_backend(backend)
    import transformers

    processor = None
    if vision_tower and from_pretrained:
        try:
            processor = transformers.AutoImageProcessor.from_pretrained(vision_tower, backend=backend)
        except (OSError, ValueError):
            log.warning("no image processor with %s; using %s defaults at %d px", vision_tower,
                        "SigLIP" if vision_config.model_type == "siglip_vision_model" else "CLIP",
                        vision_config.image_size)
    if processor is None:
        processor = _from_tower_config(vision_config, backend)
    return require_backend(processor, backend, vision_tower)


def require_backend(processor: Any, backend: str, vision_tower: str | None = None) -> Any:
    """``processor`` if it runs on ``backend``; else an ImageBackendError rather than other pixels, silently."""
    got = backend_of(processor)
    if got != backend:
        raise ImageBackendError(
            f"the image processor of {vision_tower or 'the vision tower'} ({type(processor).__name__}) runs on "
            f"{got}, not on `image_backend: {backend}`")
    return processor


def processor_class(name: str, backend: str) -> type:
    """transformers 5 names a processor's PIL class ``<Name>Pil`` and its torchvision one ``<Name>``."""
    import transformers

    return getattr(transformers, name + "Pil") if backend == "pil" else getattr(transformers, name)


def _from_tower_config(vc: Any, backend: str) -> Any:
    """CLIP / SigLIP processors with the tower's image size (what their Hub repos ship, at that size)."""
    s = vc.image_size
    if vc.model_type == "siglip_vision_model":
        return processor_class("SiglipImageProcessor", backend)(size={"height": s, "width": s})
    return processor_class("CLIPImageProcessor", backend)(size={"shortest_edge": s}, crop_size={"height": s, "width": s})
