"""A stage-1 or stage-2 model in LLaVA's checkpoint layout, for the original repo's eval and serve code.

LLaVA (haotian-liu/LLaVA) saves its ``LlavaLlamaForCausalLM`` / ``LlavaMistralForCausalLM``: the LLM at
``model.*`` / ``lm_head.*``, the projector at ``model.mm_projector.{0,2}.*`` (``mlp2x_gelu``, an
``nn.Sequential``; ``linear``: ``model.mm_projector.*``) and the tower at
``model.vision_tower.vision_tower.vision_model.*``, with a config.json of the LLM's fields plus its
``mm_*`` ones. Its ``load_pretrained_model`` picks the class from the folder's name ("llava" in it; then
"mistral", else Llama) and loads the tower's weights from ``mm_vision_tower`` (a Hub id starting with
``openai`` / ``laion``, or an existing absolute path), not from the checkpoint's tower keys. Its eval scripts
(scripts/v1_5/eval/*.sh, which vlmdata's ``llava-eval`` layout serves) take ``--conv-mode vicuna_v1``.
A model with vlmtrain's ConvNeXt tower goes to ConvLLaVA's variant of this layout instead
(vlmtrain.model.convllava_export), which ConvLLaVA's code loads.
"""
from __future__ import annotations

from pathlib import Path

from vlmtrain.model.convllava_export import is_convnext
from vlmtrain.model.export_folder import renamed
from vlmtrain.model.moe.checkpoint_keys import legacy_text_fields

CLASSES = {"llama": ("LlavaLlamaForCausalLM", "llava_llama"), "mistral": ("LlavaMistralForCausalLM", "llava_mistral")}
_PARTS = [("model.language_model.", "model."),
          ("model.vision_tower.", "model.vision_tower.vision_tower.vision_model."),  # CLIPVisionModel's own prefix
          ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
          ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
          ("model.multi_modal_projector.", "model.mm_projector.")]


def llava_state_dict(state: dict) -> dict:
    """A whole vlmtrain stage-1/2 state dict in LLaVA's names."""
    return {renamed(k, _PARTS): v.detach().cpu().contiguous() for k, v in state.items()}


def export_problem(model) -> str | None:
    """Why this model has no LLaVA layout (None: it has one)."""
    if hasattr(model.config, "moe"):
        return "a stage-3 (MoE) model: LLaVA has no MoE layers; `vlmtrain export-moe-llava` writes MoE-LLaVA's layout"
    kind = model.config.text_config.model_type
    if is_convnext(model):
        return None if kind == "llama" else (f"ConvLLaVA's code has a Llama class only; this ConvNeXt run's LLM is "
                                             f"{kind!r}; `vlmtrain generate` runs this model")
    if kind not in CLASSES:
        return (f"LLaVA's code has no class for a {kind!r} LLM (it has {', '.join(CLASSES)}); "
                "`vlmtrain generate` runs this model")
    if model.config.vision_config.model_type != "clip_vision_model":
        return (f"LLaVA builds CLIP towers only (and ConvLLaVA ConvNeXt ones); this run's tower is "
                f"{model.config.vision_config.model_type!r}")
    return None


def llava_config(model, vision_tower: str | None, image_aspect_ratio: str, model_max_length: int) -> dict:
    """config.json in LLaVA's form: the LLM's fields (in transformers 4.37's names) and its ``mm_*`` keys."""
    cfg = model.config
    tc = cfg.text_config
    out = tc.to_dict()
    out.update(legacy_text_fields(out, tc.model_type))
    arch, model_type = CLASSES[tc.model_type]
    out.update({
        "architectures": [arch], "model_type": model_type, "mm_vision_tower": vision_tower,
        "mm_projector_type": getattr(cfg, "mm_projector_type", "mlp2x_gelu"),
        "mm_hidden_size": cfg.vision_config.hidden_size, "mm_vision_select_layer": cfg.vision_feature_layer,
        "mm_vision_select_feature": "patch" if cfg.vision_feature_select_strategy == "default" else "cls_patch",
        "mm_patch_merge_type": "flat", "image_aspect_ratio": image_aspect_ratio, "use_mm_proj": True,
        "tokenizer_model_max_length": model_max_length, "tokenizer_padding_side": "right",
        "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": False, "mm_projector_lr": None,
        # its builder reads mm_use_im_patch_token with default True, which would add <im_patch> to the vocabulary
        "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
    })
    return out


