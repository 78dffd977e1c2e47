"""Runs in a child Python with ConvLLaVA's folder on its path (build_env.convllava_paths).

``python convllava_side.py tower WORK``: its ``ConvNeXtCLIPVisionTower`` as its scripts configure it.
Stage 1 (``scripts/stage_1.sh``): built on the spec's 4-stage ConvNeXt folder with ``mm_vision_resolution``
and ``vision_add_five_stage`` / ``vision_five_stage_width`` (the added stage starts from PyTorch's default
initialisation, moved by the spec's ``perturb_added`` noise as training would; its weights come back for ours
to copy); its features for the spec's pixels; which
tower parameters train (the added stage is built after the tower is frozen); then its ``train.py`` saves the
tower as a stage 1 run does (``safe_save_model_for_hf_trainer``: ``OUT/vision_tower/``). Stage 2
(``scripts/stage_2.sh``): that saved tower loaded back with ``mm_vision_select_layer -1``, unfrozen as
``--tune_vision_tower --tune_vit_from_layer N`` does (``unlock_vit``), its features again. And the pixels
its dataset makes of the spec's image (``image_aspect_ratio pad``). Also ``mm_vision_select_layer -2``'s
features (it drops the last block before adding the stage). WORK/theirs_tower.pt gets it all.

``python convllava_side.py model WORK``: its ``LlavaLlamaForCausalLM`` built as its ``train.py`` builds a
stage 2 (``from_pretrained`` on the spec's LLM folder, ``initialize_vision_modules`` with the spec's tower
folder, ``unlock_vit``), float32 on the CPU instead of bf16 on a GPU; each spec conversation through its
``LazySupervisedDataset`` (``--version v1``, pad) and collator, one forward with labels and a backward.
WORK/theirs.pt gets ids, labels, pixels, logits, loss and every gradient.

``python convllava_side.py answer WORK``: its eval's loader, ``load_pretrained_model(MODEL, None, name)``
(llava/model/builder.py, as VLMEvalKit / lmms-eval call it), on the spec's export, on the CPU and in float32
(its builder's float16, a GPU's, read as float32; every other step its own), then its run_llava-style answer:
the spec's conversation template, ``tokenizer_image_token``, ``process_images`` (the config's aspect ratio),
one forward's logits and a greedy ``generate``. WORK/theirs_answer.pt gets what our_side.assert_same_answer
compares.

``python convllava_side.py tokenize WORK``: the slow tokenizer its train.py loads from the spec's folder
(``use_fast=False``), on the spec's texts, and its ``preprocess_multimodal`` + ``preprocess`` (``--version
v1``) on the spec's conversations (each with an image); WORK/theirs_ids.json. Nothing of vlmtrain is imported.
"""
import argparse
import json
import os
import sys
import types

import torch

from side_common import one_step_each


def their_train():
    """ConvLLaVA's train.py module, imported without its trainer (a forward and a save use none): it names
    transformers' Trainer (which imports pandas, built for our numpy) and its VisionLLaVATrainer at the top."""
    import transformers

    class NotLoaded:
        pass
    transformers.Trainer = NotLoaded
    sys.modules.setdefault("llava.train.llava_trainer", types.SimpleNamespace(VisionLLaVATrainer=NotLoaded))
    from llava.train import train

    return train


def tower_args(select_layer, resolution, five_stage=(0, 0)):
    """The ModelArguments fields its tower reads (train.py passes the whole dataclass)."""
    return argparse.Namespace(mm_vision_select_layer=select_layer, mm_vision_resolution=resolution,
                              vision_add_five_stage=five_stage[0], vision_five_stage_width=five_stage[1])


def features(tower, pixels):
    with torch.no_grad():
        return tower(pixels).float()


def trainable(tower):
    return sorted(n for n, p in tower.vision_tower.named_parameters() if p.requires_grad)


