"""A Qwen stage-3 export's config.json is in Qwen-1's terms: the modules MoE-LLaVA's QWenConfig / QWenMLP /
QWenAttention would build from it (modeling_qwen.py) have the shapes of the exported weights, so every key
loads there. Qwen-1's config counts the MLP's two branches together (intermediate_size), qwen2's one."""
from __future__ import annotations

import json
import re

import pytest
import torch

from train_helpers import TINY_VISION, tiny_config, write_config

# Qwen-1_8B's config.json fields (configs/model_configs/qwen-1_8b.json), tiny: 4 heads of 16, MLP branches 96 wide
TINY_QWEN1 = {"model_type": "qwen", "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2,
              "num_attention_heads": 4, "kv_channels": 16, "vocab_size": 200, "max_position_embeddings": 1024,
              "seq_length": 1024, "layer_norm_epsilon": 1e-06, "rotary_emb_base": 10000, "rotary_pct": 1.0,
              "no_bias": True, "tie_word_embeddings": False, "initializer_range": 0.02, "attn_dropout_prob": 0.0,
              "emb_dropout_prob": 0.0, "use_dynamic_ntk": True, "use_logn_attn": True}


def qwen_model(tmp_path, text: dict, **over):
    from vlmtrain.config import load_config
    from vlmtrain.model.build import build_model
    from vlmtrain.train.stage3 import prepare_moe

    cfg = load_config(write_config(tmp_path / "q.yaml", tiny_config(
        tmp_path, tmp_path / "o", stage=3, text_config=text, vision_config=dict(TINY_VISION), moe_mode="sparse",
        **over)))
    model = build_model(cfg, vocab_size=200, image_token_id=199).model
    prepare_moe(model, cfg)
    return model


def moellava_shapes(conf: dict, key: str) -> tuple | None:
    """The shape MoE-LLaVA's Qwen modules, built from ``conf`` as modeling_qwen.py builds them, give ``key``."""
    hidden, half = conf["hidden_size"], conf["intermediate_size"] // 2  # QWenMLP: ff_dim_in = intermediate_size // 2
    proj = conf["kv_channels"] * conf["num_attention_heads"]  # QWenAttention.projection_size
    bias = not conf["no_bias"]
    table = [
        (r"mlp\.(.*\.)?w[12]\.weight", (half, hidden)),  # w1 / w2: Linear(hidden, intermediate_size // 2)
        (r"mlp\.(.*\.)?c_proj\.weight", (hidden, half)),  # c_proj: Linear(intermediate_size // 2, hidden)
        (r"mlp\.(.*\.)?(w1|w2)\.bias", (half,) if bias else None),
        (r"mlp\.(.*\.)?c_proj\.bias", (hidden,) if bias else None),
        (r"mlp\.deepspeed_moe\.gate\.wg\.weight", None),  # DeepSpeed's gate: Linear(hidden, num_experts), below
        (r"attn\.c_attn\.weight", (3 * proj, hidden)),  # c_attn: Linear(hidden, 3 * projection_size)
        (r"attn\.c_attn\.bias", (3 * proj,)),
        (r"attn\.c_proj\.weight", (proj, hidden)),  # c_proj: Linear(hidden, projection_size, bias=not no_bias)
        (r"attn\.c_proj\.bias", (proj,) if bias else None),
        (r"ln_[12]\.weight", (hidden,)),
    ]
    for pattern, shape in table:
        if re.fullmatch(r"transformer\.h\.\d+\." + pattern, key):
            return shape
    return {"transformer.wte.weight": (conf["vocab_size"], hidden), "transformer.ln_f.weight": (hidden,),
            "lm_head.weight": (conf["vocab_size"], hidden)}.get(key, ())


def export(tmp_path, model) -> tuple[dict, dict]:
    from vlmtrain.model.moe.checkpoint_keys import write_moellava_checkpoint

    weights = write_moellava_checkpoint(model, tmp_path / "moe-llava-qwen", vision_tower="tower")
    return json.loads((weights.parent / "config.json").read_text()), torch.load(weights, weights_only=True)


