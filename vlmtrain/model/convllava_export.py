"""A stage-1/2 model with vlmtrain's ConvNeXt tower in the layout ConvLLaVA (alibaba/conv-llava) loads.

ConvLLaVA's ``load_pretrained_model(path, None, name)`` (``llava/model/builder.py``) builds its only class,
``LlavaLlamaForCausalLM``, from ``path`` whatever ``name`` is: the LLM and projector under LLaVA's names,
config.json with LLaVA's ``mm_*`` keys. The tower comes from the folder ``mm_vision_tower`` names, not from
the checkpoint: its ``build_vision_tower`` makes a ``ConvNeXtCLIPVisionTower`` of any name without "siglip",
"clip-vit", "lknet" or a leading "openai", which loads transformers' ``ConvNextModel`` and a
``CLIPImageProcessor`` from that folder, sets the processor to ``mm_vision_resolution`` when above 256,
drops a block for ``mm_vision_select_layer -2`` and appends a fresh stage for a non-zero
``vision_add_five_stage``. This is what its train.py leaves after a stage whose tower trains (its
``safe_save_model_for_hf_trainer``): the LLM folder without tower keys and ``OUT/vision_tower/`` with the
tower's ConvNext config (the added stage already among its ``depths``), ``pytorch_model.bin`` in
``ConvNextModel``'s names without the pooled norm, and the processor. So the export writes that folder,
names it in ``mm_vision_tower`` by its absolute path and leaves ``vision_add_five_stage`` out.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vlmtrain.model.convnext_tower import MODEL_TYPE

TOWER_FOLDER = "vision_tower"
# what a transformers 4.39 ConvNextConfig recomputes from ``depths`` or does not read
_TOWER_CONFIG_DROP = ("model_type", "stage_names", "out_features", "out_indices", "_out_features", "_out_indices",
                      "architectures", "transformers_version", "dtype", "torch_dtype")
# its build_vision_tower's tests on the name, in its order, before its ConvNeXt default
_OTHER_TOWERS = (("siglip", "SigLIP"), ("clip-vit", "CLIP"), ("lknet", "LKNet"))


def is_convnext(model: Any) -> bool:
    """Whether ``model``'s tower is vlmtrain's ConvNeXt (ConvLLaVA's)."""
    return model.config.vision_config.model_type == MODEL_TYPE


def convllava_state_dict(state: dict) -> dict:
    """The LLM and projector of a vlmtrain state dict in LLaVA's names; the tower goes to its own folder."""
    from vlmtrain.model.llava_export import llava_state_dict

    return {k: v for k, v in llava_state_dict(state).items() if not k.startswith("model.vision_tower.")}


def convllava_config(model: Any, tower_path: str, image_aspect_ratio: str, model_max_length: int) -> dict:
    """LLaVA's config.json (llava_export.llava_config) with the keys ConvLLaVA's tower reads."""
    from vlmtrain.model.llava_export import llava_config

    out = llava_config(model, tower_path, image_aspect_ratio, model_max_length)
    # its tower ignores the feature choice; "patch" is what its train.py writes
    out.update({"mm_vision_resolution": model.config.vision_config.image_size, "mm_vision_select_feature": "patch"})
    return out


def tower_config(vision_config: Any) -> dict:
    """The tower's config.json as transformers' ConvNextModel reads it (4.39, ConvLLaVA's pin)."""
    conf = {k: v for k, v in vision_config.to_dict().items() if k not in _TOWER_CONFIG_DROP}
    return dict(conf, model_type="convnext", architectures=["ConvNextModel"])


def write_tower_folder(model: Any, image_processor: Any, folder: Path) -> None:
    """``folder``: the tower's config.json, ``pytorch_model.bin`` (ConvNextModel's names, no pooled norm: the
    tower has none) and ``preprocessor_config.json`` (the run's processor, already at the run's resolution)."""
    from vlmdata.atomic import atomic_open, write_text

    folder.mkdir(parents=True)
    write_text(folder / "config.json", json.dumps(tower_config(model.config.vision_config), indent=2) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in model.model.vision_tower.state_dict().items()}
    with atomic_open(folder / "pytorch_model.bin") as fh:  # (fsynced: the export is renamed into place next)
        torch.save(state, fh)
    write_text(folder / "preprocessor_config.json", image_processor.to_json_string())  # what save_pretrained writes


def tower_problem(tower_path: str) -> str | None:
    """What would keep ConvLLaVA from building a ConvNeXt tower from ``tower_path`` (it goes by the name)."""
    lowered = tower_path.lower()
    for part, kind in _OTHER_TOWERS:
        if part in (lowered if part == "lknet" else tower_path):
            return (f"config.json's mm_vision_tower {tower_path!r} contains {part!r}: ConvLLaVA's build_vision_tower "
                    f"would build a {kind} tower from it; export to a path without it")
    return None


def export_notes(folder: Path, tower_path: str) -> list[str]:
    """What would keep ConvLLaVA's load_pretrained_model from loading the export in ``folder`` as trained."""
    from vlmtrain.model.legacy_tokenizer import slow_tokenizer_problem

    moved = (f"a ConvNeXt (ConvLLaVA) model: ConvLLaVA's load_pretrained_model loads this export (LLaVA's builds "
             f"no ConvNeXt tower), its tower from config.json's mm_vision_tower, the absolute path {tower_path}: "
             "after moving the export, set it to the tower folder's new place")
    found = (slow_tokenizer_problem(folder, loader="ConvLLaVA"), tower_problem(tower_path), moved)
    return [note for note in found if note]


def write_convllava_checkpoint(model: Any, out_dir: str | Path, *, image_processor: Any, image_aspect_ratio: str,
                               model_max_length: int, tokenizer: Any = None) -> Path:
    """``out_dir``: the LLM and projector in LLaVA's names (export_folder.write_export) and ``vision_tower/``,
    renamed into place whole. Returns the weights file."""
    from vlmtrain.model.export_folder import write_export

    out = Path(out_dir)
    config = convllava_config(model, str(out.resolve() / TOWER_FOLDER), image_aspect_ratio, model_max_length)
    return write_export(out, convllava_state_dict(model.state_dict()), config, model, tokenizer,
                        extra=lambda folder: write_tower_folder(model, image_processor, folder / TOWER_FOLDER))
