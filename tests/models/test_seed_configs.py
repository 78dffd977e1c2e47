"""The shipped ConvLLaVA / InternVL / MoE-LLaVA-Qwen configs at their published parameter counts; `vlmtrain run`
end to end with a ConvNeXt (stage 1 -> 2) and an InternViT tower; remote code refused with a clear error."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.cli_runner import run_main
from tests.models.seed_model_helpers import CONVNEXT_TINY, INTERNVIT_TINY

REPO = Path(__file__).resolve().parents[2]
TINY_TEXT = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024}


def vlmtrain(*args: str):
    from vlmtrain.cli import main

    return run_main(main, "vlmtrain", *args)


def _params(config: str, *sets: str) -> dict:
    r = vlmtrain("run", str(REPO / "configs" / config), "--dry-run", "--json", *[a for s in sets for a in ("--set", s)])
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_convllava_dry_run_reports_the_published_tower():
    """ConvLLaVA-ConvNeXt-768 (5 stages): pytorch_model.bin is 1.34 GB in bf16 = 669,161,664 x 2 bytes; its first
    4 stages are timm's convnext_large (197,767,336) without the classifier (1,537,000) and head norm (3,072)."""
    s1 = _params("convllava-stage1.yaml")
    assert s1["params"]["vision"] == {"total": 669_161_664, "trainable": 472_934_400}  # stage 1: the added stage
    assert s1["tokens_per_image"] == 144 and s1["vision_feature_select_strategy"] == "full"
    assert s1["params"]["projector"]["total"] == 3072 * 4096 + 4096 + 4096 * 4096 + 4096
    s2 = _params("convllava-stage2.yaml")
    assert s2["params"]["vision"] == {"total": 669_161_664, "trainable": 664_332_288}  # stages 2-4
    assert _params("convllava-stage3.yaml")["params"]["vision"]["trainable"] == 0
    assert 669_161_664 - 472_934_400 == 197_767_336 - 1_537_000 - 3_072


def test_convllava_configs_take_its_scripts_template_order_and_save_steps():
    """alibaba/conv-llava scripts/stage_{1,2,3}.sh: `--version v1` in every stage (stage 1 too, not LLaVA's
    plain), `--group_by_modality_length True` in every stage, `--save_steps` 24000 / 24000 / 50000."""
    from vlmtrain.config import load_config

    for n, save_steps in ((1, 24000), (2, 24000), (3, 50000)):
        cfg = load_config(REPO / "configs" / f"convllava-stage{n}.yaml")
        assert (cfg.template, cfg.group_by_modality_length, cfg.save_steps) == ("vicuna_v1", True, save_steps), n


def test_internvl_dry_run_reports_internvit_6b():
    info = _params("internvl-chat-vit6b-448-vicuna13b-finetune.yaml")
    assert info["params"]["vision"]["total"] == 5_905_251_200 and info["tokens_per_image"] == 1024
    assert info["vision_feature_layer"] == -4 and info["vision_feature_select_strategy"] == "default"
    # The 224px checkpoint fed 336 px (InternVL's 224to336 recipes): the model card's 5903M, 576 tokens.
    v224 = _params("internvl-chat-vit6b-448-vicuna13b-finetune.yaml", "vision_config=model_configs/internvit-6b-224px-336.json")
    assert v224["params"]["vision"]["total"] == 5_902_793_600 and v224["tokens_per_image"] == 576


def test_moe_llava_qwen_dry_run_reports_qwen_1_8b():
    """Qwen-1_8B: 1,836,828,672 parameters ("1.8B"); the dry run adds the <image> row to embeddings and head."""
    info = _params("moe-llava-qwen-stage1.yaml")
    assert info["params"]["llm"]["total"] == 1_836_828_672 + 2 * 2048


def test_moe_llava_openchat_dry_run_reports_mistral_7b():
    """Mistral-7B's 7,241,732,096 parameters with openchat's 32,002-row vocabulary (two added tokens, in the
    embeddings and the untied head); the dry run adds the <image> row to both."""
    info = _params("moe-llava-openchat-stage1.yaml")
    assert info["params"]["llm"]["total"] == 7_241_732_096 + 2 * 2 * 4096 + 2 * 4096


