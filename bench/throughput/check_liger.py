"""`kernels: liger` against the eager path on a GPU: the loss and the gradients of one training step.

Two LLM shapes behind CLIP-L/14-336, cut to 2 decoder layers (the kernels are per layer): Vicuna-7B
(llama: liger's RMSNorm, RoPE and SwiGLU kernels + the fused linear cross-entropy) and
StableLM-2-1.6B (liger has no StableLM patch: the fused linear cross-entropy only). Random weights
in bf16, a packed batch of synthetic samples (vlmtrain's PackingCollator), one forward + backward
eager, then the same after vlmtrain.model.kernels.apply_kernels(model, "liger"). Prints one JSON
line per shape: |loss difference|, and over the trained parameters the largest
||g_liger - g_eager|| / ||g_eager||.

    python -m bench.throughput.check_liger            # on a GPU with liger-kernel
    python -m bench.throughput.check_liger --cpu      # this script's own path on a CPU, liger left out
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def check(llm: str, device: str = "cuda") -> dict:
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
    built = build_model(cfg, dtype=torch.bfloat16 if cuda else torch.float32, on_cuda=cuda, device=device)
    model = built.model.to(device)
    apply_freeze(model, cfg.frozen())
    model.train()
    args = type("A", (), {"batch_size": 6, "seq_len": 1024, "ragged": True, "packing": True, "pack_length": 2048})()
    batch, _ = synthetic_batch(args, text["vocab_size"], built.image_token_id, built.tokens_per_image, 336,
                               torch.device(device), np.random.default_rng(0), flop_model(model).attention_weight())
    batch["pixel_values"] = batch["pixel_values"].to(next(model.parameters()).dtype)

    def step():
        model.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        return float(loss), {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}

    loss_e, grads_e = step()
    done = apply_kernels(model, "liger") if cuda else ["(none: CPU smoke run)"]
    loss_l, grads_l = step()
    rel = {n: float((grads_l[n] - g).norm() / g.norm().clamp(min=1e-30)) for n, g in grads_e.items()}
    worst = max(rel, key=rel.get)
    return {"llm": llm, "kernels": done, "tokens": int(batch["input_ids"].numel()), "loss_eager": loss_e,
            "loss_liger": loss_l, "loss_abs_diff": abs(loss_l - loss_e), "grad_rel_diff_max": rel[worst],
            "grad_rel_diff_max_param": worst, "grad_rel_diff_median": float(np.median(list(rel.values()))),
            "grads_compared": len(rel)}


if __name__ == "__main__":
    cpu = "--cpu" in sys.argv
    for name in [a for a in sys.argv[1:] if not a.startswith("--")] or ["vicuna-7b", "stablelm-1.6b"]:
        print(json.dumps(check(name, "cpu" if cpu else "cuda")), flush=True)
