"""InternViT-6B's published layout on transformers' InternVLVisionModel: same hidden states, key-for-key load,
InternVL-LLaVA's feature selection and processor, a training step inside Llava."""
from __future__ import annotations

import pytest
import torch

from tests.models.seed_model_helpers import (INTERNVIT_TINY, TINY_LLAMA, internvit_reference_hidden_states,
                                             internvit_state, one_training_step, write_checkpoint)
from vlmtrain.config import ConfigError, load_config
from vlmtrain.model import internvit, towers


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory):
    # .bin shards + index, as OpenGVLab ships InternViT-6B.
    return write_checkpoint(tmp_path_factory.mktemp("vit") / "InternViT-6B", INTERNVIT_TINY, internvit_state(),
                            shards=2, fmt="bin")


def _tower(folder, input_size=None):
    vc = internvit.native_config_from_published(INTERNVIT_TINY, input_size)
    return internvit.load_tower(str(folder), vc, dtype=torch.float32, attn_implementation="sdpa").eval()


@pytest.mark.parametrize("input_size", [None, 48])  # 48: a 6x6 grid from the 4x4 checkpoint grid (224 -> 336 style)
def test_every_hidden_state_matches_the_reference(vit_folder, input_size):
    tower = _tower(vit_folder, input_size)
    side = input_size or INTERNVIT_TINY["image_size"]
    pixels = torch.randn(2, 3, side, side)
    with torch.no_grad():
        ours = tower(pixels, output_hidden_states=True).hidden_states
    ref = internvit_reference_hidden_states(internvit_state(), INTERNVIT_TINY, pixels)
    assert len(ours) == len(ref) == INTERNVIT_TINY["num_hidden_layers"] + 1
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (a - b).abs().max()


def test_key_map_is_a_bijection_and_every_published_key_lands(vit_folder):
    published = internvit_state()
    native = internvit.published_to_native(published)
    back = internvit.native_to_published(native)
    assert set(back) == set(published) and all(torch.equal(back[k], published[k]) for k in published)
    tower = _tower(vit_folder)
    own = tower.state_dict()
    assert set(own) == set(native)
    assert all(torch.equal(own[k], native[k]) for k in own)
    q, k, v = published["encoder.layers.2.attn.qkv.weight"].chunk(3)
    assert torch.equal(own["encoder.layer.2.attention.k_proj.weight"], k)


def test_unknown_or_missing_keys_are_errors(tmp_path):
    extra = dict(internvit_state(), **{"encoder.layers.0.attn.extra": torch.zeros(2)})
    with pytest.raises(ConfigError, match="unknown key"):
        _tower(write_checkpoint(tmp_path / "extra", INTERNVIT_TINY, extra))
    missing = internvit_state()
    del missing["encoder.layers.3.ls2"]
    with pytest.raises(ConfigError, match="lambda_2"):
        _tower(write_checkpoint(tmp_path / "missing", INTERNVIT_TINY, missing))


def test_llava_with_internvit_selects_block_minus_4_and_trains(vit_folder, tmp_path):
    """Stage 1 from parts: the published InternViT folder (remote-code config, trust_remote_code off) + an LLM."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from vlmtrain.model.build import apply_freeze, build_model

    AutoModelForCausalLM.from_config(AutoConfig.for_model(**TINY_LLAMA)).save_pretrained(tmp_path / "llm")
    cfg = load_config(None, raw={"stage": 1, "model_name_or_path": str(tmp_path / "llm"), "vision_tower": str(vit_folder),
                                 "mm_vision_select_layer": -4})
    built = build_model(cfg, vocab_size=121, image_token_id=120)
    assert built.tokens_per_image == 16 and built.model.config.vision_feature_select_strategy == "default"
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = built.model.model.get_image_features(pixels, vision_feature_layer=-4,
                                                     vision_feature_select_strategy="default").pooler_output
    ref = internvit_reference_hidden_states(internvit_state(), INTERNVIT_TINY, pixels)[-4][:, 1:]  # block 1, no CLS
    assert torch.allclose(torch.stack(feats), built.model.model.multi_modal_projector(ref), atol=1e-5)
    apply_freeze(built.model, cfg.frozen())
    loss, changed = one_training_step(built, pixels)
    assert torch.isfinite(torch.tensor(loss)) and all(k.startswith("model.multi_modal_projector") for k in changed)
    assert all(changed.values())


def test_bf16_tower_resizes_the_position_grid_in_float32(vit_folder, tmp_path):
    """InternVL's modeling_intern_vit.py _get_pos_embed resizes the grid in float32, then casts to the weights'
    dtype; resized in bf16 (transformers' own) the position embeddings differ when the input grid is not the
    checkpoint's (224 px fed 336 px). Checked on a stage-1 build in bf16, a 6x6 input grid from the 4x4 one."""
    import torch.nn.functional as F
    from transformers import AutoConfig, AutoModelForCausalLM

    from vlmtrain.model.build import build_model

    AutoModelForCausalLM.from_config(AutoConfig.for_model(**TINY_LLAMA)).save_pretrained(tmp_path / "llm")
    cfg = load_config(None, raw={"stage": 1, "model_name_or_path": str(tmp_path / "llm"), "vision_tower": str(vit_folder),
                                 "vision_config": {"input_image_size": 48}, "mm_vision_select_layer": -4})
    built = build_model(cfg, vocab_size=121, image_token_id=120, dtype=torch.bfloat16)
    emb = built.model.model.vision_tower.embeddings
    pos = emb.position_embeddings
    assert pos.dtype == torch.bfloat16 and built.tokens_per_image == 36
    g = INTERNVIT_TINY["image_size"] // INTERNVIT_TINY["patch_size"]
    grid = F.interpolate(pos[:, 1:].float().reshape(1, g, g, -1).permute(0, 3, 1, 2), size=(6, 6), mode="bicubic",
                         align_corners=False)
    want = torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2).to(torch.bfloat16)], dim=1)
    with torch.no_grad():
        got = emb.interpolate_pos_encoding(torch.zeros(1, 37, pos.shape[-1], dtype=torch.bfloat16), 48, 48)
    assert torch.equal(got, want)


