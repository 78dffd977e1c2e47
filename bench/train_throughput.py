"""GPU training throughput of a LLaVA-shaped model: tokens/s and MFU for stage 2 (or stage 3, MoE).

The model is vlmtrain's own build (transformers' Llava) with random weights, from config values
only (configs/model_configs/*.json): CLIP-L/14-336 + a ~1.6B LLM (StableLM-2-1.6B shape by default),
no download. Stage 2: tower frozen, projector + LLM trained, AdamW. Batches are synthetic: each
sample is a system prompt, 576 image tokens, then text, so the LLM sees realistic sequence lengths.
FLOPs and MFU use vlmtrain.train.mfu (model FLOPs of true tokens; recompute and padding not
counted) against the device's dense bf16 peak (H100 SXM 989 TFLOP/s).

    python bench/train_throughput.py                        # 1.6B, batch 8, 1024 tokens/sample
    python bench/train_throughput.py --llm vicuna-7b --batch-size 4 --grad-ckpt
    python bench/train_throughput.py --sweep --json out.json  # the grid recorded in bench/RESULTS.md
    python bench/train_throughput.py --tiny --device cpu     # smoke test, seconds on a CPU
    python bench/train_throughput.py --stage 3 --llm phi-2    # MoE-LLaVA stage 3: finetune_moe.sh's MoE settings
    python bench/train_throughput.py --sweep --only moe       # stage 2 beside stage 3 on the same shapes

Stage 3 converts the model as ``vlmtrain run`` does (vlmtrain.train.stage3.prepare_moe: 4 experts, top-2,
capacity factor 1.5, every other layer, MoE-LLaVA's train_modules) and adds the routers' aux loss; its
FLOPs count the top-2 of 4 expert copies a token runs through.

Throughput switches (issue 18), each through vlmtrain's own code: ``--packing`` lays each batch out with
``vlmtrain.data.PackingCollator`` (rows of at most ``--pack-length`` tokens, attention per sample;
with ``--ragged`` lengths, against the padded ``Collator`` layout of the same samples);
``--compile-mode layers|model`` is ``vlmtrain.train.compile.apply_compile`` (``--compile-layers`` /
``--compile`` are the same as layers / model); ``--liger`` is ``vlmtrain.model.kernels.apply_kernels``
(liger-kernel: needs a GPU).

    python bench/train_throughput.py --ragged --packing --compile-mode layers --liger

Precision: ``amp`` keeps fp32 weights and runs bf16 autocast (what ``vlmtrain run`` does on one
GPU without DeepSpeed); ``bf16`` keeps weights and AdamW states in bf16 (no fp32 master copy), the
lean option. Attention: flash_attention_2 when flash_attn is importable, else sdpa; the table says
which ran.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LLMS = {
    "stablelm-1.6b": "model_configs/stablelm-2-1_6b.json",
    "qwen-1.8b": "model_configs/qwen-1_8b.json",
    "phi-2": "model_configs/phi-2.json",
    "vicuna-7b": "model_configs/vicuna-7b-v1.5.json",
    "vicuna-13b": "model_configs/vicuna-13b-v1.5.json",
}
VISION = {
    "clip-l-336": "model_configs/clip-vit-large-patch14-336.json",
    "siglip-384": "model_configs/siglip-so400m-patch14-384.json",
}
TINY_TEXT = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512}
TINY_VISION = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 2, "patch_size": 8, "image_size": 32}
SYSTEM_PROMPT_TOKENS = 36  # vicuna_v1's system prompt + "USER: " before the image


def make_config(args):
    from vlmtrain.config import load_config

    raw = {
        # no tokenizer is used (ids are synthetic); the key only satisfies the config's "has a tokenizer" check
        "stage": args.stage, "random_init": True, "tokenizer_train_vocab_size": 64,
        "text_config": TINY_TEXT if args.tiny else LLMS[args.llm],
        "vision_config": TINY_VISION if args.tiny else VISION[args.vision],
        "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
        "attn_implementation": args.attn, "gradient_checkpointing": args.grad_ckpt,
    }
    if args.stage == 3:  # scripts/v1/*/finetune_moe.sh
        raw.update(num_experts=4, top_k_experts=2, capacity_factor=1.5, moe_mode="sparse", router_aux_loss_coef=0.01)
    return load_config(None, raw=raw)


def synthetic_items(args, vocab: int, image_token_id: int, per_image: int, image_size: int, rng):
    """Samples = [BOS, system, image tokens, text]; labels on the text after the first question."""
    import torch

    B, L = args.batch_size, args.seq_len
    lo = min(L, max(per_image + SYSTEM_PROMPT_TOKENS + 16, L // 3))
    lens = [L] * B if not args.ragged else [int(rng.integers(lo, L + 1)) for _ in range(B)]
    items = []
    for i, n in enumerate(lens):
        text = torch.from_numpy(rng.integers(3, image_token_id, size=n)).long()
        text[0] = 1
        start = 1 + SYSTEM_PROMPT_TOKENS
        text[start:start + per_image] = image_token_id
        labels = torch.full_like(text, -100)
        answer_from = start + per_image + 24  # the first question is not trained
        labels[answer_from:n] = text[answer_from:n]
        items.append({"input_ids": text, "labels": labels, "id": str(i),
                      "pixel_values": torch.randn(1, 3, image_size, image_size)})
    return items


def synthetic_batch(args, vocab: int, image_token_id: int, per_image: int, image_size: int, device, rng,
                    attention_weight: float = 0.0):
    """A batch laid out by vlmtrain's collators: right-padded (``Collator``) or packed (``PackingCollator``)."""
    from vlmtrain.data import Collator, PackingCollator, pop_batch_meta

    items = synthetic_items(args, vocab, image_token_id, per_image, image_size, rng)
    collate = (PackingCollator(0, args.pack_length or args.seq_len, attention_weight=attention_weight)
               if args.packing else Collator(0))
    batch = collate(items)
    meta = pop_batch_meta(batch)
    lens = meta.get("sample_lengths") or [len(it["input_ids"]) for it in items]
    return {k: v.to(device) for k, v in batch.items()}, lens


