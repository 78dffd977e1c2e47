"""Config loading: typed keys, --set, clear early errors (exit 2), every shipped config valid, --dry-run offline."""
from __future__ import annotations

import json

import pytest
import yaml

from train_helpers import REPO, SHIPPED_CONFIGS, tiny_config, write_config
from vlmtrain.config import ConfigError, load_config


def _cfg(tmp_path, **over):
    return write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "missing-data", tmp_path / "out", **over))


def test_unknown_key_exits_2_with_did_you_mean(tmp_path, vlmtrain):
    path = _cfg(tmp_path, learnig_rate=1e-3)
    r = vlmtrain("run", path)
    assert r.code == 2
    assert "unknown key `learnig_rate`" in r.err and "did you mean `learning_rate`" in r.err
    assert "Traceback" not in r.err


def test_wrong_type_exits_2(tmp_path, vlmtrain):
    r = vlmtrain("run", _cfg(tmp_path, per_device_train_batch_size="four"))
    assert r.code == 2
    assert "`per_device_train_batch_size` must be int" in r.err and "'four'" in r.err


def test_missing_dataset_exits_2_before_any_model(tmp_path, vlmtrain, monkeypatch):
    import vlmtrain.model.build as build

    monkeypatch.setattr(build, "build_model", lambda *a, **k: pytest.fail("model built before the dataset check"))
    r = vlmtrain("run", _cfg(tmp_path))
    assert r.code == 2
    assert "dataset folder" in r.err and "does not exist" in r.err and "vlmdata blend" in r.err


@pytest.mark.parametrize("over, words", [
    ({"stage": 1, "tune_mm_mlp_adapter": False}, "contradicts"),
    ({"stage": 1, "freeze": {"llm": False}}, "projector only"),
    ({"stage": 1, "lora_enable": True}, "stage-2 option"),
    ({"stage": 2, "tune_mm_mlp_adapter": True}, "stage-1 flag"),
    ({"stage": 2, "freeze": {"llm": True}}, "stage 2 trains the LLM"),
    ({"stage": 4}, "3 (MoE-tuning)"),
    ({"mm_projector_type": "mlp2x_relu"}, "mm_projector_type"),
    ({"version": "vicuna"}, "choose one of"),
    ({"freeze": {"vison": True}}, "did you mean `freeze.vision`"),
])
def test_inconsistent_or_invalid_settings(tmp_path, over, words):
    with pytest.raises(ConfigError) as e:
        load_config(_cfg(tmp_path, **over))
    assert words in e.value.render()
    assert e.value.exit_code == 2


def test_set_overrides_are_typed_and_nested(tmp_path):
    path = _cfg(tmp_path)
    cfg = load_config(path, ["learning_rate=1e-5", "max_steps=3", "bf16=true", "freeze.vision=false",
                             "text_config.num_hidden_layers=4", "data_path=/x", "report_to=[tensorboard]"])
    assert cfg.learning_rate == 1e-5 and isinstance(cfg.learning_rate, float)
    assert cfg.max_steps == 3 and cfg.bf16 is True
    assert cfg.frozen() == {"vision": False, "projector": False, "llm": False}
    assert cfg.text_config["num_hidden_layers"] == 4 and cfg.text_config["hidden_size"] == 64
    assert cfg.dataset_dir == "/x" and cfg.report_to == ["tensorboard"]
    with pytest.raises(ConfigError, match="must be int"):
        load_config(path, ["max_steps=lots"])
    with pytest.raises(ConfigError, match="did you mean `max_steps`"):
        load_config(path, ["max_step=3"])


def test_llava_aliases(tmp_path):
    cfg = load_config(_cfg(tmp_path, image_tower="openai/clip-vit-large-patch14-336", image_folder="/imgs"))
    assert cfg.vision_tower == "openai/clip-vit-large-patch14-336" and cfg.image_root == "/imgs"
    assert load_config(_cfg(tmp_path, version="v1")).template == "vicuna_v1"


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=[p.name for p in SHIPPED_CONFIGS])
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    raw = yaml.safe_load(path.read_text())
    assert cfg.stage == raw["stage"]
    if cfg.deepspeed:
        assert json.loads(open(cfg.deepspeed).read())["zero_optimization"]["stage"] in (2, 3)
    if cfg.stage == 1:  # ConvLLaVA's stage 1 also trains its added tower stage (tune_vit_from_layer)
        assert cfg.frozen() == {"vision": cfg.tune_vit_from_layer is None, "projector": False, "llm": True}


