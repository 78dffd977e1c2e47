"""Runs in a child Python with ShareGPT4V's ``share4v`` on its path (sharegpt4v_env.sharegpt4v_paths).

``python sharegpt4v_side.py tokenize WORK``: the slow tokenizer its train() loads from the spec's folder
(``use_fast=False``, pad = unk), and its ``preprocess_multimodal`` + ``preprocess`` under each sample's
``--version`` (``plain``: the pretrain script's, ``v1``: the finetune's), with an image or without (the text-only
conversations of its mix665k); WORK/theirs_ids.json.

``python sharegpt4v_side.py train WORK``: its ``Share4VLlamaForCausalLM`` built as its train() builds one
for the spec's stage, step for step (float32 on the CPU instead of bf16 under DeepSpeed): ``from_pretrained``
on the spec's LLM folder, its tokenizer, ``initialize_vision_modules`` with the spec's tower folder (and, for
the pretrain, ``--pretrain_mm_mlp_adapter``), then for ``--tune_entire_model true --tune_vit_from_layer N``
``model.requires_grad_(True)`` and its ``unlock_vit``. Each spec conversation through its
``LazySupervisedDataset`` (the spec's ``image_aspect_ratio``: ``square`` is train.py's default, the pretrain
script passes none) and collator, one forward with labels, one backward. WORK/theirs.pt gets ids, labels,
pixels, logits, loss, every gradient and the names of the parameters it marks trainable.

``python sharegpt4v_side.py answer WORK``: its ``share4v/model/builder.py`` loads the spec's export as its eval
scripts do (``load_pretrained_model``; float32 on the CPU where it asks for float16 on a GPU), and it answers
the spec's question greedily on the spec's image (``conv_templates[conv_mode]``, ``tokenizer_image_token``,
``process_images``); WORK/theirs.pt gets what our_side.assert_same_answer compares.

Nothing of vlmtrain is imported.
"""
import copy
import json
import os
import sys
import types

import torch

from side_common import one_step_each


def their_train():
    """Its train.py module, imported without its trainer: it imports Share4VTrainer (transformers' Trainer,
    which imports pandas built for our numpy) at the top; tokenising, masking and a forward use neither."""
    import transformers

    class NotLoaded:
        pass
    transformers.Trainer = NotLoaded
    sys.modules.setdefault("share4v.train.share4v_trainer", types.SimpleNamespace(Share4VTrainer=NotLoaded))
    from share4v.train import train

    return train


def read_spec(work):
    with open(os.path.join(work, "spec.json")) as fh:
        return json.load(fh)


def load_tokenizer(folder, model_max_length, version):
    """As its train() loads it, for every version but v0 (pad = unk, the version's template the default)."""
    import transformers

    from share4v import conversation as conversation_lib

    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, model_max_length=model_max_length,
                                                           padding_side="right", use_fast=False)
    tokenizer.pad_token = tokenizer.unk_token
    conversation_lib.default_conversation = conversation_lib.conv_templates[version]
    return tokenizer


def tokenize_main(work):
    spec = read_spec(work)
    train = their_train()
    encoded = []
    for sample in spec["samples"]:
        tokenizer = load_tokenizer(spec["folder"], spec["model_max_length"], sample["version"])
        args = train.DataArguments(is_multimodal=True)
        args.mm_use_im_start_end = False  # as train() copies it from the model arguments
        sources = copy.deepcopy([sample["conversations"]])
        if sample["has_image"]:  # as its dataset calls it
            sources = train.preprocess_multimodal(sources, args)
        data = train.preprocess(sources, tokenizer, has_image=sample["has_image"])
        encoded.append({"input_ids": data["input_ids"][0].tolist(), "labels": data["labels"][0].tolist()})
    import transformers
    with open(os.path.join(work, "theirs_ids.json"), "w") as fh:
        json.dump({"encoded": encoded, "legacy": getattr(tokenizer, "legacy", None),
                   "transformers": transformers.__version__}, fh)


