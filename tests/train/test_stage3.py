"""Stage 3 (MoE-tuning) through `vlmtrain run` on tiny random models: conversion, training, what trains,
save / load / generate, MoE-LLaVA's key layout, exact resume, bad input. Gating itself: test_moe_gating.py."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml

from train_helpers import REPO, TINY_VISION, read_metrics, tiny_config, write_config

TINY_PHI = {"model_type": "phi", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
            "num_attention_heads": 4, "max_position_embeddings": 1024}
TINY_MISTRAL = {"model_type": "mistral", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
                "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024}


@pytest.fixture(scope="module")
def stage2(tmp_path_factory):
    """A finished tiny phi stage 2 (phi template, byte-level tokenizer trained on the fly): stage 3's start."""
    from train_helpers import run_vlmtrain
    from vlmtrain.tinydata import write_tiny_blend

    tmp = tmp_path_factory.mktemp("s2")
    blend = write_tiny_blend(tmp / "blend", n=24, kind="instruct", seed=1)
    cfg = tiny_config(blend, tmp / "out", text_config=dict(TINY_PHI), version="phi", max_steps=3)
    r = run_vlmtrain("run", write_config(tmp / "s2.yaml", cfg))
    assert r.code == 0, r.err
    return blend, tmp / "out"


def stage3_config(path, blend, model_dir, out, **over):
    cfg = {"stage": 3, "model_name_or_path": str(model_dir), "version": "phi", "dataset_dir": str(blend),
           "num_experts": 4, "top_k_experts": 2, "capacity_factor": 1.5, "moe_mode": "sparse",
           "train_modules": ["fc1", "fc2", "wg"], "router_aux_loss_coef": 0.01, "model_max_length": 512,
           "output_dir": str(out), "per_device_train_batch_size": 4, "max_steps": 6, "learning_rate": 3e-3,
           "warmup_ratio": 0.0, "save_steps": 100, "logging_steps": 1, "seed": 7, "report_to": []}
    cfg.update(over)
    return write_config(path, cfg)


def test_conversion_keeps_the_dense_model_output(stage2):
    """Right after conversion (eval: capacity factor 2.0 never drops a top-2 route of 4 experts) the MoE
    model's logits equal the dense model's: every expert is the FFN and the kept weights sum to one."""
    from vlmtrain.model.build import VlmLlavaForConditionalGeneration
    from vlmtrain.model.moe import MoeSettings, MoeSpec, convert_to_moe, moe_blocks

    _, s2 = stage2
    dense = VlmLlavaForConditionalGeneration.from_pretrained(str(s2)).eval()
    moe = copy.deepcopy(dense)
    convert_to_moe(moe, MoeSpec(layers=[0, 2], settings=MoeSettings(num_experts=4, top_k=2)))
    assert [i for i, _ in moe_blocks(moe)] == [0, 2] and moe.config.moe["num_experts"] == [4, 4]
    assert not any(block.training for _, block in moe_blocks(moe))  # converted in eval mode: routes as in eval
    ids = torch.randint(0, 300, (2, 40))
    with torch.no_grad():
        a, b = dense(input_ids=ids).logits, moe(input_ids=ids).logits
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert all(block.last.kept == block.last.routes for _, block in moe_blocks(moe))


def test_stage3_trains_only_the_train_modules_routers_and_projector(stage2, vlmtrain, tmp_path):
    from safetensors.torch import load_file

    blend, s2 = stage2
    r = vlmtrain("run", stage3_config(tmp_path / "s3.yaml", blend, s2, tmp_path / "s3", max_steps=8))
    assert r.code == 0, r.err
    rows = read_metrics(tmp_path / "s3")
    losses = [rows[s]["loss"] for s in sorted(rows)]
    assert sum(losses[-3:]) < sum(losses[:3])  # it learns
    assert all(rows[s]["moe/aux_loss"] > 0 and 0 <= rows[s]["moe/dropped"] < 1 for s in rows)
    loads = [rows[1][f"moe/L0/load_e{j}"] for j in range(4)]
    assert abs(sum(loads) - 1) < 1e-3 and "moe/L2/aux" in rows[1] and "moe/L1/aux" not in rows[1]

    before, after = load_file(s2 / "model.safetensors"), load_file(tmp_path / "s3" / "model.safetensors")
    config = json.loads((tmp_path / "s3" / "config.json").read_text())
    assert config["moe"]["moe_layers_idx"] == [0, 2] and config["moe"]["num_experts"] == [4, 4]
    changed, same = set(), set()
    for k, v in after.items():
        if ".mlp.router." in k:
            changed.add(k)  # new
            continue
        src = k
        if ".mlp.experts." in k:  # expert e of layer i started as layer i's FFN
            layer, rest = k.split(".mlp.experts.")
            src = layer + ".mlp." + rest.split(".", 1)[1]
        (changed if not torch.equal(before[src], v) else same).add(k)
    trained = {k for k in changed if any(f".{m}." in k for m in ("fc1", "fc2", "router"))}
    assert {k for k in changed if "multi_modal_projector" in k}  # MoE-LLaVA re-enables the projector
    assert changed - trained == {k for k in changed if "multi_modal_projector" in k}
    assert any("layers.1.mlp.fc1" in k for k in trained)  # non-MoE layers' FFNs train too (name match)
    assert all(k in same for k in after if "self_attn" in k or "embed_tokens" in k or "vision_tower" in k
               or "layernorm" in k or k.startswith("lm_head"))


