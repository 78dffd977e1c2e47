"""The config.json of a MoE-LLaVA export carries the fields MoE-LLaVA's own code reads (its config
classes are transformers 4.37's; its builder and eval scripts read some fields as plain attributes).
Built on the meta device from the shipped model shapes: no weights, no download."""
from __future__ import annotations

import pytest

from train_helpers import REPO, TINY_VISION, tiny_config, write_config


def export_config(tmp_path, text_config: str) -> dict:
    from vlmtrain.config import load_config
    from vlmtrain.model.build import build_model
    from vlmtrain.model.moe.checkpoint_keys import moellava_config
    from vlmtrain.train.stage3 import prepare_moe

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(
        tmp_path, tmp_path / "o", stage=3, text_config=str(REPO / "configs" / "model_configs" / text_config),
        vision_config=dict(TINY_VISION), moe_mode="sparse")))
    model = build_model(cfg, meta=True).model
    prepare_moe(model, cfg, meta=True)
    return moellava_config(model, "openai/clip-vit-large-patch14-336", "pad")


def test_phi2_export_keeps_its_rotary_width_under_moellava_field_names(tmp_path):
    conf = export_config(tmp_path, "phi-2.json")
    # MoE-LLaVA's PhiConfig defaults partial_rotary_factor to 0.5: without the field phi-2 (0.4) loads wrong
    assert conf["partial_rotary_factor"] == pytest.approx(0.4)
    assert conf["rope_theta"] == pytest.approx(10000.0) and conf.get("rope_scaling") is None
    assert conf["architectures"] == ["MoELLaVAPhiForCausalLM"] and conf["model_type"] == "moe_llava_phi"


def test_export_has_the_fields_moellava_reads_as_attributes(tmp_path):
    conf = export_config(tmp_path, "phi-2.json")
    # builder.py: `model.config.mm_video_tower`; serve/cli.py and eval: `model.config.mm_use_im_start_end`;
    # builder.py: getattr(..., "mm_use_im_patch_token", True) would add tokens to the vocabulary
    assert conf["mm_video_tower"] is None
    assert conf["mm_use_im_start_end"] is False and conf["mm_use_im_patch_token"] is False


def test_stablelm_export_in_stablelm_epoch_field_names(tmp_path):
    conf = export_config(tmp_path, "stablelm-2-1_6b.json")
    assert conf["rope_pct"] == pytest.approx(0.25) and conf["norm_eps"] == pytest.approx(1e-5)
    assert conf["architectures"] == ["MoELLaVAStablelmForCausalLM"] and conf["model_type"] == "moe_llava_stablelm"


def test_openchat_export_in_moellava_mistral_names(tmp_path):
    """openchat-3.5-1210 is a Mistral: MoE-LLaVA's MoELLaVAMistralConfig (transformers 4.37's MistralConfig)
    reads rope_theta and sliding_window at the top level."""
    conf = export_config(tmp_path, "openchat-3.5-1210.json")
    assert conf["architectures"] == ["MoELLaVAMistralForCausalLM"] and conf["model_type"] == "moe_llava_mistral"
    assert conf["rope_theta"] == pytest.approx(10000.0) and conf["sliding_window"] == 4096
    assert (conf["num_key_value_heads"], conf["eos_token_id"]) == (8, 32000)
    assert conf["vocab_size"] == 32002 + 1  # openchat's two added tokens, then <image>
    assert conf["moe"]["train_modules"] == ["gate_proj", "up_proj", "down_proj", "wg"]  # the mistral default


@pytest.mark.parametrize("name, kind, ok", [
    ("moe-llava-phi", "phi", True), ("MoE-LLaVA-Phi2-2.7B-4e", "phi", True), ("moe-llava", "phi", False),
    ("export", "phi", False), ("moe-llava-phi-lora", "phi", False), ("moe-llava-stablelm", "stablelm", True),
    ("moe-llava-qwen", "qwen2", True), ("moe-llava-qwen1.5", "qwen2", False), ("moe-llava-qwen-phi", "phi", False),
    ("moe-llava-llama", "llama", True), ("moe-llava-mistral", "llama", False), ("moe-llava-mistral", "mistral", True),
    ("moe-llava-openchat", "mistral", True), ("moe-llava-openchat", "llama", False),
    ("MoE-LLaVA-OpenChat-7B-4e", "mistral", True), ("moe-llava-openchat-phi", "mistral", True)])
