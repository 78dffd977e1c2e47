"""MoE-LLaVA's ``preprocess_phi`` and ``preprocess_openchat``, re-implemented from their documented behaviour
(training-recipes.md §2; moellava/train/train.py at 6cb5f66), not copied.

The yardstick for vlmtrain's MoE-LLaVA templates. Both functions build the vicuna layout (system prompt,
``USER`` / ``ASSISTANT``, ``sep=" "``), split it into rounds at ``sep2``, and mask by counting tokens,
with the mismatch guard that masks a whole sample and truncation of text-only samples at
``model_max_length``; image samples go through LLaVA's ``tokenizer_image_token``. They differ in
their constants (:class:`Arithmetic`):

- ``preprocess_phi`` (``phi`` / ``qwen`` / ``stablelm``, sep2 ``<|endoftext|>``, no BOS): ``cur_len``
  starts at 0, ``round_len = len(tok(round)) + 1`` (the eos), ``instruction_len = len(tok(instruction +
  " ASSISTANT: ")) - 1``;
- ``preprocess_openchat`` (``openchat`` sep2 ``<|end_of_turn|>``, ``mistral`` sep2 ``</s>``, with BOS):
  ``cur_len`` starts at 1, ``round_len = len(tok(round))``, ``instruction_len = ... - 2``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.train_data.llava_reference import IGNORE_INDEX, SYSTEM, tokenizer_image_token

ROLES = {"human": "USER", "gpt": "ASSISTANT"}
SEP, SEP2 = " ", "<|endoftext|>"


@dataclass(frozen=True)
class Arithmetic:
    sep2: str
    start: int              # cur_len before the first round
    round_extra: int        # added to len(tok(round))
    instruction_minus: int  # taken from len(tok(instruction + sep))


PHI = Arithmetic(SEP2, start=0, round_extra=1, instruction_minus=1)
OPENCHAT = Arithmetic("<|end_of_turn|>", start=1, round_extra=0, instruction_minus=2)
MISTRAL = Arithmetic("</s>", start=1, round_extra=0, instruction_minus=2)  # preprocess_openchat on conv_mistral


def phi_prompt(source, sep2: str = SEP2) -> str:
    """conv_phi / conv_stablelm / conv_openchat / conv_mistral ``get_prompt()`` (SeparatorStyle.TWO), a
    leading non-human turn dropped."""
    if ROLES.get(source[0]["from"]) != "USER":
        source = source[1:]
    ret = SYSTEM + SEP
    for j, sentence in enumerate(source):
        role = ROLES[sentence["from"]]
        assert role == ("USER", "ASSISTANT")[j % 2], "turns must alternate"
        ret += role + ": " + sentence["value"] + (SEP, sep2)[j % 2]
    return ret


def preprocess_multimodal(sources):
    """MoE-LLaVA's ``preprocess_multimodal`` with v1.5's options (no ``<im_start>``, no mmtag version):
    markers are rewritten as themselves, so they stay where the record has them (LLaVA's moves a
    turn's marker to its start)."""
    return [[dict(t, value=t["value"].replace("<image>", "<image>")) for t in source] for source in sources]


def _length(text, tokenizer, has_image) -> int:
    return len(tokenizer_image_token(text, tokenizer)) if has_image else len(tokenizer(text).input_ids)


def preprocess(sources, tokenizer, has_image, arith: Arithmetic, model_max_length=2048):
    conversations = [phi_prompt(s, arith.sep2) for s in sources]
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
        cur_len = arith.start
        target[:cur_len] = IGNORE_INDEX
        for rou in conversation.split(arith.sep2):
            if rou == "":
                break
            parts = rou.split(sep)
            if len(parts) != 2:
                break
            round_len = _length(rou, tokenizer, has_image) + arith.round_extra
            instruction_len = _length(parts[0] + sep, tokenizer, has_image) - arith.instruction_minus
            target[cur_len: cur_len + instruction_len] = IGNORE_INDEX
            cur_len += round_len
        target[cur_len:] = IGNORE_INDEX
        bad = cur_len < model_max_length and cur_len != total_len
        if bad:
            target[:] = IGNORE_INDEX  # "WARNING: tokenization mismatch: ... (ignored)"
        mismatch.append(bad)
    return dict(input_ids=input_ids, labels=targets, mismatch=mismatch)


def preprocess_phi(sources, tokenizer, has_image, model_max_length=2048):
    return preprocess(sources, tokenizer, has_image, PHI, model_max_length)
