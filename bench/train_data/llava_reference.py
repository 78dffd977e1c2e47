"""LLaVA-1.5's data path, re-implemented from its documented behaviour (training-recipes.md §1), not copied.

This is the yardstick, not vlmtrain code: the masking-parity tests compare vlmtrain.data against
``preprocess_plain`` / ``preprocess_v1`` here, and bench/train_data/bench_data_path.py runs
``LazySupervisedDataset`` + ``DataCollatorForSupervisedDataset`` here against vlmtrain's Arrow path.
It keeps the reference's quirks on purpose: the whole JSON list in memory, every round tokenised
again in isolation, the "-2" / non-legacy "-1" length arithmetic, the mismatch guard that silently
zeroes a sample's labels, zero images for text-only samples, word-count "lengths".
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass

import torch
from PIL import Image

IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200
DEFAULT_IMAGE_TOKEN = "<image>"
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
ROLES = {"human": "USER", "gpt": "ASSISTANT"}
SEP, SEP2 = " ", "</s>"
TOKENIZERS_GE_0_14 = True  # tokenizers here are 0.2x


def tokenizer_image_token(prompt, tokenizer, image_token_index=IMAGE_TOKEN_INDEX):
    """Split on <image>, tokenise each chunk, keep one BOS, join chunks with one sentinel per image."""
    prompt_chunks = [tokenizer(chunk).input_ids for chunk in prompt.split(DEFAULT_IMAGE_TOKEN)]

    def insert_separator(X, sep):
        return [ele for sublist in zip(X, [sep] * len(X)) for ele in sublist][:-1]

    input_ids, offset = [], 0
    if len(prompt_chunks) > 0 and len(prompt_chunks[0]) > 0 and prompt_chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        input_ids.append(prompt_chunks[0][0])
    for x in insert_separator(prompt_chunks, [image_token_index] * (offset + 1)):
        input_ids.extend(x[offset:])
    return input_ids


def preprocess_multimodal(sources):
    """Move <image> to the start of its turn as "<image>\\n" (single-image LLaVA)."""
    for source in sources:
        for sentence in source:
            if DEFAULT_IMAGE_TOKEN in sentence["value"]:
                sentence["value"] = sentence["value"].replace(DEFAULT_IMAGE_TOKEN, "").strip()
                sentence["value"] = DEFAULT_IMAGE_TOKEN + "\n" + sentence["value"]
                sentence["value"] = sentence["value"].strip()
    return sources


def vicuna_prompt(source) -> str:
    if ROLES.get(source[0]["from"]) != "USER":
        source = source[1:]
    ret = SYSTEM + SEP
    for j, sentence in enumerate(source):
        role = ROLES[sentence["from"]]
        assert role == ("USER", "ASSISTANT")[j % 2], "turns must alternate"
        ret += role + ": " + sentence["value"] + (SEP, SEP2)[j % 2]
    return ret


def preprocess_plain(sources, tokenizer):
    conversations = []
    for source in sources:
        assert len(source) == 2
        assert DEFAULT_IMAGE_TOKEN in source[0]["value"]
        source[0]["value"] = DEFAULT_IMAGE_TOKEN
        conversations.append(source[0]["value"] + source[1]["value"] + "\n")
    input_ids = [torch.tensor(tokenizer_image_token(p, tokenizer), dtype=torch.long) for p in conversations]
    targets = copy.deepcopy(input_ids)
    for target, source in zip(targets, sources):
        target[: len(tokenizer_image_token(source[0]["value"], tokenizer))] = IGNORE_INDEX
    return dict(input_ids=input_ids, labels=targets, mismatch=[False] * len(sources))


def preprocess_v1(sources, tokenizer, has_image, model_max_length=2048, legacy_fix=True):
    """``legacy_fix=False`` leaves out the non-legacy "-1" (for showing what it is there for)."""
    conversations = [vicuna_prompt(s) for s in sources]
    if has_image:
        input_ids = torch.stack([torch.tensor(tokenizer_image_token(p, tokenizer), dtype=torch.long) for p in conversations])
    else:
        input_ids = tokenizer(conversations, return_tensors="pt", padding="longest",
                              max_length=model_max_length, truncation=True).input_ids
    targets = input_ids.clone()
    sep = " ASSISTANT: "
    mismatch = []
    for conversation, target in zip(conversations, targets):
        total_len = int(target.ne(tokenizer.pad_token_id).sum())
        rounds = conversation.split(SEP2)
        cur_len = 1
        target[:cur_len] = IGNORE_INDEX
        for i, rou in enumerate(rounds):
            if rou == "":
                break
            parts = rou.split(sep)
            if len(parts) != 2:
                break
            parts[0] += sep
            if has_image:
                round_len = len(tokenizer_image_token(rou, tokenizer))
                instruction_len = len(tokenizer_image_token(parts[0], tokenizer)) - 2
            else:
                round_len = len(tokenizer(rou).input_ids)
                instruction_len = len(tokenizer(parts[0]).input_ids) - 2
            if legacy_fix and i != 0 and not getattr(tokenizer, "legacy", True) and TOKENIZERS_GE_0_14:
                round_len -= 1
                instruction_len -= 1
            target[cur_len: cur_len + instruction_len] = IGNORE_INDEX
            cur_len += round_len
        target[cur_len:] = IGNORE_INDEX
        bad = cur_len < model_max_length and cur_len != total_len
        if bad:
            target[:] = IGNORE_INDEX  # "WARNING: tokenization mismatch: ... (ignored)"
        mismatch.append(bad)
    return dict(input_ids=input_ids, labels=targets, mismatch=mismatch)


def expand2square(pil_img, background_color):
    width, height = pil_img.size
    if width == height:
        return pil_img
    if width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    result = Image.new(pil_img.mode, (height, height), background_color)
    result.paste(pil_img, ((height - width) // 2, 0))
    return result


class LazySupervisedDataset(torch.utils.data.Dataset):
    """json.load of the whole list; everything else per item in __getitem__."""

    def __init__(self, data_path, tokenizer, processor, image_folder, version="v1",
                 image_aspect_ratio="pad", model_max_length=2048):
        with open(data_path) as fh:
            self.list_data_dict = json.load(fh)
        self.tokenizer = tokenizer
        self.processor = processor
        self.image_folder = image_folder
        self.version = version
        self.image_aspect_ratio = image_aspect_ratio
        self.model_max_length = model_max_length

    def __len__(self):
        return len(self.list_data_dict)

    @property
    def modality_lengths(self):
        out = []
        for sample in self.list_data_dict:
            cur_len = sum(len(conv["value"].split()) for conv in sample["conversations"])
            out.append(cur_len if "image" in sample else -cur_len)
        return out

    def __getitem__(self, i):
        sources = [self.list_data_dict[i]]
        if "image" in sources[0]:
            image = Image.open(os.path.join(self.image_folder, self.list_data_dict[i]["image"])).convert("RGB")
            if self.image_aspect_ratio == "pad":
                image = expand2square(image, tuple(int(x * 255) for x in self.processor.image_mean))
            image = self.processor.preprocess(image, return_tensors="pt")["pixel_values"][0]
            sources = preprocess_multimodal(copy.deepcopy([e["conversations"] for e in sources]))
        else:
            sources = copy.deepcopy([e["conversations"] for e in sources])
        has_image = "image" in self.list_data_dict[i]
        if self.version == "plain":
            data_dict = preprocess_plain(sources, self.tokenizer)
        else:
            data_dict = preprocess_v1(sources, self.tokenizer, has_image=has_image, model_max_length=self.model_max_length)
        data_dict = dict(input_ids=data_dict["input_ids"][0], labels=data_dict["labels"][0])
        if has_image:
            data_dict["image"] = image
        else:
            crop = self.processor.crop_size
            data_dict["image"] = torch.zeros(3, crop["height"], crop["width"])
        return data_dict


@dataclass
class DataCollatorForSupervisedDataset:
    tokenizer: object
    model_max_length: int = 2048

    def __call__(self, instances):
        input_ids, labels = tuple([inst[key] for inst in instances] for key in ("input_ids", "labels"))
        input_ids = torch.nn.utils.rnn.pad_sequence(input_ids, batch_first=True, padding_value=self.tokenizer.pad_token_id)
        labels = torch.nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=IGNORE_INDEX)
        input_ids = input_ids[:, : self.model_max_length]
        labels = labels[:, : self.model_max_length]
        batch = dict(input_ids=input_ids, labels=labels, attention_mask=input_ids.ne(self.tokenizer.pad_token_id))
        if "image" in instances[0]:
            images = [inst["image"] for inst in instances]
            if all(x is not None and x.shape == images[0].shape for x in images):
                batch["images"] = torch.stack(images)
            else:
                batch["images"] = images
        return batch
