"""Runs in a child Python with MoE-LLaVA's folder on its path (build_env.paths): MoE-LLaVA's stage-3 start as
its ``train.py`` takes it with ``--moe_enable``, on a dense stage-2 checkpoint in its stage-2 save's layout.

Its steps, in its order: ``MoELLaVA<Family>ForCausalLM.from_pretrained`` of the stage-2 folder (the class
its train.py picks by the folder's family word), ``initialize_moe_modules`` with finetune_moe.sh's flags
(its ``ModelArguments`` built from them, its own defaults for the rest), then ``initialize_vision_modules``
(which loads the tower and turns the projector's gradients back on). Reported: the dense state before the
conversion, the state after, which layers hold DeepSpeed's ``MoE``, its routers' shapes, the names left
trainable, its config's ``moe`` block, and one forward in eval mode (the spec's ids and image): its logits
and its routers' aux losses (each layer's and ``router_aux_loss_coef`` x their sum).

Usage: ``python moellava_init_side.py WORK``, WORK holding ``spec.json`` (moellava_init_ours.hand_over);
writes ``WORK/theirs_init.pt``. As moellava_side.py: float32 on the CPU (its script: bf16 on CUDA), and
the expert-parallel groups of a one-process gloo group. Nothing of vlmtrain is imported.
"""
import importlib
import json
import os
import re
import sys
import types

import torch
from PIL import Image

from side_common import deepspeed_one_process

# train.py's stage-3 class per family (moe_enable: MoELLaVA*, not the Eval* classes its builder loads)
CLASSES = {"phi": ("llava_phi_moe", "MoELLaVAPhiForCausalLM"),
           "stablelm": ("llava_stablelm_moe", "MoELLaVAStablelmForCausalLM"),
           "qwen": ("llava_qwen_moe", "MoELLaVAQWenForCausalLM"),
           "openchat": ("llava_mistral_moe", "MoELLaVAMistralForCausalLM")}
_LAYER = re.compile(r"\.(\d+)\.mlp$")


def their_train_module():
    """Its train.py, whose top-level imports name transformers.Trainer and its LLaVATrainer (datasets and
    pandas behind it, built for our numpy 2): neither is used before training starts."""
    import transformers

    class NotLoaded:
        pass
    transformers.Trainer = NotLoaded
    sys.modules.setdefault("moellava.train.llava_trainer", types.SimpleNamespace(LLaVATrainer=NotLoaded))
    from moellava.train import train as their_train
    return their_train


def main(work: str) -> None:
    with open(os.path.join(work, "spec.json")) as fh:
        spec = json.load(fh)
    os.chdir(work)  # the tower folder is named relative to it
    import deepspeed
    from deepspeed.moe.layer import MoE

    import moellava.model.builder  # noqa: F401  (registers every class)
    from moellava.mm_utils import process_images

    their_train = their_train_module()
    init = spec["init"]
    args = their_train.ModelArguments(  # finetune_moe.sh's flags; the rest its defaults
        model_name_or_path=spec["model"], version=spec["conv_mode"], moe_enable=True,
        num_experts=[init["num_experts"]], top_k_experts=init["top_k_experts"],
        capacity_factor=init["capacity_factor"], moe_mode=init["moe_mode"], use_residual=init.get("use_residual", False),
        router_aux_loss_coef=init["router_aux_loss_coef"], train_modules=list(init["train_modules"]),
        moe_layers_idx=init.get("moe_layers_idx"), image_tower=init["tower"],
        image_projector_type=init["projector_type"], mm_vision_select_layer=init["select_layer"],
        mm_use_im_start_end=False, mm_use_im_patch_token=False)
    module, name = CLASSES[spec["family"]]
    cls = getattr(importlib.import_module("moellava.model.language_model." + module), name)
    model = cls.from_pretrained(spec["model"], torch_dtype=torch.float32)
    model.config.use_cache = False
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    model.initialize_moe_modules(model_args=args)
    model.get_model().initialize_vision_modules(model_args=args, fsdp=[])

    moe_layers = sorted(int(_LAYER.search("." + n).group(1)) for n, m in model.named_modules()
                        if isinstance(m, MoE) and _LAYER.search("." + n))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    result = {"dense": dense, "state": state, "moe_layers": moe_layers,
              "routers": {k: tuple(v.shape) for k, v in state.items()  # (with use_residual: its mixing coefficient too)
                          if ".deepspeed_moe.gate.wg." in k or ".mlp.coefficient." in k},
              "trainable": sorted(n for n, p in model.named_parameters() if p.requires_grad),
              "moe_config": dict(model.config.moe),
              "versions": {"transformers": __import__("transformers").__version__, "deepspeed": deepspeed.__version__}}

    deepspeed_one_process(model, spec["port"])
    model.eval()
    tower = model.get_image_tower()
    pixels = process_images([Image.open(spec["image"]).convert("RGB")], tower.image_processor, model.config)
    ids = torch.tensor([spec["init_ids"]])
    torch.manual_seed(spec["seed"])
    with torch.no_grad():
        out = model(input_ids=ids, images=pixels, return_dict=True)
    layers = getattr(out, "moe_loss_list", None)  # (its Qwen's output has only their weighted sum)
    result.update(pixel_values=pixels, logits=out.logits[0].float(), moe_loss=out.moe_loss.detach(),
                  moe_losses=None if layers is None else [x.detach() for x in layers if x is not None])
    torch.save(result, os.path.join(work, "theirs_init.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
