"""MoE-LLaVA's ``preprocess_phi``, re-implemented from its documented behaviour (training-recipes.md §2), not copied.

The yardstick for vlmtrain's ``phi`` / ``qwen`` / ``stablelm`` templates: the vicuna system prompt,
``USER`` / ``ASSISTANT``, ``sep=" "``, ``sep2="<|endoftext|>"``; rounds split at ``sep2``;
``round_len = len(tok(round)) + 1`` (the eos), ``instruction_len = len(tok(instruction + " ASSISTANT: ")) - 1``,
no BOS offset (``cur_len = 0``); the mismatch guard that masks a whole sample; truncation of text-only
samples at ``model_max_length``. Image samples go through LLaVA's ``tokenizer_image_token``.
"""
from __future__ import annotations

import torch

from bench.train_data.llava_reference import IGNORE_INDEX, SYSTEM, tokenizer_image_token

ROLES = {"human": "USER", "gpt": "ASSISTANT"}
SEP, SEP2 = " ", "<|endoftext|>"


def phi_prompt(source) -> str:
    """conv_phi / conv_stablelm ``get_prompt()`` (SeparatorStyle.TWO), a leading non-human turn dropped."""
    if ROLES.get(source[0]["from"]) != "USER":
        source = source[1:]
    ret = SYSTEM + SEP
    for j, sentence in enumerate(source):
        role = ROLES[sentence["from"]]
        assert role == ("USER", "ASSISTANT")[j % 2], "turns must alternate"
        ret += role + ": " + sentence["value"] + (SEP, SEP2)[j % 2]
    return ret


def preprocess_multimodal(sources):
    """MoE-LLaVA's ``preprocess_multimodal`` with v1.5's options (no ``<im_start>``, no mmtag version):
    markers are rewritten as themselves, so they stay where the record has them (LLaVA's moves a
    turn's marker to its start)."""
    return [[dict(t, value=t["value"].replace("<image>", "<image>")) for t in source] for source in sources]


def preprocess_phi(sources, tokenizer, has_image, model_max_length=2048):
    conversations = [phi_prompt(s) for s in sources]
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
        cur_len = 0
        for rou in conversation.split(SEP2):
            if rou == "":
                break
            parts = rou.split(sep)
            if len(parts) != 2:
                break
            parts[0] += sep
            if has_image:
                round_len = len(tokenizer_image_token(rou, tokenizer)) + 1
                instruction_len = len(tokenizer_image_token(parts[0], tokenizer)) - 1
            else:
                round_len = len(tokenizer(rou).input_ids) + 1
                instruction_len = len(tokenizer(parts[0]).input_ids) - 1
            target[cur_len: cur_len + instruction_len] = IGNORE_INDEX
            cur_len += round_len
        target[cur_len:] = IGNORE_INDEX
        bad = cur_len < model_max_length and cur_len != total_len
        if bad:
            target[:] = IGNORE_INDEX  # "WARNING: tokenization mismatch: ... (ignored)"
        mismatch.append(bad)
    return dict(input_ids=input_ids, labels=targets, mismatch=mismatch)
