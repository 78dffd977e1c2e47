"""ShareGPT4V's recipe (ShareGPT4Omni/ShareGPT4V, scripts/sharegpt4v/slurm_{pretrain,finetune}_{7b,13b}.sh):
the shipped configs carry the scripts' values; its pretrain trains what share4v/train/train.py's unlock_vit
unlocks (the LLM, the projector, the ViT's blocks from `tune_vit_from_layer` on, nothing else of the tower);
the finetune starts from the tower that pretrain tuned; the three runs chain in one command."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from train_helpers import REPO, TINY_TEXT, TINY_VISION, run_vlmtrain, tiny_config, write_config
from vlmtrain.config import ConfigError, load_config

CONFIGS = REPO / "configs"
# One CLIP-L/14 block: attention 4 x (1024^2 + 1024), MLP 2 x 1024 x 4096 + 4096 + 1024, two layernorms 4 x 1024.
CLIP_L_BLOCK = 4 * (1024 * 1024 + 1024) + (1024 * 4096 + 4096) + (4096 * 1024 + 1024) + 4 * 1024
TOWER = dict(TINY_VISION, num_hidden_layers=4)  # blocks 0-3; ShareGPT4V's 12-of-24 becomes 2-of-4
FROM = 2


def _values(size: str, stage: str) -> dict:
    cfg = load_config(CONFIGS / f"sharegpt4v-{size}-{stage}.yaml")
    return {k: v for k, v in cfg.to_dict().items()
            if k not in ("model_name_or_path", "text_config", "pretrain_mm_mlp_adapter", "output_dir")}


def test_configs_carry_the_scripts_values():
    pre = load_config(CONFIGS / "sharegpt4v-7b-pretrain.yaml")
    ft = load_config(CONFIGS / "sharegpt4v-7b-finetune.yaml")
    for c, batch in ((pre, 256), (ft, 128)):  # the scripts' 2 nodes x 8 GPUs at accumulation 1
        assert c.per_device_train_batch_size * c.gradient_accumulation_steps * c.num_gpus * c.num_nodes == batch
        assert (c.learning_rate, c.num_train_epochs, c.model_max_length, c.weight_decay, c.warmup_ratio) == \
            (2e-5, 1.0, 2048, 0.0, 0.03)
        assert (c.mm_vision_select_layer, c.mm_projector_type, c.save_steps, c.mm_projector_lr) == \
            (-2, "mlp2x_gelu", 50000, None)
        assert c.deepspeed.endswith("zero3.json") and c.lr_scheduler_type == "cosine"
    assert (pre.stage, pre.template, pre.tune_vit_from_layer, pre.image_aspect_ratio) == (2, "plain", 12, "square")
    assert pre.frozen() == {"vision": False, "projector": False, "llm": False} and not pre.group_by_modality_length
    assert pre.pretrain_mm_mlp_adapter == "runs/llava-v1.5-7b-pretrain/mm_projector.bin"
    assert pre.vision_tower == "openai/clip-vit-large-patch14-336" and pre.dataset_dir == "data/blends/sharegpt4v-pt"
    assert (ft.stage, ft.template, ft.tune_vit_from_layer, ft.image_aspect_ratio) == (2, "vicuna_v1", None, "pad")
    assert ft.frozen() == {"vision": True, "projector": False, "llm": False} and ft.group_by_modality_length
    assert ft.model_name_or_path == pre.output_dir and ft.pretrain_mm_mlp_adapter is None
    assert ft.dataset_dir == "data/blends/sharegpt4v-665k"
    # the 13B scripts differ from the 7B ones in the LLM and the paths only
    assert _values("7b", "pretrain") == _values("13b", "pretrain")
    assert _values("7b", "finetune") == _values("13b", "finetune")
    assert load_config(CONFIGS / "sharegpt4v-13b-pretrain.yaml").model_name_or_path == "lmsys/vicuna-13b-v1.5"


def test_the_shipped_chain_plans_offline_with_the_upper_half_of_clip_l_training(monkeypatch):
    """LLaVA-1.5's stage 1 -> ShareGPT4V pretrain -> finetune: one --dry-run, the stages linked."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = run_vlmtrain("run", *(str(CONFIGS / f) for f in ("llava-1.5-7b-pretrain.yaml", "sharegpt4v-7b-pretrain.yaml",
                                                          "sharegpt4v-7b-finetune.yaml")), "--dry-run", "--json")
    assert r.code == 0, r.err
    _, pre, ft = json.loads(r.out)
    # blocks 12-22 of 24: ShareGPT4V unlocks 12-23, but block 23 comes after the selected layer (-2) and gets no
    # gradient there either; vlmtrain leaves it frozen (towers.unfreeze_from)
    assert pre["params"]["vision"]["trainable"] == 11 * CLIP_L_BLOCK
    for part in ("llm", "projector"):
        assert pre["params"][part]["trainable"] == pre["params"][part]["total"]
    assert ft["params"]["vision"]["trainable"] == 0 and ft["global_batch"] == 128 and pre["global_batch"] == 256


