"""`vlmtrain export-llava` on a ConvLLaVA run (vlmtrain's ConvNeXt tower): ConvLLaVA's layout.

The folder's structure and config keys on every machine; with the reference environment
(``VLMTRAIN_TEST_REFERENCE_ENV`` with ConvLLaVA, tools/reference_code), ConvLLaVA's own
``load_pretrained_model`` loads the export and answers as ``vlmtrain generate`` does."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.models.seed_model_helpers import CONVNEXT_TINY
from train_helpers import run_vlmtrain, tiny_config, write_config

ENV = os.environ.get("VLMTRAIN_TEST_REFERENCE_ENV")
RESOLUTION = 320  # above 256, where ConvLLaVA's tower sets its processor to mm_vision_resolution
FIVE = {"depths": CONVNEXT_TINY["depths"] + [1], "hidden_sizes": CONVNEXT_TINY["hidden_sizes"] + [40],
        "image_size": RESOLUTION}  # a fifth stage, as ConvLLaVA's stage 1 adds one
COMMON = {"version": "v1", "image_aspect_ratio": "pad", "vision_config": dict(CONVNEXT_TINY, **FIVE),
          "mm_vision_select_layer": -1, "max_steps": 2, "per_device_train_batch_size": 2, "tune_vit_from_layer": 2}


@pytest.fixture(scope="module")
def convllava_run(tmp_path_factory) -> Path:
    """A tiny ConvLLaVA stage 2 (tower from stage 2 on, projector, LLM), 5 stages at 320 px, pad, v1."""
    from vlmtrain.tinydata import write_tiny_blend

    tmp = tmp_path_factory.mktemp("convllava-export")
    blend = write_tiny_blend(tmp / "blend", n=8, kind="instruct", seed=1)
    r = run_vlmtrain("run", write_config(tmp / "s2.yaml", tiny_config(blend, tmp / "s2", **COMMON)))
    assert r.code == 0, r.err
    return tmp / "s2"


def test_export_in_convllavas_layout(convllava_run, vlmtrain, tmp_path):
    from transformers import ConvNextModel

    from vlmtrain.generate import load_run

    out = tmp_path / "convllava-tiny"
    for _ in range(2):  # again: an earlier export is replaced whole
        r = vlmtrain("export-llava", convllava_run, out)
        assert r.code == 0, r.err
    assert r.out.strip() == str(out / "pytorch_model.bin")
    notes = [line for line in r.err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "ConvLLaVA's load_pretrained_model loads this export" in notes[0], notes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["convllava-tiny"]  # no temporary folder left
    assert (out / "tokenizer.model").is_file() and (out / "generation_config.json").is_file()

    conf = json.loads((out / "config.json").read_text())
    assert conf["architectures"] == ["LlavaLlamaForCausalLM"] and conf["model_type"] == "llava_llama"
    assert conf["mm_vision_tower"] == str((out / "vision_tower").resolve())
    assert (conf["mm_vision_resolution"], conf["mm_vision_select_layer"], conf["mm_hidden_size"]) == \
        (RESOLUTION, -1, 40)
    assert (conf["mm_projector_type"], conf["image_aspect_ratio"], conf["mm_use_im_patch_token"]) == \
        ("mlp2x_gelu", "pad", False)
    assert "vision_add_five_stage" not in conf  # the saved tower has its fifth stage: ConvLLaVA would add a sixth

    state = torch.load(out / "pytorch_model.bin", weights_only=True)
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.mm_projector.0.weight",
            "model.mm_projector.2.bias"} <= set(state)
    assert not any(k.startswith(("model.vision_tower", "model.language_model", "model.multi_modal_projector"))
                   for k in state)  # ConvLLaVA's train.py saves the LLM without the tower

    tower_conf = json.loads((out / "vision_tower" / "config.json").read_text())
    assert (tower_conf["model_type"], tower_conf["depths"], tower_conf["hidden_sizes"]) == \
        ("convnext", FIVE["depths"], FIVE["hidden_sizes"])
    processor = json.loads((out / "vision_tower" / "preprocessor_config.json").read_text())
    assert processor["crop_size"] == {"height": RESOLUTION, "width": RESOLUTION}
    assert processor["size"] == {"shortest_edge": RESOLUTION}

    run = load_run(convllava_run)
    ours = run.model.model.vision_tower.eval()
    tower_state = torch.load(out / "vision_tower" / "pytorch_model.bin", weights_only=True)
    assert set(tower_state) == set(ours.state_dict()) and not any(k.startswith("layernorm.") for k in tower_state)
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in tower_state.items())
    # transformers' own ConvNextModel (ConvLLaVA's tower class) reads the folder as our tower: same last map
    theirs = ConvNextModel.from_pretrained(out / "vision_tower").eval()
    pixels = torch.randn(1, 3, RESOLUTION, RESOLUTION)
    with torch.no_grad():
        last = theirs(pixels, output_hidden_states=True).hidden_states[-1]
        torch.testing.assert_close(last.flatten(2).transpose(1, 2), ours(pixels).last_hidden_state,
                                   rtol=1e-5, atol=1e-6)


def test_export_notes_a_path_convllava_reads_as_another_tower(convllava_run, vlmtrain, tmp_path):
    out = tmp_path / "siglip-runs" / "convllava-tiny"
    r = vlmtrain("export-llava", convllava_run, out)
    assert r.code == 0, r.err
    assert "contains 'siglip': ConvLLaVA's build_vision_tower would build a SigLIP tower" in r.err, r.err


def test_export_refuses_a_convnext_run_on_a_mistral_llm(tmp_path, vlmtrain):
    from train_helpers import TINY_TEXT
    from vlmtrain.tinydata import write_tiny_blend

    blend = write_tiny_blend(tmp_path / "blend", n=4, kind="instruct", seed=1)
    cfg = tiny_config(blend, tmp_path / "m", **dict(COMMON, max_steps=1),
                      text_config=dict(TINY_TEXT, model_type="mistral"))
    r = run_vlmtrain("run", write_config(tmp_path / "m.yaml", cfg))
    assert r.code == 0, r.err
    r = vlmtrain("export-llava", tmp_path / "m", tmp_path / "convllava-mistral")
    assert r.code == 2 and "ConvLLaVA's code has a Llama class only" in r.err, r.err
    assert not (tmp_path / "convllava-mistral").exists()


@pytest.mark.skipif(not ENV or not (Path(ENV or ".") / "src-convllava").is_dir(),
                    reason="VLMTRAIN_TEST_REFERENCE_ENV names no reference environment with ConvLLaVA "
                           "(python -m tools.reference_code.build_env ... --convllava SRC)")
def test_convllavas_loader_answers_as_we_do(convllava_run, vlmtrain, tmp_path):
    """ConvLLaVA's load_pretrained_model on the export (float32, CPU), its vicuna_v1 prompt, its pad pixels:
    the same prompt, ids, pixels, logits within 1e-5 and greedy answer as ours; its tower has our 5 stages."""
    from tools.reference_code.convllava_ours import answer_spec, run_convllava
    from tools.reference_code.our_side import assert_same_answer, ours

    export = tmp_path / "convllava-7b-tiny"
    assert vlmtrain("export-llava", convllava_run, export).code == 0
    work = tmp_path / "work"
    answer_spec(export, work, question="What is in the picture?")
    theirs = run_convllava(Path(ENV), work, "answer")
    assert theirs["dtypes"] == ["torch.float32"]
    assert theirs["tower_depths"] == FIVE["depths"]  # no stage added on load
    assert theirs["crop_size"] == {"height": RESOLUTION, "width": RESOLUTION}
    assert_same_answer(theirs, ours(convllava_run, work))
