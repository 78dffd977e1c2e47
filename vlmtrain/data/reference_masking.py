"""Would the reference repo have trained this sample at all? Its length arithmetic, replayed for the report.

MoE-LLaVA masks by counting tokens instead of looking at them. Its ``preprocess_phi`` and
``preprocess_openchat`` (moellava/train/train.py) do the same thing with different constants: split
the prompt into rounds at the template's round separator (``conv.sep2``), start a counter at the
tokens before the first round, add each round's ``len(tokenizer_image_token(round))`` plus a fixed
extra, stop at a round that does not split into exactly two parts at " ASSISTANT: ", and, when the
count differs from the sample's non-pad length (and the sample was not cut at ``model_max_length``),
print "tokenization mismatch" and mask the whole sample: it trains with no loss.

- ``preprocess_phi`` (phi, qwen, stablelm; no BOS): rounds end in ``<|endoftext|>``, the count starts at
  0 and each round adds one for that separator, which its own tokenisation lacks.
- ``preprocess_openchat`` (openchat, mistral; Llama tokenizer with BOS): rounds end in
  ``<|end_of_turn|>`` or ``</s>``, the count starts at 1 (the prompt's BOS) and adds nothing per round:
  each round tokenised alone carries a BOS of its own, which stands in for the separator.

vlmtrain masks from character spans (encode.py) and trains such samples on their real answers; this
module finds them so the data report can say how many there are ("reference_masked"), which is what a
user comparing losses with the original run needs to know. (Which tokens of a sample the reference
trains, when it trains any, is not decided here; tests/train_data compare it token for token.)

Only run in the one-off length pass (its result is cached with the lengths).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

ANSWER_SEP = " ASSISTANT: "  # conv.sep + roles[1] + ": ", the same in every MoE-LLaVA template


def _token_count(text: str, image_token: str, tokenizer: Any) -> int:
    """``len(tokenizer_image_token(text))``: chunks between image markers tokenised alone, one id per image."""
    chunks = text.split(image_token)
    ids = [list(tokenizer(c)["input_ids"]) for c in chunks]
    bos = getattr(tokenizer, "bos_token_id", None)
    offset = 1 if ids and ids[0] and bos is not None and ids[0][0] == bos else 0
    # one kept BOS, each chunk without its own BOS, one id per image
    return offset + sum(len(x) - offset for x in ids) + (len(chunks) - 1)


@dataclass(frozen=True)
class RoundCount:
    """One reference function's length arithmetic (see the module docstring)."""

    round_sep: str   # where the prompt is split into rounds: the template's sep2
    start: int       # the count before the first round (cur_len's first value)
    per_round: int   # added to each round's own token count

    def masks_whole(self, prompt_text: str, image_token: str, tokenizer: Any, model_max_length: int) -> bool:
        """True when the reference would give this prompt no trained token at all."""
        total = _token_count(prompt_text, image_token, tokenizer)
        cur = self.start
        for rnd in prompt_text.split(self.round_sep):
            if rnd == "" or len(rnd.split(ANSWER_SEP)) != 2:
                break
            cur += _token_count(rnd, image_token, tokenizer) + self.per_round
        # The check is skipped for samples at or past the length limit (they were truncated).
        return cur < model_max_length and cur != total


PREPROCESS_PHI = RoundCount("<|endoftext|>", start=0, per_round=1)
PREPROCESS_OPENCHAT = RoundCount("<|end_of_turn|>", start=1, per_round=0)
PREPROCESS_OPENCHAT_EOS = RoundCount("</s>", start=1, per_round=0)  # conv_mistral's rounds, same function

# Template.reference_masking names one of these.
CHECKS: dict[str, Callable[[str, str, Any, int], bool]] = {
    "moellava_phi": PREPROCESS_PHI.masks_whole,
    "moellava_openchat": PREPROCESS_OPENCHAT.masks_whole,
    "moellava_mistral": PREPROCESS_OPENCHAT_EOS.masks_whole,
}
