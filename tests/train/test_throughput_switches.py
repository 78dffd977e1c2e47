"""The throughput switches besides packing (test_packing.py): `compile` (layers / model, with its fallback),
`kernels: liger` (refused on a CPU before a model is built; its wiring checked with a stand-in module),
`image_decode: draft`, and `profile_steps`; each through `vlmtrain run` where it applies."""
from __future__ import annotations

import copy
import re
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from train_helpers import read_metrics
from vlmtrain.config import load_config


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from train_helpers import tiny_config, write_config
    from vlmtrain.model.build import apply_freeze, build_model

    tmp = tmp_path_factory.mktemp("tiny")
    cfg = load_config(write_config(tmp / "c.yaml", tiny_config(tmp, tmp / "out")))
    torch.manual_seed(0)
    built = build_model(cfg, vocab_size=300, image_token_id=299)
    apply_freeze(built.model, cfg.frozen())
    built.model.config.text_config.use_cache = False
    return built


def _batch(built, n_images=2, length=40):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 290, (n_images, length), generator=g)
    ids[:, 2:2 + built.tokens_per_image] = built.image_token_id
    labels = ids.clone()
    labels[:, :2 + built.tokens_per_image] = -100
    vc = built.model.config.vision_config
    return {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids),
            "pixel_values": torch.randn(n_images, 3, vc.image_size, vc.image_size, generator=g)}


def _loss_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _same(a, b, tol=1e-5):
    torch.testing.assert_close(b[0], a[0], rtol=tol, atol=tol)
    assert a[1].keys() == b[1].keys()
    for n in a[1]:
        torch.testing.assert_close(b[1][n], a[1][n], rtol=tol, atol=tol, msg=n)


@pytest.mark.parametrize("mode", ["layers", "model"])
def test_compile_modes_compile_in_place_and_train_the_same(tiny_model, mode):
    from vlmtrain.train.compile import apply_compile, decoder_layers

    eager = copy.deepcopy(tiny_model.model)
    compiled = copy.deepcopy(tiny_model.model)
    keys = list(compiled.state_dict())
    assert apply_compile(compiled, mode, "aot_eager") == mode
    layers = decoder_layers(compiled)
    assert len(layers) == 2
    if mode == "layers":
        assert all(layer._compiled_call_impl is not None for layer in layers)
        assert compiled._compiled_call_impl is None
    else:
        assert compiled._compiled_call_impl is not None
    assert list(compiled.state_dict()) == keys  # checkpoints keep their names
    batch = _batch(tiny_model)
    _same(_loss_grads(eager, batch), _loss_grads(compiled, batch))
    torch._dynamo.reset()


@pytest.mark.slow
def test_compile_layers_with_inductor_here_or_a_clear_fallback(tiny_model, caplog):
    """inductor on this machine's CPU: it compiles (needs a C++ compiler) and trains the same, or the run is
    told why not and trains uncompiled."""
    from vlmtrain.train.compile import apply_compile, backend_problem

    caplog.set_level("INFO", logger="vlmtrain")
    model = copy.deepcopy(tiny_model.model)
    problem = backend_problem("inductor", torch.device("cpu"))
    done = apply_compile(model, "layers", "inductor")
    batch = _batch(tiny_model)
    if problem is None:
        assert done == "layers"
        _same(_loss_grads(tiny_model.model, batch), _loss_grads(model, batch), tol=1e-4)
    else:
        assert done.startswith("fallback:") and "training without compile" in caplog.text
    torch._dynamo.reset()


@pytest.fixture
def broken_backend():
    """A torch.compile backend that fails the way inductor does where it cannot build code."""
    from torch._dynamo import register_backend
    from torch._dynamo.backends import registry

    @register_backend(name="vlmtrain_test_broken")
    def broken(gm, example_inputs):
        raise RuntimeError("no working C++ compiler / triton found (test backend)")

    yield "vlmtrain_test_broken"
    registry._COMPILER_FNS.pop("vlmtrain_test_broken", None)