def pad_pixels(processor, image_path, work):
    """Its LazySupervisedDataset's image for a one-record JSON (``image_aspect_ratio pad``). Its tokenising
    step is stubbed for this call only: the tower run has no tokenizer, and the image does not depend on it."""
    import llava.data.data as data

    record = [{"id": "0", "image": os.path.basename(image_path),
               "conversations": [{"from": "human", "value": "<image>\nhi"}, {"from": "gpt", "value": "hi"}]}]
    path = os.path.join(work, "one.json")
    with open(path, "w") as fh:
        json.dump(record, fh)
    args = types.SimpleNamespace(image_processor=processor, image_aspect_ratio="pad", is_multimodal=True,
                                 mm_use_im_start_end=False)
    dataset = data.LazySupervisedDataset(path, None, args)
    dataset.image_folder = os.path.dirname(image_path)  # its build_* functions set it; its __init__ does not
    real, data.preprocess = data.preprocess, lambda *a, **k: {"input_ids": [None], "labels": [None]}
    try:
        return dataset[0]["image"]
    finally:
        data.preprocess = real


def tower_main(work):
    with open(os.path.join(work, "spec.json")) as fh:
        spec = json.load(fh)
    from llava.model.multimodal_encoder.convnext_encoder import ConvNeXtCLIPVisionTower

    train = their_train()
    pixels = torch.load(os.path.join(work, spec["pixels"]))
    res, five = spec["resolution"], tuple(spec["five_stage"])
    s1 = ConvNeXtCLIPVisionTower(spec["tower"], tower_args(-1, res, five))
    torch.manual_seed(spec["seed"])
    with torch.no_grad():  # as a trained stage would be: its fresh layer scale (1e-6) hides the blocks' work
        for p in s1.vision_tower.encoder.stages[-1].parameters():
            p.add_(torch.randn_like(p) * spec["perturb_added"])
    out = {"features_s1": features(s1, pixels), "trainable_s1": trainable(s1),
           "state_s1": {k: v.clone() for k, v in s1.vision_tower.state_dict().items()},
           "pixel_values": pad_pixels(s1.image_processor, os.path.join(work, spec["image"]), work)}
    # its save, as train() calls it at the end of a stage that is not projector-only and runs without DeepSpeed
    saved = os.path.join(work, spec["save"])
    trainer = types.SimpleNamespace(args=types.SimpleNamespace(tune_mm_mlp_adapter=False, local_rank=-1),
                                    deepspeed=None, model=types.SimpleNamespace(get_vision_tower=lambda: s1))
    train.safe_save_model_for_hf_trainer(trainer, saved)
    s2 = ConvNeXtCLIPVisionTower(os.path.join(saved, "vision_tower"), tower_args(-1, res))
    train.unlock_vit(types.SimpleNamespace(vision_tower_lr=None, learning_rate=1e-3),
                     types.SimpleNamespace(tune_vit_from_layer=spec["tune_vit_from_layer"]), s2)
    out.update({"features_s2": features(s2, pixels), "trainable_s2": trainable(s2),
                "crop_size": dict(s1.image_processor.crop_size), "size": dict(s1.image_processor.size)})
    torch.save(out, os.path.join(work, "theirs_tower.pt"))


def model_main(work):
    with open(os.path.join(work, "spec.json")) as fh:
        spec = json.load(fh)
    import transformers

    from llava import conversation as conversation_lib
    from llava.data.data import DataCollatorForSupervisedDataset, LazySupervisedDataset
    from llava.model import LlavaLlamaForCausalLM

    train = their_train()
    model = LlavaLlamaForCausalLM.from_pretrained(spec["llm"], torch_dtype=torch.float32)
    model_args = train.ModelArguments(model_name_or_path=spec["llm"], version="v1", vision_tower=spec["tower"],
                                      mm_projector_type="mlp2x_gelu", mm_vision_resolution=spec["resolution"],
                                      mm_vision_select_layer=-1, mm_use_im_start_end=False,
                                      mm_use_im_patch_token=False, tune_vision_tower=True,
                                      tune_vit_from_layer=spec["tune_vit_from_layer"])
    model.get_model().initialize_vision_modules(model_args=model_args, fsdp=None)
    tower = model.get_vision_tower()
    train.unlock_vit(types.SimpleNamespace(vision_tower_lr=None, learning_rate=1e-3), model_args, tower)
    tokenizer = transformers.AutoTokenizer.from_pretrained(spec["llm"], model_max_length=spec["model_max_length"],
                                                           padding_side="right", use_fast=False)
    tokenizer.pad_token = tokenizer.unk_token
    conversation_lib.default_conversation = conversation_lib.conv_templates["v1"]
    model.config.tokenizer_padding_side = tokenizer.padding_side
    model.config.tokenizer_model_max_length = tokenizer.model_max_length
    data_args = types.SimpleNamespace(image_processor=tower.image_processor, image_aspect_ratio="pad",
                                      is_multimodal=True, mm_use_im_start_end=False)
    records = [{"id": str(i), "image": spec["image"], "conversations": c} for i, c in enumerate(spec["conversations"])]
    with open(os.path.join(work, "records.json"), "w") as fh:
        json.dump(records, fh)
    dataset = LazySupervisedDataset(os.path.join(work, "records.json"), tokenizer, data_args)
    dataset.image_folder = work  # its build_* functions set it; its __init__ does not
    collate = DataCollatorForSupervisedDataset(tokenizer=tokenizer)
    steps = one_step_each(dataset, collate, model, len(records))
    trained = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    for step in steps:
        step["trainable"] = trained
    torch.save({"steps": steps, "legacy": getattr(tokenizer, "legacy", None),
                "transformers": transformers.__version__}, os.path.join(work, "theirs.pt"))