# PKU-YuanGroup/MoE-LLaVA scripts/v1/<family>/finetune{,_moe}.sh (6cb5f66): --version, stage 3's --train_modules
# and per-GPU batch x accumulation; every other value below is the same in the four families' scripts.
MOE_LLAVA_SCRIPTS = {
    "phi2": ("phi", ["fc1", "fc2", "wg"], (8, 2)),
    "qwen": ("qwen", ["mlp.w1", "mlp.w2", "mlp.c_proj", "wg"], (8, 2)),
    "stablelm": ("stablelm", ["gate_proj", "up_proj", "down_proj", "wg"], (8, 2)),
    "openchat": ("openchat", ["up_proj", "down_proj", "gate_proj", "wg"], (4, 4)),
}


@pytest.mark.parametrize("family", sorted(MOE_LLAVA_SCRIPTS))
def test_moe_llava_configs_take_their_scripts_values(family):
    """scripts/v1/<family>/{pretrain,finetune,finetune_moe}.sh: lr, batch, template, save_steps and dataloader
    workers (8 in pretrain, 4 after; save_steps 24000 / 50000 / 24000), the MoE settings."""
    from vlmtrain.config import load_config

    template, modules, (batch3, accum3) = MOE_LLAVA_SCRIPTS[family]
    s1, s2, s3 = (load_config(REPO / "configs" / f"moe-llava-{family}-stage{n}.yaml") for n in (1, 2, 3))
    assert (s1.template, s1.learning_rate, s1.per_device_train_batch_size, s1.gradient_accumulation_steps,
            s1.save_steps, s1.dataloader_num_workers) == ("plain", 1e-3, 32, 1, 24000, 8)
    assert (s2.template, s2.learning_rate, s2.per_device_train_batch_size, s2.gradient_accumulation_steps,
            s2.save_steps, s2.dataloader_num_workers) == (template, 2e-5, 8, 2, 50000, 4)
    assert (s3.template, s3.learning_rate, s3.per_device_train_batch_size, s3.gradient_accumulation_steps,
            s3.save_steps, s3.dataloader_num_workers) == (template, 2e-5, batch3, accum3, 24000, 4)
    assert s3.train_modules == modules
    # (router_aux_loss_gradient false: the aux loss reaches no gradient in MoE-LLaVA's checkpointed runs)
    assert (s3.num_experts, s3.top_k_experts, s3.capacity_factor, s3.moe_mode, s3.use_residual,
            s3.router_aux_loss_coef, s3.router_aux_loss_gradient) == (4, 2, 1.5, "sparse", False, 0.01, False)
    for c in (s1, s2, s3):
        assert c.model_max_length == 2048 and c.deepspeed.endswith("zero2.json") and c.num_train_epochs == 1
    assert s2.group_by_modality_length and s3.group_by_modality_length and s2.image_aspect_ratio == "pad"


def test_configs_readme_lists_no_stand_ins():
    text = (REPO / "configs/README.md").read_text() + (REPO / "configs/model_configs/README.md").read_text()
    for word in ("stand-in", "stands in for", "approximation", "APPROXIMATION", "does not fit"):
        assert word not in text, word
    assert not list((REPO / "configs/model_configs").glob("*approx*"))


def _write(tmp_path: Path, name: str, blend: Path, **over) -> Path:
    cfg = {"stage": 2, "random_init": True, "text_config": dict(TINY_TEXT), "tokenizer_train_vocab_size": 400,
           "version": "vicuna_v1", "dataset_dir": str(blend), "model_max_length": 512, "output_dir": str(tmp_path / name),
           "per_device_train_batch_size": 4, "max_steps": 2, "learning_rate": 3e-3, "warmup_ratio": 0.0,
           "save_steps": 100, "logging_steps": 1, "seed": 7, "report_to": []}
    cfg.update(over)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def caption_blend(tmp_path_factory) -> Path:
    from vlmtrain.tinydata import write_tiny_blend

    return write_tiny_blend(tmp_path_factory.mktemp("blend") / "caption", n=12, kind="caption", seed=3)