def test_exported_weights_have_the_shapes_moellava_builds_from_the_exported_config(tmp_path):
    model = qwen_model(tmp_path, dict(TINY_QWEN1))
    assert model.config.text_config.intermediate_size == 96  # qwen2 counts one branch
    conf, state = export(tmp_path, model)
    assert conf["intermediate_size"] == 192 and conf["kv_channels"] == 16  # Qwen-1's: both branches
    llm = [k for k in state if k.startswith("transformer.h.") or k in ("transformer.wte.weight",
                                                                       "transformer.ln_f.weight", "lm_head.weight")]
    mlp = [k for k in llm if ".mlp." in k and ".wg." not in k]
    assert len([k for k in mlp if ".deepspeed_experts." in k]) == 4 * 3 and len(mlp) == 4 * 3 + 3  # 4 experts, 1 dense
    for key in llm:
        if key.endswith(".mlp.deepspeed_moe.gate.wg.weight"):
            assert tuple(state[key].shape) == (conf["moe"]["num_experts"][0], conf["hidden_size"]), key
            continue
        want = moellava_shapes(conf, key)
        assert want, f"{key}: not a module MoE-LLaVA's Qwen builds from this config"
        assert tuple(state[key].shape) == want, key


def test_qwen1_fields_written_back_as_they_came_in(tmp_path):
    """A Qwen-1 config (as Qwen-1_8B publishes it) -> qwen2 for training -> Qwen-1 in the export: the same
    values, except the two long-context switches vlmtrain's qwen2 does not apply (false, see qwen1_text_fields);
    and read back by vlmtrain's own converter, the same qwen2 model."""
    from vlmtrain.model.qwen import qwen2_config_from_qwen

    model = qwen_model(tmp_path, dict(TINY_QWEN1))
    conf, _ = export(tmp_path, model)
    for k, v in TINY_QWEN1.items():
        if k in ("model_type", "use_dynamic_ntk", "use_logn_attn"):
            continue
        assert conf[k] == pytest.approx(v) if isinstance(v, float) else conf[k] == v, k
    assert conf["use_dynamic_ntk"] is False and conf["use_logn_attn"] is False
    assert conf["model_type"] == "moe_llava_qwen" and conf["architectures"] == ["MoELLaVAQWenForCausalLM"]
    assert not {"rms_norm_eps", "rope_parameters", "num_key_value_heads", "rope_theta"} & set(conf)
    tc = model.config.text_config
    again = qwen2_config_from_qwen({**conf, "model_type": "qwen"})
    for field in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings"):
        assert getattr(again, field) == getattr(tc, field), field
    assert again.rope_parameters["rope_theta"] == tc.rope_parameters["rope_theta"]


def test_a_qwen2_with_grouped_query_attention_has_no_qwen1_layout(tmp_path):
    from vlmtrain.model.moe.checkpoint_keys import moellava_config

    gqa = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024}
    with pytest.raises(ValueError, match="grouped-query"):
        moellava_config(qwen_model(tmp_path, gqa), "tower", "pad")


def test_stage3_asked_to_export_a_qwen2_without_a_qwen1_layout_stops_before_training(tmp_path):
    """save_moellava_checkpoint on an LLM MoE-LLaVA cannot load is said when stage 3 prepares its model, not
    after it has trained (the export is written at the end)."""
    from vlmtrain.config import ConfigError

    gqa = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024}
    with pytest.raises(ConfigError, match="save_moellava_checkpoint.*grouped-query") as e:
        qwen_model(tmp_path, gqa, save_moellava_checkpoint=True)
    assert "save_moellava_checkpoint: false" in e.value.hint
    assert qwen_model(tmp_path, gqa) is not None  # without the export: prepared as before
