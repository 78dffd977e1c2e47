"""Conversation templates: LLaVA turns -> one prompt string plus the character spans that carry loss.

One registry (:data:`REGISTRY`, names in :data:`TEMPLATES`) says everything a template decides:
how a conversation becomes a prompt, the prompt that asks for an answer (``vlmtrain generate``),
how the pad token is chosen (the reference repo's rule), which kind of tokenizer an offline run
trains on the fly, and the fixed strings that tokenizer's corpus must contain. Config validation,
the tokenizer loader and the data pipeline all read it; adding a template is one entry here.

The prompt strings are exactly the reference repos' (LLaVA's ``conversation.py``,
``preprocess_plain``, ``preprocess_v1``; MoE-LLaVA's ``conv_phi`` / ``conv_stablelm`` /
``conv_openchat`` / ``conv_mistral``, ``preprocess_phi`` and ``preprocess_openchat``); which tokens
are trained is decided later (encode.py) from the spans, on the tokenisation of the whole prompt,
instead of the references' re-tokenise-each-round arithmetic.

- ``plain`` (stage 1): exactly two turns; the human turn becomes just the image marker(s);
  text = images + caption + "\\n"; loss on caption + "\\n".
- ``vicuna_v1``: ``SYSTEM USER: q ASSISTANT: a</s>USER: ...``; loss on " a</s>" of every round
  (the space after ``ASSISTANT:`` belongs to the answer's first token, as in LLaVA).
- ``phi`` / ``qwen`` / ``stablelm`` (MoE-LLaVA): the same layout with ``<|endoftext|>`` closing each
  answer, no BOS, image markers left where the record has them (its ``preprocess_multimodal``), and
  pad = MoE-LLaVA's unk (``<|extra_0|>`` for phi and qwen, ``<|reg0|>`` for stablelm); loss on " a<|endoftext|>" of every round, what ``preprocess_phi`` trains.
- ``openchat`` / ``mistral`` (MoE-LLaVA's ``conv_openchat`` / ``conv_mistral``, trained by its
  ``preprocess_openchat``): the same layout on a Llama tokenizer with BOS, answers closed by
  ``<|end_of_turn|>`` (openchat-3.5's eos, a special token) or ``</s>``, pad = the tokenizer's own unk;
  loss on " a<|end_of_turn|>" (" a</s>") of every round.
- ``chat_template``: the tokenizer's own ``apply_chat_template``; loss on each assistant turn as
  rendered (its text plus the template's end-of-turn marker), found by rendering prefixes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
HUMAN_ROLES = {"human", "user"}
GPT_ROLES = {"gpt", "assistant"}
ENDOFTEXT = "<|endoftext|>"
END_OF_TURN = "<|end_of_turn|>"  # openchat-3.5's eos: an added special token (id 32000) of its Llama tokenizer


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


def preprocess_multimodal(turns: Sequence[dict], n_images: int, image_token: str, *,
                          image_to_front: bool = True) -> list[dict]:
    """LLaVA's ``preprocess_multimodal``: a turn's single image marker moves to its start as "<image>\\n".

    With ``image_to_front=False`` (MoE-LLaVA's, whose ``preprocess_multimodal`` only rewrites markers
    for options v1.5 turns off) every marker stays where the record has it. Turns with several
    markers (interleaved multi-image records, which LLaVA-1.5 does not have) keep them where they are. A one-image record with no marker at all gets one at the start of
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
    if not image_to_front:
        return out
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


@dataclass(frozen=True)
class Template:
    """Everything one conversation format decides (see the module docstring)."""

    name: str
    build: Callable[..., Prompt]                    # (turns, n_images, image_token, tokenizer, system) -> Prompt
    ask: Callable[..., str]                         # (question, image_token, tokenizer, system) -> generation prompt
    pad: str = "unk"                                # "unk": pad = unk (LLaVA, MoE-LLaVA); "own": the tokenizer's pad, else unk, else eos
    unk_token: str | None = None                    # MoE-LLaVA sets this unk token before pad = unk
    eos_token: str | None = None                    # ... and this eos (its qwen branch; openchat's own eos, see REGISTRY)
    tokenizer_kind: str = "sentencepiece"           # what `tokenizer_train_vocab_size` trains: sentencepiece (Llama) | bytelevel (GPT-2 style) | tiktoken (Qwen / Arcade100k regex)
    corpus: str = ""                                # the template's fixed strings, for a tokenizer trained on the fly
    reference_masking: str | None = None            # which reference's length arithmetic to replay for the report (see reference_masking.py)
    image_to_front: bool = True                     # LLaVA moves a turn's one <image> to its start; MoE-LLaVA leaves it in place