RECIPES = [p for p in SHIPPED_CONFIGS if not p.name.startswith("tiny")]


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipes_do_not_clip_gradients_as_their_original_runs(path):
    """LLaVA's, ShareGPT4V's, MoE-LLaVA's, ConvLLaVA's and InternVL-LLaVA's zero2/zero3.json name no
    gradient_clipping, and the DeepSpeed of their time defaulted it to 0 (0.19 defaults to 1.0); the
    Trainer's clip does nothing under DeepSpeed. Ours: max_grad_norm 0, which "auto" hands to DeepSpeed."""
    cfg = load_config(path)
    assert cfg.max_grad_norm == 0.0 and cfg.deepspeed
    assert json.loads(open(cfg.deepspeed).read())["gradient_clipping"] == "auto"


def test_llava_recipes_carry_the_seed_hyperparameters():
    pre = load_config("configs/llava-1.5-7b-pretrain.yaml")
    ft = load_config("configs/llava-1.5-7b-finetune.yaml")
    assert (pre.learning_rate, pre.per_device_train_batch_size * pre.num_gpus, pre.version) == (1e-3, 256, "plain")
    assert (ft.learning_rate, ft.per_device_train_batch_size * ft.num_gpus, ft.template) == (2e-5, 128, "vicuna_v1")
    assert ft.image_aspect_ratio == "pad" and ft.group_by_modality_length and ft.deepspeed.endswith("zero3.json")
    assert pre.deepspeed.endswith("zero2.json") and ft.pretrain_mm_mlp_adapter.endswith("mm_projector.bin")
    for c in (pre, ft):
        assert (c.mm_vision_select_layer, c.mm_projector_type, c.model_max_length) == (-2, "mlp2x_gelu", 2048)
        assert (c.warmup_ratio, c.weight_decay, c.lr_scheduler_type, c.bf16, c.gradient_checkpointing) == \
            (0.03, 0.0, "cosine", True, True)


def test_dry_run_7b_offline_on_meta(vlmtrain, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = vlmtrain("run", "configs/llava-1.5-7b-finetune.yaml", "--dry-run", "--json")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    p = info["params"]
    assert 7.0e9 < p["all"]["total"] < 7.1e9           # LLaVA-1.5-7B: 7.06B
    assert p["vision"]["trainable"] == 0 and p["llm"]["trainable"] == p["llm"]["total"]
    assert p["projector"]["total"] == 1024 * 4096 + 4096 + 4096 * 4096 + 4096  # mlp2x_gelu
    assert info["tokens_per_image"] == 576 and info["global_batch"] == 128
    assert info["launch"].startswith("deepspeed ") and "--num_gpus 8" in info["launch"]


def test_dry_run_table(vlmtrain):
    r = vlmtrain("run", "configs/moe-llava-stablelm-stage1.yaml", "--dry-run")
    assert r.code == 0, r.err
    assert "projector" in r.out and "trainable" in r.out and "576 tokens per image" in r.out


@pytest.mark.parametrize("version, words", [(99, "schema_version 99 is unknown"), ("1", "must be an integer")])
def test_unknown_schema_version_exits_2_before_any_model(tmp_path, vlmtrain, monkeypatch, caption_blend, version, words):
    """blend.json's schema_version is read: a version this reader does not know stops the run with exit 2."""
    import shutil

    import vlmtrain.model.build as build

    monkeypatch.setattr(build, "build_model", lambda *a, **k: pytest.fail("model built before the schema check"))
    data = tmp_path / "blend"
    shutil.copytree(caption_blend, data)
    meta = json.loads((data / "blend.json").read_text())
    from vlmdata.contract import SCHEMA_VERSION

    assert meta["schema_version"] == SCHEMA_VERSION  # tinydata writes the contract's version
    meta["schema_version"] = version
    (data / "blend.json").write_text(json.dumps(meta))
    r = vlmtrain("run", write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "out")))
    assert r.code == 2, r.err
    assert words in r.err and "blend.json" in r.err and "Traceback" not in r.err


