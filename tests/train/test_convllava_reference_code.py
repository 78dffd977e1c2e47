"""vlmtrain's ConvLLaVA path beside ConvLLaVA's own code (alibaba/conv-llava at 3e7ae57, transformers 4.39.3),
on the same weights: its ``ConvNeXtCLIPVisionTower`` as scripts/stage_1.sh and stage_2.sh configure it (the
added fifth stage, the resolution, ``tune_vit_from_layer``, ``image_aspect_ratio pad``), and its
``LlavaLlamaForCausalLM`` taking one stage-2 training step from our weights.

Opt-in: ``python -m tools.reference_code.build_env DIR --moellava SRC --llava SRC --convllava SRC`` once
(network to the package index), then ``VLMTRAIN_TEST_REFERENCE_ENV=DIR``. Skipped otherwise."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.models.seed_model_helpers import CONVNEXT_TINY
from train_helpers import run_vlmtrain, tiny_config, write_config

ENV = os.environ.get("VLMTRAIN_TEST_REFERENCE_ENV")
pytestmark = pytest.mark.skipif(not ENV or not (Path(ENV) / "src-convllava").is_dir(),
                                reason="VLMTRAIN_TEST_REFERENCE_ENV names no reference environment with ConvLLaVA "
                                       "(python -m tools.reference_code.build_env ... --convllava SRC)")

RESOLUTION = 320  # its tower resizes the processor only above 256 (convnext_encoder.py:42); its scripts: 768
ADDED = {"depth": 2, "width": 40}  # --vision_add_five_stage / --vision_five_stage_width, shrunk
FIVE = {"depths": CONVNEXT_TINY["depths"] + [ADDED["depth"]],
        "hidden_sizes": CONVNEXT_TINY["hidden_sizes"] + [ADDED["width"]], "image_size": RESOLUTION}
# float32 rounding: transformers 4.39 normalises ConvNeXt's channels-first maps by hand (mean, variance, sqrt),
# transformers 5 with F.layer_norm; about 3e-7 of the features' size apart here
FEATURES_TOL = {"rtol": 1e-5, "atol": 1e-5}
# ConvLLaVA/LAION-CLIP-ConvNeXt-Large-512's processor: CLIP's, at 512
PROCESSOR = {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 512},
             "resample": 3, "do_center_crop": True, "crop_size": {"height": 512, "width": 512}, "do_rescale": True,
             "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
             "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}


@pytest.fixture(scope="module")
def laion_folder(tmp_path_factory) -> Path:
    """A 4-stage ConvNeXt folder as ConvLLaVA publishes the laion trunk: ConvNextModel + CLIP's processor."""
    from transformers import ConvNextConfig, ConvNextModel

    torch.manual_seed(0)
    model = ConvNextModel(ConvNextConfig(**{k: v for k, v in CONVNEXT_TINY.items() if k != "model_type"}))
    for p in model.parameters():  # away from the init values (layer scale 1e-6 would hide the blocks)
        p.data.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path_factory.mktemp("laion") / "LAION-CLIP-ConvNeXt-tiny"
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(PROCESSOR))
    return folder


