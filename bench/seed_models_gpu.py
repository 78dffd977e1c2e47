"""The seed models at their real shapes on a GPU: parity with the reference forwards, and timings.

    PYTHONPATH=. python3 bench/seed_models_gpu.py            # real shapes, CUDA
    PYTHONPATH=. python3 bench/seed_models_gpu.py --tiny     # the same code at test sizes, CPU (a dry run)

Random weights (small std) in each published layout, renamed by vlmtrain's converters, then:

- Qwen-1_8B (24 x 2048, vocab 151936): fp32 logits of the native qwen2 model vs the reference forward
  (tests/models/seed_model_helpers.py), and bf16 vs fp32;
- InternViT-6B-448px-V1-0 (48 x 3200): fp32 hidden states (block -4 and the last) vs the reference; bf16
  SDPA forward throughput (a frozen tower: forward only);
- ConvLLaVA's ConvNeXt (5 stages, 768 px): the first four stages vs transformers' ConvNextModel, and a bf16
  forward + backward with stages 2.. trainable (ConvLLaVA's stage 2), images/s and model TFLOP/s.

TF32 is off for the parity checks, so fp32 means fp32. Prints one JSON line per check; the H200 run
(transformers 5.17, torch 2.11) is in bench/results/seed_models_h200.jsonl.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def rand_like_published(shapes: dict[str, tuple], device, std: float = 0.02) -> dict[str, torch.Tensor]:
    out = {}
    for k, shape in shapes.items():
        norm = k.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight", "norm1.weight", "norm2.weight",
                           "q_norm.weight", "k_norm.weight"))
        t = torch.randn(shape, device=device) * (std if not norm else 0.1)
        out[k] = t + 1 if norm else t
    return out


def timed(fn, n: int, device) -> float:
    for _ in range(2):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / n


def qwen_check(device, tiny: bool) -> None:
    from transformers import Qwen2ForCausalLM

    from tests.models.seed_model_helpers import QWEN_TINY, qwen_reference_logits, qwen_state
    from vlmtrain.model import qwen

    c = QWEN_TINY if tiny else json.loads((REPO / "configs/model_configs/qwen-1_8b.json").read_text())
    shapes = {k: tuple(v.shape) for k, v in qwen_state(dict(c, vocab_size=7, hidden_size=c["hidden_size"])).items()}
    shapes.update({"transformer.wte.weight": (c["vocab_size"], c["hidden_size"]),
                   "lm_head.weight": (c["vocab_size"], c["hidden_size"])})
    torch.manual_seed(0)
    state = rand_like_published(shapes, device)
    state["transformer.wte.weight"] *= 50  # embeddings of order 1
    with torch.device(device):
        model = Qwen2ForCausalLM(qwen.qwen2_config_from_qwen(c))
    model.load_state_dict(qwen.qwen_state_to_native(state), strict=True)
    model.eval()
    ids = torch.randint(0, c["vocab_size"], (2, 16 if tiny else 256), device=device)
    with torch.no_grad():
        ours = model(input_ids=ids).logits.float()
        ref = qwen_reference_logits(state, c, ids)
        diff = (ours - ref).abs().max().item()
        model.to(torch.bfloat16)
        bf = model(input_ids=ids).logits.float()
    emit(check="qwen-1_8b fp32 logits vs reference", params=sum(p.numel() for p in model.parameters()),
         max_abs_diff=diff, ref_max_abs=ref.abs().max().item(), bf16_max_abs_diff=(bf - ref).abs().max().item(),
         argmax_agree_fp32=(ours.argmax(-1) == ref.argmax(-1)).float().mean().item())
    del model, state


def internvit_check(device, tiny: bool) -> None:
    from transformers import InternVLVisionModel

    from tests.models.seed_model_helpers import INTERNVIT_TINY, internvit_reference_hidden_states, internvit_state
    from vlmtrain.model import internvit

    c = INTERNVIT_TINY if tiny else json.loads((REPO / "configs/model_configs/internvit-6b-448px-v1-0.json").read_text())
    small = dict(c, num_hidden_layers=1)
    shapes = {k: tuple(v.shape) for k, v in internvit_state(small).items() if not k.startswith("encoder.layers.")}
    layer = {k.split(".", 3)[3]: tuple(v.shape) for k, v in internvit_state(small).items() if k.startswith("encoder.layers.0.")}
    for i in range(c["num_hidden_layers"]):
        shapes.update({f"encoder.layers.{i}.{k}": s for k, s in layer.items()})
    torch.manual_seed(0)
    state = rand_like_published(shapes, device)
    for k in state:
        if k.endswith(("ls1", "ls2")):
            state[k] = state[k].abs() + 0.1
    vc = internvit.native_config_from_published(c)
    with torch.device(device):
        tower = InternVLVisionModel._from_config(vc, attn_implementation="sdpa")
    tower.load_state_dict(internvit.published_to_native(state), strict=True)
    tower.eval()
    side = c["image_size"]
    pixels = torch.randn(1, 3, side, side, device=device)
    with torch.no_grad():
        ours = tower(pixels, output_hidden_states=True).hidden_states
        ref = internvit_reference_hidden_states(state, c, pixels)
    diffs = {i: (ours[i] - ref[i]).abs().max().item() for i in (-4, -1)}
    emit(check="internvit-6b fp32 hidden states vs reference", params=sum(p.numel() for p in tower.parameters()),
         max_abs_diff_block_minus4=diffs[-4], max_abs_diff_last=diffs[-1], ref_max_abs_minus4=ref[-4].abs().max().item())
    del state, ref
    tower.to(torch.bfloat16)
    batch = 2 if tiny else 16
    x = torch.randn(batch, 3, side, side, device=device, dtype=torch.bfloat16)
    with torch.no_grad():
        sec = timed(lambda: tower(x, output_hidden_states=-4), 1 if tiny else 5, device)
    emit(check="internvit-6b bf16 sdpa forward", batch=batch, seconds_per_batch=sec, images_per_s=batch / sec)
    del tower


def convnext_check(device, tiny: bool) -> None:
    from transformers import ConvNextConfig, ConvNextModel

    from tests.models.seed_model_helpers import CONVNEXT_TINY
    from vlmtrain.model import convnext_tower

    c = dict(CONVNEXT_TINY, depths=[1, 1, 2, 1, 2], hidden_sizes=[8, 16, 24, 32, 40], image_size=128) if tiny else \
        json.loads((REPO / "configs/model_configs/convllava-convnext-768.json").read_text())
    vc = convnext_tower.tower_config(c)
    four = {k: (v[:4] if k in ("depths", "hidden_sizes") else v) for k, v in c.items() if k != "model_type"}
    torch.manual_seed(0)
    with torch.device(device):
        ref = ConvNextModel(ConvNextConfig(**dict(four, num_stages=4)))
        tower = convnext_tower.ConvNextTower(vc)
    missing = tower.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("layernorm.")},
                                    strict=False).missing_keys
    assert all(k.startswith("encoder.stages.4.") for k in missing), missing
    pixels = torch.randn(2, 3, vc.image_size, vc.image_size, device=device)
    with torch.no_grad():
        want = ref.eval()(pixels).last_hidden_state.flatten(2).transpose(1, 2)
        got = tower.eval()(pixels).hidden_states[-2]
    emit(check="convnext first 4 stages vs transformers ConvNextModel", params=sum(p.numel() for p in tower.parameters()),
         max_abs_diff=(got - want).abs().max().item(), tokens=tower(pixels[:1]).last_hidden_state.shape[1])
    del ref
    tower.to(torch.bfloat16).train()
    tower.requires_grad_(False)
    convnext_tower.unfreeze_from(tower, 2)
    batch = 2 if tiny else 16
    x = torch.randn(batch, 3, vc.image_size, vc.image_size, device=device, dtype=torch.bfloat16)

    def step():
        tower(x).last_hidden_state.float().square().mean().backward()

    sec = timed(step, 1 if tiny else 5, device)
    flops = batch * convnext_tower.forward_flops(vc) * 3  # forward + backward (the frozen stem/stages: ~2x, counted 3x)
    emit(check="convnext 768 bf16 forward+backward, stages 2.. trainable", batch=batch, seconds_per_batch=sec,
         images_per_s=batch / sec, forward_gflops_per_image=convnext_tower.forward_flops(vc) / 1e9,
         approx_tflops_per_s=flops / sec / 1e12)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    device = torch.device("cpu" if args.tiny else "cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if device.type == "cuda":
        emit(device=torch.cuda.get_device_name(0), torch=torch.__version__)
    for check in (qwen_check, internvit_check, convnext_check):
        t = time.perf_counter()
        check(device, args.tiny)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        emit(done=check.__name__, seconds=round(time.perf_counter() - t, 1))


if __name__ == "__main__":
    main()
