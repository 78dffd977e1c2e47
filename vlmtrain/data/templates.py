"""Conversation templates: LLaVA turns -> one prompt string plus the character spans that carry loss.

The prompt strings are exactly LLaVA's (``llava/conversation.py``, ``preprocess_plain``,
``preprocess_v1``); which tokens are trained is decided later (encode.py) from the spans, on the
tokenisation of the whole prompt, instead of LLaVA's re-tokenise-each-round length arithmetic.

- ``plain`` (stage 1): exactly two turns; the human turn becomes just the image marker(s);
  text = images + caption + "\\n"; loss on caption + "\\n".
- ``vicuna_v1``: ``SYSTEM USER: q ASSISTANT: a</s>USER: ...``; loss on " a</s>" of every round
  (the space after ``ASSISTANT:`` belongs to the answer's first token, as in LLaVA).
- ``chat_template``: the tokenizer's own ``apply_chat_template``; loss on each assistant turn as
  rendered (its text plus the template's end-of-turn marker), found by rendering prefixes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
HUMAN_ROLES = {"human", "user"}
GPT_ROLES = {"gpt", "assistant"}
TEMPLATES = ("plain", "vicuna_v1", "chat_template")


class MaskError(Exception):
    """A sample whose input ids / labels cannot be built right. ``reason`` is short and stable."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason + (f": {detail}" if detail else ""))
        self.reason = reason
        self.detail = detail


@dataclass
class Prompt:
    text: str                                              # the whole prompt; image markers still in it
    targets: list[tuple[int, int]] = field(default_factory=list)  # [start, end) character spans trained on
    add_special_tokens: bool = True                        # tokenise chunks with the tokenizer's BOS (LLaVA) or not (chat templates carry their own)


def _role(turn: dict) -> str:
    r = str(turn.get("from", "")).lower()
    if r in HUMAN_ROLES:
        return "human"
    if r in GPT_ROLES:
        return "gpt"
    return r


def preprocess_multimodal(turns: Sequence[dict], n_images: int, image_token: str) -> list[dict]:
    """LLaVA's ``preprocess_multimodal``: a turn's single image marker moves to its start as "<image>\\n".

    Turns with several markers (interleaved multi-image records, which LLaVA-1.5 does not have)
    keep them where they are. A one-image record with no marker at all gets one at the start of
    its first turn, as ``vlmdata blend`` normalises. The marker count must equal ``n_images``.
    """
    out = [{"from": t.get("from"), "value": str(t.get("value") or "")} for t in turns]
    if n_images == 0:
        if any(image_token in t["value"] for t in out):
            raise MaskError("image marker in a text-only sample")
        return out
    count = sum(t["value"].count(image_token) for t in out)
    if count == 0 and n_images == 1 and out:
        out[0]["value"] = image_token + "\n" + out[0]["value"]
        count = 1
    if count != n_images:
        raise MaskError("image marker count differs from the number of images", f"{count} markers, {n_images} images")
    for t in out:
        if t["value"].count(image_token) == 1:
            t["value"] = (image_token + "\n" + t["value"].replace(image_token, "").strip()).strip()
    return out


def _alternating(turns: list[dict]) -> list[dict]:
    """Drop a leading non-human turn (as LLaVA does), then insist on human/gpt pairs."""
    if turns and _role(turns[0]) != "human":
        turns = turns[1:]
    if not turns:
        raise MaskError("no turns")
    for j, t in enumerate(turns):
        want = "human" if j % 2 == 0 else "gpt"
        if _role(t) != want:
            raise MaskError("turns do not alternate human/gpt", f"turn {j} is {t.get('from')!r}")
        if not t["value"]:
            raise MaskError("empty turn", f"turn {j}")
    if len(turns) % 2:
        raise MaskError("conversation ends with an unanswered human turn")
    return turns


def build_plain(turns: list[dict], n_images: int, image_token: str) -> Prompt:
    if len(turns) != 2 or n_images < 1:
        raise MaskError("plain template needs exactly two turns and an image",
                        f"{len(turns)} turns, {n_images} images")
    if image_token not in turns[0]["value"]:
        raise MaskError("plain template needs the image marker in the first turn")
    head = image_token * n_images
    caption = turns[1]["value"]
    if image_token in caption:
        raise MaskError("image marker in the caption")
    text = head + caption + "\n"
    return Prompt(text, [(len(head), len(text))])


def build_vicuna_v1(turns: list[dict], *, system: str = VICUNA_SYSTEM, sep2: str = "</s>") -> Prompt:
    turns = _alternating(turns)
    for t in turns:
        if sep2 in t["value"]:
            raise MaskError("a turn contains the round separator", repr(sep2))
    parts = [system, " "]
    pos = len(system) + 1
    targets = []
    for q, a in zip(turns[0::2], turns[1::2]):
        user = "USER: " + q["value"] + " "
        head = "ASSISTANT:"
        answer = " " + a["value"] + sep2
        parts += [user, head, answer]
        start = pos + len(user) + len(head)
        pos = start + len(answer)
        targets.append((start, pos))
    return Prompt("".join(parts), targets)


def build_chat_template(turns: list[dict], tokenizer: Any) -> Prompt:
    turns = _alternating(turns)
    messages = [{"role": "user" if _role(t) == "human" else "assistant", "content": t["value"]} for t in turns]
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("template 'chat_template' needs a tokenizer with a chat template (tokenizer.chat_template is empty)")

    def render(msgs, gen):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    full = render(messages, False)
    targets = []
    for i in range(1, len(messages), 2):
        before = render(messages[:i], True)
        upto = render(messages[: i + 1], False)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise MaskError("chat template does not render conversation prefixes as prefixes")
        targets.append((len(before), len(upto)))
    return Prompt(full, targets, add_special_tokens=False)


def build_prompt(template: str, conversations: Sequence[dict], n_images: int, image_token: str,
                 tokenizer: Any, *, system: str | None = None) -> Prompt:
    turns = preprocess_multimodal(conversations, n_images, image_token)
    if template == "plain":
        return build_plain(turns, n_images, image_token)
    if template == "vicuna_v1":
        return build_vicuna_v1(turns, system=VICUNA_SYSTEM if system is None else system,
                               sep2=getattr(tokenizer, "eos_token", None) or "</s>")
    if template == "chat_template":
        return build_chat_template(turns, tokenizer)
    raise ValueError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")