def test_compile_fallback_when_the_backend_cannot_compile(tiny_model, broken_backend, caplog):
    from vlmtrain.train.compile import apply_compile, decoder_layers

    model = copy.deepcopy(tiny_model.model)
    done = apply_compile(model, "layers", broken_backend)
    assert done.startswith("fallback:") and "no working C++ compiler" in done
    assert "training without compile" in caplog.text and "no working C++ compiler" in caplog.text
    assert all(layer._compiled_call_impl is None for layer in decoder_layers(model))
    _loss_grads(model, _batch(tiny_model))  # it trains, eagerly


def test_compiled_layer_runs_its_moe_block_eagerly():
    """docs/throughput.md: MoE routing runs eagerly under compile. Traced, its host reads (capacity,
    bucket sizes) each broke the graph (a wall of dynamo warnings) and recompiled per token count;
    now the one break is the call into the block."""
    from torch import nn

    from vlmtrain.model.moe import MoeSettings, SparseMoeBlock

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.Linear(16, 16)
            self.mlp = SparseMoeBlock(16, nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16)),
                                      MoeSettings(num_experts=4, top_k=2))

        def forward(self, x):
            return self.mlp(self.attn(x)) + x

    torch.manual_seed(0)
    explained = torch._dynamo.explain(Layer())(torch.randn(2, 5, 16))
    assert explained.graph_break_count == 1, [str(b.reason)[:60] for b in explained.break_reasons]


def test_run_stage1_and_stage2_with_packing_and_compile(caption_blend, instruct_blend, make_config, vlmtrain,
                                                        tmp_path, broken_backend, caplog):
    caplog.set_level("INFO", logger="vlmtrain")
    s1 = vlmtrain("run", make_config(caption_blend, "s1", stage=1, version="plain", max_steps=3, learning_rate=1e-2,
                                     packing=True, compile="layers", compile_backend="aot_eager"))
    assert s1.code == 0, s1.err
    assert "each of the 2 decoder layers compiled (backend aot_eager)" in caplog.text
    s2 = vlmtrain("run", make_config(instruct_blend, "s2", max_steps=3, packing=True, compile="model",
                                     compile_backend="aot_eager"))
    assert s2.code == 0, s2.err
    assert "the whole model compiled" in caplog.text
    caplog.clear()
    fb = vlmtrain("run", make_config(instruct_blend, "fb", max_steps=2, compile="layers",
                                     compile_backend=broken_backend))
    assert fb.code == 0, fb.err
    assert "training without compile" in caplog.text
    for run in ("s1", "s2", "fb"):
        rows = read_metrics(tmp_path / run)
        assert rows and all(r["loss"] > 0 and "data_wait_s" in r for r in rows.values())
    torch._dynamo.reset()


@pytest.mark.parametrize("over,words", [
    ({"compile": "all"}, "`compile` is 'all'"),
    ({"compile": "layers", "compile_backend": "nope"}, "`compile_backend` is 'nope'"),
    ({"kernels": "liger"}, "needs a CUDA GPU"),
    ({"kernels": "triton"}, "`kernels` is 'triton'"),
    ({"image_decode": "fast"}, "`image_decode` is 'fast'"),
    ({"profile_steps": [3, 2]}, "`profile_steps` is [3, 2]"),
    ({"profile_steps": [0, 2]}, "`profile_steps` is [0, 2]"),
    ({"profile_steps": [2]}, "`profile_steps` is [2]"),
])
def test_bad_switches_exit_2_before_a_model_is_built(instruct_blend, make_config, vlmtrain, monkeypatch, over, words):
    import vlmtrain.model.build as build

    def refuse(*a, **k):
        raise AssertionError("a model was built")

    monkeypatch.setattr(build, "build_model", refuse)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = vlmtrain("run", make_config(instruct_blend, "bad", **over))
    assert r.code == 2 and words in r.err, r.err
    assert "a model was built" not in r.err


def test_liger_needs_the_package_where_there_is_a_gpu(instruct_blend, make_config, vlmtrain, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "liger_kernel" else real(name, *a))
    r = vlmtrain("run", make_config(instruct_blend, "noliger", kernels="liger"))
    assert r.code == 2 and "liger_kernel" in r.err and "pip install '.[gpu]'" in r.err, r.err