def test_save_load_generate_and_moellava_keys(stage2, vlmtrain, tmp_path):
    import importlib

    from vlmtrain.generate import answer, load_run
    from vlmtrain.model.moe import moe_blocks

    blend, s2 = stage2
    cfg = stage3_config(tmp_path / "s3.yaml", blend, s2, tmp_path / "s3", max_steps=2, save_moellava_checkpoint=True)
    assert vlmtrain("run", cfg).code == 0
    run = load_run(tmp_path / "s3")
    assert [i for i, _ in moe_blocks(run.model)] == [0, 2]
    from PIL import Image

    Image.new("RGB", (40, 28), (20, 200, 30)).save(tmp_path / "g.jpg")
    a = answer(run, "what color?", tmp_path / "g.jpg", max_new_tokens=6)
    b = answer(load_run(tmp_path / "s3"), "what color?", tmp_path / "g.jpg", max_new_tokens=6)
    assert a == b and a["new_tokens"] >= 1 and a["prompt"].endswith("what color? ASSISTANT:")
    cli = vlmtrain("generate", tmp_path / "s3", "--image", tmp_path / "g.jpg", "--prompt", "what color?",
                   "--max-new-tokens", "6", "--json")
    assert cli.code == 0 and cli.json()["answer"] == a["answer"]
    placed = answer(run, "what color is it <image> here?", tmp_path / "g.jpg", max_new_tokens=2)
    assert "what color is it <image> here?" in placed["prompt"]  # MoE-LLaVA's templates leave the marker in place
    cli = vlmtrain("generate", tmp_path / "s3", "-p", "hi", "--max-new-tokens", "2", "--min-new-tokens", "2")
    assert cli.code == 0 and "(cut at --max-new-tokens 2: raise it for the rest)" in cli.err, cli.err
    if not torch.cuda.is_available():
        cli = vlmtrain("generate", tmp_path / "s3", "-p", "hi", "--device", "cuda")
        assert cli.code == 2 and "torch sees no CUDA GPU here" in cli.err, cli.err

    # MoE-LLaVA's layout: DeepSpeed's own MoE layer loads a layer's weights under those names, strictly,
    # and computes what ours computes.
    state = torch.load(tmp_path / "s3" / "moe-llava-phi" / "pytorch_model.bin", weights_only=True)
    conf = json.loads((tmp_path / "s3" / "moe-llava-phi" / "config.json").read_text())
    assert conf["model_type"] == "moe_llava_phi" and conf["moe"]["top_k_experts"] == 2
    assert "model.layers.0.mlp.deepspeed_moe.gate.wg.weight" in state
    assert "model.layers.2.mlp.deepspeed_moe.experts.deepspeed_experts.3.fc2.bias" in state
    assert "model.layers.1.mlp.fc1.weight" in state and "model.mm_projector.image_spatial_proj.2.weight" in state
    assert not any(k.startswith("model.language_model") or ".router." in k for k in state)
    # MoE-LLaVA's loader reads the tokenizer from the model's folder: it is written beside the weights.
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(str(tmp_path / "s3" / "moe-llava-phi"))
    assert theirs.get_vocab() == run.tokenizer.get_vocab()
    # The command writes the same; run again, it replaces its earlier export whole.
    for _ in range(2):
        r = vlmtrain("export-moe-llava", tmp_path / "s3", tmp_path / "export")
        assert r.code == 0, r.err
    assert "note: MoE-LLaVA's load_pretrained_model picks the model class from the folder's name" in r.err
    assert (tmp_path / "export" / "config.json").read_bytes() == (tmp_path / "s3" / "moe-llava-phi" / "config.json").read_bytes()
    assert AutoTokenizer.from_pretrained(str(tmp_path / "export")).get_vocab() == run.tokenizer.get_vocab()
    assert torch.load(tmp_path / "export" / "pytorch_model.bin", weights_only=True).keys() == state.keys()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary folder left
    ds_layer = pytest.importorskip("deepspeed.moe.layer")
    ours = moe_blocks(run.model)[0][1]
    ds = ds_layer.MoE(64, expert=copy.deepcopy(ours.experts[0]), num_experts=4, ep_size=1, k=2,
                      capacity_factor=1.5, eval_capacity_factor=2.0, min_capacity=0)
    prefix = "model.layers.0.mlp."
    ds.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
    x = torch.randn(2, 11, 64)
    ds.eval(), ours.eval()
    torch.manual_seed(3)
    want = ds(x)[0]
    torch.manual_seed(3)
    torch.testing.assert_close(ours(x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.usefixtures("one_thread")  # compared bitwise
def test_resume_after_sigterm_reproduces_stage3(stage2, vlmtrain, tmp_path):
    blend, s2 = stage2
    over = dict(max_steps=6, group_by_modality_length=True)
    assert vlmtrain("run", stage3_config(tmp_path / "full.yaml", blend, s2, tmp_path / "full", **over)).code == 0
    cut = stage3_config(tmp_path / "cut.yaml", blend, s2, tmp_path / "cut", **over)
    r = vlmtrain("run", cut, env={"VLMTRAIN_SIGTERM_AT_STEP": "3"})
    assert r.code == 143 and "--resume" in r.err
    assert vlmtrain("run", cut, "--resume").code == 0
    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "cut")
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for step in a:
        for key in ("loss", "grad_norm", "moe/aux_loss", "moe/L0/load_e1", "moe/L2/dropped"):
            assert a[step][key] == b[step][key], (step, key)


def test_gradient_checkpointing_gives_the_same_losses(stage2, vlmtrain, tmp_path):
    """The aux loss is read from the layers after the forward; under activation checkpointing the
    recompute must not change it (the RNG state for the Gumbel draw is restored)."""
    blend, s2 = stage2
    assert vlmtrain("run", stage3_config(tmp_path / "a.yaml", blend, s2, tmp_path / "a", max_steps=3)).code == 0
    r = vlmtrain("run", stage3_config(tmp_path / "b.yaml", blend, s2, tmp_path / "b", max_steps=3,
                                      gradient_checkpointing=True))
    assert r.code == 0, r.err
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    for s in a:
        assert a[s]["moe/aux_loss"] == pytest.approx(b[s]["moe/aux_loss"], rel=1e-5)
        assert a[s]["loss"] == pytest.approx(b[s]["loss"], rel=1e-5)
        assert a[s]["grad_norm"] == pytest.approx(b[s]["grad_norm"], rel=1e-4)


def test_router_aux_loss_gradient_off_keeps_the_value_and_drops_the_gradient(stage2, vlmtrain, tmp_path):
    """MoE-LLaVA's runs (reentrant checkpointing) add the aux loss to the loss's value only: with
    `router_aux_loss_gradient: false` the gradients are those of a run without the aux loss, with true
    (the default) the aux loss's gradient reaches the routers."""
    from safetensors.torch import load_file

    blend, s2 = stage2
    runs = {"off": dict(router_aux_loss_gradient=False), "none": dict(router_aux_loss_coef=0.0), "on": {}}
    for name, over in runs.items():
        over = {"router_aux_loss_coef": 10.0, "max_steps": 1, **over}
        r = vlmtrain("run", stage3_config(tmp_path / f"{name}.yaml", blend, s2, tmp_path / name, **over))
        assert r.code == 0, r.err
    m = {name: read_metrics(tmp_path / name)[1] for name in runs}
    assert m["off"]["grad_norm"] == m["none"]["grad_norm"] != m["on"]["grad_norm"]
    assert m["off"]["loss"] == pytest.approx(m["none"]["loss"] + 10.0 * m["off"]["moe/aux_loss"], rel=1e-5)
    assert m["off"]["loss"] == pytest.approx(m["on"]["loss"], rel=1e-6)  # the same value either way
    w = {name: load_file(tmp_path / name / "model.safetensors") for name in runs}
    routers = [k for k in w["on"] if ".mlp.router." in k]
    assert routers and all(torch.equal(w["off"][k], w["none"][k]) for k in routers)
    assert not all(torch.equal(w["on"][k], w["none"][k]) for k in routers)


@pytest.fixture(scope="module")
def wide_stage2(tmp_path_factory):
    """A stage-2 phi wide enough that attention is a small part of a position's cost, as in real LLMs, so
    packing puts several samples in a row (vlmtrain.data.packing weighs a row's attention)."""
    from train_helpers import run_vlmtrain
    from vlmtrain.tinydata import write_tiny_blend

    tmp = tmp_path_factory.mktemp("wide")
    blend = write_tiny_blend(tmp / "blend", n=24, kind="instruct", seed=1)
    phi = {**TINY_PHI, "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 2}
    cfg = tiny_config(blend, tmp / "out", text_config=phi, version="phi", max_steps=1)
    r = run_vlmtrain("run", write_config(tmp / "s2.yaml", cfg))
    assert r.code == 0, r.err
    return blend, tmp / "out"


def test_stage3_with_packing_and_compiled_layers_matches_the_padded_run(wide_stage2, vlmtrain, tmp_path):
    """`packing: true` + `compile: layers` in stage 3. The padded run routes its padding tokens too (they
    count in the aux loss and the capacity) and the second-expert Gumbel draw is per token position, so
    the two runs are compared with that draw and dropping off and the aux loss's weight at 0: then each
    token's route is its own, and the first step's loss and gradient norm must agree. Later steps agree
    less closely by construction: AdamW's first updates are lr x sign(gradient), so a gradient that is
    rounding noise around 0 (summed in another order in the other layout) moves its weight by a full lr,
    hence the small lr here."""
    blend, s2 = wide_stage2
    over = dict(max_steps=3, group_by_modality_length=True, moe_second_expert_sampling=False,
                moe_drop_tokens=False, router_aux_loss_coef=0.0, per_device_train_batch_size=6, moe_mode=[1],
                learning_rate=3e-4)
    a = vlmtrain("run", stage3_config(tmp_path / "a.yaml", blend, s2, tmp_path / "a", **over))
    assert a.code == 0, a.err
    b = vlmtrain("run", stage3_config(tmp_path / "b.yaml", blend, s2, tmp_path / "b", packing=True,
                                      compile="layers", compile_backend="aot_eager", **over))
    assert b.code == 0, b.err
    ra, rb = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert sorted(ra) == sorted(rb) == [1, 2, 3]
    assert rb[1]["loss"] == pytest.approx(ra[1]["loss"], rel=1e-6)
    assert rb[1]["grad_norm"] == pytest.approx(ra[1]["grad_norm"], rel=1e-6)
    for s in ra:
        assert rb[s]["loss"] == pytest.approx(ra[s]["loss"], rel=1e-4), s
        assert rb[s]["padding_frac"] <= ra[s]["padding_frac"] and rb[s]["moe/dropped"] == 0
    assert sum(rb[s]["padding_frac"] for s in rb) < sum(ra[s]["padding_frac"] for s in ra)
    torch._dynamo.reset()


@pytest.mark.parametrize("over, words", [
    ({"top_k_experts": 3}, "top_k_experts"),
    ({"num_experts": 1}, "num_experts"),
    ({"num_experts": [4, 8]}, "num_experts"),
    ({"moe_mode": [0, 9]}, "moe_mode"),
    ({"moe_layers_idx": [1, 4]}, "moe_layers_idx"),
    ({"train_modules": ["w_in", "nothing"]}, "matches no parameter"),
    ({"moe_mode": "every_other"}, "moe_mode"),
    ({"ep_size": 2}, "ep_size"),
    ({"lora_enable": True}, "lora_enable"),
])
def test_bad_stage3_settings_exit_2_before_weights(stage2, vlmtrain, tmp_path, over, words, monkeypatch):
    import vlmtrain.model.build as build

    blend, s2 = stage2
    monkeypatch.setattr(build, "_load", lambda *a, **k: pytest.fail("weights were loaded"))
    r = vlmtrain("run", stage3_config(tmp_path / "bad.yaml", blend, s2, tmp_path / "bad", **over))
    assert r.code == 2, r.err
    assert words in r.err and "Traceback" not in r.err


def test_stage3_without_a_stage2_model(stage2, vlmtrain, tmp_path):
    blend, _ = stage2
    r = vlmtrain("run", stage3_config(tmp_path / "c.yaml", blend, tmp_path / "runs" / "never-ran", tmp_path / "o"))
    assert r.code == 2 and "stage-2 model" in r.err and "STAGE2.yaml" in r.err
    (tmp_path / "notllava").mkdir()
    (tmp_path / "notllava" / "config.json").write_text('{"model_type": "phi"}')
    r = vlmtrain("run", stage3_config(tmp_path / "d.yaml", blend, tmp_path / "notllava", tmp_path / "o2"))
    assert r.code == 2 and "'phi' model" in r.err


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_deepspeed_zero_stage3_single_process_cpu(stage2, tmp_path, zero):
    """ZeRO-2 and ZeRO-3 (every expert is called in every forward, so ZeRO-3's gathers line up)."""
    import os
    import subprocess
    import sys

    from test_train_deepspeed import PRELUDE, _free_port

    blend, s2 = stage2
    cfg = stage3_config(tmp_path / "z.yaml", blend, s2, tmp_path / "z", max_steps=2,
                        deepspeed=str(REPO / f"configs/deepspeed/{zero}.json"))
    env = dict(os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_free_port()), PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    p = subprocess.run([sys.executable, "-c", PRELUDE, "run", str(cfg)], env=env, capture_output=True, text=True,
                       timeout=240, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = read_metrics(tmp_path / "z")
    assert sorted(rows) == [1, 2] and all(r["loss"] > 0 and r["moe/aux_loss"] > 0 for r in rows.values())
    assert json.loads((tmp_path / "z" / "config.json").read_text())["moe"]["moe_layers_idx"] == [0, 2]


def test_chain_runs_three_stages_and_resumes_as_a_whole(vlmtrain, tmp_path):
    """The shipped tiny MoE chain: 1 -> 2 -> 3 in one command, each from the previous output."""
    from vlmtrain.tinydata import write_tiny_blend

    cap = write_tiny_blend(tmp_path / "cap", n=12, kind="caption", seed=2)
    ins = write_tiny_blend(tmp_path / "ins", n=16, kind="instruct", seed=1)
    paths = []
    for i, data in ((1, cap), (2, ins), (3, ins)):
        c = yaml.safe_load((REPO / "configs" / f"tiny-moe-cpu-stage{i}.yaml").read_text())
        c.update(dataset_dir=str(data), output_dir=str(tmp_path / f"s{i}"), max_steps=3, report_to=[])
        paths.append(write_config(tmp_path / f"s{i}.yaml", c))
    dry = vlmtrain("run", *paths, "--dry-run")
    assert dry.code == 0 and dry.out.count("stage 3") == 1 and "MoE: 4 experts, top-2" in dry.out
    cut = vlmtrain("run", *paths, env={"VLMTRAIN_SIGTERM_AT_STEP": "2"})  # stops stage 1 at step 2
    assert cut.code == 143 and "--resume" in cut.err and " ".join(map(str, paths)) in cut.err
    r = vlmtrain("run", *paths, "--resume")
    assert r.code == 0, r.err
    assert (tmp_path / "s1" / "mm_projector.bin").is_file() and (tmp_path / "s3" / "vlmtrain_done.json").is_file()
    s3 = json.loads((tmp_path / "s3" / "vlmtrain_config.json").read_text())
    assert s3["model_name_or_path"] == str(tmp_path / "s2")
    again = vlmtrain("run", *paths, "--resume")
    assert again.code == 0 and again.err.count("already finished") == 3


def test_train_modules_match_dense_names_and_qwen_aliases(tmp_path):
    """MoE-LLaVA filters names before converting, so `mlp.fc1` reaches every expert's fc1; its Qwen
    script's `mlp.w1 mlp.w2 mlp.c_proj` are the native qwen2 up/gate/down projections (not o_proj)."""
    from vlmtrain.config import load_config
    from vlmtrain.model.build import build_model
    from vlmtrain.train.stage3 import prepare_moe

    def trainable(text, modules):
        cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(
            tmp_path, tmp_path / "o", stage=3, text_config=text, train_modules=modules, moe_mode="sparse")))
        built = build_model(cfg, meta=True)
        prepare_moe(built.model, cfg, meta=True)
        lm = built.model.model.language_model
        return {n for n, p in lm.named_parameters() if p.requires_grad}

    phi = trainable(dict(TINY_PHI), ["mlp.fc1", "mlp.fc2", "wg"])
    assert {f"layers.0.mlp.experts.{e}.fc1.weight" for e in range(4)} <= phi and "layers.1.mlp.fc2.bias" in phi
    assert "layers.0.mlp.router.weight" in phi and not any("self_attn" in n for n in phi)
    qwen = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 1024}
    q = trainable(qwen, ["mlp.w1", "mlp.w2", "mlp.c_proj", "wg"])
    assert {"layers.0.mlp.experts.2.up_proj.weight", "layers.0.mlp.experts.2.gate_proj.weight",
            "layers.1.mlp.down_proj.weight"} <= q and not any("o_proj" in n or "q_proj" in n for n in q)
    assert any("o_proj" in n for n in trainable(qwen, ["c_proj"]))  # a bare `c_proj` also matches Qwen's attn.c_proj
    # `all`: MoE-LLaVA with no --train_modules freezes nothing of the LLM
    every = trainable(dict(TINY_PHI), "all")
    assert any("self_attn" in n for n in every) and "embed_tokens.weight" in every and phi < every


