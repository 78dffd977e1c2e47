"""phi-2's output bias, as MoE-LLaVA treats it: its LlavaPhiForCausalLM / MoELLaVAPhiForCausalLM build
``lm_head = nn.Linear(hidden, vocab, bias=False)``, so the bias is dropped at load and no stage trains it.
A model built from a pretrained phi (stages 1-2) has the same bias-free head, so what stage 2 saves is what
stage 3 and `vlmtrain generate` load; weights saved with the bias (older outputs) are refused, not dropped."""
from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

from test_stage3 import TINY_PHI
from train_helpers import TINY_TEXT, TINY_VISION


def _parts(tmp_path, text: dict):
    from transformers import AutoConfig, AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    llm = AutoModelForCausalLM.from_config(AutoConfig.for_model(**dict(text, vocab_size=200)))
    if llm.lm_head.bias is not None:  # (initialised to zeros; phi-2's is not)
        torch.nn.init.normal_(llm.lm_head.bias)
    llm.save_pretrained(tmp_path / "llm")
    tower = CLIPVisionModel(CLIPVisionConfig(**{k: v for k, v in TINY_VISION.items() if k != "model_type"}))
    tower.save_pretrained(tmp_path / "tower")
    return llm


def _build_from_parts(tmp_path, vocab_size=202):
    from vlmtrain.config import load_config
    from vlmtrain.model.build import build_model

    cfg = load_config(None, raw={"stage": 2, "model_name_or_path": str(tmp_path / "llm"),
                                 "vision_tower": str(tmp_path / "tower"), "mm_projector_type": "mlp2x_gelu"})
    return build_model(cfg, vocab_size=vocab_size, image_token_id=vocab_size - 1).model.eval()


def test_phi_from_parts_has_a_bias_free_head_with_phis_weight(tmp_path, caplog):
    phi = _parts(tmp_path, TINY_PHI)
    assert phi.lm_head.bias is not None  # transformers' phi has one
    with caplog.at_level(logging.INFO, logger="vlmtrain.model.build"):
        model = _build_from_parts(tmp_path, vocab_size=200)  # (no resize: the head is phi's, rows and all)
    assert model.lm_head.bias is None and "lm_head.bias" not in model.state_dict()
    assert torch.equal(model.lm_head.weight, phi.lm_head.weight)
    assert any("output bias is dropped" in r.getMessage() and "MoE-LLaVA" in r.getMessage() for r in caplog.records)
    ids = torch.randint(0, 200, (2, 12))
    with torch.no_grad():
        hidden = model.model(input_ids=ids).last_hidden_state
        logits = model(input_ids=ids).logits
        with_bias = phi(input_ids=ids).logits
    torch.testing.assert_close(logits, hidden @ phi.lm_head.weight.T, rtol=1e-6, atol=1e-6)
    # the LLM's own forward differs from ours exactly by the dropped bias
    torch.testing.assert_close(with_bias - logits, phi.lm_head.bias.detach().expand_as(logits), rtol=1e-5, atol=1e-5)


def test_saved_stage2_model_loads_with_identical_logits_and_no_dropped_keys(tmp_path):
    from vlmtrain.model.build import VlmLlavaForConditionalGeneration

    _parts(tmp_path, TINY_PHI)
    model = _build_from_parts(tmp_path)  # grown to 202 rows: <image> and a pad token
    model.save_pretrained(tmp_path / "s2")  # what stage 2's Trainer._save writes
    loaded, info = VlmLlavaForConditionalGeneration.from_pretrained(str(tmp_path / "s2"), output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"] and not info["mismatched_keys"]
    ids = torch.randint(0, 202, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=0)


def test_a_tied_head_stays_tied(tmp_path):
    """Only the bias goes: a head tied to the input embeddings (tie_word_embeddings) shares the Parameter still."""
    _parts(tmp_path, dict(TINY_TEXT, tie_word_embeddings=True))
    model = _build_from_parts(tmp_path)
    assert model.lm_head.weight is model.get_input_embeddings().weight and model.lm_head.bias is None


def test_older_output_with_the_bias_is_refused_until_the_key_is_removed(tmp_path):
    from vlmtrain.config import ConfigError
    from vlmtrain.model.build import VlmLlavaForConditionalGeneration, drop_lm_head_bias

    _parts(tmp_path, TINY_PHI)
    model = _build_from_parts(tmp_path)
    run = tmp_path / "old-s2"
    model.save_pretrained(run)
    state = load_file(run / "model.safetensors")
    state["lm_head.bias"] = torch.randn(state["lm_head.weight"].shape[0])  # as an older stage 2 saved it
    save_file(state, run / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConfigError) as e:
        VlmLlavaForConditionalGeneration.from_pretrained(str(run))
    assert "lm_head.bias" in str(e.value) and "drop_lm_head_bias" in e.value.hint
    assert drop_lm_head_bias(run) == ["lm_head.bias"] and drop_lm_head_bias(run) == []
    loaded = VlmLlavaForConditionalGeneration.from_pretrained(str(run))
    ids = torch.randint(0, 202, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=0)


def test_resume_from_an_older_checkpoint_with_the_bias_says_why_it_cannot(instruct_blend, make_config, tmp_path):
    from train_helpers import run_vlmtrain

    cfg = make_config(instruct_blend, "old", max_steps=4, save_steps=2)
    r = run_vlmtrain("run", cfg, env={"VLMTRAIN_SIGNAL_AT_STEP": "2:TERM"})
    assert r.code == 143, r.err
    weights = tmp_path / "old" / "checkpoint-2" / "model.safetensors"
    state = load_file(weights)
    head = next(k for k in state if k.endswith("lm_head.weight"))
    state[head.replace("weight", "bias")] = torch.zeros(state[head].shape[0])  # as an older vlmtrain saved it
    save_file(state, weights, metadata={"format": "pt"})
    r = run_vlmtrain("run", cfg, "--resume")
    assert r.code == 2 and "has an lm_head.bias: an older vlmtrain's" in r.err and "new output_dir" in r.err, r.err