@pytest.fixture
def stand_in_liger(monkeypatch):
    """liger-kernel's interface with plain-torch bodies (its kernels need a GPU), recording the calls, so the
    wiring of `kernels: liger` can be checked here: which patch runs, with which switches, on which module."""
    calls = []

    def apply_llama(rope=True, cross_entropy=False, fused_linear_cross_entropy=True, rms_norm=True, swiglu=True,
                    model=None):
        calls.append({"rope": rope, "cross_entropy": cross_entropy, "fused_linear_cross_entropy":
                      fused_linear_cross_entropy, "rms_norm": rms_norm, "swiglu": swiglu, "model": model})

    def flce(input, weight, target, bias=None, reduction="mean", accum_dtype=None, **kw):
        calls.append({"flce": (input.shape, reduction, accum_dtype)})
        return F.cross_entropy(F.linear(input, weight, bias).float(), target, reduction=reduction)

    class SwiGLU:
        def forward(self, x):
            calls.append({"swiglu_forward": True})
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    mods = {"liger_kernel": types.ModuleType("liger_kernel"),
            "liger_kernel.transformers": types.ModuleType("liger_kernel.transformers"),
            "liger_kernel.transformers.monkey_patch": types.ModuleType("liger_kernel.transformers.monkey_patch"),
            "liger_kernel.transformers.functional": types.ModuleType("liger_kernel.transformers.functional"),
            "liger_kernel.transformers.swiglu": types.ModuleType("liger_kernel.transformers.swiglu")}
    mods["liger_kernel.transformers.monkey_patch"].MODEL_TYPE_TO_APPLY_LIGER_FN = {"llama": apply_llama}
    mods["liger_kernel.transformers.functional"].liger_fused_linear_cross_entropy = flce
    mods["liger_kernel.transformers.swiglu"].LigerSwiGLUMLP = SwiGLU
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return calls


def test_liger_wiring_stage2(tiny_model, stand_in_liger):
    from vlmtrain.model.kernels import apply_kernels

    model = copy.deepcopy(tiny_model.model)
    batch = _batch(tiny_model)
    before = _loss_grads(model, batch)
    done = apply_kernels(model, "liger")
    patch = stand_in_liger[0]
    assert patch["model"] is model.model.language_model and patch["rope"] and patch["rms_norm"] and patch["swiglu"]
    assert not patch["cross_entropy"] and not patch["fused_linear_cross_entropy"]  # vlmtrain's own loss path
    assert done == ["rope", "rms_norm", "swiglu", "fused_linear_cross_entropy"]
    after = _loss_grads(model, batch)
    flce = [c["flce"] for c in stand_in_liger if "flce" in c]
    n_labelled = int((batch["labels"][:, 1:] != -100).sum())
    assert flce == [((n_labelled, 64), "sum", torch.float32)]  # only the labelled positions reach the head
    _same(before, after)


def test_liger_wiring_stage3_keeps_the_moe_blocks(tiny_model, stand_in_liger):
    from vlmtrain.model.kernels import apply_kernels
    from vlmtrain.model.moe import MoeSettings, MoeSpec, SparseMoeBlock, convert_to_moe

    model = copy.deepcopy(tiny_model.model)
    convert_to_moe(model, MoeSpec(layers=[1], settings=MoeSettings(second_expert_sampling=False)))
    batch = _batch(tiny_model)
    before = _loss_grads(model, batch)
    done = apply_kernels(model, "liger")
    assert stand_in_liger[0]["swiglu"] is False  # liger's patch would rebind the MoE block's forward
    assert "swiglu (dense FFNs and experts)" in done
    layers = model.model.language_model.layers
    assert isinstance(layers[1].mlp, SparseMoeBlock) and "forward" not in vars(layers[1].mlp)
    assert "forward" in vars(layers[0].mlp) and all("forward" in vars(e) for e in layers[1].mlp.experts)
    after = _loss_grads(model, batch)
    assert sum("swiglu_forward" in c for c in stand_in_liger) >= 2
    _same(before, after)