def run_one(args) -> dict:
    import numpy as np
    import torch

    from vlmtrain.model.build import apply_freeze, build_model, param_counts
    from vlmtrain.train.mfu import device_name, flop_model, mfu, peak_flops

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    cfg = make_config(args)
    weights_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    t0 = time.perf_counter()
    built = build_model(cfg, dtype=weights_dtype, on_cuda=cuda, device=args.device)
    model = built.model.to(device)
    apply_freeze(model, cfg.frozen())
    aux = None
    if args.stage == 3:
        from vlmtrain.train.stage3 import aux_loss, prepare_moe

        prepare_moe(model, cfg)
        aux = aux_loss
    if args.precision == "amp":
        model.model.vision_tower.to(torch.bfloat16)  # frozen: no master copy needed
    if args.grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    build_s = time.perf_counter() - t0
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-5, weight_decay=0.0, fused=cuda)
    fm = flop_model(model)
    kernels = []
    if args.liger:
        from vlmtrain.model.kernels import apply_kernels

        kernels = apply_kernels(model, "liger")
    compiled = "off"
    if args.compile_mode != "none":  # layers: regional compilation, each decoder layer on its own
        from vlmtrain.train.compile import apply_compile

        compiled = apply_compile(model, args.compile_mode, device=device)
    counts = param_counts(model)
    vc = model.config.vision_config
    rng = np.random.default_rng(0)
    batches = [synthetic_batch(args, model.config.text_config.vocab_size, built.image_token_id, built.tokens_per_image,
                               vc.image_size, device, rng, fm.attention_weight()) for _ in range(4)]
    positions = [b["input_ids"].numel() for b, _ in batches]
    if compiled != "off":  # every batch shape compiled before the clock starts (packed shapes vary)
        args.warmup = max(args.warmup, len(batches))
    pixel_dtype = torch.bfloat16
    supervised = [None if args.stock_loss else int((b["labels"][:, 1:] != -100).sum()) for b, _ in batches]
    from transformers import LlavaForConditionalGeneration

    def step(batch):
        inputs = dict(batch)
        inputs["pixel_values"] = inputs["pixel_values"].to(pixel_dtype)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "amp"):
            if args.stock_loss:  # transformers' own forward: logits at every position, then the loss
                loss = LlavaForConditionalGeneration.forward(model, **inputs).loss
            else:
                loss = model(**inputs).loss
            if aux is not None:
                loss = loss + cfg.router_aux_loss_coef * aux(model)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for i in range(args.warmup):
        step(batches[i % len(batches)][0])
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    tokens = flops = 0.0
    samples = 0
    pos = 0
    t0 = time.perf_counter()
    for i in range(args.steps):
        batch, lens = batches[i % len(batches)]
        loss = step(batch)
        tokens += sum(lens)
        samples += len(lens)
        pos += positions[i % len(batches)]
        flops += fm.step_flops(lens, n_images=len(lens), n_supervised=supervised[i % len(batches)])
    sync()
    dt = time.perf_counter() - t0
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]) as prof:
            for i in range(2):
                step(batches[i % len(batches)][0])
            sync()
        key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        Path(args.profile).write_text(prof.key_averages().table(sort_by=key, row_limit=40, max_name_column_width=70))
    name = device_name() if cuda else "cpu"
    peak = peak_flops(name) if cuda else None
    m = mfu(flops / dt, 1, peak)
    return {
        "llm": "tiny" if args.tiny else args.llm, "vision": "tiny" if args.tiny else args.vision, "stage": args.stage,
        "precision": args.precision, "attn": built.attn, "grad_ckpt": args.grad_ckpt, "compile": compiled,
        "packing": args.packing, "kernels": kernels,
        "loss": "stock" if args.stock_loss else "supervised-chunked",
        "batch_size": args.batch_size, "seq_len": args.seq_len, "ragged": args.ragged,
        "params_total": counts["all"]["total"], "params_trainable": counts["all"]["trainable"],
        "padding_frac": 1 - tokens / pos, "steps": args.steps, "step_s": dt / args.steps, "samples_per_s": samples / dt, "tokens_per_s": tokens / dt,
        "model_tflops_per_s": flops / dt / 1e12, "mfu": m, "device": name, "peak_tflops": (peak or 0) / 1e12 or None,
        "max_mem_gib": (torch.cuda.max_memory_allocated() / 2**30) if cuda else None,
        "final_loss": float(loss.detach().float().cpu()), "build_s": build_s,
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
    }