def test_qwen_stage3_in_moellava_key_names(tmp_path):
    """Qwen-1's layout: everything under `transformer.`, fused c_attn, w1/w2/c_proj inside DeepSpeed's expert tree."""
    from vlmtrain.config import load_config
    from vlmtrain.model.build import build_model
    from vlmtrain.model.moe.checkpoint_keys import moellava_state_dict
    from vlmtrain.model.qwen import qwen_state_to_native
    from vlmtrain.train.stage3 import prepare_moe

    qwen = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 1024}
    cfg = load_config(write_config(tmp_path / "q.yaml", tiny_config(tmp_path, tmp_path / "o", stage=3, text_config=qwen,
                                                                     vision_config=dict(TINY_VISION), moe_mode="sparse")))
    model = build_model(cfg, vocab_size=200, image_token_id=199).model
    prepare_moe(model, cfg)
    ours = model.state_dict()
    theirs = moellava_state_dict(ours, "qwen2")
    assert {"transformer.h.0.mlp.deepspeed_moe.gate.wg.weight", "transformer.h.0.attn.c_attn.weight",
            "transformer.h.0.mlp.deepspeed_moe.experts.deepspeed_experts.3.w2.weight", "transformer.h.1.mlp.w1.weight",
            "transformer.mm_projector.image_spatial_proj.0.weight", "lm_head.weight"} <= set(theirs)
    assert not any(k.startswith("model.") for k in theirs)
    # w2 is the activated branch: native gate_proj
    torch.testing.assert_close(theirs["transformer.h.0.mlp.deepspeed_moe.experts.deepspeed_experts.3.w2.weight"],
                               ours["model.language_model.layers.0.mlp.experts.3.gate_proj.weight"])
    back = qwen_state_to_native({k: v for k, v in theirs.items() if k.startswith("transformer.h.")},
                                native_prefix="model.language_model.")
    torch.testing.assert_close(back["model.language_model.layers.1.self_attn.k_proj.weight"],
                               ours["model.language_model.layers.1.self_attn.k_proj.weight"])