def test_pretrain_trains_what_unlock_vit_unlocks(tmp_path):
    """share4v/train/train.py: `model.requires_grad_(True)`, then of the tower only the parameters under
    `vision_model.encoder.layers.<i>` with i >= tune_vit_from_layer; embeddings, pre- and post-layernorm stay frozen.
    Of those blocks, the ones after the selected hidden state (select layer -2: the last block) get no gradient in
    either codebase; vlmtrain does not mark them trainable, so DDP without unused-parameter search works."""
    from vlmtrain.model.build import apply_freeze, build_model

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(
        tmp_path, tmp_path / "o", version="plain", vision_config=TOWER, tune_vit_from_layer=FROM)))
    model = build_model(cfg).model
    apply_freeze(model, cfg.frozen(), cfg.tune_vit_from_layer)
    tower = {n for n, _ in model.model.vision_tower.named_parameters()}
    trains = {n for n, p in model.model.vision_tower.named_parameters() if p.requires_grad}
    last = TOWER["num_hidden_layers"] - 1  # feeds nothing: hidden state -2 is the output of the block before it
    unlocked = {n for n in tower if _block(n) is not None and FROM <= _block(n) < last}
    assert trains == unlocked and len(unlocked) == (last - FROM) * len([n for n in tower if _block(n) == 0])
    assert any("embeddings" in n for n in tower - trains) and any("post_layernorm" in n for n in tower - trains)
    rest = [p for n, p in model.named_parameters() if ".vision_tower." not in f".{n}"]
    assert rest and all(p.requires_grad for p in rest)  # the LLM (embeddings and head too) and the projector


def test_a_stage_2_after_a_stage_2_refuses_what_would_not_continue_the_first(tmp_path):
    """The second stage 2 starts from the first one's whole model: a projector file would overwrite the trained
    projector, and a LoRA first stage leaves an adapter, not a model."""
    from vlmtrain.train.chain import plan_chain

    first = write_config(tmp_path / "a.yaml", tiny_config(tmp_path, tmp_path / "a", version="plain"))
    second = write_config(tmp_path / "b.yaml", tiny_config(tmp_path, tmp_path / "b"))
    stages = plan_chain([first, second], [])
    assert stages[1].cfg.model_name_or_path == stages[1].cfg.tokenizer_name_or_path == str(tmp_path / "a")
    assert stages[1].cfg.tokenizer_train_vocab_size is None and not stages[1].cfg.random_init
    with_adapter = write_config(tmp_path / "c.yaml", tiny_config(tmp_path, tmp_path / "c",
                                                                 pretrain_mm_mlp_adapter="x/mm_projector.bin"))
    with pytest.raises(ConfigError, match="would replace the projector that stage trained"):
        plan_chain([first, with_adapter], [])
    lora = write_config(tmp_path / "l.yaml", tiny_config(tmp_path, tmp_path / "l", lora_enable=True))
    with pytest.raises(ConfigError, match="its output is an adapter, not the whole model"):
        plan_chain([lora, second], [])


