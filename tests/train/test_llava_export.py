"""`vlmtrain export-llava`: a stage-2 model in LLaVA's checkpoint layout, for its eval scripts.

The layout and the refusals on every machine; with the reference environment
(``VLMTRAIN_TEST_REFERENCE_ENV``, tools/reference_code), LLaVA's own code loads the export and answers and
trains as ours does."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from train_helpers import tiny_config, write_config

ENV = os.environ.get("VLMTRAIN_TEST_REFERENCE_ENV")


@pytest.fixture(scope="module")
def stage2(tmp_path_factory):
    """A finished tiny Llama stage 2 on vicuna_v1 (LLaVA-1.5's shape), its SentencePiece tokenizer trained on the fly."""
    from train_helpers import run_vlmtrain
    from vlmtrain.tinydata import write_tiny_blend

    tmp = tmp_path_factory.mktemp("llava-s2")
    blend = write_tiny_blend(tmp / "blend", n=24, kind="instruct", seed=1)
    r = run_vlmtrain("run", write_config(tmp / "s2.yaml", tiny_config(blend, tmp / "s2", max_steps=3)))
    assert r.code == 0, r.err
    return blend, tmp / "s2"


def test_export_in_llava_names(stage2, vlmtrain, tmp_path):
    _, s2 = stage2
    out = tmp_path / "llava-v1.5-tiny"
    for _ in range(2):  # again: an earlier export is replaced whole
        r = vlmtrain("export-llava", s2, out)
        assert r.code == 0, r.err
    assert r.out.strip() == str(out / "pytorch_model.bin")
    notes = [line for line in r.err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "mm_vision_tower is null" in notes[0], notes  # the random_init tower only
    state = torch.load(out / "pytorch_model.bin", weights_only=True)
    assert {"model.embed_tokens.weight", "model.layers.1.self_attn.q_proj.weight", "model.norm.weight",
            "lm_head.weight", "model.mm_projector.0.weight", "model.mm_projector.2.bias",
            "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight"} <= set(state)
    assert not any(k.startswith(("model.language_model", "model.multi_modal_projector")) for k in state)
    conf = json.loads((out / "config.json").read_text())
    assert conf["architectures"] == ["LlavaLlamaForCausalLM"] and conf["model_type"] == "llava_llama"
    assert (conf["mm_projector_type"], conf["mm_vision_select_layer"], conf["mm_vision_select_feature"]) == \
        ("mlp2x_gelu", -2, "patch")
    assert conf["mm_use_im_patch_token"] is False and conf["rope_theta"] == 10000.0 and conf["mm_hidden_size"] == 32
    assert (out / "tokenizer.model").is_file()  # LLaVA's loader builds its slow LlamaTokenizer from it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llava-v1.5-tiny"]  # no temporary folder left


def test_export_refusals_and_name_note(stage2, vlmtrain, tmp_path):
    _, s2 = stage2
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    r = vlmtrain("export-llava", s2, tmp_path / "notes")
    assert r.code == 2 and "holds no earlier LLaVA export" in r.err, r.err
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep me"
    r = vlmtrain("export-llava", s2, s2)
    assert r.code == 2 and "holds the run" in r.err, r.err
    r = vlmtrain("export-llava", s2, tmp_path / "my-model")
    assert r.code == 0, r.err
    assert "'my-model' lacks 'llava'" in r.err, r.err


def test_export_refuses_what_llava_has_no_class_for(instruct_blend, vlmtrain, tmp_path):
    phi = {"model_type": "phi", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "max_position_embeddings": 1024}
    cfg = tiny_config(instruct_blend, tmp_path / "phi", text_config=phi, version="phi", max_steps=1)
    assert vlmtrain("run", write_config(tmp_path / "p.yaml", cfg)).code == 0
    r = vlmtrain("export-llava", tmp_path / "phi", tmp_path / "llava-phi")
    assert r.code == 2 and "LLaVA's code has no class for a 'phi' LLM" in r.err, r.err
    assert not (tmp_path / "llava-phi").exists()


@pytest.mark.skipif(not ENV, reason="VLMTRAIN_TEST_REFERENCE_ENV names no reference environment "
                                    "(python -m tools.reference_code.build_env)")
def test_llava_code_loads_the_export_and_answers_and_trains_as_we_do(stage2, vlmtrain, tmp_path):
    from tools.reference_code.our_side import assert_same_answer, assert_same_step, ours, prepare, run_theirs, training_step

    _, s2 = stage2
    assert vlmtrain("export-llava", s2, tmp_path / "llava-v1.5").code == 0
    work = tmp_path / "work"
    prepare(s2, work, "llava", export=tmp_path / "llava-v1.5")
    theirs = run_theirs(Path(ENV), work, "llava")
    assert_same_answer(theirs, ours(s2, work))
    for t, step in zip(theirs["steps"], training_step(s2, work), strict=True):
        assert assert_same_step(t, step) and len(t["grads"]) > 20