def test_openchat_mistral_stage2_to_stage3_exports_moellava_openchat(instruct_blend, vlmtrain, tmp_path):
    """MoE-LLaVA's openchat scripts on a tiny random Mistral: stage 2 on the openchat template with a Llama
    tokenizer trained on the fly (<|end_of_turn|> one special token, the eos), stage 3 with the script's
    train_modules, the export in MoE-LLaVA's Mistral class and key names, named so that serve/cli.py chats
    in the openchat template, with the tokenizer.model MoE-LLaVA's slow tokenizer is built from."""
    from vlmtrain.generate import answer, load_run

    s2 = tiny_config(instruct_blend, tmp_path / "s2", text_config=dict(TINY_MISTRAL), version="openchat", max_steps=2)
    r = vlmtrain("run", write_config(tmp_path / "s2.yaml", s2))
    assert r.code == 0, r.err
    modules = ["up_proj", "down_proj", "gate_proj", "wg"]
    cfg = stage3_config(tmp_path / "s3.yaml", instruct_blend, tmp_path / "s2", tmp_path / "s3", version="openchat",
                        train_modules=modules, max_steps=2, save_moellava_checkpoint=True)
    r = vlmtrain("run", cfg)
    assert r.code == 0, r.err
    notes = [line for line in r.err.splitlines() if line.startswith("note:")]
    # the name loads and serves as trained, the tokenizer loads slow; only the random_init tower is said
    assert len(notes) == 1 and "mm_image_tower is null" in notes[0], notes
    out = tmp_path / "s3" / "moe-llava-openchat"
    assert (out / "generation_config.json").is_file()  # MoE-LLaVA's builder reads it for Qwen
    conf = json.loads((out / "config.json").read_text())
    assert conf["architectures"] == ["MoELLaVAMistralForCausalLM"] and conf["model_type"] == "moe_llava_mistral"
    assert conf["moe"]["moe_layers_idx"] == [0, 2] and conf["moe"]["num_experts"] == [4, 4]
    assert conf["moe"]["top_k_experts"] == 2 and conf["moe"]["train_modules"] == modules
    assert (conf["hidden_size"], conf["num_key_value_heads"], conf["rope_theta"]) == (64, 2, 10000.0)
    state = torch.load(out / "pytorch_model.bin", weights_only=True)
    assert {"model.layers.0.mlp.deepspeed_moe.gate.wg.weight", "model.layers.1.mlp.gate_proj.weight",
            "model.layers.2.mlp.deepspeed_moe.experts.deepspeed_experts.3.down_proj.weight",
            "model.layers.0.self_attn.k_proj.weight", "model.mm_projector.image_spatial_proj.2.weight"} <= set(state)
    run = load_run(tmp_path / "s3")
    tok = run.tokenizer
    assert tok.eos_token == "<|end_of_turn|>" and tok.pad_token == tok.unk_token == "<unk>"
    assert tok("hi<|end_of_turn|>").input_ids[-1] == tok.eos_token_id  # generation stops there
    a = answer(run, "what color?", max_new_tokens=4)
    assert a["prompt"].endswith("USER: what color? ASSISTANT:") and a["new_tokens"] >= 1
    # the SentencePiece model trained on the fly, carried stage 2 -> stage 3 -> export
    trained = (tmp_path / "s2" / "tokenizer" / "tokenizer.model").read_bytes()
    assert all((d / "tokenizer.model").read_bytes() == trained for d in (tmp_path / "s2", tmp_path / "s3", out))
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "LlamaTokenizer"
    assert_slow_tokenizer_ids(out, tok)