def test_convllava_stages_run_end_to_end(caption_blend, tmp_path):
    """Stage 1 trains the projector + the added stage and saves the whole model; stage 2 starts from it."""
    from safetensors.torch import load_file

    tower = dict(CONVNEXT_TINY, depths=[1, 1, 2, 1, 2], hidden_sizes=[8, 16, 24, 32, 40], image_size=128)
    s1 = _write(tmp_path, "s1", caption_blend, stage=1, version="plain", vision_config=tower,
                mm_vision_select_layer=-1, tune_vit_from_layer=4)
    r = vlmtrain("run", str(s1))
    assert r.code == 0, r.err
    saved = load_file(tmp_path / "s1" / "model.safetensors")
    assert any(".vision_tower.encoder.stages.4." in k for k in saved)
    rows = [json.loads(x) for x in (tmp_path / "s1" / "metrics.jsonl").read_text().splitlines()]
    assert sum("loss" in row and "model_tflops_per_s" in row for row in rows) == 2  # the FLOP count ran each step
    s2 = _write(tmp_path, "s2", caption_blend, model_name_or_path=str(tmp_path / "s1"), random_init=False,
                tokenizer_train_vocab_size=None, vision_config=tower, mm_vision_select_layer=-1, tune_vit_from_layer=2)
    r = vlmtrain("run", str(s2))
    assert r.code == 0, r.err
    after = load_file(tmp_path / "s2" / "model.safetensors")
    key = next(k for k in after if k.endswith("vision_tower.encoder.stages.2.layers.0.pwconv1.weight"))
    frozen = next(k for k in after if k.endswith("vision_tower.encoder.stages.0.layers.0.pwconv1.weight"))
    assert not torch.equal(after[key], saved[key]) and torch.equal(after[frozen], saved[frozen])


def test_internvit_tower_runs_end_to_end(caption_blend, tmp_path):
    cfg = _write(tmp_path, "ivit", caption_blend, vision_config=dict(INTERNVIT_TINY, num_hidden_layers=4),
                 mm_vision_select_layer=-4)
    r = vlmtrain("run", str(cfg))
    assert r.code == 0, r.err
    saved = json.loads((tmp_path / "ivit" / "config.json").read_text())
    assert saved["vision_config"]["model_type"] == "internvl_vision"  # a stock transformers class


def test_remote_code_tower_is_refused_with_the_switch_named(tmp_path, caption_blend):
    remote = tmp_path / "remote-vit"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "my_remote_vit",
                                                    "auto_map": {"AutoConfig": "configuration_x.XConfig"}}))
    from transformers import AutoConfig, AutoModelForCausalLM

    AutoModelForCausalLM.from_config(AutoConfig.for_model(**dict(TINY_TEXT, vocab_size=500))).save_pretrained(tmp_path / "llm")
    cfg = _write(tmp_path, "remote", caption_blend, stage=1, version="plain", random_init=False,
                 model_name_or_path=str(tmp_path / "llm"), vision_tower=str(remote))
    r = vlmtrain("run", str(cfg))
    assert r.code == 2
    assert "remote code" in r.err and "`trust_remote_code` is off by default" in r.err


def test_remote_code_tokenizer_is_refused_with_the_switch_named(tmp_path):
    from vlmtrain.config import ConfigError, load_config
    from vlmtrain.train.tokenizer import load_tokenizer

    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"auto_map": {"AutoTokenizer": ["tokenization_qwen.QWenTokenizer", None]}, "tokenizer_class": "QWenTokenizer"}))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen", "auto_map": {"AutoConfig": "x.Y"}}))
    cfg = load_config(None, raw={"model_name_or_path": str(tmp_path), "text_config": dict(TINY_TEXT)})
    with pytest.raises(ConfigError, match="trust_remote_code: true"):
        load_tokenizer(cfg)


def test_tune_vit_from_layer_is_checked_before_anything_is_built():
    from vlmtrain.config import ConfigError, load_config

    base = {"model_name_or_path": "x", "text_config": dict(TINY_TEXT)}
    assert load_config(None, raw=dict(base, stage=1, tune_vit_from_layer=4)).frozen() == \
        {"vision": False, "projector": False, "llm": True}
    with pytest.raises(ConfigError, match="0 or more"):
        load_config(None, raw=dict(base, tune_vit_from_layer=-1))
    with pytest.raises(ConfigError, match="`freeze.vision` is true"):
        load_config(None, raw=dict(base, tune_vit_from_layer=2, freeze={"vision": True}))
    with pytest.raises(ConfigError, match="must stay frozen"):
        load_config(None, raw=dict(base, stage=1, freeze={"vision": False}))