def test_image_processor_is_internvl_llavas():
    vc = internvit.native_config_from_published(dict(INTERNVIT_TINY, image_size=448, patch_size=14))
    proc = towers.image_processor("unused", vc)
    assert list(proc.image_mean) == internvit.IMAGENET_MEAN and list(proc.image_std) == internvit.IMAGENET_STD
    from PIL import Image

    out = proc(images=[Image.new("RGB", (600, 500), (10, 200, 30))], return_tensors="pt")["pixel_values"]
    assert tuple(out.shape) == (1, 3, 448, 448)
    assert towers.tokens_per_image(vc, "patch") == 1024


def test_published_shape_parameter_count():
    """InternViT-6B-448px-V1-0 at its real shape, on the meta device: the card says 5903M (its 224px base);
    at 448 px the position table has 768 more rows of 3200 (5,905,251,200)."""
    import json
    from pathlib import Path

    from transformers import InternVLVisionModel

    d = json.loads((Path(__file__).parents[2] / "configs/model_configs/internvit-6b-448px-v1-0.json").read_text())
    with torch.device("meta"):
        n448 = sum(p.numel() for p in InternVLVisionModel(internvit.native_config_from_published(d)).parameters())
        n224 = sum(p.numel() for p in InternVLVisionModel(
            internvit.native_config_from_published(dict(d, image_size=224))).parameters())
    assert n224 == 5_902_793_600 and round(n224 / 1e6) == 5903
    assert n448 == n224 + (1024 - 256) * 3200 == 5_905_251_200


def test_dry_run_takes_the_run_fields_over_a_tower_folder(vit_folder, tmp_path):
    # `input_image_size` (vlmtrain's field, not the tower config's) beside a tower folder: a run applied it,
    # the dry run refused it as an unknown key of InternVLVisionConfig (found by the InternVL reference check)
    import json

    import yaml
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests.cli_runner import run_main
    from vlmtrain.cli import main

    def run_vlmtrain(*args):
        return run_main(main, "vlmtrain", *args)

    def write_config(path, cfg):
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return str(path)

    AutoModelForCausalLM.from_config(AutoConfig.for_model(**TINY_LLAMA)).save_pretrained(tmp_path / "llm")
    raw = {"stage": 1, "model_name_or_path": str(tmp_path / "llm"), "vision_tower": str(vit_folder),
           "vision_config": {"input_image_size": 48}, "mm_vision_select_layer": -4, "dataset_dir": str(tmp_path),
           "output_dir": str(tmp_path / "out"), "version": "plain"}
    r = run_vlmtrain("run", "--dry-run", "--json", write_config(tmp_path / "c.yaml", raw))
    assert r.code == 0, r.err
    assert json.loads(r.out)["tokens_per_image"] == 36  # a 6x6 grid at 48 px, not the checkpoint's 4x4
    raw["vision_config"] = {"input_image_sise": 48}
    r = run_vlmtrain("run", "--dry-run", write_config(tmp_path / "c.yaml", raw))
    assert r.code == 2 and "input_image_sise" in r.err  # a misspelt key is still one


def test_dropout_only_after_the_attention_projection_as_internvit():
    # InternViT's `dropout` is its attention's proj_drop alone; given to transformers' hidden_dropout_prob too it
    # also dropped the embeddings and every MLP output (ce9602f; checked against InternVL's code by the opt-in
    # tests/models/test_internvit_reference_code.py, this guards it in CI)
    from transformers import InternVLVisionModel

    vc = internvit.native_config_from_published(dict(INTERNVIT_TINY, dropout=0.5))
    dropping = {n for n, m in InternVLVisionModel(vc).named_modules() if isinstance(m, torch.nn.Dropout) and m.p > 0}
    assert dropping == {f"encoder.layer.{i}.attention.projection_dropout" for i in range(4)}
