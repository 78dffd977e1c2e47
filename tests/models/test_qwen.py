"""Qwen-1_8B's published layout -> native qwen2: equal logits, exact round trip, MoE-LLaVA key names, Llava build."""
from __future__ import annotations

import pytest
import torch

from tests.models.seed_model_helpers import (QWEN_TINY, TINY_CLIP, one_training_step, qwen_reference_logits,
                                             qwen_state, write_checkpoint)
from vlmtrain.config import ConfigError, load_config
from vlmtrain.model import qwen


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory):
    # Two safetensors shards + index, as Qwen/Qwen-1_8B ships; its config names remote code (auto_map).
    return write_checkpoint(tmp_path_factory.mktemp("qwen") / "Qwen-1_8B", QWEN_TINY, qwen_state(), shards=2)


def _load(folder, attn="sdpa"):
    return qwen.load_qwen_as_qwen2(str(folder), QWEN_TINY, dtype=torch.float32, attn_implementation=attn)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_converted_checkpoint_gives_the_reference_logits(qwen_folder, attn):
    model = _load(qwen_folder, attn).eval()
    assert type(model).__name__ == "Qwen2ForCausalLM"
    ids = torch.randint(0, QWEN_TINY["vocab_size"], (2, 11))
    with torch.no_grad():
        ours = model(input_ids=ids).logits
    ref = qwen_reference_logits(qwen_state(), QWEN_TINY, ids)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-4), (ours - ref).abs().max()


def test_swapping_w1_and_w2_changes_the_logits(qwen_folder, tmp_path):
    """The check above can fail: the MLP branches are not interchangeable (w2 is the activated one)."""
    state = qwen_state()
    for i in range(QWEN_TINY["num_hidden_layers"]):
        p = f"transformer.h.{i}.mlp."
        state[p + "w1.weight"], state[p + "w2.weight"] = state[p + "w2.weight"], state[p + "w1.weight"]
    swapped = _load(write_checkpoint(tmp_path / "swapped", QWEN_TINY, state)).eval()
    ids = torch.randint(0, QWEN_TINY["vocab_size"], (1, 9))
    with torch.no_grad():
        assert not torch.allclose(swapped(input_ids=ids).logits, qwen_reference_logits(qwen_state(), QWEN_TINY, ids),
                                  atol=1e-3)


def test_round_trip_to_moe_llava_names_is_exact(qwen_folder):
    original = qwen_state()
    model = _load(qwen_folder)
    back = qwen.native_state_to_qwen(model.state_dict())
    assert set(back) == set(original)
    assert all(torch.equal(back[k], original[k]) for k in original)
    # ... and into a fresh model again: same logits.
    again = _load(qwen_folder)
    again.load_state_dict(qwen.qwen_state_to_native(back))
    ids = torch.randint(0, QWEN_TINY["vocab_size"], (2, 7))
    with torch.no_grad():
        assert torch.equal(model.eval()(input_ids=ids).logits, again.eval()(input_ids=ids).logits)


def test_key_map_names_each_mlp_branch_and_moe_expert_keys():
    assert qwen.qwen_key_to_native("transformer.h.3.mlp.w1.weight") == "model.layers.3.mlp.up_proj.weight"
    assert qwen.qwen_key_to_native("transformer.h.3.mlp.w2.weight") == "model.layers.3.mlp.gate_proj.weight"
    assert qwen.qwen_key_to_native("transformer.h.3.mlp.c_proj.weight") == "model.layers.3.mlp.down_proj.weight"
    assert qwen.qwen_key_to_native("transformer.h.3.attn.c_proj.weight") == "model.layers.3.self_attn.o_proj.weight"
    assert qwen.qwen_key_to_native("transformer.wte.weight", "model.language_model.") == \
        "model.language_model.embed_tokens.weight"
    expert = "transformer.h.5.mlp.deepspeed_moe.experts.deepspeed_experts.2.w2.weight"
    native = qwen.qwen_key_to_native(expert)
    assert native == "model.layers.5.mlp.deepspeed_moe.experts.deepspeed_experts.2.gate_proj.weight"
    assert qwen.native_key_to_qwen(native) == expert
    gate = "transformer.h.5.mlp.deepspeed_moe.gate.wg.weight"
    assert qwen.native_key_to_qwen(qwen.qwen_key_to_native(gate)) == gate
    with pytest.raises(ValueError, match="fused"):
        qwen.qwen_key_to_native("transformer.h.0.attn.c_attn.weight")
    with pytest.raises(ValueError, match="c_attn"):
        qwen.native_key_to_qwen("model.layers.0.self_attn.k_proj.bias")


def test_config_maps_to_qwen2_and_refuses_what_qwen2_cannot_express():
    c = qwen.qwen2_config_from_qwen(QWEN_TINY)
    assert (c.intermediate_size, c.num_key_value_heads, c.rms_norm_eps, c.tie_word_embeddings) == (24, 4, 1e-6, False)
    assert c.rope_parameters["rope_theta"] == 10000.0
    with pytest.raises(ConfigError, match="rotary_pct"):
        qwen.qwen2_config_from_qwen(dict(QWEN_TINY, rotary_pct=0.5))


def test_a_missing_tensor_is_an_error_not_a_random_weight(tmp_path):
    state = qwen_state()
    del state["transformer.h.1.mlp.c_proj.weight"]
    with pytest.raises(ConfigError, match="down_proj"):
        _load(write_checkpoint(tmp_path / "broken", QWEN_TINY, state))


def test_llava_built_on_the_published_qwen_folder_trains(qwen_folder, tmp_path):
    """build_model reads the Qwen folder with trust_remote_code off (its config names remote code) and trains."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from vlmtrain.model.build import apply_freeze, build_model

    CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP)).save_pretrained(tmp_path / "clip")
    cfg = load_config(None, raw={"stage": 2, "model_name_or_path": str(qwen_folder), "vision_tower": str(tmp_path / "clip"),
                                 "trust_remote_code": False})
    built = build_model(cfg, vocab_size=98, image_token_id=97)
    lm = built.model.model.language_model
    assert type(lm).__name__ == "Qwen2Model"
    assert torch.equal(lm.layers[1].mlp.gate_proj.weight, qwen_state()["transformer.h.1.mlp.w2.weight"])
    apply_freeze(built.model, cfg.frozen())
    loss, changed = one_training_step(built, torch.randn(2, 3, 32, 32))
    assert torch.isfinite(torch.tensor(loss))
    assert changed["model.language_model.layers.0.mlp.up_proj.weight"]
    assert not any(k.startswith("model.vision_tower") for k in changed)