def _tiny_parts(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny Llama and a tiny CLIP tower saved as pretrained folders (what vicuna / CLIP-L are in the recipe)."""
    from transformers import AutoConfig, AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(**dict(TINY_TEXT, vocab_size=512))).save_pretrained(
        tmp_path / "llm")
    fields = {k: v for k, v in TOWER.items() if k != "model_type"}
    CLIPVisionModel(CLIPVisionConfig(**fields)).save_pretrained(tmp_path / "clip")
    return tmp_path / "llm", tmp_path / "clip"


def _block(name: str) -> int | None:
    """The ViT block a tower parameter belongs to (`encoder.layers.<i>.…`), None for the embeddings and norms."""
    m = re.search(r"(?:^|\.)encoder\.layers\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def _tower(state: dict, within: str = "") -> dict:
    """The tower's tensors by their names inside the tower (`encoder.layers.2.…`): those under `within` of a saved
    Llava, or all of a tower folder's; transformers 4's `vision_model.` level dropped."""
    inner = {(k.split(within, 1)[1] if within else k): v for k, v in state.items() if within in k}
    return {k.removeprefix("vision_model."): v for k, v in inner.items()}


def test_recipe_chain_tunes_the_upper_tower_and_the_finetune_starts_from_it(caption_blend, instruct_blend, tmp_path):
    from safetensors.torch import load_file

    llm, clip = _tiny_parts(tmp_path)
    common = dict(random_init=False, model_name_or_path=str(llm), vision_tower=str(clip), text_config=None,
                  vision_config=None, max_steps=3, learning_rate=1e-2)
    s1 = write_config(tmp_path / "s1.yaml", tiny_config(caption_blend, tmp_path / "s1", stage=1, version="plain",
                                                        **common))
    pre = write_config(tmp_path / "pre.yaml", tiny_config(caption_blend, tmp_path / "pre", version="plain",
                                                          tune_vit_from_layer=FROM, **common))
    # as the shipped finetune config: no vision_tower, the tower is the one in the pretrain run's model
    ft = write_config(tmp_path / "ft.yaml", tiny_config(instruct_blend, tmp_path / "ft", version="v1",
                                                        **dict(common, vision_tower=None)))
    r = run_vlmtrain("run", s1, pre, ft)
    assert r.code == 0, r.err
    recorded = json.loads((tmp_path / "pre" / "vlmtrain_config.json").read_text())
    assert recorded["pretrain_mm_mlp_adapter"] == str(tmp_path / "s1" / "mm_projector.bin")  # LLaVA's projector in
    assert json.loads((tmp_path / "ft" / "vlmtrain_config.json").read_text())["model_name_or_path"] == \
        str(tmp_path / "pre")

    original = _tower(load_file(clip / "model.safetensors"))
    tuned = _tower(load_file(tmp_path / "pre" / "model.safetensors"), "vision_tower.")
    assert tuned.keys() == original.keys()
    changed = {k for k in original if not torch.equal(original[k], tuned[k])}
    # Block 2 trains; block 3 (after the selected layer -2) is frozen (ShareGPT4V's gets no gradient); the rest too.
    assert changed and all(_block(k) == FROM for k in changed)
    assert any(k.endswith("mlp.fc1.weight") for k in changed)

    after = _tower(load_file(tmp_path / "ft" / "model.safetensors"), "vision_tower.")
    assert all(torch.equal(after[k], tuned[k]) for k in tuned)  # the finetune ran on the tuned tower, frozen


def test_a_block_after_the_selected_layer_is_refused_as_the_first_trained_one(tmp_path):
    from vlmtrain.model.build import apply_freeze, build_model

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(
        tmp_path, tmp_path / "o", vision_config=TOWER, tune_vit_from_layer=TOWER["num_hidden_layers"] - 1)))
    with pytest.raises(ConfigError, match="is the output of block 2, so blocks 3.. get no gradient"):
        apply_freeze(build_model(cfg).model, cfg.frozen(), cfg.tune_vit_from_layer)


def test_pretrain_mode_trains_under_ddp_without_deepspeed(caption_blend, tmp_path):
    """Two CPU processes under torchrun (gloo), no DeepSpeed, gradient checkpointing on: the Trainer then turns
    DDP's unused-parameter search off, and any trainable parameter without a gradient (the block after the
    selected layer, had it been unlocked as ShareGPT4V unlocks it) fails the first backward."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write_config(tmp_path / "pre.yaml", tiny_config(
        caption_blend, tmp_path / "pre", version="plain", vision_config=TOWER, tune_vit_from_layer=FROM,
        num_gpus=2, launcher="torchrun", master_port=port, gradient_checkpointing=True, max_steps=2,
        per_device_train_batch_size=2))
    env = dict(__import__("os").environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "vlmtrain.cli", "run", str(cfg)], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=420)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "pre" / "model.safetensors").is_file()


def test_blocks_feeding_a_selected_hidden_state():
    """Hidden state i is the embeddings' (0) or block i-1's output; of several selected layers the deepest decides,
    whatever their signs."""
    from vlmtrain.model.towers import blocks_feeding

    assert [blocks_feeding(24, f) for f in (-1, -2, 0, 5)] == [24, 23, 0, 5]
    assert blocks_feeding(24, [-1, 3]) == 24 and blocks_feeding(24, [3, -5]) == 20