def our_model(tmp_path: Path, tower: Path, **over):
    """Our Llava on ``tower`` as the shipped configs build it, frozen as the stage trains it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests.models.seed_model_helpers import TINY_LLAMA
    from vlmtrain.config import load_config
    from vlmtrain.model.build import apply_freeze, build_model

    if not (tmp_path / "llm").exists():
        AutoModelForCausalLM.from_config(AutoConfig.for_model(**TINY_LLAMA)).save_pretrained(tmp_path / "llm")
    raw = {"model_name_or_path": str(tmp_path / "llm"), "vision_tower": str(tower),
           "vision_config": dict(CONVNEXT_TINY, **FIVE), "mm_vision_select_layer": -1, **over}
    cfg = load_config(None, raw=raw)
    model = build_model(cfg, vocab_size=121, image_token_id=120).model
    apply_freeze(model, cfg.frozen(), cfg.tune_vit_from_layer)
    return model.model.vision_tower.eval()


def trainable(tower) -> list[str]:
    return sorted(n for n, p in tower.named_parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def theirs_tower(laion_folder, tmp_path_factory):
    from tools.reference_code.convllava_ours import run_convllava
    from tools.reference_code.our_side import noise_image

    work = tmp_path_factory.mktemp("convllava-tower")
    torch.manual_seed(1)
    torch.save(torch.randn(2, 3, RESOLUTION, RESOLUTION), work / "pixels.pt")
    noise_image(work / "image.png", (300, 200), seed=2)
    (work / "spec.json").write_text(json.dumps({
        "tower": str(laion_folder), "resolution": RESOLUTION, "five_stage": [ADDED["depth"], ADDED["width"]],
        "pixels": "pixels.pt", "image": "image.png", "save": "stage1-out", "tune_vit_from_layer": 2,
        "seed": 3, "perturb_added": 0.1}))
    return work, run_convllava(Path(ENV), work, "tower")


def test_stage1_tower_features_and_trainable_stage(laion_folder, theirs_tower, tmp_path):
    """scripts/stage_1.sh's tower (laion trunk + fresh fifth stage, 320 px, last map): the same weights
    (theirs copied into our fresh stage), the same features, the added stage alone training."""
    work, theirs = theirs_tower
    ours = our_model(tmp_path, laion_folder, stage=1, tune_vit_from_layer=4)
    added = "encoder.stages.4."
    ours.encoder.stages[4].load_state_dict({k[len(added):]: v for k, v in theirs["state_s1"].items()
                                            if k.startswith(added)})
    mine = ours.state_dict()
    their_state = {k: v for k, v in theirs["state_s1"].items() if not k.startswith("layernorm.")}  # never used
    assert set(mine) == set(their_state)
    assert all(torch.equal(mine[k], v) for k, v in their_state.items())
    with torch.no_grad():
        feats = ours(torch.load(work / "pixels.pt")).last_hidden_state
    assert feats.shape == (2, (RESOLUTION // 64) ** 2, ADDED["width"])
    torch.testing.assert_close(feats, theirs["features_s1"], **FEATURES_TOL)
    assert trainable(ours) == theirs["trainable_s1"] and all(n.startswith(added) for n in trainable(ours))


def test_stage2_loads_their_saved_tower_and_unfreezes_the_same_stages(theirs_tower, tmp_path):
    """Their stage 1's saved tower (OUT/vision_tower: 5 stages, no pooled norm) loads into ours as it loads
    into theirs: the same features; ``tune_vit_from_layer 2`` unfreezes the same parameters."""
    work, theirs = theirs_tower
    torch.testing.assert_close(theirs["features_s2"], theirs["features_s1"], rtol=0, atol=0)  # their round trip
    ours = our_model(tmp_path, work / "stage1-out" / "vision_tower", stage=2, tune_vit_from_layer=2)
    with torch.no_grad():
        feats = ours(torch.load(work / "pixels.pt")).last_hidden_state
    torch.testing.assert_close(feats, theirs["features_s2"], **FEATURES_TOL)
    assert trainable(ours) == theirs["trainable_s2"]
    assert not any(n.startswith(("embeddings.", "encoder.stages.0.", "encoder.stages.1.")) for n in trainable(ours))


def test_pad_pixels_at_the_stage_resolution(laion_folder, theirs_tower):
    """Their CLIPImageProcessor after set_crop_size + their dataset's expand2square, beside our ImageLoader
    with the processor our tower code builds from the same folder: the same pixels."""
    from vlmtrain.data.images import ImageLoader, open_rgb
    from vlmtrain.model import towers

    work, theirs = theirs_tower
    vc = towers.config_from_checkpoint(str(laion_folder), FIVE)
    proc = towers.image_processor(str(laion_folder), vc)
    assert theirs["crop_size"] == {"height": RESOLUTION, "width": RESOLUTION}
    assert theirs["size"] == {"shortest_edge": RESOLUTION}
    ours = ImageLoader(proc, "pad").process([open_rgb(work / "image.png")])
    torch.testing.assert_close(ours[0], theirs["pixel_values"], rtol=0, atol=0)


@pytest.fixture(scope="module")
def stage2_run(tmp_path_factory) -> Path:
    """A tiny ConvLLaVA chain as the shipped configs run it: stage 1 (projector + added stage), stage 2 from it
    (tower from stage 2 on, projector, LLM), ``version: v1``, pad, 5 stages at 320 px."""
    from vlmtrain.tinydata import write_tiny_blend

    tmp = tmp_path_factory.mktemp("convllava-run")
    blend = write_tiny_blend(tmp / "blend", n=8, kind="instruct", seed=1)
    tower = dict(CONVNEXT_TINY, **FIVE)
    common = {"version": "v1", "image_aspect_ratio": "pad", "vision_config": tower, "mm_vision_select_layer": -1,
              "max_steps": 1, "per_device_train_batch_size": 2}
    s1 = tiny_config(blend, tmp / "s1", stage=1, tune_vit_from_layer=4, **common)
    r = run_vlmtrain("run", write_config(tmp / "s1.yaml", s1))
    assert r.code == 0, r.err
    s2 = tiny_config(blend, tmp / "s2", stage=2, model_name_or_path=str(tmp / "s1"), random_init=False,
                     tokenizer_train_vocab_size=None, tune_vit_from_layer=2, **common)
    r = run_vlmtrain("run", write_config(tmp / "s2.yaml", s2))
    assert r.code == 0, r.err
    return tmp / "s2"


def test_their_stage2_step_on_our_weights_is_ours(stage2_run, tmp_path):
    """Our stage-2 weights handed to ConvLLaVA's code as its stage 1 leaves them (the folder `vlmtrain
    export-llava` writes); its train.py's stage 2 (tower from stage 2 on + projector + LLM) takes one step on
    each conversation: its ids (tokenizers 0.15.1, its preprocess v1), labels, pixels, logits, loss and every
    gradient are ours, and it trains what we train."""
    from tools.reference_code.convllava_ours import convllava_names, hand_over, run_convllava
    from tools.reference_code.our_side import CONVERSATIONS, assert_same_step, our_logits, our_trainable, training_step

    work = tmp_path / "work"
    hand_over(stage2_run, work, conversations=CONVERSATIONS, tune_vit_from_layer=2)  # `vlmtrain export-llava`'s folder
    theirs = run_convllava(Path(ENV), work, "model")
    ours = training_step(stage2_run, work)
    for t, we, logits in zip(theirs["steps"], ours, our_logits(stage2_run, work), strict=True):
        we["grads"] = convllava_names(we["grads"])
        assert assert_same_step(t, we)
        assert set(t["grads"]) == set(t["trainable"]) == set(convllava_names(dict.fromkeys(our_trainable(stage2_run))))
        assert any(k.startswith("model.vision_tower.vision_tower.encoder.stages.2.") for k in t["grads"])
        torch.testing.assert_close(we["pixel_values"], t["pixel_values"], rtol=0, atol=0)
        torch.testing.assert_close(logits, t["logits"], rtol=1e-5, atol=1e-5)


def test_an_exports_tokenizer_tokenises_as_ours_under_convllavas_pins(stage2_run, tmp_path):
    """The tokenizer files vlmtrain's exports write (export_folder.write_export), loaded as ConvLLaVA's train.py
    loads a tokenizer under its pins (transformers 4.39.3, use_fast=False): the same ids as ours. (Until the
    null "add_prefix_space" transformers 5 saves was left out, the first word lost its "▁" there.)"""
    from tools.reference_code.convllava_ours import run_convllava
    from vlmtrain.generate import load_run
    from vlmtrain.model.export_folder import write_export

    run = load_run(stage2_run)
    write_export(tmp_path / "export", {}, {"model_type": "llava_llama"}, run.model, run.tokenizer)
    texts = ["A chat between a curious user and an artificial intelligence assistant.", "What is in the picture?"]
    (tmp_path / "spec.json").write_text(json.dumps({"folder": str(tmp_path / "export"), "texts": texts}))
    theirs = run_convllava(Path(ENV), tmp_path, "tokenize")["texts"]
    assert theirs == [run.tokenizer(t).input_ids for t in texts]


@pytest.mark.parametrize("legacy", [False, True], ids=["not-legacy", "legacy"])
def test_its_preprocess_v1_masks_as_ours_but_drops_a_legacy_tokenizers_later_rounds(legacy, tmp_path):
    """ConvLLaVA's preprocess_v1 takes LLaVA's "-1" for later rounds whatever the tokenizer's ``legacy``
    (llava/data/data.py:225-228, LLaVA's ``not legacy`` commented out). A non-legacy tokenizer: its ids and
    labels are ours, one round and two. A legacy one: one round is ours; two rounds come out masked whole
    there (its "tokenization mismatch": no loss), where we train the answers."""
    from tests.train_data.traindata_helpers import corpus
    from tools.reference_code.convllava_ours import run_convllava
    from tools.reference_code.our_side import CONVERSATIONS, with_image
    from vlmtrain.data import Encoder, ImageTokens
    from vlmtrain.data.slow_tokenizer_files import save_tokenizer
    from vlmtrain.data.tokenizers import train_llama_sentencepiece

    tok = train_llama_sentencepiece(corpus(), 700, legacy=legacy, workdir=tmp_path / "train")
    save_tokenizer(tok, tmp_path / "tokenizer")
    (tmp_path / "spec.json").write_text(json.dumps({"folder": str(tmp_path / "tokenizer"),
                                                    "conversations": CONVERSATIONS}))
    theirs = run_convllava(Path(ENV), tmp_path, "tokenize")
    assert theirs["legacy"] is legacy
    tok.pad_token = tok.unk_token
    image_id = len(tok)  # an id past the vocabulary, as their -200
    ours = Encoder(tok, "vicuna_v1", ImageTokens("<image>", image_id, 1), 2048)
    for conversation, t in zip(CONVERSATIONS, theirs["encoded"], strict=True):
        enc = ours.encode(conversation, 1)
        assert with_image(t["input_ids"], [image_id]) == enc.input_ids.tolist()
        rounds = len(conversation) // 2
        if legacy and rounds > 1:
            assert all(x == -100 for x in t["labels"]) and (enc.labels != -100).any()
        else:
            assert t["labels"] == enc.labels.tolist()