def build_stage(spec, train):
    """Its train()'s model set-up for the spec's stage (the scripts' flags), float32 on the CPU."""
    from share4v.model import Share4VLlamaForCausalLM

    pretrain = spec["stage"] == "pretrain"
    model = Share4VLlamaForCausalLM.from_pretrained(spec["llm"], torch_dtype=torch.float32)
    model.config.use_cache = False
    tokenizer = load_tokenizer(spec["llm"], spec["model_max_length"], spec["version"])
    model_args = train.ModelArguments(
        model_name_or_path=spec["llm"], version=spec["version"], vision_tower=spec["tower"],
        pretrain_mm_mlp_adapter=spec.get("projector"), mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2,
        mm_use_im_start_end=False, mm_use_im_patch_token=False, tune_entire_model=pretrain,
        tune_vit_from_layer=spec["tune_vit_from_layer"] if pretrain else -1)
    model.get_model().initialize_vision_modules(model_args=model_args, fsdp=[])
    tower = model.get_vision_tower()
    data_args = train.DataArguments(is_multimodal=True, image_aspect_ratio=spec["image_aspect_ratio"],
                                    image_folder=spec["work"])
    data_args.image_processor = tower.image_processor
    model.config.image_aspect_ratio = data_args.image_aspect_ratio
    if model_args.tune_entire_model:  # its lora-less branch
        model.requires_grad_(True)
        train.unlock_vit(types.SimpleNamespace(vision_tower_lr=None, learning_rate=2e-5), model_args, tower)
    data_args.mm_use_im_start_end = model.config.mm_use_im_start_end = False
    model.config.mm_use_im_patch_token = False
    model.initialize_vision_tokenizer(model_args, tokenizer=tokenizer)
    return model, tokenizer, data_args


def train_main(work):
    spec = read_spec(work)
    spec["work"] = work
    import transformers

    train = their_train()
    model, tokenizer, data_args = build_stage(spec, train)
    records = [{"id": str(i), "image": spec["image"], "conversations": c} for i, c in enumerate(spec["conversations"])]
    with open(os.path.join(work, "records.json"), "w") as fh:
        json.dump(records, fh)
    dataset = train.LazySupervisedDataset(os.path.join(work, "records.json"), tokenizer, data_args)
    collate = train.DataCollatorForSupervisedDataset(tokenizer=tokenizer)
    steps = one_step_each(dataset, collate, model, len(records))
    torch.save({"steps": steps, "trainable": sorted(n for n, p in model.named_parameters() if p.requires_grad),
                "legacy": getattr(tokenizer, "legacy", None), "transformers": transformers.__version__},
               os.path.join(work, "theirs.pt"))


class _Float32Torch(types.ModuleType):
    """``torch`` as its builder sees it, float16 read as float32: the CPU comparison runs in float32."""

    def __getattr__(self, name):
        return torch.float32 if name == "float16" else getattr(torch, name)


def answer_main(work):
    spec = read_spec(work)
    os.chdir(work)  # the export's mm_vision_tower names a tower folder relative to it
    from PIL import Image

    from share4v import conversation as conversation_lib
    from share4v.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
    from share4v.mm_utils import get_model_name_from_path, process_images, tokenizer_image_token
    from share4v.model import builder

    builder.torch = _Float32Torch("torch")
    name = get_model_name_from_path(spec["model"])
    tokenizer, model, processor, _ = builder.load_pretrained_model(spec["model"], None, name, device="cpu")
    model.eval()
    conv = conversation_lib.conv_templates[spec["conv_mode"]].copy()
    conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN + "\n" + spec["question"])
    conv.append_message(conv.roles[1], None)
    prompt = conv.get_prompt()
    ids = tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt").unsqueeze(0)
    pixels = process_images([Image.open(spec["image"]).convert("RGB")], processor, model.config)
    with torch.no_grad():
        logits = model(input_ids=ids, images=pixels, return_dict=True).logits
        out = model.generate(ids, images=pixels, do_sample=False, max_new_tokens=spec["max_new_tokens"],
                             use_cache=True)
    torch.save({"prompt": prompt, "input_ids": ids[0], "pixel_values": pixels, "logits": logits[0].float(),
                "new_ids": out[0, ids.shape[1]:], "vocab_len": len(tokenizer), "name": name,
                "class": type(model).__name__, "dtype": str(model.dtype)}, os.path.join(work, "theirs.pt"))


if __name__ == "__main__":
    {"tokenize": tokenize_main, "train": train_main, "answer": answer_main}[sys.argv[1]](sys.argv[2])