def test_folder_names_moellava_loads_as_the_right_family(tmp_path, name, kind, ok):
    """builder.py picks the class by substrings of the folder's name."""
    from vlmtrain.model.moe.checkpoint_keys import EXPORT_NAMES, export_name, loader_name_problem

    assert (loader_name_problem(tmp_path / name, kind, "vicuna_v1") is None) == ok
    assert all(loader_name_problem(tmp_path / export_name(k, "vicuna_v1"), k, "vicuna_v1") is None
               for k in EXPORT_NAMES)


@pytest.mark.parametrize("kind, template, name, conv_note", [
    ("phi", "phi", "moe-llava-phi", None), ("qwen2", "qwen", "moe-llava-qwen", None),
    ("stablelm", "stablelm", "moe-llava-stablelm", None), ("mistral", "openchat", "moe-llava-openchat", None),
    # no name makes serve/cli.py pick conv_mistral; 'mistral' keeps the loader's Mistral class
    ("mistral", "mistral", "moe-llava-mistral", "--conv-mode mistral"),
    # an 'openchat' name would load a Llama as MoE-LLaVA's Mistral class
    ("llama", "openchat", "moe-llava-llama", "--conv-mode openchat"), ("llama", "plain", "moe-llava-llama", None)])
def test_export_name_loads_the_family_and_serves_the_template_where_a_name_can(tmp_path, kind, template, name,
                                                                                conv_note):
    """serve/cli.py picks the conversation template by substrings of the folder's name too ('openchat' ->
    conv_openchat, nothing -> llava_v0); the export's own name is one the loader reads as its family."""
    from vlmtrain.model.moe.checkpoint_keys import export_name, loader_name_problem, serve_template_problem

    assert export_name(kind, template) == name
    assert loader_name_problem(tmp_path / name, kind, template) is None
    note = serve_template_problem(tmp_path / name, template)
    assert (note is None) == (conv_note is None)
    if conv_note:
        assert conv_note in note and "'llava_v0'" in note


def test_loader_name_problem_suggests_the_templates_name(tmp_path):
    from vlmtrain.model.moe.checkpoint_keys import loader_name_problem

    assert "moe-llava-openchat-..." in loader_name_problem(tmp_path / "export", "mistral", "openchat")


@pytest.mark.parametrize("kind, keys", [("linear", {"weight", "bias"}),
                                        ("mlp2x_gelu", {"0.weight", "0.bias", "2.weight", "2.bias"})])
def test_exported_projector_keys_are_what_moellava_builds(kind, keys):
    """MoE-LLaVA's build_image_projector makes a linear projector a bare nn.Linear (image_spatial_proj.weight)
    and mlpNx_gelu a Sequential (image_spatial_proj.0.weight ...)."""
    from vlmtrain.config import load_config
    from vlmtrain.model.build import build_model
    from vlmtrain.model.moe.checkpoint_keys import moellava_state_dict

    cfg = load_config(None, raw={"stage": 2, "random_init": True, "text_config": {
        "model_type": "phi", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "max_position_embeddings": 256}, "vision_config": dict(TINY_VISION),
        "mm_projector_type": kind, "tokenizer_train_vocab_size": 100})
    model = build_model(cfg, vocab_size=201, image_token_id=200).model
    exported = moellava_state_dict(model.state_dict(), "phi")
    prefix = "model.mm_projector.image_spatial_proj."
    assert {k[len(prefix):] for k in exported if k.startswith(prefix)} == keys


@pytest.mark.parametrize("tower, said", [("openai/clip-vit-large-patch14-336", None),
                                         ("/data/models/clip-vit-large-patch14-336", "builds its tower only from"),
                                         (None, "is null")])
def test_a_tower_name_moellava_cannot_build_from_is_said(tmp_path, tower, said):
    import json

    from vlmtrain.model.moe.checkpoint_keys import tower_name_problem

    (tmp_path / "config.json").write_text(json.dumps({"mm_image_tower": tower}))
    problem = tower_name_problem(tmp_path)
    assert (problem is None) if said is None else (said in problem)
