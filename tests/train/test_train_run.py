"""`vlmtrain run` end to end on tiny random models (CPU, offline): overfit, stages 1 -> 2, exact resume,
SIGTERM checkpoints, LoRA, plot, launcher commands."""
from __future__ import annotations

import pytest
import torch

from train_helpers import read_metrics
from vlmtrain.config import load_config


def test_model_overfits_a_batch_from_the_data_pipeline(instruct_blend, make_config):
    """The model consumes the data side's batches (expanded image tokens, -100 labels, pixel_values) and learns."""
    from torch.utils.data import DataLoader

    from vlmtrain.data import DataArgs, ImageTokens, build_train_data, pop_batch_meta
    from vlmtrain.model.build import apply_freeze, build_model
    from vlmtrain.train.run import build_image_processor
    from vlmtrain.train.tokenizer import load_tokenizer

    cfg = load_config(make_config(instruct_blend))
    tok = load_tokenizer(cfg)
    built = build_model(cfg, vocab_size=len(tok), image_token_id=tok.convert_tokens_to_ids("<image>"))
    apply_freeze(built.model, cfg.frozen())
    data = build_train_data(DataArgs(dataset_dir=str(instruct_blend), model_max_length=512), tok,
                            build_image_processor(cfg, built.vision),
                            ImageTokens("<image>", built.image_token_id, built.tokens_per_image))
    batch = next(iter(DataLoader(data.dataset, batch_size=6, collate_fn=data.collator)))
    pop_batch_meta(batch)
    assert "pixel_values" in batch and (batch["input_ids"] == built.image_token_id).sum() == \
        batch["pixel_values"].shape[0] * built.tokens_per_image
    opt = torch.optim.AdamW([p for p in built.model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(20):
        loss = built.model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_stage1_to_stage2_handoff(caption_blend, instruct_blend, make_config, vlmtrain, tmp_path):
    r1 = vlmtrain("run", make_config(caption_blend, "s1", stage=1, version="plain", max_steps=4,
                                     learning_rate=1e-2))
    assert r1.code == 0, r1.err
    s1 = tmp_path / "s1"
    bin_ = torch.load(s1 / "mm_projector.bin", weights_only=True)
    assert sorted(bin_) == ["model.mm_projector.0.bias", "model.mm_projector.0.weight",
                            "model.mm_projector.2.bias", "model.mm_projector.2.weight"]
    assert not (s1 / "model.safetensors").exists()  # stage 1 saves the projector alone
    # Stage 2 loads it; with the projector frozen for this check its values must come out unchanged.
    r2 = vlmtrain("run", make_config(instruct_blend, "s2", pretrain_mm_mlp_adapter=str(s1 / "mm_projector.bin"),
                                     freeze={"projector": True}, max_steps=2))
    assert r2.code == 0, r2.err
    from safetensors.torch import load_file

    w = load_file(tmp_path / "s2" / "model.safetensors")
    proj = {k.split("multi_modal_projector.")[1]: v for k, v in w.items() if "multi_modal_projector." in k}
    assert torch.equal(proj["linear_1.weight"], bin_["model.mm_projector.0.weight"])
    assert torch.equal(proj["linear_2.bias"], bin_["model.mm_projector.2.bias"])
    # ... and the LLM did train.
    assert read_metrics(tmp_path / "s2")[2]["loss"] > 0


@pytest.mark.usefixtures("one_thread")  # compared bitwise
def test_resume_after_sigterm_reproduces_the_uninterrupted_run(instruct_blend, make_config, vlmtrain, tmp_path):
    over = dict(max_steps=7, group_by_modality_length=True, learning_rate=2e-3)
    full = vlmtrain("run", make_config(instruct_blend, "full", **over))
    assert full.code == 0, full.err
    cut_cfg = make_config(instruct_blend, "cut", **over)
    cut = vlmtrain("run", cut_cfg, env={"VLMTRAIN_SIGTERM_AT_STEP": "3"})
    assert cut.code == 143 and "--resume" in cut.err
    assert sorted(p.name for p in (tmp_path / "cut").glob("checkpoint-*")) == ["checkpoint-3"]
    assert max(read_metrics(tmp_path / "cut")) == 3
    again = vlmtrain("run", cut_cfg)
    assert again.code == 2 and "--resume" in again.err  # no silent restart over a checkpoint
    resumed = vlmtrain("run", cut_cfg, "--resume")
    assert resumed.code == 0, resumed.err
    assert "mean loss " in resumed.err and " over steps 4-7" in resumed.err  # (the Trainer's mean: this run's steps)
    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "cut")
    assert sorted(a) == sorted(b) == list(range(1, 8))
    for step in a:
        assert a[step]["loss"] == b[step]["loss"], step
        assert a[step]["grad_norm"] == b[step]["grad_norm"], step
        assert a[step]["learning_rate"] == b[step]["learning_rate"], step


def test_resume_without_checkpoint_is_a_user_error(instruct_blend, make_config, vlmtrain):
    r = vlmtrain("run", make_config(instruct_blend, "none"), "--resume")
    assert r.code == 2 and "no checkpoint" in r.err


def test_logs_throughput_and_plot(instruct_blend, make_config, vlmtrain, tmp_path, monkeypatch):
    r = vlmtrain("run", make_config(instruct_blend, "log", max_steps=3, report_to=["tensorboard"]))
    assert r.code == 0, r.err
    rows = read_metrics(tmp_path / "log")
    assert all(rows[s]["tokens_per_s"] > 0 and rows[s]["samples_per_s"] > 0 for s in rows)
    assert rows[1]["mfu"] is None  # CPU: no peak FLOPs, MFU n/a
    assert list((tmp_path / "log" / "tensorboard").iterdir())
    p = vlmtrain("plot", tmp_path / "log")
    assert p.code == 0 and (tmp_path / "log" / "curves.png").stat().st_size > 1000
    # Without matplotlib, Pillow draws it.
    import builtins

    real_import = builtins.__import__

    def no_mpl(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    p = vlmtrain("plot", tmp_path / "log", "--out", tmp_path / "pil.png")
    assert p.code == 0
    from PIL import Image

    assert Image.open(tmp_path / "pil.png").size[0] == 800


def test_lora_stage2(instruct_blend, make_config, vlmtrain, tmp_path):
    r = vlmtrain("run", make_config(instruct_blend, "lora", lora_enable=True, lora_r=4, lora_alpha=8, max_steps=2))
    assert r.code == 0, r.err
    out = tmp_path / "lora"
    assert (out / "adapter_config.json").is_file() and (out / "mm_projector.bin").is_file()


def test_launch_commands():
    from vlmtrain.config import ConfigError
    from vlmtrain.train.launch import launch_command, needs_launch

    cfg = load_config("configs/llava-1.5-7b-finetune.yaml")
    assert needs_launch(cfg)
    cmd = launch_command(cfg, ["run", "x.yaml"], env={})
    assert cmd[:1] == ["deepspeed"] and "--no_local_rank" in cmd and cmd[-3:] == ["vlmtrain.cli", "run", "x.yaml"]
    cfg.hostfile, cfg.num_nodes = "/etc/hosts", 2
    assert "--hostfile" in launch_command(cfg, ["run", "x.yaml"], env={})
    cfg = load_config("configs/llava-1.5-7b-finetune.yaml", ["deepspeed=null", "num_nodes=2"])
    try:
        launch_command(cfg, ["run", "x.yaml"], env={})
        raise AssertionError("expected a ConfigError")
    except ConfigError as e:
        assert "MASTER_ADDR" in e.render()
    cmd = launch_command(cfg, ["run", "x.yaml"], env={"MASTER_ADDR": "10.0.0.1", "NODE_RANK": "1"})
    assert cmd[0] == "torchrun" and cmd[cmd.index("--nproc_per_node") + 1] == "8" and "--node_rank" in cmd
    # the deepspeed launcher on every node (NODE_RANK set): no ssh, the hostfile names the nodes
    cfg = load_config("configs/llava-1.5-7b-finetune.yaml", ["num_nodes=2", "hostfile=/etc/hosts"])
    cmd = launch_command(cfg, ["run", "x.yaml"], env={"MASTER_ADDR": "10.0.0.1", "NODE_RANK": "1"})
    assert cmd[0] == "deepspeed" and "--no_ssh" in cmd and cmd[cmd.index("--node_rank") + 1] == "1"
    assert "--no_ssh" not in launch_command(cfg, ["run", "x.yaml"], env={})  # the first node starts the others
    cfg = load_config("configs/llava-1.5-7b-finetune.yaml", ["num_nodes=2"])
    try:
        launch_command(cfg, ["run", "x.yaml"], env={"MASTER_ADDR": "10.0.0.1", "NODE_RANK": "1"})
        raise AssertionError("expected a ConfigError")
    except ConfigError as e:
        assert "hostfile" in e.render()
    assert not needs_launch(load_config("configs/tiny-cpu.yaml"))


def test_shipped_tiny_cpu_config_trains(instruct_blend, vlmtrain, tmp_path):
    r = vlmtrain("run", "configs/tiny-cpu.yaml", "--set", f"dataset_dir={instruct_blend}",
                 "--set", f"output_dir={tmp_path / 'tiny'}", "--set", "max_steps=4", "--set", "report_to=[]")
    assert r.code == 0, r.err
    rows = read_metrics(tmp_path / "tiny")
    assert sorted(rows) == [1, 2, 3, 4] and (tmp_path / "tiny" / "model.safetensors").is_file()


@pytest.mark.usefixtures("one_thread")  # compared bitwise
def test_stage1_resume_restores_the_projector_exactly(caption_blend, make_config, vlmtrain, tmp_path):
    over = dict(stage=1, version="plain", max_steps=5, learning_rate=1e-2)
    assert vlmtrain("run", make_config(caption_blend, "a", **over)).code == 0
    cfg = make_config(caption_blend, "b", **over)
    assert vlmtrain("run", cfg, env={"VLMTRAIN_SIGTERM_AT_STEP": "2"}).code == 143
    assert (tmp_path / "b" / "checkpoint-2" / "mm_projector.bin").is_file()
    assert vlmtrain("run", cfg, "--resume").code == 0
    a = torch.load(tmp_path / "a" / "mm_projector.bin", weights_only=True)
    b = torch.load(tmp_path / "b" / "mm_projector.bin", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [ra[s]["loss"] for s in sorted(ra)] == [rb[s]["loss"] for s in sorted(rb)]
