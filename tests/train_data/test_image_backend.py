"""Issue 20: the image processor runs on the PIL backend unless the config opts in to torchvision, with or
without torchvision importable, and its pixels equal LLaVA-1.5's (expand2square + CLIP's PIL path)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fake_torchvision import write_fake_torchvision
from llava_pixels import CLIP_MEAN, CLIP_STD, LLAVA_LIKE_SIZES, llava_pixels, textured_jpeg

REPO = Path(__file__).resolve().parents[2]

# openai/clip-vit-large-patch14-336's preprocessor_config.json (the tower LLaVA-1.5 uses), field for field.
CLIP_336 = {"crop_size": 336, "do_center_crop": True, "do_normalize": True, "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": list(CLIP_MEAN),
            "image_std": list(CLIP_STD), "resample": 3, "size": 336}


@pytest.fixture(scope="module")
def clip_tower(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("clip-336")
    (d / "preprocessor_config.json").write_text(json.dumps(CLIP_336))
    return d


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("jpegs")
    for i, size in enumerate(LLAVA_LIKE_SIZES):
        textured_jpeg(d / f"{i}.jpg", size, seed=i)
    return d


def _cfg(**kw):
    from vlmtrain.config import TrainConfig

    return TrainConfig(**kw)


def _clip_vc(size: int = 336):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(image_size=size, patch_size=14)


def test_default_backend_is_pil():
    from vlmtrain.config import load_config

    assert _cfg().image_backend == "pil"
    assert load_config(REPO / "configs" / "tiny-cpu.yaml").image_backend == "pil"


@pytest.mark.parametrize("aspect", ["pad", "square"])
def test_pixels_equal_llava_expand2square_and_pil_clip(aspect, clip_tower, jpegs):
    """The project's image path on the tower's own processor gives LLaVA-1.5's pixels, bit for bit."""
    from vlmtrain.data.images import ImageLoader
    from vlmtrain.train.run import build_image_processor

    processor = build_image_processor(_cfg(vision_tower=str(clip_tower)), _clip_vc())
    loader = ImageLoader(processor, aspect)
    for i, size in enumerate(LLAVA_LIKE_SIZES):
        got = loader.load(jpegs, [f"{i}.jpg"])[0].numpy()
        with Image.open(jpegs / f"{i}.jpg") as im:
            want = llava_pixels(im.convert("RGB"), aspect)
        assert got.dtype == want.dtype == np.float32 and got.shape == want.shape == (3, 336, 336), size
        assert np.array_equal(got, want), (aspect, size, float(np.abs(got - want).max()))


def test_a_whole_checkpoint_without_vision_tower_gets_openai_clip_336_pixels(clip_tower, jpegs):
    """A run from a whole Llava checkpoint naming no `vision_tower` (configs/sharegpt4v-*-finetune.yaml) builds
    CLIP's processor from the tower's config: the pixels of openai/clip-vit-large-patch14-336's own processor."""
    from vlmtrain.data.images import ImageLoader
    from vlmtrain.train.run import build_image_processor

    own = ImageLoader(build_image_processor(_cfg(vision_tower=str(clip_tower)), _clip_vc()), "pad")
    derived = ImageLoader(build_image_processor(_cfg(), _clip_vc()), "pad")
    for i in range(len(LLAVA_LIKE_SIZES)):
        assert np.array_equal(own.load(jpegs, [f"{i}.jpg"])[0].numpy(), derived.load(jpegs, [f"{i}.jpg"])[0].numpy())