SWEEP = [  # (label, extra args); "stock" rows use transformers' loss (logits at every position) for comparison
    ("1.6B bf16 b16 L1024 stock-loss", ["--precision", "bf16", "--batch-size", "16", "--seq-len", "1024", "--stock-loss"]),
    ("1.6B amp b8 L1024", ["--precision", "amp", "--batch-size", "8", "--seq-len", "1024"]),
    ("1.6B bf16 b8 L1024", ["--precision", "bf16", "--batch-size", "8", "--seq-len", "1024"]),
    ("1.6B bf16 b16 L1024", ["--precision", "bf16", "--batch-size", "16", "--seq-len", "1024"]),
    ("1.6B bf16 b8 L2048", ["--precision", "bf16", "--batch-size", "8", "--seq-len", "2048"]),
    ("1.6B bf16 b16 L1024 ragged", ["--precision", "bf16", "--batch-size", "16", "--seq-len", "1024", "--ragged"]),
    ("1.6B bf16 b16 L1024 gc", ["--precision", "bf16", "--batch-size", "16", "--seq-len", "1024", "--grad-ckpt"]),
    ("1.6B bf16 b16 L1024 layers-compiled", ["--precision", "bf16", "--batch-size", "16", "--seq-len", "1024",
                                             "--compile-layers"]),
    ("qwen-1.8B bf16 b16 L1024", ["--llm", "qwen-1.8b", "--precision", "bf16", "--batch-size", "16", "--seq-len", "1024"]),
    ("7B bf16 b4 L1024 stock-loss", ["--llm", "vicuna-7b", "--precision", "bf16", "--batch-size", "4", "--seq-len", "1024",
                                     "--stock-loss"]),
    ("7B bf16 b4 L1024", ["--llm", "vicuna-7b", "--precision", "bf16", "--batch-size", "4", "--seq-len", "1024"]),
    ("7B bf16 b4 L1024 layers-compiled", ["--llm", "vicuna-7b", "--precision", "bf16", "--batch-size", "4",
                                          "--seq-len", "1024", "--compile-layers"]),
    ("7B bf16 b8 L1024 gc", ["--llm", "vicuna-7b", "--precision", "bf16", "--batch-size", "8", "--seq-len", "1024", "--grad-ckpt"]),
    # issue 18: packing (ragged lengths in [L/3, L], rows of at most L), per-layer compile, liger-kernel
    ("t18 1.6B b16 L1024 ragged padded", ["--precision", "bf16", "--batch-size", "16", "--seq-len", "1024", "--ragged"]),
    ("t18 1.6B b16 L1024 ragged packed", ["--precision", "bf16", "--batch-size", "16", "--seq-len", "1024", "--ragged",
                                          "--packing", "--pack-length", "2048"]),
    ("t18 1.6B b16 L1024 ragged layers", ["--precision", "bf16", "--batch-size", "16", "--seq-len", "1024",
                                          "--ragged", "--compile-layers"]),
    ("t18 1.6B b16 L1024 ragged packed layers", ["--precision", "bf16", "--batch-size", "16", "--seq-len", "1024",
                                                 "--ragged", "--packing", "--pack-length", "2048", "--compile-layers"]),
    ("t18 1.6B b16 L1024 full layers", ["--precision", "bf16", "--batch-size", "16", "--seq-len", "1024",
                                        "--compile-layers"]),
    ("t18 1.6B b16 L1024 full layers liger", ["--precision", "bf16", "--batch-size", "16", "--seq-len", "1024",
                                              "--compile-layers", "--liger"]),
    ("t18 7B b4 L1024 ragged padded", ["--llm", "vicuna-7b", "--precision", "bf16", "--batch-size", "4", "--seq-len",
                                       "1024", "--ragged"]),
    ("t18 7B b4 L1024 ragged packed layers liger", ["--llm", "vicuna-7b", "--precision", "bf16", "--batch-size", "4",
                                                    "--seq-len", "1024", "--ragged", "--packing", "--pack-length",
                                                    "2048", "--compile-layers", "--liger"]),
    # MoE-LLaVA: stage 2 beside stage 3 on the same LLM shape and batch
    ("moe stablelm-1.6B stage2 b16 L1024", ["--precision", "bf16", "--batch-size", "16", "--seq-len", "1024"]),
    ("moe stablelm-1.6B stage3 b16 L1024", ["--stage", "3", "--precision", "bf16", "--batch-size", "16", "--seq-len", "1024"]),
    ("moe phi-2 stage2 b8 L1024", ["--llm", "phi-2", "--precision", "bf16", "--batch-size", "8", "--seq-len", "1024"]),
    ("moe phi-2 stage3 b8 L1024", ["--llm", "phi-2", "--stage", "3", "--precision", "bf16", "--batch-size", "8",
                                   "--seq-len", "1024"]),
]


