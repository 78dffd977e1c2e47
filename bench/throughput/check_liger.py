"""`kernels: liger` against the eager path on a GPU: the loss and the gradients of one training step.

Two LLM shapes behind CLIP-L/14-336, cut to 2 decoder layers (the kernels are per layer): Vicuna-7B
(llama: liger's RMSNorm, RoPE and SwiGLU kernels + the fused linear cross-entropy) and
StableLM-2-1.6B (liger has no StableLM patch: the fused linear cross-entropy only). Random weights
in bf16, a packed batch of synthetic samples (vlmtrain's PackingCollator), one forward + backward
eager, then the same after vlmtrain.model.kernels.apply_kernels(model, "liger"). Prints one JSON
line per shape: |loss difference|, and over the trained parameters the largest
||g_liger - g_eager|| / ||g_eager||.

With ``--fp32-ref`` the same weights first run one step in fp32 (eager), and both bf16 steps are also
compared with it: if liger's distance from fp32 is no larger than eager bf16's, the liger-vs-eager
difference is bf16 rounding, not a kernel error.

    python -m bench.throughput.check_liger            # on a GPU with liger-kernel
    python -m bench.throughput.check_liger --fp32-ref # and both against an fp32 step
    python -m bench.throughput.check_liger --cpu      # this script's own path on a CPU, liger left out
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def check(llm: str, device: str = "cuda", fp32_ref: bool = False) -> dict:
    import numpy as np
    import torch

    from bench.train_throughput import LLMS, VISION, synthetic_batch
    from vlmtrain.config import load_config
    from vlmtrain.model.build import apply_freeze, build_model
    from vlmtrain.model.kernels import apply_kernels
    from vlmtrain.train.mfu import flop_model

    text = json.loads((REPO / "configs" / LLMS[llm]).read_text())
    text["num_hidden_layers"] = 2
    cfg = load_config(None, raw={"stage": 2, "random_init": True, "tokenizer_train_vocab_size": 64,
                                 "text_config": text, "vision_config": VISION["clip-l-336"],
                                 "attn_implementation": "sdpa", "mm_vision_select_layer": -2})
    torch.manual_seed(0)
    cuda = device == "cuda"
    if not cuda:  # the CPU smoke run: a narrower model, fp32
        text.update(hidden_size=256, intermediate_size=688, num_attention_heads=4, num_key_value_heads=4,
                    vocab_size=4096)
    # with an fp32 reference the weights are made in fp32 and rounded to bf16 after its step
    built = build_model(cfg, dtype=torch.bfloat16 if cuda and not fp32_ref else torch.float32, on_cuda=cuda,
                        device=device)
    model = built.model.to(device)
    apply_freeze(model, cfg.frozen())
    model.train()
    args = type("A", (), {"batch_size": 6, "seq_len": 1024, "ragged": True, "packing": True, "pack_length": 2048})()
    batch, _ = synthetic_batch(args, text["vocab_size"], built.image_token_id, built.tokens_per_image, 336,
                               torch.device(device), np.random.default_rng(0), flop_model(model).attention_weight())

    def step():
        batch["pixel_values"] = batch["pixel_values"].to(next(model.parameters()).dtype)
        model.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        return float(loss), {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}

    ref = None
    if fp32_ref:
        ref = step()
        if cuda:
            model.to(torch.bfloat16)
    loss_e, grads_e = step()
    done = apply_kernels(model, "liger") if cuda else ["(none: CPU smoke run)"]
    loss_l, grads_l = step()
    out = {"llm": llm, "kernels": done, "tokens": int(batch["input_ids"].numel()), "loss_eager": loss_e,
           "loss_liger": loss_l, "loss_abs_diff": abs(loss_l - loss_e), **_grad_diff(grads_l, grads_e, "")}
    if ref is not None:
        out.update(loss_fp32=ref[0], **_grad_diff(grads_e, ref[1], "eager_vs_fp32_"),
                   **_grad_diff(grads_l, ref[1], "liger_vs_fp32_"))
    return out


def _grad_diff(grads: dict, base: dict, prefix: str) -> dict:
    """Over the parameters both have: the largest and the median ||g - g_base|| / ||g_base||."""
    import numpy as np

    rel = {n: float((grads[n] - g).norm() / g.norm().clamp(min=1e-30)) for n, g in base.items()}
    worst = max(rel, key=rel.get)
    return {f"{prefix}grad_rel_diff_max": rel[worst], f"{prefix}grad_rel_diff_max_param": worst,
            f"{prefix}grad_rel_diff_median": float(np.median(list(rel.values()))), f"{prefix}grads_compared": len(rel)}


if __name__ == "__main__":
    cpu = "--cpu" in sys.argv
    for name in [a for a in sys.argv[1:] if not a.startswith("--")] or ["vicuna-7b", "stablelm-1.6b"]:
        print(json.dumps(check(name, "cpu" if cpu else "cuda", fp32_ref="--fp32-ref" in sys.argv)), flush=True)
