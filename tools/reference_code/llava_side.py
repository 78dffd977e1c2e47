"""Runs in a child Python with LLaVA's folder on its path (build_env.paths).

``python llava_side.py SPEC OUT``: LLaVA's own ``train.py`` tokenises and masks conversations, as its
LazySupervisedDataset does for ``--version v1`` (instruction tuning) and ``--version plain`` (projector
pretraining). SPEC is a JSON file (``tokenizer``: a folder, ``model_max_length``, ``samples``:
[{"version", "conversations", "has_image"}]); OUT gets, per sample, its input ids and labels. The tokenizer
is loaded as its train() loads it (``use_fast=False``, pad = unk).

``python llava_side.py --model WORK``: its ``LlavaLlamaForCausalLM`` / ``LlavaMistralForCausalLM`` loads
an export the way its ``load_pretrained_model`` does (float32 on the CPU instead of float16 on a GPU) and
answers as its ``run_llava.py`` does, then takes one training step on the spec's conversations (its
preprocess, its forward with labels, a backward); WORK/theirs.pt gets what our_side compares.
Nothing of vlmtrain is imported.
"""
import copy
import json
import sys
import types


def their_train():
    """LLaVA's train.py module, imported without its trainer."""
    import transformers

    class NotLoaded:  # its train.py imports its LLaVATrainer (and so transformers' Trainer, datasets, pandas
        pass          # built for our numpy) at the top; tokenising, masking and a forward use neither
    transformers.Trainer = NotLoaded
    sys.modules.setdefault("llava.train.llava_trainer", types.SimpleNamespace(LLaVATrainer=NotLoaded))
    from llava.train import train

    return train


def main(spec_path: str, out_path: str) -> None:
    with open(spec_path) as fh:
        spec = json.load(fh)
    import transformers

    from llava import conversation as conversation_lib
    train = their_train()

    tokenizer = transformers.AutoTokenizer.from_pretrained(spec["tokenizer"], model_max_length=spec["model_max_length"],
                                                           padding_side="right", use_fast=False)
    tokenizer.pad_token = tokenizer.unk_token  # train(), for every version but v0
    data_args = train.DataArguments(is_multimodal=True)
    data_args.mm_use_im_start_end = False  # as train() copies it from the model arguments
    out = []
    for sample in spec["samples"]:
        conversation_lib.default_conversation = conversation_lib.conv_templates[sample["version"]]
        sources = [copy.deepcopy(sample["conversations"])]
        if sample["has_image"]:
            sources = train.preprocess_multimodal(sources, data_args)
        data = train.preprocess(sources, tokenizer, has_image=sample["has_image"])
        out.append({"input_ids": data["input_ids"][0].tolist(), "labels": data["labels"][0].tolist()})
    with open(out_path, "w") as fh:
        json.dump({"samples": out, "transformers": transformers.__version__,
                   "legacy": getattr(tokenizer, "legacy", None)}, fh)


def model_main(work: str) -> None:
    import os

    import torch
    from PIL import Image

    with open(os.path.join(work, "spec.json")) as fh:
        spec = json.load(fh)
    os.chdir(work)  # the export's mm_vision_tower names a tower folder relative to it
    from transformers import AutoTokenizer

    from llava import conversation as conversation_lib
    from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
    from llava.mm_utils import process_images, tokenizer_image_token
    from llava.model import LlavaLlamaForCausalLM, LlavaMistralForCausalLM

    train = their_train()
    cls = LlavaMistralForCausalLM if "mistral" in spec["model"].lower() else LlavaLlamaForCausalLM  # its builder
    tokenizer = AutoTokenizer.from_pretrained(spec["model"], use_fast=False)
    model = cls.from_pretrained(spec["model"], low_cpu_mem_usage=True, torch_dtype=torch.float32)
    model.resize_token_embeddings(len(tokenizer))  # as its builder does: a size mismatch shows here
    tower = model.get_vision_tower()
    if not tower.is_loaded:
        tower.load_model()
    model.eval()
    conv = conversation_lib.conv_templates[spec["conv_mode"]].copy()
    conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN + "\n" + spec["question"])
    conv.append_message(conv.roles[1], None)
    prompt = conv.get_prompt()
    ids = tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt").unsqueeze(0)
    image = Image.open(spec["image"]).convert("RGB")
    pixels = process_images([image], tower.image_processor, model.config)
    with torch.no_grad():
        logits = model(input_ids=ids, images=pixels, image_sizes=[image.size], return_dict=True).logits
        new = model.generate(ids, images=pixels, image_sizes=[image.size], do_sample=False,
                             max_new_tokens=spec["max_new_tokens"], use_cache=True)
    steps = []
    tokenizer.pad_token = tokenizer.unk_token  # train(), for v1
    conversation_lib.default_conversation = conversation_lib.conv_templates[spec["conv_mode"]]
    data_args = train.DataArguments(is_multimodal=True)
    data_args.mm_use_im_start_end = False
    for conversation in spec["conversations"]:
        sources = train.preprocess_multimodal(copy.deepcopy([conversation]), data_args)
        data = train.preprocess(sources, tokenizer, has_image=True)
        t_ids, t_labels = data["input_ids"][0], data["labels"][0]
        model.train()
        model.zero_grad(set_to_none=True)
        out = model(input_ids=t_ids[None], attention_mask=torch.ones_like(t_ids)[None], labels=t_labels[None],
                    images=pixels, image_sizes=[image.size], return_dict=True)
        if bool((t_labels != -100).any()):
            out.loss.backward()
        grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
        steps.append({"ids": t_ids, "labels": t_labels, "loss": out.loss.detach(), "grads": grads})
    torch.save({"prompt": prompt, "input_ids": ids[0], "pixel_values": pixels, "logits": logits[0].float(),
                "new_ids": new[0], "vocab_len": len(tokenizer), "steps": steps}, os.path.join(work, "theirs.pt"))


if __name__ == "__main__":
    if sys.argv[1] == "--model":
        model_main(sys.argv[2])
    else:
        main(sys.argv[1], sys.argv[2])
