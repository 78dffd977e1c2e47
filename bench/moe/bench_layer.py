"""One MoE layer, forward + backward: vlmtrain's SparseMoeBlock beside DeepSpeed's MoE layer (MoE-LLaVA's).

Both layers hold the same weights (experts copied from one FFN, the router's weights copied across) and
take turns on the same input in one process, with the same RNG state before each call, so they route
the same tokens; the script checks that the outputs agree before it times anything. Each timed call is
forward + backward of ``out.sum() + aux_loss``; medians over ``--repeat`` calls, and every call kept.

    python -m bench.moe.bench_layer                         # CPU: a phi-shaped FFN scaled to 1/5 width
    python -m bench.moe.bench_layer --device cuda --shape phi-2 --dtype bf16 --tokens 16384

Shapes: ``phi-2`` (hidden 2560, FFN 10240, GELU MLP with biases), ``stablelm`` (2048, 5632, SwiGLU),
``small`` (512, 2048, GELU; the CPU default). 4 experts, top-2, capacity factor 1.5 (MoE-LLaVA's).
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SHAPES = {"small": (512, 2048, "gelu"), "phi-2": (2560, 10240, "gelu"), "stablelm": (2048, 5632, "swiglu")}


class GeluMlp(nn.Module):
    def __init__(self, d: int, f: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, f), nn.Linear(f, d)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x), approximate="tanh"))


class SwiGluMlp(nn.Module):
    def __init__(self, d: int, f: int) -> None:
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


def build(args):
    from deepspeed.moe.layer import MoE

    from vlmtrain.model.moe import MoeSettings, SparseMoeBlock

    d, f, kind = SHAPES[args.shape]
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    dense = (GeluMlp if kind == "gelu" else SwiGluMlp)(d, f)
    ds = MoE(d, expert=copy.deepcopy(dense), num_experts=args.experts, ep_size=1, k=args.top_k,
             capacity_factor=args.capacity_factor, eval_capacity_factor=2.0, min_capacity=0)
    ours = SparseMoeBlock(d, copy.deepcopy(dense), MoeSettings(num_experts=args.experts, top_k=args.top_k,
                                                               capacity_factor=args.capacity_factor))
    ours.router.weight.data.copy_(ds.deepspeed_moe.gate.wg.weight.data)
    device = torch.device(args.device)
    return ds.to(device, dtype).train(), ours.to(device, dtype).train(), d, dtype, device


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small")
    ap.add_argument("--tokens", type=int, default=4096, help="tokens per call (batch x sequence)")
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--capacity-factor", type=float, default=1.5)
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    ds, ours, d, dtype, device = build(args)
    x = torch.randn(args.tokens // 512 or 1, min(512, args.tokens), d, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def call(layer, which: str) -> tuple[float, torch.Tensor]:
        inp = x.clone().requires_grad_(True)
        torch.manual_seed(1)
        sync()
        t0 = time.perf_counter()
        if which == "ds":
            out, aux, _ = layer(inp)
        else:
            out = layer(inp)
            aux = layer.last.aux_loss
        (out.float().sum() + aux).backward()
        sync()
        return time.perf_counter() - t0, out.detach()

    _, a = call(ds, "ds")
    _, b = call(ours, "ours")
    diff = (a.float() - b.float()).abs().max().item()
    scale = a.float().abs().max().item()
    assert diff <= 2e-2 * max(scale, 1.0), f"the layers disagree: max |diff| {diff} (max |out| {scale})"
    for _ in range(args.warmup):
        call(ds, "ds"), call(ours, "ours")
    runs = {"deepspeed": [], "vlmtrain": []}
    for _ in range(args.repeat):  # alternate, so load drifts hit both alike
        runs["deepspeed"].append(call(ds, "ds")[0])
        runs["vlmtrain"].append(call(ours, "ours")[0])
    med = {k: statistics.median(v) for k, v in runs.items()}
    row = {"shape": args.shape, "tokens": x.shape[0] * x.shape[1], "experts": args.experts, "top_k": args.top_k,
           "capacity_factor": args.capacity_factor, "dtype": args.dtype, "device": args.device,
           "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
           "threads": torch.get_num_threads(), "max_abs_diff": diff, "median_s": med,
           "ratio_vlmtrain_over_deepspeed": med["vlmtrain"] / med["deepspeed"], "runs_s": runs,
           "torch": torch.__version__, "deepspeed": __import__("deepspeed").__version__}
    print(f"{args.shape} x{row['tokens']} tokens {args.dtype} on {row['device_name']}: deepspeed {med['deepspeed']*1e3:.1f} ms, "
          f"vlmtrain {med['vlmtrain']*1e3:.1f} ms, ratio {row['ratio_vlmtrain_over_deepspeed']:.2f} (max |diff| {diff:.2e})")
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