def test_supervised_loss_fused_path_equals_the_chunks():
    from vlmtrain.model.loss import supervised_lm_loss

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(3, 12, 16)
    labels = torch.randint(0, 50, (3, 12))
    labels[:, :4] = -100

    def fused(h, w, t, b):
        return F.cross_entropy(F.linear(h, w, b), t, reduction="sum")

    a = supervised_lm_loss(head, hidden, labels, num_items_in_batch=20, chunk_tokens=5)
    b = supervised_lm_loss(head, hidden, labels, num_items_in_batch=20, fused=fused)
    torch.testing.assert_close(a, b)


def test_jpeg_draft_decoding(tmp_path):
    """`image_decode: draft`: a JPEG at least twice the target decodes at a reduced scale (close to the exact
    pixels, not equal); smaller JPEGs and other formats decode exactly; the default path is LLaVA's."""
    from PIL import Image

    from vlmtrain.data.images import ImageLoader, draft_size, open_rgb
    import transformers

    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    proc = cls(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    assert draft_size(1000, 700, 64, pad=True) == (64, 45) and draft_size(100, 70, 64, pad=True) is None
    assert draft_size(1000, 700, 64, pad=False) == (92, 64)  # square: the shorter side governs
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 700), torch.linspace(0, 1, 1000), indexing="ij")
    arr = (torch.stack([xx, yy, (xx * yy).sqrt()], -1) * 255).to(torch.uint8).numpy()
    big, small, png = tmp_path / "big.jpg", tmp_path / "small.jpg", tmp_path / "big.png"
    Image.fromarray(arr).save(big, quality=90)
    Image.fromarray(arr).resize((100, 70)).save(small, quality=90)
    Image.fromarray(arr).save(png)
    exact, draft = ImageLoader(proc, "pad"), ImageLoader(proc, "pad", draft=True)
    with Image.open(big) as im:
        reference = exact.process([im.convert("RGB")])
    assert torch.equal(exact.load(tmp_path, ["big.jpg"]), reference)  # the default is LLaVA's decode
    assert open_rgb(big, draft=(64, True)).size == (125, 88)  # libjpeg's 1/8 scale: still >= the 64 px target
    a, b = exact.load(tmp_path, ["big.jpg"]), draft.load(tmp_path, ["big.jpg"])
    assert not torch.equal(a, b) and (a - b).abs().mean() < 0.05
    for name in ("small.jpg", "big.png"):
        assert torch.equal(exact.load(tmp_path, [name]), draft.load(tmp_path, [name]))


def test_run_with_draft_decoding(instruct_blend, make_config, vlmtrain, tmp_path):
    r = vlmtrain("run", make_config(instruct_blend, "draft", max_steps=2, image_decode="draft"))
    assert r.code == 0, r.err
    assert read_metrics(tmp_path / "draft")[2]["loss"] > 0


@pytest.mark.parametrize("steps,max_steps,covered", [([2, 3], 4, "2-3"), ([3, 9], 4, "3-4")])
def test_profile_steps_writes_a_table_of_those_steps(instruct_blend, make_config, vlmtrain, tmp_path, steps, max_steps,
                                                     covered):
    r = vlmtrain("run", make_config(instruct_blend, "prof", max_steps=max_steps, profile_steps=steps))
    assert r.code == 0, r.err
    table = (tmp_path / "prof" / "profile-rank0.txt").read_text()
    head = re.match(rf"# torch\.profiler over optimizer steps {covered}: ([0-9.]+) ms of wall time a step", table)
    assert head and float(head[1]) > 0, table[:200]
    assert "# rows by self_cpu_time_total, top 60" in table
    assert "aten::mm" in table or "aten::addmm" in table  # the model's matrix products are in the table
    assert len(read_metrics(tmp_path / "prof")) == max_steps


def test_profile_gpu_busy_time_is_the_union_of_kernel_intervals():
    from vlmtrain.train.profile import busy_seconds

    # two streams overlapping (0-10 and 5-12), one kernel inside another (20-30 holds 22-25), a gap before 40
    assert busy_seconds([(20, 30), (0, 10), (5, 12), (22, 25), (40, 41)]) == pytest.approx(23e-6)
    assert busy_seconds([]) == 0.0