def sweep(args) -> list[dict]:
    rows = []
    only = [o.strip() for o in args.only.split(",")] if args.only else None
    for label, extra in SWEEP:
        if only and not any(o in label for o in only):
            continue
        cmd = [sys.executable, __file__, "--json-line", "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--device", args.device, "--attn", args.attn, *extra]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        if p.returncode == 0 and line:
            row = json.loads(line[-1])
        else:
            err = (p.stderr.strip().splitlines() or ["?"])[-1]
            row = {"error": err[-300:]}
        row["label"] = label
        row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


def format_row(r: dict) -> str:
    if "error" in r:
        return f"{r.get('label', ''):32s} FAILED: {r['error']}"
    mfu = f"{100 * r['mfu']:5.1f}%" if r.get("mfu") is not None else "  n/a"
    mem = f"{r['max_mem_gib']:6.1f}" if r.get("max_mem_gib") is not None else "   n/a"
    pad = f"{100 * r['padding_frac']:5.1f}%" if r.get("padding_frac") is not None else "  n/a"
    return (f"{r.get('label', r['llm']):32s} {r['attn']:18s} {r['step_s']*1000:8.1f} {r['samples_per_s']:8.1f} "
            f"{r['tokens_per_s']:10.0f} {r['model_tflops_per_s']:8.1f} {mfu:>7s} {mem:>7s} {pad:>7s}")


