"""vlmtrain's InternViT-6B (transformers' InternVLVisionModel, vlmtrain/model/internvit.py) beside InternVL's own
code: InternVL-LLaVA's ``InternVisionModel`` and ``CLIPVisionTower`` (OpenGVLab/InternVL 2410d1d,
internvl_chat_llava/llava/model/multimodal_encoder/) under the transformers it pins (4.37.2). Its side builds two
tiny towers, saves them in its own layout (config.json + .bin shards) and runs them (internvl_side.py); ours
loads those folders as the configs do (towers.config_from_checkpoint / load / finish, build_model) and must
give the same hidden states, projector inputs and pixels.

The towers keep InternViT-6B's config (QK-norm, layer scale, RMSNorm, eps 1e-6, no drop path) at a 4x4 grid:
``InternViT-6B-448px-tiny`` (448 px, patch 112, no qkv bias: V1-0's shape) and ``InternViT-6B-224px-tiny``
(224 px, patch 56, qkv bias on to cover that key), the second fed 336 px as the 224to336 recipes (a 6x6 grid,
positions resized every forward) because its folder name lacks "448" (clip_encoder.py:52).

Opt-in: ``python -m tools.reference_code.build_env DIR ...`` then ``python -m tools.reference_code.internvl_env
DIR --internvl SRC`` once; ``VLMTRAIN_TEST_REFERENCE_ENV=DIR``. Skipped otherwise (CI has neither)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.models.seed_model_helpers import TINY_LLAMA, internvit_reference_hidden_states
from vlmtrain.config import load_config
from vlmtrain.model import towers

ENV = os.environ.get("VLMTRAIN_TEST_REFERENCE_ENV")
pytestmark = pytest.mark.skipif(not ENV, reason="VLMTRAIN_TEST_REFERENCE_ENV names no reference environment "
                                                "(python -m tools.reference_code.internvl_env)")

SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 5, "num_attention_heads": 4,
         "qk_normalization": True, "initializer_factor": 0.1, "layer_norm_eps": 1e-6, "hidden_act": "gelu",
         "use_flash_attn": True, "drop_path_rate": 0.0}
# folder name: (config, the run's vision_config fields as the configs give them, sizes its hidden states are
# compared at: the checkpoint's grid and a larger one)
TOWERS = {"InternViT-6B-448px-tiny": ({**SHAPE, "image_size": 448, "patch_size": 112, "qkv_bias": False}, {}, [448, 672]),
          "InternViT-6B-224px-tiny": ({**SHAPE, "image_size": 224, "patch_size": 56, "qkv_bias": True},
                                      {"input_image_size": 336}, [224, 336])}
IMAGES = [(600, 500), (300, 520), (200, 200), (97, 131)]  # landscape, portrait, upscaled square, odd sizes
SELECT_LAYER = -4  # the InternVL-LLaVA scripts' mm_vision_select_layer
DROPOUT = 0.5  # InternViT's config `dropout`, for the train-mode check (its published configs have 0.0)


@pytest.fixture(scope="module")
def theirs(tmp_path_factory) -> tuple[Path, dict]:
    """InternVL's side, run once: the tower folders it wrote under ``work``, and what it computed."""
    import numpy as np
    from PIL import Image

    from tools.reference_code.internvl_env import internvl_paths

    work = tmp_path_factory.mktemp("internvl")
    rng = np.random.default_rng(0)
    images = []
    for i, (w, h) in enumerate(IMAGES):  # noise: a resize or crop off by a pixel changes the numbers
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(work / f"{i}.png")
        images.append(str(work / f"{i}.png"))
    spec = {"towers": [{"folder": str(work / name), "config": conf, "seed": i, "sizes": sizes, "dropout": DROPOUT}
                       for i, (name, (conf, _, sizes)) in enumerate(TOWERS.items())],
            "images": images, "select_layer": SELECT_LAYER}
    (work / "spec.json").write_text(json.dumps(spec))
    path = os.pathsep.join(str(p) for p in internvl_paths(Path(ENV)))
    child = subprocess.run([sys.executable, str(Path(__file__).parents[2] / "tools/reference_code/internvl_side.py"),
                            str(work / "spec.json"), str(work / "theirs.pt")], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": path}, timeout=600)
    assert child.returncode == 0, child.stderr[-4000:]
    out = torch.load(work / "theirs.pt", weights_only=False)
    assert out["transformers"] == "4.37.2"
    return work, out


def _ours(folder: Path, size: int, dtype: torch.dtype = torch.float32, attn: str = "sdpa"):
    """The tower as a run builds it, fed ``size`` px: its config from the folder (+ ``input_image_size`` where
    ``size`` is not the checkpoint's), loaded, finished."""
    fields = {"input_image_size": size} if size != TOWERS[folder.name][0]["image_size"] else None
    vc = towers.config_from_checkpoint(str(folder), fields)
    tower = towers.load(str(folder), vc, dtype=dtype, attn_implementation=attn).eval()
    towers.finish(tower, vc)
    return tower, vc


def _cases():
    return [(name, size) for name, (_, _, sizes) in TOWERS.items() for size in sizes]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("name,size", _cases())
def test_every_hidden_state_matches_internvl_code(theirs, name, size, attn):
    """Embeddings and every block's output, float32, at the checkpoint's grid and a larger one (positions
    resized bicubically): the key map, the q/k/v split, QK-norm, layer scale and the resize are InternVL's, on
    SDPA (what a run picks without flash_attn) and eager (``attn_implementation: eager``)."""
    work, out = theirs
    t = out["towers"][str(work / name)]
    tower, vc = _ours(work / name, size, attn=attn)
    with torch.no_grad():
        ours = tower(t["pixels"][size], output_hidden_states=True).hidden_states
    assert len(ours) == len(t["hidden"][size]) == TOWERS[name][0]["num_hidden_layers"] + 1
    for i, (a, b) in enumerate(zip(ours, t["hidden"][size])):
        assert a.shape == b.shape == (2, (size // vc.patch_size[0]) ** 2 + 1, 64), i
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"hidden state {i}")


@pytest.mark.parametrize("name,size", _cases())
def test_bf16_positions_and_embeddings_are_internvls_bit_for_bit(theirs, name, size):
    """In bfloat16 (the configs' dtype) InternVL resizes the position grid in float32 and casts (its
    _get_pos_embed); ours gives the same table and embeddings bit for bit, where transformers' own resize
    (in the weights' dtype) does not. The blocks after it differ by bf16 rounding only (its fused qkv and
    hand-written attention against our split q/k/v and SDPA): no further from float32 than InternVL's own."""
    from transformers.models.internvl.modeling_internvl import InternVLVisionEmbeddings

    work, out = theirs
    t = out["towers"][str(work / name)]
    tower, _ = _ours(work / name, size, torch.bfloat16)
    n = (size // tower.config.patch_size[0]) ** 2 + 1
    probe = torch.zeros(1, n, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        ours = tower(t["pixels"][size].to(torch.bfloat16), output_hidden_states=True).hidden_states
        table = tower.embeddings.interpolate_pos_encoding(probe, size, size)
        native = InternVLVisionEmbeddings.interpolate_pos_encoding(tower.embeddings, probe, size, size)
    assert torch.equal(table, t["pos_bf16"][size])
    assert torch.equal(ours[0], t["hidden_bf16"][size][0])
    if size != TOWERS[name][0]["image_size"]:  # a resized grid: transformers' bf16 resize is off
        assert not torch.equal(native, t["pos_bf16"][size])
    for i, (a, b, exact) in enumerate(zip(ours, t["hidden_bf16"][size], t["hidden"][size])):
        ours_err, their_err = (a.float() - exact).abs().max(), (b.float() - exact).abs().max()
        assert ours_err <= 1.5 * their_err, (i, ours_err, their_err)  # measured: never further than theirs here


@pytest.mark.parametrize("name", list(TOWERS))
@pytest.mark.parametrize("feature", ["patch", "cls_patch"])
def test_projector_gets_internvl_llavas_features(theirs, tmp_path, name, feature):
    """What InternVL-LLaVA's CLIPVisionTower hands its projector (hidden state -4; CLS dropped for ``patch``, kept
    for ``cls_patch``) on its processor's pixels, through a stage-1 build of ours from the same folder, selecting
    as the built model's config says: our Llava's image features are our projector applied to exactly those."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from vlmtrain.model.build import build_model

    work, out = theirs
    t = out["towers"][str(work / name)]
    AutoModelForCausalLM.from_config(AutoConfig.for_model(**TINY_LLAMA)).save_pretrained(tmp_path / "llm")
    raw = {"stage": 1, "model_name_or_path": str(tmp_path / "llm"), "vision_tower": str(work / name),
           "mm_vision_select_layer": SELECT_LAYER, "mm_vision_select_feature": feature}
    if TOWERS[name][1]:
        raw["vision_config"] = TOWERS[name][1]
    built = build_model(load_config(None, raw=raw), vocab_size=121, image_token_id=120)
    want = t["features"][feature]
    assert built.tokens_per_image == want.shape[1]
    model, conf = built.model.model, built.model.config
    with torch.no_grad():
        feats = model.get_image_features(t["processed"]["pad"], vision_feature_layer=conf.vision_feature_layer,
                                         vision_feature_select_strategy=conf.vision_feature_select_strategy).pooler_output
        projected = model.multi_modal_projector(want)
    torch.testing.assert_close(torch.stack(list(feats)), projected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(TOWERS))
@pytest.mark.parametrize("aspect", ["square", "pad"])
def test_pixels_are_internvl_llavas(theirs, name, aspect):
    """Its processor (built in code, crop by folder name) and its train.py's pad / square, against ours as a run
    builds it (run.build_image_processor: towers.image_processor on the default PIL backend) and the training
    data reads images with it (data.images.ImageLoader at the config's image_aspect_ratio)."""
    from PIL import Image

    from vlmtrain.data.images import ImageLoader
    from vlmtrain.train.run import build_image_processor

    work, out = theirs
    t = out["towers"][str(work / name)]
    raw = {"stage": 1, "model_name_or_path": "unused", "vision_tower": str(work / name), "image_aspect_ratio": aspect}
    if TOWERS[name][1]:
        raw["vision_config"] = TOWERS[name][1]
    cfg = load_config(None, raw=raw)
    side = TOWERS[name][1].get("input_image_size", TOWERS[name][0]["image_size"])
    assert t["crop"] == {"height": side, "width": side} and t["size"] == {"shortest_edge": side}
    vc = towers.config_from_checkpoint(cfg.vision_tower, cfg.vision_config)  # as build_model's _native_config
    loader = ImageLoader(build_image_processor(cfg, vc), cfg.image_aspect_ratio)
    ours = loader.process([Image.open(work / f"{i}.png").convert("RGB") for i in range(len(IMAGES))])
    assert ours.shape == t["processed"][aspect].shape == (len(IMAGES), 3, side, side)
    assert torch.equal(ours, t["processed"][aspect]), (ours - t["processed"][aspect]).abs().max()


@pytest.mark.parametrize("name", list(TOWERS))
def test_train_mode_drops_where_internvl_drops(theirs, name):
    """InternViT's ``dropout`` applies after the attention's output projection only (its proj_drop), nowhere in
    the embeddings or after the MLP. Our tower built from the same config, in train mode, drops in the same
    places: its embeddings are InternVL's exactly, and its only nn.Dropout modules are the projections'."""
    from vlmtrain.model import internvit

    work, out = theirs
    folder = work / name
    t = out["towers"][str(folder)]["dropout"]
    vc = internvit.native_config_from_published({**json.loads((folder / "config.json").read_text()), "dropout": t["p"]})
    tower = internvit.load_tower(str(folder), vc, dtype=torch.float32, attn_implementation="sdpa").train()
    towers.finish(tower, vc)
    n = TOWERS[name][0]["num_hidden_layers"]
    assert t["sites"] == sorted(f"encoder.layers.{i}.attn.proj_drop" for i in range(n))  # InternVL's own
    ours = sorted(k for k, m in tower.named_modules() if isinstance(m, torch.nn.Dropout) and m.p > 0)
    assert ours == sorted(f"encoder.layer.{i}.attention.projection_dropout" for i in range(n))
    torch.manual_seed(0)
    with torch.no_grad():
        embeddings = tower.embeddings(out["towers"][str(folder)]["pixels"][TOWERS[name][2][0]])
    assert torch.equal(embeddings, t["embeddings"])


@pytest.mark.parametrize("size", TOWERS["InternViT-6B-448px-tiny"][2])
def test_hand_written_reference_is_internvls(theirs, size):
    """tests/models/seed_model_helpers.internvit_reference_hidden_states (what the CI test compares against)
    gives InternVL's hidden states on InternVL's weights: the CI test's yardstick is checked against the
    original. (It models no qkv bias, as InternViT-6B has none: the 448 px tower.)"""
    from vlmtrain.model.checkpoint_files import read_state_dict

    work, out = theirs
    folder = work / "InternViT-6B-448px-tiny"
    t = out["towers"][str(folder)]
    ref = internvit_reference_hidden_states(read_state_dict(str(folder)), json.loads((folder / "config.json").read_text()),
                                            t["pixels"][size])
    assert len(ref) == len(t["hidden"][size])
    for i, (a, b) in enumerate(zip(ref, t["hidden"][size])):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"hidden state {i}")
