"""``compile: layers | model``: torch.compile for training, with a fallback to eager where it cannot run.

``layers`` compiles each decoder layer of the LLM on its own (regional compilation): the layers are
identical, so one graph is traced and reused, compile time stays short, and the graph breaks of the
rest of the forward (the image-feature scatter, the loss on labelled positions, the MoE routing's
host sync) stay outside the compiled code. It fuses what a decoder layer spends in small kernels
(norms, rotary embedding, activations, casts): on an H100 the benchmark went from 36.9% to 38.8% MFU
with it (bench/RESULTS.md). ``model`` compiles the whole model's forward (more graph breaks, longer
compile; for experiments).

``Module.compile()`` compiles in place: parameter names and checkpoints do not change.

Whether the backend can compile here is found out before training, by compiling and running a tiny
function forward and backward on the training device: inductor needs a C++ compiler on a CPU and
triton on a GPU. Where it cannot, the run says why and trains without compile (a warning, not an
error: the result is the same model, only slower).
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from vlmtrain.config import ConfigError, TrainConfig

log = logging.getLogger("vlmtrain")

COMPILE_MODES = ("none", "layers", "model")


def check_compile(cfg: TrainConfig) -> None:
    """The compile keys, before a model is built: a backend torch knows."""
    if cfg.compile == "none":
        return
    import torch._dynamo

    known = torch._dynamo.list_backends(exclude_tags=())
    if cfg.compile_backend not in known:
        raise ConfigError(f"`compile_backend` is {cfg.compile_backend!r}, which torch.compile does not know",
                          where=cfg._source or "config", hint=f"choose one of {', '.join(sorted(known))}")


def backend_problem(backend: str, device: torch.device) -> str | None:
    """Why ``backend`` cannot compile on ``device`` (the exception, one line), or None when it can."""
    import torch._dynamo

    def probe(x: torch.Tensor) -> torch.Tensor:
        return (torch.nn.functional.silu(x) * x).sum()

    try:
        x = torch.randn(8, 8, device=device, requires_grad=True)
        torch.compile(probe, backend=backend, fullgraph=True)(x).backward()
    except Exception as e:  # inductor raises many kinds: missing compiler, missing triton, unsupported device
        root = e  # dynamo wraps the backend's error (BackendCompilerFailed): say what the backend said
        while getattr(root, "inner_exception", None) is not None or root.__cause__ is not None:
            root = getattr(root, "inner_exception", None) or root.__cause__
        text = str(root).strip().splitlines()
        return f"{type(root).__name__}: {text[0] if text else ''}"[:300]
    finally:
        torch._dynamo.reset()  # the probe's compiled code is not needed again
    return None


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The LLM's decoder layers (a Llava model, a PEFT-wrapped one, a converted stage-3 one)."""
    for name, module in model.named_modules():
        if name.endswith("language_model.layers") and isinstance(module, nn.ModuleList):
            return list(module)
    raise ValueError("no language_model.layers in this model: cannot compile its decoder layers")


def apply_compile(model: nn.Module, mode: str, backend: str = "inductor", device: torch.device | None = None) -> str:
    """Compile ``model`` in place as ``mode`` asks; returns what was done ("off", "layers", "model", or
    "fallback: <why>" when the backend cannot compile here)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {COMPILE_MODES}, not {mode!r}")
    if mode == "none":
        return "off"
    if device is None:
        device = next(model.parameters()).device
    problem = backend_problem(backend, device)
    if problem is not None:
        log.warning("compile: %s: torch.compile with backend %r cannot compile on %s here (%s); training "
                    "without compile (the same model, slower). Set `compile: none` to silence this.",
                    mode, backend, device.type, problem)
        return f"fallback: {problem}"
    if mode == "layers":
        layers = decoder_layers(model)
        for layer in layers:
            layer.compile(backend=backend)
        log.info("compile: each of the %d decoder layers compiled (backend %s)", len(layers), backend)
    else:
        model.compile(backend=backend)
        log.info("compile: the whole model compiled (backend %s)", backend)
    return mode
