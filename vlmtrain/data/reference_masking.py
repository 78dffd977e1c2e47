"""Would the reference repo have trained this sample at all? Its length arithmetic, replayed for the report.

MoE-LLaVA's ``preprocess_phi`` masks by counting tokens: it splits the prompt into rounds at
``<|endoftext|>``, adds ``len(tokens(round)) + 1`` per round (the +1 is the eos), stops at a round
that does not split into exactly two parts at " ASSISTANT: ", and, when the count differs from the
sample's non-pad length (and the sample was not cut at ``model_max_length``), prints "tokenization
mismatch" and masks the whole sample: it trains with no loss. vlmtrain masks from character spans
(encode.py) and trains such samples on their real answers; this module finds them so the data
report can say how many there are ("reference_masked"), which is what a user comparing losses with
the original run needs to know.

Only run in the one-off length pass (its result is cached with the lengths).
"""
from __future__ import annotations

from typing import Any

ROUND_SEP = "<|endoftext|>"
ANSWER_SEP = " ASSISTANT: "


def _token_count(text: str, image_token: str, tokenizer: Any) -> int:
    """``len(tokenizer_image_token(text))``: chunks between image markers tokenised alone, one id per image."""
    chunks = text.split(image_token)
    ids = [list(tokenizer(c)["input_ids"]) for c in chunks]
    bos = getattr(tokenizer, "bos_token_id", None)
    offset = 1 if ids and ids[0] and bos is not None and ids[0][0] == bos else 0
    # one kept BOS, each chunk without its own BOS, one id per image
    return offset + sum(len(x) - offset for x in ids) + (len(chunks) - 1)


def moellava_phi_masks_whole(prompt_text: str, image_token: str, tokenizer: Any, model_max_length: int) -> bool:
    """True when ``preprocess_phi`` would give this prompt no trained token at all."""
    total = _token_count(prompt_text, image_token, tokenizer)
    cur = 0
    for rnd in prompt_text.split(ROUND_SEP):
        if rnd == "":
            break
        if len(rnd.split(ANSWER_SEP)) != 2:
            break
        cur += _token_count(rnd, image_token, tokenizer) + 1
    # The check is skipped for samples at or past the length limit (they were truncated).
    return cur < model_max_length and cur != total


CHECKS = {"moellava_phi": moellava_phi_masks_whole}
