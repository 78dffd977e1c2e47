"""``kernels: liger``: liger-kernel's fused Triton kernels in the LLM (the optional ``[gpu]`` extra).

What is switched on:

- the fused linear cross-entropy, for every LLM: vlmtrain's loss already runs the LM head on the
  labelled positions only (vlmtrain.model.loss); with liger the head's matmul and the
  cross-entropy run chunk by chunk in one autograd function, so no logits tensor is kept for the
  backward pass (fp32 accumulation of the head's gradient);
- for the LLM types liger-kernel has patches for (its ``MODEL_TYPE_TO_APPLY_LIGER_FN``: llama,
  mistral, qwen2, phi3, gemma, ...): its RMSNorm, rotary embedding and SwiGLU kernels, through
  liger's own ``apply_liger_kernel_to_<type>(model=...)`` on the LLM. Its cross-entropy patches stay
  off (they replace transformers' loss, which vlmtrain does not use). Other LLM types (StableLM,
  phi-2) get the fused cross-entropy only, and the log says so.
- stage 3: the MoE blocks stand where the FFNs were, so liger's SwiGLU patch (which rebinds each
  layer's ``mlp.forward``) is not applied to the layers; the SwiGLU kernel is bound to each
  SwiGLU FFN that is left dense and to each expert instead.

liger-kernel is Triton code and needs a CUDA GPU: ``check_kernels`` refuses it (exit 2) before a
model is built where there is none, or where liger-kernel is not installed.
"""
from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
import types

import torch
from torch import nn

from vlmtrain.config import ConfigError, TrainConfig

log = logging.getLogger("vlmtrain")

KERNELS = ("none", "liger")
# The kernel switches liger's per-architecture functions take (those a function lacks are left out).
LIGER_LAYER_KERNELS = {"rope": True, "rms_norm": True, "swiglu": True, "geglu": True, "layer_norm": True,
                       "cross_entropy": False, "fused_linear_cross_entropy": False}


def check_kernels(cfg: TrainConfig) -> None:
    """``kernels`` against this machine, before a model is built."""
    if cfg.kernels == "none":
        return
    where = cfg._source or "config"
    if not torch.cuda.is_available():
        raise ConfigError("`kernels: liger` needs a CUDA GPU: liger-kernel's kernels are Triton code, and this "
                          "machine has no GPU that torch can use", where=where,
                          hint="set `kernels: none` (the default) to train here without them")
    missing = [m for m in ("liger_kernel", "triton") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"`kernels: liger` needs {' and '.join(missing)}, not installed here", where=where,
                          hint="pip install '.[gpu]' (liger-kernel), or set `kernels: none`")


def _llava(model: nn.Module) -> nn.Module:
    """The Llava model inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def apply_kernels(model: nn.Module, kind: str) -> list[str]:
    """Switch on ``kind``'s kernels in ``model`` (in place); returns what was switched on."""
    if kind not in KERNELS:
        raise ValueError(f"kernels must be one of {KERNELS}, not {kind!r}")
    if kind == "none":
        return []
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    from vlmtrain.model.moe import SparseMoeBlock, moe_blocks

    llava = _llava(model)
    llm = llava.model.language_model
    model_type = llava.config.text_config.model_type
    done = []
    patch = MODEL_TYPE_TO_APPLY_LIGER_FN.get(model_type)
    moe = bool(moe_blocks(llava))
    if patch is not None:
        params = inspect.signature(patch).parameters
        switches = {k: v for k, v in LIGER_LAYER_KERNELS.items() if k in params}
        if moe and "swiglu" in switches:
            switches["swiglu"] = False
        patch(model=llm, **switches)
        done += [k for k, v in switches.items() if v]
        if moe:
            ffns = [m for layer in llm.layers for m in ([layer.mlp] if not isinstance(layer.mlp, SparseMoeBlock)
                                                        else list(layer.mlp.experts))]
            if _bind_swiglu(ffns, llava.config.text_config):
                done.append("swiglu (dense FFNs and experts)")
    else:
        log.warning("kernels: liger-kernel has no kernels for %r layers; only its fused linear cross-entropy is used",
                    model_type)
    # The loss on labelled positions (vlmtrain.model.loss) calls this instead of the head + cross-entropy.
    llava.fused_lm_loss = functools.partial(liger_fused_linear_cross_entropy, reduction="sum",
                                            accum_dtype=torch.float32)
    done.append("fused_linear_cross_entropy")
    log.info("kernels: liger on the %s LLM: %s", model_type, ", ".join(done))
    return done


def _bind_swiglu(ffns: list[nn.Module], text_config) -> bool:
    """Bind liger's SwiGLU forward to FFNs of the gate/up/down SiLU shape; False where they are not."""
    from liger_kernel.transformers.swiglu import LigerSwiGLUMLP

    if getattr(text_config, "hidden_act", None) not in ("silu", "swish"):
        return False
    if not all(hasattr(m, "gate_proj") and hasattr(m, "up_proj") and hasattr(m, "down_proj") for m in ffns):
        return False
    for m in ffns:
        m.forward = types.MethodType(LigerSwiGLUMLP.forward, m)
    return True
