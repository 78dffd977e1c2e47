"""ConvLLaVA's ConvNeXt tower: transformers' ConvNext weights as published, the added fifth stage, the last
stage's map as tokens, stage-wise unfreezing, FLOPs, and a training step inside Llava."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import ConvNextConfig, ConvNextModel

from tests.models.seed_model_helpers import CONVNEXT_TINY, TINY_LLAMA, one_training_step, write_checkpoint
from vlmtrain.config import ConfigError, load_config
from vlmtrain.model import convnext_tower, towers

FIVE_STAGES = {"depths": [1, 1, 2, 1, 2], "hidden_sizes": [8, 16, 24, 32, 40], "image_size": 128}


@pytest.fixture(scope="module")
def laion_folder(tmp_path_factory):
    """A 4-stage checkpoint as ConvLLaVA/LAION-CLIP-ConvNeXt-Large-512 ships it: transformers' ConvNextModel."""
    torch.manual_seed(0)
    model = ConvNextModel(ConvNextConfig(**{k: v for k, v in CONVNEXT_TINY.items() if k != "model_type"}))
    for p in model.parameters():  # away from the init values, so a weight that failed to load shows
        p.data.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path_factory.mktemp("convnext") / "LAION-CLIP-ConvNeXt-Large-512"
    model.save_pretrained(folder)
    return folder


def _tower(folder, fields=None):
    vc = towers.config_from_checkpoint(str(folder), fields)
    return towers.load(str(folder), vc, dtype=torch.float32, attn_implementation="sdpa").eval(), vc