def assert_slow_tokenizer_ids(folder, tok):
    """MoE-LLaVA's slow tokenizer built from ``folder`` gives ``tok``'s ids on openchat prompts."""
    from tests.slow_llama_tokenizer import slow_llama_ids, transformers_437_ids
    from vlmtrain.data.templates import VICUNA_SYSTEM, generation_prompt

    texts = [f"{VICUNA_SYSTEM} USER: <image>\nwhat color is the square? ASSISTANT: red<|end_of_turn|>"
             "USER: and the circle? ASSISTANT: blue<|end_of_turn|>",
             generation_prompt("openchat", "what shape is it?", 1, "<image>", tok)]
    fast = [tok(t).input_ids for t in texts]
    assert [slow_llama_ids(folder, t) for t in texts] == fast
    assert transformers_437_ids(folder, texts) in (None, fast)


def test_openchat_tokenizer_folder_keeps_its_sentencepiece_model_through_the_chain(instruct_blend, vlmtrain,
                                                                                    tmp_path):
    """Stage 2 from a tokenizer folder shaped as openchat-3.5's (tokenizer.model beside tokenizer.json;
    transformers 5 saves the latter only): its tokenizer.model goes to stage 2's output, stage 3's and
    the export, which MoE-LLaVA's slow tokenizer loads with the ids of the run's. An export named
    otherwise says which chat template serve/cli.py would pick; a stage 3 from a stage 2 without the
    file says its export will not load."""
    from tests.slow_llama_tokenizer import openchat_like_folder
    from vlmtrain.config import load_config
    from vlmtrain.data.templates import get_template
    from vlmtrain.generate import load_run
    from vlmtrain.train.tokenizer import load_tokenizer

    texts = ["what color is the square? the circle is red, the triangle green and blue. what shape is it?"] * 20
    source = openchat_like_folder(tmp_path / "openchat", texts + [get_template("openchat").corpus] * 8)
    s2 = write_config(tmp_path / "s2.yaml", tiny_config(
        instruct_blend, tmp_path / "s2", text_config=dict(TINY_MISTRAL), version="openchat", max_steps=2,
        tokenizer_train_vocab_size=None, tokenizer_name_or_path=str(source)))
    s3 = stage3_config(tmp_path / "s3.yaml", instruct_blend, tmp_path / "s2", tmp_path / "s3", version="openchat",
                       train_modules=["up_proj", "down_proj", "gate_proj", "wg"], max_steps=1,
                       save_moellava_checkpoint=True)
    r = vlmtrain("run", s2, s3)
    assert r.code == 0, r.err
    out = tmp_path / "s3" / "moe-llava-openchat"
    model = (source / "tokenizer.model").read_bytes()
    assert all((d / "tokenizer.model").read_bytes() == model for d in (tmp_path / "s2", tmp_path / "s3", out))
    stage2_tok, stage3_tok = load_tokenizer(load_config(s2)), load_run(tmp_path / "s3").tokenizer
    assert_slow_tokenizer_ids(out, stage2_tok)
    assert_slow_tokenizer_ids(out, stage3_tok)  # (stage 3 read stage 2's output as stage 2 tokenised)

    r = vlmtrain("export-moe-llava", tmp_path / "s3", tmp_path / "moe-llava-mistral-7b")
    assert r.code == 0, r.err
    assert "'llava_v0' conversation template" in r.err and "--conv-mode openchat" in r.err
    assert "tokenizer.model" not in r.err

    (tmp_path / "s2" / "tokenizer.model").unlink()  # a stage 2 whose tokenizer came from tokenizer.json alone
    s3b = stage3_config(tmp_path / "s3b.yaml", instruct_blend, tmp_path / "s2", tmp_path / "s3b", version="openchat",
                        train_modules=["up_proj", "wg"], max_steps=1, save_moellava_checkpoint=True)
    r = vlmtrain("run", s3b)
    assert r.code == 0, r.err
    assert not (tmp_path / "s3b" / "moe-llava-openchat" / "tokenizer.model").exists()
    assert "has no tokenizer.model" in r.err and "will not load this folder" in r.err