HEADER = (f"{'config':32s} {'attention':18s} {'step ms':>8s} {'sampl/s':>8s} {'tokens/s':>10s} {'TFLOP/s':>8s} "
          f"{'MFU':>7s} {'GiB':>7s} {'padding':>7s}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llm", choices=sorted(LLMS), default="stablelm-1.6b")
    ap.add_argument("--vision", choices=sorted(VISION), default="clip-l-336")
    ap.add_argument("--tiny", action="store_true", help="tiny random shapes (CPU smoke test)")
    ap.add_argument("--stage", type=int, choices=[2, 3], default=2, help="3: MoE-LLaVA's MoE-tuning")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=1024, help="tokens per sample incl. the image tokens")
    ap.add_argument("--ragged", action="store_true", help="draw each sample's length in [L/3, L] and pad")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--precision", choices=["amp", "bf16"], default="bf16")
    ap.add_argument("--attn", choices=["auto", "sdpa", "eager", "flash_attention_2"], default="auto")
    ap.add_argument("--grad-ckpt", action="store_true")
    ap.add_argument("--compile-mode", choices=["none", "layers", "model"], default="none",
                    help="vlmtrain's `compile`: each decoder layer, or the whole model")
    ap.add_argument("--compile", action="store_true", help="= --compile-mode model")
    ap.add_argument("--packing", action="store_true", help="vlmtrain's packing: several samples per row")
    ap.add_argument("--pack-length", type=int, default=0, help="packing: row length (default --seq-len)")
    ap.add_argument("--liger", action="store_true", help="vlmtrain's `kernels: liger` (needs a GPU and liger-kernel)")
    ap.add_argument("--stock-loss", action="store_true",
                    help="transformers' forward (logits at every position) instead of vlmtrain's supervised-only LM head")
    ap.add_argument("--compile-layers", action="store_true", help="= --compile-mode layers")
    ap.add_argument("--profile", type=Path, help="write a torch.profiler table of two steps here")
    ap.add_argument("--only", help="sweep: run only the rows whose label contains this (comma-separated)")
    ap.add_argument("--device", default="cuda" if _cuda() else "cpu")
    ap.add_argument("--sweep", action="store_true", help="run the recorded grid, one process per row")
    ap.add_argument("--timeout", type=int, default=240, help="seconds per sweep row")
    ap.add_argument("--json", type=Path, help="write the rows as JSON here")
    ap.add_argument("--json-line", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.compile_layers or args.compile:
        args.compile_mode = "layers" if args.compile_layers else "model"
    if args.tiny:
        args.seq_len = min(args.seq_len, 64) if args.seq_len == 1024 else args.seq_len
    if args.sweep:
        print(HEADER, flush=True)
        rows = sweep(args)
    else:
        row = run_one(args)
        if args.json_line:
            print(json.dumps(row))
            return 0
        print(HEADER)
        print(format_row(row))
        rows = [row]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
