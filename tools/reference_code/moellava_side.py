"""Runs in a child Python with MoE-LLaVA's folder on its path (build_env.paths): MoE-LLaVA's own code
loads an export as its ``load_pretrained_model`` does and answers ``serve/cli.py``'s way.

Then one training step as its ``train.py`` takes it: the spec's conversation through its
``preprocess_multimodal`` and ``preprocess`` (the template's masking), its model in train mode with those
labels (the LM loss plus router_aux_loss_coef x its layers' aux losses), and the gradients of a backward.

Usage: ``python moellava_side.py WORK``, WORK holding ``spec.json`` (our_side.prepare); writes
``WORK/theirs.pt``. Three steps differ from its loader, each because it assumes a CUDA machine: float32
instead of float16, no ``deepspeed.init_inference`` (which, with ``replace_with_kernel_inject=False``, only
sets up the expert-parallel groups: done here with a one-process gloo group, as its MoE layer's own
``set_deepspeed_parallelism`` does), and the model stays on the CPU. Nothing of vlmtrain is imported.
"""
import copy
import importlib
import json
import os
import sys
import types

import torch
from PIL import Image

from side_common import deepspeed_one_process

# load_pretrained_model's class per family (moellava/model/builder.py) and serve/cli.py's conv_mode
CLASSES = {"phi": ("llava_phi_moe", "EvalMoELLaVAPhiForCausalLM"),
           "stablelm": ("llava_stablelm_moe", "EvalMoELLaVAStablelmForCausalLM"),
           "qwen": ("llava_qwen_moe", "EvalMoELLaVAQWenForCausalLM"),
           "openchat": ("llava_mistral_moe", "EvalMoELLaVAMistralForCausalLM")}


def main(work: str) -> None:
    with open(os.path.join(work, "spec.json")) as fh:
        spec = json.load(fh)
    os.chdir(work)  # the export's mm_image_tower names a tower folder relative to it
    import deepspeed
    from transformers import AutoTokenizer

    import moellava.model.builder  # noqa: F401  (registers every class, as serve/cli.py's import does)
    from moellava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
    from moellava.conversation import conv_templates
    from moellava.mm_utils import process_images, tokenizer_image_token

    module, name = CLASSES[spec["family"]]
    cls = getattr(importlib.import_module("moellava.model.language_model." + module), name)
    model = cls.from_pretrained(spec["model"], low_cpu_mem_usage=True, torch_dtype=torch.float32)
    tokenizer = None
    if spec.get("input_ids") is None:  # a family whose tokenizer its own code can load from the export
        tokenizer = AutoTokenizer.from_pretrained(spec["model"], use_fast=False, padding_side="right")
        model.resize_token_embeddings(len(tokenizer))  # as its builder does: a size mismatch shows here
    tower = model.get_image_tower()
    if not tower.is_loaded:
        tower.load_model()
    deepspeed_one_process(model, spec["port"])
    model.eval()

    conv = conv_templates[spec["conv_mode"]].copy()
    conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN + "\n" + spec["question"])
    conv.append_message(conv.roles[1], None)
    prompt = conv.get_prompt()
    if tokenizer is not None:
        ids = tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt").unsqueeze(0)
    else:
        ids = torch.tensor([spec["input_ids"]])
    pixels = process_images([Image.open(spec["image"]).convert("RGB")], tower.image_processor, model.config)
    torch.manual_seed(spec["seed"])
    with torch.no_grad():  # (serve/cli.py: inference_mode; the same numbers, and Qwen's rotary cache stays usable for the training step)
        logits = model(input_ids=ids, images=pixels, return_dict=True).logits  # (its default gives a tuple)
    torch.manual_seed(spec["seed"])
    with torch.no_grad():
        out = model.generate(ids, images=pixels, do_sample=False, max_new_tokens=spec["max_new_tokens"],
                             use_cache=True, eos_token_id=spec["eos_token_id"], pad_token_id=spec["pad_token_id"])
    result = {"prompt": prompt, "input_ids": ids[0], "pixel_values": pixels, "logits": logits[0].float(),
              "new_ids": out[0, ids.shape[1]:], "vocab_len": len(tokenizer) if tokenizer is not None else None,
              "versions": {"transformers": __import__("transformers").__version__, "deepspeed": deepspeed.__version__}}
    result.update(training_step(spec, model, tokenizer, pixels))
    torch.save(result, os.path.join(work, "theirs.pt"))


def training_step(spec: dict, model, tokenizer, pixels) -> dict:
    """One forward and backward of its training on each of the spec's conversations."""
    import transformers

    class NotLoaded:  # its train.py names transformers.Trainer and imports its LLaVATrainer at the top; that
        pass          # import pulls datasets and pandas, built for our numpy 2: neither runs in this step
    transformers.Trainer = NotLoaded
    sys.modules.setdefault("moellava.train.llava_trainer", types.SimpleNamespace(LLaVATrainer=NotLoaded))
    from moellava import conversation as conversation_lib
    from moellava.train import train as their_train

    conversation_lib.default_conversation = conversation_lib.conv_templates[spec["conv_mode"]]  # as train() sets it
    steps = []
    for n, conversation in enumerate(spec["conversations"]):
        if tokenizer is not None:
            data_args = their_train.DataArguments(is_multimodal=True)
            data_args.mm_use_im_start_end = False  # as train() copies it from the model arguments
            sources = their_train.preprocess_multimodal(copy.deepcopy([conversation]), data_args)
            data = their_train.preprocess(sources, tokenizer, has_image=True)
            ids, labels = data["input_ids"][0], data["labels"][0]
        else:
            ids, labels = torch.tensor(spec["train_ids"][n]), torch.tensor(spec["train_labels"][n])
        model.train()
        model.zero_grad(set_to_none=True)
        torch.manual_seed(spec["seed"])
        out = model(input_ids=ids[None], attention_mask=torch.ones_like(ids)[None], labels=labels[None],
                    images=pixels, return_dict=True)
        trained = bool((labels != -100).any())
        if trained:  # (a sample its masking gives no trained token has a NaN loss: nothing to compare)
            out.loss.backward()
        grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
        steps.append({"ids": ids, "labels": labels, "loss": out.loss.detach(), "moe_loss": out.moe_loss.detach(),
                      "grads": grads})
    return {"steps": steps}


if __name__ == "__main__":
    main(sys.argv[1])
