"""Which GEMM kernels the LM head gets, by row count: does cuBLAS leave Hopper's kernels for some shapes?

The 1.6B profiles (bench/RESULTS.md, issue 18) show three legacy ``cutlass_75_tensorop_bf16_s1688gemm``
kernels, one call each per step, at ~120 TFLOP/s: the LM head's forward, input-gradient and
weight-gradient GEMMs over the step's labelled rows (a few thousand, any number) x 100,352 columns.
This times the three GEMMs as vlmtrain's loss runs them (``F.linear`` on the gathered labelled rows,
bf16, autograd) for row counts that are and are not multiples of 8 / 64 / 128, and names the kernel each
ran on, so the next GPU session can tell whether padding the rows (cheap: zero rows, no label) would
move the head onto the fast kernels.

    python -m bench.throughput.lm_head_gemm                   # StableLM-1.6B's head: 2048 x 100,352
    python -m bench.throughput.lm_head_gemm --hidden 4096 --vocab 32000   # Vicuna-7B's
"""
from __future__ import annotations

import argparse
import json
import sys

ROWS = (4000, 4001, 4093, 4096, 4104, 8192, 8191, 16384)


def kernels_of(fn, torch) -> list[str]:
    """The device kernels one call of ``fn`` launches, longest first."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    events.sort(key=lambda e: -e.self_device_time_total)
    return [e.key[:90] for e in events[:3]]


def timed(fn, torch, repeat: int = 10) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeat


def row(m: int, hidden: int, vocab: int, torch) -> dict:
    import torch.nn.functional as F

    g = torch.Generator(device="cuda").manual_seed(m)
    h = torch.randn(m, hidden, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    w = (torch.randn(vocab, hidden, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02).requires_grad_()
    dy = torch.randn(m, vocab, device="cuda", dtype=torch.bfloat16, generator=g)
    flops = 2 * m * hidden * vocab
    ops = {"forward": lambda: F.linear(h, w),
           "grad_input": lambda: dy @ w,               # what autograd runs for d(loss)/dh
           "grad_weight": lambda: dy.t() @ h}         # and for d(loss)/dW
    out = {"rows": m, "hidden": hidden, "vocab": vocab}
    for name, fn in ops.items():
        with torch.no_grad():
            ms = timed(fn, torch)
            out[name] = {"ms": round(ms, 3), "tflops": round(flops / ms / 1e9, 1), "kernels": kernels_of(fn, torch)}
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=100352)
    ap.add_argument("--rows", default=",".join(map(str, ROWS)))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    for m in (int(x) for x in args.rows.split(",")):
        print(json.dumps(row(m, args.hidden, args.vocab, torch)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