def test_published_checkpoint_gives_convnextmodels_last_map_as_tokens(laion_folder):
    tower, vc = _tower(laion_folder)
    ref = ConvNextModel.from_pretrained(laion_folder).eval()
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = tower(pixels)
        want = ref(pixels).last_hidden_state  # [B, C, H, W]
    assert torch.equal(ours.last_hidden_state, want.flatten(2).transpose(1, 2))
    assert ours.last_hidden_state.shape == (2, (64 // 32) ** 2, 32) and torch.equal(ours.hidden_states[-1], ours.last_hidden_state)
    assert vc.hidden_size == 32 and towers.tokens_per_image(vc, "patch") == 4 and not towers.has_cls(vc)


def test_added_fifth_stage_extends_the_checkpoint_and_starts_fresh(laion_folder):
    tower, vc = _tower(laion_folder, FIVE_STAGES)
    ref = ConvNextModel.from_pretrained(laion_folder)
    theirs = ref.state_dict()
    for k, v in tower.state_dict().items():
        if not k.startswith("encoder.stages.4."):
            assert torch.equal(v, theirs[k]), k
    new = tower.encoder.stages[4]
    assert new.downsampling_layer[1].weight.shape == (40, 32, 2, 2) and len(new.layers) == 2
    assert torch.equal(new.layers[0].layer_scale_parameter, torch.full((40,), 1e-6))  # ConvLLaVA's fresh stage
    assert towers.tokens_per_image(vc, "patch") == (128 // 64) ** 2 and vc.hidden_size == 40
    with pytest.raises(ConfigError, match="must extend"):
        _tower(laion_folder, {"depths": [1, 1, 3, 1, 2], "hidden_sizes": FIVE_STAGES["hidden_sizes"]})


def test_five_stage_tower_loads_key_for_key_without_the_pooled_norm(laion_folder, tmp_path):
    """ConvLLaVA-ConvNeXt-{768,1024,1536} ship 5 stages and no `layernorm.*` (ConvLLaVA deletes it on save)."""
    trained, vc = _tower(laion_folder, FIVE_STAGES)
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    cfg = dict(CONVNEXT_TINY, **FIVE_STAGES, num_stages=5)
    loaded, _ = _tower(write_checkpoint(tmp_path / "ConvLLaVA-ConvNeXt-768", cfg, state))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    del state["encoder.stages.4.layers.1.pwconv2.weight"]
    with pytest.raises(ConfigError, match="pwconv2"):
        _tower(write_checkpoint(tmp_path / "broken", cfg, state))


def test_forward_flops_count_every_conv_and_linear():
    vc = convnext_tower.tower_config(dict(CONVNEXT_TINY), FIVE_STAGES)
    tower = convnext_tower.ConvNextTower(vc).eval()
    macs = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            per = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            macs.append(output[0].numel() * per)
        else:
            macs.append(output[0].numel() * module.in_features)

    for m in tower.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        tower(torch.randn(1, 3, 128, 128))
    assert convnext_tower.forward_flops(vc) == 2 * sum(macs)


def test_gradient_checkpointing_gives_the_same_gradients():
    vc = convnext_tower.tower_config(dict(CONVNEXT_TINY), FIVE_STAGES)
    torch.manual_seed(0)
    tower = convnext_tower.ConvNextTower(vc).train()
    x = torch.randn(2, 3, 128, 128)
    tower(x).last_hidden_state.square().sum().backward()
    plain = {k: p.grad.clone() for k, p in tower.named_parameters()}
    tower.zero_grad()
    tower.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    calls = []
    real = tower._gradient_checkpointing_func
    tower._gradient_checkpointing_func = lambda *a, **k: calls.append(1) or real(*a, **k)
    tower(x).last_hidden_state.square().sum().backward()
    assert len(calls) == sum(vc.depths)  # one per ConvNeXt block
    assert all(torch.allclose(plain[k], p.grad, atol=1e-6) for k, p in tower.named_parameters())


def _llava(tmp_path, laion_folder, **over):
    from transformers import AutoConfig, AutoModelForCausalLM

    from vlmtrain.model.build import apply_freeze, build_model

    if not (tmp_path / "llm").exists():
        AutoModelForCausalLM.from_config(AutoConfig.for_model(**TINY_LLAMA)).save_pretrained(tmp_path / "llm")
    raw = {"stage": 1, "model_name_or_path": str(tmp_path / "llm"), "vision_tower": str(laion_folder),
           "vision_config": dict(CONVNEXT_TINY, **FIVE_STAGES), "mm_vision_select_layer": -1, "tune_vit_from_layer": 4}
    raw.update(over)
    cfg = load_config(None, raw=raw)
    built = build_model(cfg, vocab_size=121, image_token_id=120)
    apply_freeze(built.model, cfg.frozen(), cfg.tune_vit_from_layer)
    return built, cfg


def test_convllava_stage1_trains_the_projector_and_the_added_stage_only(laion_folder, tmp_path):
    built, _ = _llava(tmp_path, laion_folder)
    assert built.tokens_per_image == 4 and built.model.config.vision_feature_select_strategy == "full"
    loss, changed = one_training_step(built, torch.randn(2, 3, 128, 128))
    assert torch.isfinite(torch.tensor(loss))
    assert {k.split(".")[1] for k in changed} == {"multi_modal_projector", "vision_tower"}
    assert all(k.startswith("model.vision_tower.encoder.stages.4.") for k in changed if "vision_tower" in k)
    assert all(changed.values())


def test_mfu_counts_the_towers_conv_flops(laion_folder, tmp_path):
    from vlmtrain.train.mfu import flop_model

    built, _ = _llava(tmp_path, laion_folder)
    fm = flop_model(built.model)
    vc = built.model.config.vision_config
    assert fm.vision_conv_flops == convnext_tower.forward_flops(vc) > 0 and fm.vision_params == 0
    assert fm.vision_factor == 6 and fm.vision_tokens == 4  # in this tiny tower the added stage is most weights
    per_image = fm.step_flops([40], 1) - fm.step_flops([40], 0)
    assert per_image == 3 * fm.vision_conv_flops + fm.projector_factor * fm.projector_params * 4


def test_convllava_stage2_unfreezes_stage_2_on(laion_folder, tmp_path):
    built, _ = _llava(tmp_path, laion_folder, stage=2, tune_vit_from_layer=2)
    train = {k for k, p in built.model.model.vision_tower.named_parameters() if p.requires_grad}
    assert "encoder.stages.2.downsampling_layer.1.weight" in train and "encoder.stages.4.layers.0.dwconv.weight" in train
    assert not any(k.startswith(("embeddings.", "encoder.stages.0.", "encoder.stages.1.")) for k in train)
    with pytest.raises(ConfigError, match="stages 0..4"):
        _llava(tmp_path, laion_folder, stage=2, tune_vit_from_layer=5)


def test_only_the_last_stage_is_selectable(laion_folder, tmp_path):
    with pytest.raises(ConfigError, match="mm_vision_select_layer: -1"):
        _llava(tmp_path, laion_folder, mm_vision_select_layer=-2)


def test_image_processor_uses_the_folders_mean_at_the_run_resolution(tmp_path):
    from transformers import CLIPImageProcessor

    CLIPImageProcessor(image_mean=[0.1, 0.2, 0.3], crop_size=512).save_pretrained(tmp_path)
    vc = convnext_tower.tower_config(dict(CONVNEXT_TINY), FIVE_STAGES)
    proc = towers.image_processor(str(tmp_path), vc)
    assert list(proc.image_mean) == [0.1, 0.2, 0.3]
    from PIL import Image

    out = proc(images=[Image.new("RGB", (300, 200))], return_tensors="pt")["pixel_values"]
    assert tuple(out.shape) == (1, 3, 128, 128)
    assert list(towers.image_processor(None, vc).image_mean) == convnext_tower.CLIP_MEAN