_CHILD = r"""
import json, sys
import numpy as np
from transformers import CLIPVisionConfig, SiglipVisionConfig, AutoImageProcessor
from transformers.image_processing_backends import PilBackend
from transformers.utils import is_torchvision_available
from vlmtrain.config import TrainConfig
from vlmtrain.data.images import ImageLoader
from vlmtrain.data.image_processor import backend_of
from vlmtrain.train.run import build_image_processor

tower, jpegs, out = sys.argv[1], sys.argv[2], sys.argv[3]
res = {"torchvision_available": is_torchvision_available()}
# Unpinned, transformers would pick torchvision here: the fake is in effect.
res["unpinned_auto_backend"] = AutoImageProcessor.from_pretrained(tower).backend
clip = CLIPVisionConfig(image_size=336, patch_size=14)
built = {
    "auto": build_image_processor(TrainConfig(vision_tower=tower), clip),
    "clip_from_config": build_image_processor(TrainConfig(random_init=True), clip),
    "siglip_from_config": build_image_processor(TrainConfig(random_init=True),
                                                SiglipVisionConfig(image_size=384, patch_size=14)),
}
# The towers with processors of their own (ConvLLaVA's ConvNeXt reads the tower folder's; InternViT's is built).
from tests.models.seed_model_helpers import CONVNEXT_TINY, INTERNVIT_TINY
from vlmtrain.model import convnext_tower, internvit
convnext_vc = convnext_tower.tower_config(dict(CONVNEXT_TINY), {"depths": [1, 1, 2, 1, 2],
                                          "hidden_sizes": [8, 16, 24, 32, 40], "image_size": 128})
built["convnext_auto"] = build_image_processor(TrainConfig(vision_tower=tower), convnext_vc)
built["internvit"] = build_image_processor(TrainConfig(random_init=True), internvit.native_config_from_published(
    dict(INTERNVIT_TINY, image_size=448, patch_size=14)))
res["backends"] = {k: backend_of(p) for k, p in built.items()}
res["pil_classes"] = {k: isinstance(p, PilBackend) for k, p in built.items()}
pixels = {a: ImageLoader(built["auto"], a).load(jpegs, [f"{i}.jpg" for i in range(int(sys.argv[4]))]).numpy()
          for a in ("pad", "square")}
np.savez(out, **pixels)
try:
    opt_in = build_image_processor(TrainConfig(vision_tower=tower, image_backend="torchvision"), clip)
    res["opt_in_backend"] = backend_of(opt_in)
except Exception as e:
    res["opt_in_backend"] = repr(e)
print(json.dumps(res))
"""


def test_default_stays_pil_when_torchvision_is_importable(tmp_path, clip_tower, jpegs):
    """With torchvision importable (a stand-in: PyPI's does not import beside torch 2.13.0 here), the
    processors actually built are the PIL ones and give the same tensors as without torchvision."""
    fake = write_fake_torchvision(tmp_path / "fake")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake), str(REPO)]))
    out = tmp_path / "pixels.npz"
    n = 4
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(clip_tower), str(jpegs), str(out), str(n)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["torchvision_available"] and res["unpinned_auto_backend"] == "torchvision"
    assert res["backends"] == {"auto": "pil", "clip_from_config": "pil", "siglip_from_config": "pil",
                               "convnext_auto": "pil", "internvit": "pil"}
    assert all(res["pil_classes"].values())
    assert res["opt_in_backend"] == "torchvision"  # the opt-in is honoured

    from vlmtrain.data.images import ImageLoader
    from vlmtrain.train.run import build_image_processor

    here = build_image_processor(_cfg(vision_tower=str(clip_tower)), _clip_vc())
    there = np.load(out)
    for aspect in ("pad", "square"):
        mine = ImageLoader(here, aspect).load(jpegs, [f"{i}.jpg" for i in range(n)]).numpy()
        assert np.array_equal(mine, there[aspect]), aspect


def test_torchvision_opt_in_without_torchvision_is_a_config_error(tmp_path):
    from traindata_helpers import conv, write_blend
    from vlmtrain.config import ConfigError
    from vlmtrain.train.preflight import preflight

    if __import__("importlib").util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here")
    ds = write_blend(tmp_path / "ds", [{"id": "a", "conversations": conv("hi", "hello")}], None)
    cfg = _cfg(dataset_dir=str(ds), image_backend="torchvision")
    with pytest.raises(ConfigError) as e:
        preflight(cfg)
    assert "torchvision is not installed" in e.value.render() and "image_backend: pil" in e.value.render()


def test_dry_run_names_the_backend():
    from tests.cli_runner import run_main
    from vlmtrain.cli import main

    r = run_main(main, "vlmtrain", "run", "configs/tiny-cpu.yaml", "--dry-run")
    assert r.code == 0, r.err
    assert "pad, pil image-processor backend (LLaVA's pixels)" in r.out
    r = run_main(main, "vlmtrain", "run", "configs/tiny-cpu.yaml", "--dry-run", "--json",
                 "--set", "image_backend=torchvision")
    assert r.code == 0 and r.json()["image_backend"] == "torchvision"
    r = run_main(main, "vlmtrain", "run", "configs/tiny-cpu.yaml", "--dry-run", "--set", "image_backend=tv")
    assert r.code == 2 and "choose one of pil, torchvision" in r.err