def answer_main(work):
    with open(os.path.join(work, "spec.json")) as fh:
        spec = json.load(fh)
    from PIL import Image

    import llava.model.builder as builder
    from llava import conversation as conversation_lib
    from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
    from llava.mm_utils import process_images, tokenizer_image_token

    class Float32Torch:
        """torch for its builder, whose model and tower dtype is float16 whatever the device."""
        float16 = torch.float32

        def __getattr__(self, name):
            return getattr(torch, name)

    builder.torch = Float32Torch()
    name = os.path.basename(spec["model"].rstrip("/"))
    tokenizer, model, processor, _ = builder.load_pretrained_model(spec["model"], None, name, device="cpu")
    model.eval()
    conv = conversation_lib.conv_templates[spec["conv_mode"]].copy()
    conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN + "\n" + spec["question"])
    conv.append_message(conv.roles[1], None)
    prompt = conv.get_prompt()
    ids = tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt").unsqueeze(0)
    image = Image.open(os.path.join(work, spec["image"])).convert("RGB")
    pixels = process_images([image], processor, model.config)
    with torch.no_grad():
        logits = model(input_ids=ids, images=pixels, image_sizes=[image.size], return_dict=True).logits
        new = model.generate(ids, images=pixels, image_sizes=[image.size], do_sample=False,
                             max_new_tokens=spec["max_new_tokens"], use_cache=True)
    tower = model.get_vision_tower()
    torch.save({"prompt": prompt, "input_ids": ids[0], "pixel_values": pixels, "logits": logits[0],
                "new_ids": new[0], "vocab_len": len(tokenizer),
                "dtypes": sorted({str(p.dtype) for p in model.parameters()}),
                "tower_depths": list(tower.config.depths), "crop_size": dict(processor.crop_size)},
               os.path.join(work, "theirs_answer.pt"))


def tokenize_main(work):
    with open(os.path.join(work, "spec.json")) as fh:
        spec = json.load(fh)
    import transformers

    from llava import conversation as conversation_lib
    from llava.data.data import preprocess, preprocess_multimodal

    tokenizer = transformers.AutoTokenizer.from_pretrained(spec["folder"], use_fast=False, padding_side="right",
                                                           model_max_length=spec.get("model_max_length", 2048))
    tokenizer.pad_token = tokenizer.unk_token  # train()
    conversation_lib.default_conversation = conversation_lib.conv_templates["v1"]
    args = types.SimpleNamespace(is_multimodal=True, mm_use_im_start_end=False)
    encoded = []
    for conversation in spec.get("conversations", []):
        data = preprocess(preprocess_multimodal([conversation], args), tokenizer, has_image=True)
        encoded.append({"input_ids": data["input_ids"][0].tolist(), "labels": data["labels"][0].tolist()})
    with open(os.path.join(work, "theirs_ids.json"), "w") as fh:
        json.dump({"texts": [tokenizer(t).input_ids for t in spec.get("texts", [])], "encoded": encoded,
                   "legacy": tokenizer.legacy}, fh)


if __name__ == "__main__":
    {"tower": tower_main, "model": model_main, "answer": answer_main,
     "tokenize": tokenize_main}[sys.argv[1]](sys.argv[2])
