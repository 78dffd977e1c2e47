"""The throughput switches of a run config, where `vlmtrain run` meets them (docs/throughput.md).

``check`` before any weight is read (exit 2 on what cannot work here), ``data_args`` for the data side
(packing, its layout for the attention kernel, JPEG draft decoding), ``apply`` on the built model
(liger-kernel, then torch.compile). The work itself is in vlmtrain.data.packing,
vlmtrain.model.kernels and vlmtrain.train.compile.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlmtrain.config import TrainConfig


def check(cfg: TrainConfig) -> None:
    from vlmtrain.model.kernels import check_kernels
    from vlmtrain.train.compile import check_compile

    check_kernels(cfg)
    check_compile(cfg)


def data_args(cfg: TrainConfig, attn: str, model: nn.Module) -> dict[str, Any]:
    """DataArgs fields: flash-attn's varlen kernel takes the batch as one row; SDPA / eager rows are cut
    where their attention is worth it (vlmtrain.data.packing), by the model's FLOP counts."""
    from vlmtrain.train.mfu import flop_model

    weight = flop_model(model).attention_weight() if cfg.packing else 0.0
    return {"packing": cfg.packing, "packing_flat": attn == "flash_attention_2", "packing_attention_weight": weight,
            "image_decode": cfg.image_decode}


def apply(model: nn.Module, cfg: TrainConfig) -> None:
    from vlmtrain.model.kernels import apply_kernels
    from vlmtrain.train.compile import apply_compile

    apply_kernels(model, cfg.kernels)
    apply_compile(model, cfg.compile, cfg.compile_backend, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
