"""The vision-to-LLM projector, and ``mm_projector.bin`` in the reference LLaVA repo's key naming.

Types (as LLaVA's ``multimodal_projector/builder.py``):

- ``linear``       ``Linear(mm_hidden, hidden)``                       keys ``weight``, ``bias``
- ``mlpNx_gelu``   ``Linear(mm_hidden, hidden)`` + ``[GELU, Linear(hidden, hidden)] * (N-1)``
                   keys ``0.*, 2.*, 4.*, ...``
- ``identity``     no parameters (mm_hidden must equal hidden)

``mlp2x_gelu`` is exactly transformers' ``LlavaMultiModalProjector`` (``linear_1``, GELU, ``linear_2``),
so those models stay stock ``LlavaForConditionalGeneration`` checkpoints; ``linear`` is a bare Linear
(:class:`LinearProjector`), as LLaVA's and MoE-LLaVA's builders make it (``nn.Linear``: its keys have no
index); the other types use :class:`SequentialProjector`, whose keys are LLaVA's indices.

The reference saves the projector alone as ``{"model.mm_projector.0.weight": ..., ...}`` and loads it
by keeping what follows ``"mm_projector."`` (``get_w`` in ``llava_arch.py``). :func:`to_reference`
and :func:`from_reference` translate both ways.
"""
from __future__ import annotations

import pickle
import re

import torch
from torch import nn

REFERENCE_PREFIX = "model.mm_projector."
_MLP = re.compile(r"^mlp(\d+)x_gelu$")


class SequentialProjector(nn.Sequential):
    """LLaVA's projector layout, for types transformers' Llava has no module for."""


class LinearProjector(nn.Linear):
    """LLaVA's ``linear`` projector: one Linear, keys ``weight`` / ``bias`` (``model.mm_projector.weight``)."""


def build_sequential(projector_type: str, mm_hidden: int, hidden: int) -> nn.Module:
    if projector_type == "linear":
        return LinearProjector(mm_hidden, hidden)
    if projector_type == "identity":
        if mm_hidden != hidden:
            raise ValueError(f"identity projector needs the vision width ({mm_hidden}) to equal the LLM width ({hidden})")
        return SequentialProjector(nn.Identity())
    m = _MLP.match(projector_type)
    if not m:
        raise ValueError(f"unknown projector type {projector_type!r}")
    layers: list[nn.Module] = [nn.Linear(mm_hidden, hidden)]
    for _ in range(int(m.group(1)) - 1):
        layers += [nn.GELU(), nn.Linear(hidden, hidden)]
    return SequentialProjector(*layers)


def _stock_to_index(key: str) -> str:
    """transformers' LlavaMultiModalProjector keys -> LLaVA's Sequential indices."""
    return key.replace("linear_1.", "0.").replace("linear_2.", "2.")


def _index_to_stock(key: str) -> str:
    return re.sub(r"^0\.", "linear_1.", re.sub(r"^2\.", "linear_2.", key))


def projector_module(model) -> nn.Module:
    """The projector inside a (possibly peft-wrapped) Llava model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    proj = base.model.multi_modal_projector
    # peft's modules_to_save wraps the projector; the trained copy is the active adapter's.
    if hasattr(proj, "modules_to_save") and hasattr(proj, "active_adapter"):
        active = proj.active_adapter
        active = active[0] if isinstance(active, (list, tuple)) else active
        proj = proj.modules_to_save[active]
    return proj


def to_reference(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A projector's own state dict -> ``model.mm_projector.<i>.*`` (what LLaVA's stage 1 writes)."""
    return {REFERENCE_PREFIX + _stock_to_index(k): v.detach().cpu().clone() for k, v in state.items()}


def from_reference(weights: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """Keys after ``mm_projector.`` (LLaVA's ``get_w``), renamed for ``module`` (stock or Sequential)."""
    keyword = "mm_projector."
    stripped = {k.split(keyword, 1)[1]: v for k, v in weights.items() if keyword in k}
    if isinstance(module, LinearProjector):  # (vlmtrain before 2026-12-03 wrote a linear one as 0.*)
        return {re.sub(r"^0\.", "", k): v for k, v in stripped.items()}
    if isinstance(module, SequentialProjector):
        return stripped
    return {_index_to_stock(k): v for k, v in stripped.items()}


def write_mm_projector(own_state: dict[str, torch.Tensor], path) -> dict[str, torch.Tensor]:
    """Write a projector state dict (its own key names) as ``mm_projector.bin`` with the reference's names."""
    from vlmdata.atomic import atomic_open

    state = to_reference(own_state)
    with atomic_open(path, "wb") as fh:
        torch.save(state, fh)
    return state


def save_mm_projector(model, path) -> dict[str, torch.Tensor]:
    return write_mm_projector(projector_module(model).state_dict(), path)


def read_mm_projector(path) -> dict[str, torch.Tensor]:
    """A stage-1 ``mm_projector.bin``'s tensors; ValueError when the file is not such a file."""
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path} is not a stage-1 mm_projector.bin (torch.load: {first[:200]})") from None
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ValueError(f"{path} is not a stage-1 mm_projector.bin (it holds a {type(weights).__name__}, "
                         "not a dict of tensors)")
    return weights


def load_mm_projector(model, path_or_weights) -> list[str]:
    """Load a stage-1 ``mm_projector.bin`` (ours or the reference repo's; a path, or what
    ``read_mm_projector`` read from it) into the model's projector."""
    path = path_or_weights if not isinstance(path_or_weights, dict) else "the stage-1 projector"
    weights = path_or_weights if isinstance(path_or_weights, dict) else read_mm_projector(path_or_weights)
    module = projector_module(model)
    state = from_reference(weights, module)
    expected = set(module.state_dict())
    if set(state) != expected:
        raise ValueError(f"{path}: projector keys {sorted(state)} do not match this model's {sorted(expected)} "
                         f"(check mm_projector_type)")
    for k, v in state.items():
        want = module.state_dict()[k].shape
        if tuple(v.shape) != tuple(want):
            raise ValueError(f"{path}: {k} has shape {tuple(v.shape)}, this model needs {tuple(want)} "
                             f"(vision width / LLM width differ from the stage-1 run)")
    module.load_state_dict(state)
    return sorted(state)