def _vicuna_like(sep2: str | None):
    def build(turns, n_images, image_token, tokenizer, system):
        end = sep2 or getattr(tokenizer, "eos_token", None) or "</s>"
        return build_vicuna_v1(turns, system=VICUNA_SYSTEM if system is None else system, sep2=end)
    return build


def _ask_vicuna(question: str, image_token: str, tokenizer: Any, system: str | None) -> str:
    """The reference's ``conv.append_message(ASSISTANT, None); conv.get_prompt()``: ends in "ASSISTANT:"."""
    return f"{VICUNA_SYSTEM if system is None else system} USER: {question} ASSISTANT:"


def _ask_plain(question: str, image_token: str, tokenizer: Any, system: str | None) -> str:
    return question.count(image_token) * image_token or image_token


def _ask_chat(question: str, image_token: str, tokenizer: Any, system: str | None) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)


def _two_rounds(sep2: str) -> str:
    """Two rounds in the vicuna layout: the fixed strings a tokenizer trained on the fly must know."""
    return f"{VICUNA_SYSTEM} USER: hello ASSISTANT: hi{sep2}USER: thanks ASSISTANT: bye{sep2}"


_MOE_CORPUS = _two_rounds(ENDOFTEXT)
REGISTRY: dict[str, Template] = {t.name: t for t in [
    Template("plain", lambda turns, n, img, tok, system: build_plain(turns, n, img), _ask_plain,
             corpus="a photo of a cat\n"),
    Template("vicuna_v1", _vicuna_like(None), _ask_vicuna,
             corpus=_two_rounds("</s>")),
    Template("chat_template", lambda turns, n, img, tok, system: build_chat_template(turns, tok), _ask_chat, pad="own"),
    Template("phi", _vicuna_like(ENDOFTEXT), _ask_vicuna, unk_token="<|extra_0|>", tokenizer_kind="bytelevel",
             corpus=_MOE_CORPUS, reference_masking="moellava_phi", image_to_front=False),
    Template("qwen", _vicuna_like(ENDOFTEXT), _ask_vicuna, unk_token="<|extra_0|>", eos_token=ENDOFTEXT,
             tokenizer_kind="tiktoken", corpus=_MOE_CORPUS, reference_masking="moellava_phi", image_to_front=False),
    Template("stablelm", _vicuna_like(ENDOFTEXT), _ask_vicuna, unk_token="<|reg0|>", tokenizer_kind="tiktoken",
             corpus=_MOE_CORPUS, reference_masking="moellava_phi", image_to_front=False),
    # openchat-3.5's tokenizer has <|end_of_turn|> as its eos already (MoE-LLaVA sets no eos for it); naming
    # it here makes a tokenizer trained on the fly the same shape (one special token, the eos), so
    # `vlmtrain generate` stops there. Its unk stays the tokenizer's own <unk>, as MoE-LLaVA leaves it.
    Template("openchat", _vicuna_like(END_OF_TURN), _ask_vicuna, eos_token=END_OF_TURN,
             corpus=_two_rounds(END_OF_TURN), reference_masking="moellava_openchat", image_to_front=False),
    Template("mistral", _vicuna_like("</s>"), _ask_vicuna, corpus=_two_rounds("</s>"),
             reference_masking="moellava_mistral", image_to_front=False),
]}
ALIASES = {"v1": "vicuna_v1"}
TEMPLATES = tuple(REGISTRY)


def get_template(name: str) -> Template:
    name = ALIASES.get(name, name)
    if name not in REGISTRY:
        raise ValueError(f"unknown template {name!r}; choose one of {', '.join(TEMPLATES)}")
    return REGISTRY[name]


def build_prompt(template: str, conversations: Sequence[dict], n_images: int, image_token: str,
                 tokenizer: Any, *, system: str | None = None) -> Prompt:
    t = get_template(template)
    turns = preprocess_multimodal(conversations, n_images, image_token, image_to_front=t.image_to_front)
    return t.build(turns, n_images, image_token, tokenizer, system)


def generation_prompt(template: str, question: str, n_images: int, image_token: str, tokenizer: Any,
                      *, system: str | None = None) -> str:
    """The prompt that asks the model for an answer: the question as a human turn (its image marker
    moved to its start where the template's training moved it: LLaVA's, not MoE-LLaVA's) and the
    assistant's turn opened."""
    t = get_template(template)
    turns = preprocess_multimodal([{"from": "human", "value": question}, {"from": "gpt", "value": "x"}],
                                  n_images, image_token, image_to_front=t.image_to_front)
    return t.ask(turns[0]["value"], image_token, tokenizer, system)