def test_run_without_the_training_extra_says_how_to_install_it(tmp_path, vlmtrain, monkeypatch):
    """`pip install vlmdata` is the data half alone: `vlmtrain run` then names the [train] extra, exit 2."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    r = vlmtrain("run", _cfg(tmp_path))
    assert r.code == 2 and "not installed: peft" in r.err and "vlmdata[train]" in r.err and "Traceback" not in r.err


def test_settings_a_run_would_ignore_are_refused_or_said(tmp_path):
    """Found by a config audit: keys that were accepted and then had no effect."""
    from vlmtrain.config import ConfigError

    with pytest.raises(ConfigError, match="has no warmup"):
        load_config(_cfg(tmp_path, lr_scheduler_type="constant", warmup_ratio=0.03))
    assert load_config(_cfg(tmp_path, lr_scheduler_type="constant", warmup_ratio=0.0)).lr_scheduler_type == "constant"
    with pytest.raises(ConfigError, match="`save_moellava_checkpoint` writes a stage-3"):
        load_config(_cfg(tmp_path, save_moellava_checkpoint=True))
    own = json.loads((REPO / "configs/deepspeed/zero2.json").read_text())
    (tmp_path / "ds_opt.json").write_text(json.dumps({**own, "optimizer": {"type": "AdamW", "params": {"lr": "auto"}}}))
    with pytest.raises(ConfigError, match="`mm_projector_lr` has no effect"):
        load_config(_cfg(tmp_path, deepspeed=str(tmp_path / "ds_opt.json"), mm_projector_lr=2e-5))
    (tmp_path / "ds_sched.json").write_text(json.dumps({**own, "scheduler": {"type": "WarmupDecayLR"}}))
    notes = load_config(_cfg(tmp_path, deepspeed=str(tmp_path / "ds_sched.json")))._notes
    assert any("`scheduler` section replaces `lr_scheduler_type`" in n for n in notes), notes


def test_a_deepspeed_json_without_gradient_clipping_gets_max_grad_norm(tmp_path):
    """LLaVA's own zero2.json names no gradient_clipping: the Trainer fills only an "auto" one, and DeepSpeed 0.19
    would clip at its default 1.0 whatever max_grad_norm says (0.16 and older: never)."""
    from vlmtrain.train.run import _deepspeed_config

    own = json.loads((REPO / "configs/deepspeed/zero2.json").read_text())
    del own["gradient_clipping"]
    (tmp_path / "llava_zero2.json").write_text(json.dumps(own))
    for norm in (0.0, 0.5):
        cfg = load_config(_cfg(tmp_path, deepspeed=str(tmp_path / "llava_zero2.json"), max_grad_norm=norm))
        assert _deepspeed_config(cfg)["gradient_clipping"] == norm
    shipped = load_config(_cfg(tmp_path, deepspeed=str(REPO / "configs/deepspeed/zero2.json")))
    assert _deepspeed_config(shipped)["gradient_clipping"] == "auto"  # (filled by the Trainer from max_grad_norm)


def test_freeze_settings_lora_or_stage3_would_override_are_refused(tmp_path):
    from vlmtrain.config import ConfigError

    for over in ({"freeze": {"vision": False}}, {"tune_vit_from_layer": 0}, {"freeze": {"projector": True}},
                 {"freeze": {"llm": False}}):
        with pytest.raises(ConfigError, match="would not be applied"):
            load_config(_cfg(tmp_path, lora_enable=True, **over))
    assert load_config(_cfg(tmp_path, lora_enable=True)).frozen() == {"vision": True, "projector": False, "llm": True}
    with pytest.raises(ConfigError, match="`train_modules` chooses what of the LLM trains"):
        load_config(_cfg(tmp_path, stage=3, freeze={"llm": False}, train_modules=["mlp"]))
    notes = load_config(_cfg(tmp_path, lora_r=128))._notes
    assert any("`lora_enable` is not" in n for n in notes), notes


@pytest.mark.parametrize("key, value", [
    ("mm_projector_lr", -1e-3), ("mm_projector_lr", 0.0), ("adam_beta1", 1.5), ("adam_beta2", -0.1),
    ("weight_decay", -0.1), ("max_grad_norm", -1.0), ("dataloader_num_workers", -1), ("seed", -1),
    ("lora_dropout", 1.0)])
def test_out_of_range_numbers_are_said_before_a_model_is_built(tmp_path, key, value):
    """Found in review: these were refused after the model was built (AdamW, the DataLoader, set_seed:
    tracebacks, exit 1), or, for a negative mm_projector_lr, trained with it without a word."""
    from vlmtrain.config import ConfigError

    with pytest.raises(ConfigError, match=f"`{key}` must"):
        load_config(_cfg(tmp_path, **{key: value}))


def test_train_modules_is_a_list_of_names_or_all(tmp_path):
    from vlmtrain.config import ConfigError

    assert load_config(_cfg(tmp_path, stage=3, train_modules="all")).train_modules == "all"
    for bad in ([], "fc1", ["fc1", ""], [1]):  # ([] would freeze nothing in MoE-LLaVA: `all` says so)
        with pytest.raises(ConfigError, match="or `all`") as e:
            load_config(_cfg(tmp_path, stage=3, train_modules=bad))
        assert "as MoE-LLaVA does when its script gives no --train_modules" in str(e.value)


def test_a_deepspeed_json_that_fixes_other_values_is_said_before_a_model_is_built(tmp_path):
    from vlmtrain.config import ConfigError

    own = json.loads((REPO / "configs/deepspeed/zero2.json").read_text())
    (tmp_path / "fixed.json").write_text(json.dumps({**own, "train_micro_batch_size_per_gpu": 16,
                                                     "gradient_clipping": 0.5}))
    with pytest.raises(ConfigError, match="train_micro_batch_size_per_gpu 16 vs `per_device_train_batch_size` 4; "
                                          "gradient_clipping 0.5 vs `max_grad_norm` 1.0"):
        load_config(_cfg(tmp_path, deepspeed=str(tmp_path / "fixed.json")))
    assert load_config(_cfg(tmp_path, deepspeed=str(tmp_path / "fixed.json"), per_device_train_batch_size=16,
                            max_grad_norm=0.5)).deepspeed


def test_keys_a_run_does_not_use_are_said_in_notes(tmp_path):
    notes = load_config(_cfg(tmp_path, tokenizer_name_or_path="some/tokenizer"))._notes
    assert any("`tokenizer_name_or_path` (some/tokenizer) is not used" in n for n in notes), notes
    notes = load_config(_cfg(tmp_path, mm_projector_lr=1e-4, freeze={"projector": True}))._notes
    assert any("`mm_projector_lr` has nothing to set" in n for n in notes), notes
    notes = load_config(_cfg(tmp_path, max_steps=10, profile_steps=[50, 60]))._notes
    assert any("`profile_steps` [50, 60] starts after `max_steps` 10: nothing is profiled" in n for n in notes), notes
    assert not load_config(_cfg(tmp_path, max_steps=10, profile_steps=[9, 12]))._notes
    assert not load_config(_cfg(tmp_path))._notes


def test_dry_run_of_a_lora_run_counts_its_adapters(vlmtrain, monkeypatch):
    """--dry-run built the model without LoRA: a LoRA run showed its LLM with nothing trainable."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = vlmtrain("run", "configs/llava-1.5-7b-finetune.yaml", "--dry-run", "--json", "--set", "lora_enable=true")
    assert r.code == 0, r.err
    p = json.loads(r.out)["params"]
    assert 0 < p["llm"]["trainable"] < p["llm"]["total"] / 10 and p["vision"]["trainable"] == 0