@pytest.mark.usefixtures("one_thread")
def test_loss_mean_micro_batch_keeps_the_aux_term_as_moellava_adds_it(stage2, vlmtrain, tmp_path):
    """``loss_mean: micro_batch`` (MoE-LLaVA's LM-loss weighting): the same routes and aux losses as the default,
    the aux term still once per micro-batch over the accumulation steps; only the LM loss's weighting moves."""
    blend, s2 = stage2
    rows = {}
    for mode in ("tokens", "micro_batch"):
        cfg = stage3_config(tmp_path / f"{mode}.yaml", blend, s2, tmp_path / mode, max_steps=2, loss_mean=mode,
                            per_device_train_batch_size=1, gradient_accumulation_steps=2, learning_rate=1e-12)
        r = vlmtrain("run", cfg)
        assert r.code == 0, r.err
        rows[mode] = read_metrics(tmp_path / mode)
    for step in (1, 2):
        a, b = rows["tokens"][step], rows["micro_batch"][step]
        assert a["moe/aux_loss"] == pytest.approx(b["moe/aux_loss"], rel=1e-6)
        assert a["moe/L0/load_e1"] == b["moe/L0/load_e1"]
    assert any(abs(rows["tokens"][s]["loss"] - rows["micro_batch"][s]["loss"]) > 1e-4 for s in (1, 2))


@pytest.mark.parametrize("over, recorded", [({"moe_mode": "sparse", "moe_layers_idx": [1, 3]}, "sparse"),
                                            ({"moe_mode": "sparse"}, "sparse"), ({"moe_mode": [0, 2]}, "custom")])
def test_config_moe_mode_is_recorded_as_moellava_records_it(over, recorded, tmp_path):
    """MoE-LLaVA's initialize_moe_modules writes the --moe_mode flag into config.moe before --moe_layers_idx turns
    its argument to 'custom' (78cfc54; opt-in check tests/train/test_moellava_init_reference_code.py)."""
    from vlmtrain.config import load_config
    from vlmtrain.train.stage3 import spec_from_config

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(tmp_path, tmp_path / "o", stage=3, **over)))
    spec = spec_from_config(cfg, 4, "phi")
    assert spec.moe_mode == recorded and spec.layers == over.get("moe_layers_idx", [0, 2])