def is_llava_export(folder: Path) -> bool:
    from vlmtrain.model.export_folder import architecture_of

    return architecture_of(folder) in {a for a, _ in CLASSES.values()} and (Path(folder) / "pytorch_model.bin").is_file()


def check_export_target(run_dir: Path, out: Path) -> None:
    from vlmtrain.model.export_folder import check_export_target as check

    check(run_dir, out, "llava-v1.5-7b-mine", is_export=is_llava_export, loader="LLaVA", command="export-llava")


def name_problem(folder: Path, text_model_type: str) -> str | None:
    """Why LLaVA's load_pretrained_model would not load ``folder`` as this model (it goes by the name), or None."""
    name = Path(folder).resolve().name.lower()
    if "llava" not in name:
        why = "lacks 'llava' (it would load it as a plain LLM)"
    elif "lora" in name:
        why = "contains 'lora' (its LoRA branch, which wants --model-base)"
    elif "mpt" in name:
        why = "contains 'mpt' (its MPT class)"
    elif ("mistral" in name) != (text_model_type == "mistral"):
        why = f"reads as a {'Mistral' if 'mistral' in name else 'Llama'} model, not {text_model_type}"
    else:
        return None
    return (f"LLaVA's load_pretrained_model picks the model class from the folder's name, and {Path(folder).name!r} "
            f"{why}: rename it (e.g. llava-v1.5-7b-...{'-mistral' if text_model_type == 'mistral' else ''}) before "
            "loading it there")


def tower_problem(vision_tower: str | None) -> str | None:
    """What LLaVA would make of ``mm_vision_tower``, when it is not a tower it builds."""
    if vision_tower is None:
        return ("config.json's mm_vision_tower is null (the run's vision_tower was not named: random_init?): "
                "LLaVA builds no tower from it; set it to the tower's Hub id or absolute path")
    if vision_tower.startswith(("openai", "laion")) or "ShareGPT4V" in vision_tower or (
            Path(vision_tower).is_absolute() and Path(vision_tower).exists()):
        return None
    return (f"config.json's mm_vision_tower is {vision_tower!r}: LLaVA builds its tower only from a Hub id starting "
            "with openai or laion or from a path that exists where it runs (a relative one from the folder it runs "
            "in), and loads the tower's weights from there, not from this folder; set it so")


def export_notes(folder: Path, text_model_type: str, vision_tower: str | None) -> list[str]:
    """What would keep LLaVA from loading the export in ``folder`` as it was trained."""
    from vlmtrain.model.legacy_tokenizer import slow_tokenizer_problem

    found = (name_problem(folder, text_model_type), slow_tokenizer_problem(folder, loader="LLaVA"),
             tower_problem(vision_tower))
    return [note for note in found if note]


def run_export_notes(folder: Path, model, vision_tower: str | None) -> list[str]:
    """The notes for ``model``'s export in ``folder``: ConvLLaVA's for a ConvNeXt tower, else LLaVA's."""
    if is_convnext(model):
        from vlmtrain.model.convllava_export import TOWER_FOLDER, export_notes as convllava_notes

        return convllava_notes(folder, str(Path(folder).resolve() / TOWER_FOLDER))
    return export_notes(folder, model.config.text_config.model_type, vision_tower)


def write_llava_checkpoint(model, out_dir: str | Path, *, vision_tower: str | None, image_aspect_ratio: str,
                           model_max_length: int, tokenizer=None, image_processor=None) -> Path:
    """``out_dir/pytorch_model.bin`` + ``config.json`` in LLaVA's names, ``generation_config.json`` and the
    tokenizer's files (vlmtrain.model.export_folder.write_export). Returns the weights file. A ConvNeXt
    model: ConvLLaVA's layout, its tower and ``image_processor`` in ``out_dir/vision_tower``."""
    from vlmtrain.model.export_folder import write_export

    problem = export_problem(model)
    if problem:
        raise ValueError(problem)
    if is_convnext(model):
        from vlmtrain.model.convllava_export import write_convllava_checkpoint

        if image_processor is None:
            raise ValueError("a ConvNeXt tower's export writes its image processor: pass the run's")
        return write_convllava_checkpoint(model, out_dir, image_processor=image_processor,
                                          image_aspect_ratio=image_aspect_ratio, model_max_length=model_max_length,
                                          tokenizer=tokenizer)
    config = llava_config(model, vision_tower, image_aspect_ratio, model_max_length)
    return write_export(out_dir, llava_state_dict(model.state_dict()), config, model, tokenizer)
