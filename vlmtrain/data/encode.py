"""Prompt -> input_ids + labels, with LLaVA's tokenisation and its label masks, token for token.

How LLaVA tokenises (``tokenizer_image_token``): the prompt is cut at every image marker, each
chunk is tokenised on its own (so each gets the tokenizer's BOS and SentencePiece dummy prefix),
the leading BOS is kept once and every chunk loses its first token, and one sentinel stands for
each image. We do the same, and put ``ImageTokens.per_image`` copies of the model's image token id
where LLaVA puts its one -200 sentinel (transformers' Llava expects them in input_ids).

How LLaVA masks (``preprocess_v1``) is arithmetic on lengths of rounds re-tokenised in isolation,
with a "-2" and, for non-legacy tokenizers, a "-1" for later rounds; when the arithmetic does not
add up the whole sample silently gets no loss. We instead take each token's character span in the
prompt (fast tokenizers' offsets; for slow tokenizers, the token count of each span boundary's
prefix) and train the tokens that lie in the template's target spans. Whenever LLaVA's arithmetic
is right the two agree token for token (tests/train_data/test_masking_parity.py checks it against
an independent re-implementation of the reference algorithm); a token that straddles a target
boundary, or a structure LLaVA would choke on, raises ``MaskError`` so the sample is reported
instead of trained with zero loss.

Truncation to ``model_max_length`` counts the image tokens and never cuts through an image's token
run: text after the last image is dropped; a sample whose images do not all fit is an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .reference_masking import CHECKS as REFERENCE_CHECKS
from .templates import MaskError, Prompt, build_prompt, get_template

IGNORE_INDEX = -100
ENCODER_VERSION = 3  # bump when the produced ids/labels change (invalidates cached lengths)


@dataclass
class Encoded:
    input_ids: np.ndarray   # int64 [T], image tokens expanded
    labels: np.ndarray      # int64 [T], IGNORE_INDEX where no loss
    n_images: int
    truncated: bool
    reference_masked: bool = False  # the reference repo's arithmetic would train none of it (see reference_masking.py)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class Encoder:
    """Encodes LLaVA conversations for one tokenizer / template / image-token setting."""

    def __init__(self, tokenizer: Any, template: str, image_tokens: Any, model_max_length: int,
                 *, system: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.image_tokens = image_tokens
        self.model_max_length = int(model_max_length)
        self.system = system
        self.bos_id = getattr(tokenizer, "bos_token_id", None)
        self._backend = tokenizer.backend_tokenizer if getattr(tokenizer, "is_fast", False) else None
        if self._backend is not None and not self._backend_agrees():
            self._backend = None

    # -- tokenisation of chunks ------------------------------------------------------------
    def _backend_agrees(self) -> bool:
        """Use the Rust tokenizer directly only if it gives what tokenizer(...) gives."""
        probe = ["A probe. USER: what?\n ASSISTANT: 12 x</s>USER: y", "", "\nz"]
        for special in (True, False):
            mine = [e.ids for e in self._backend.encode_batch(probe, add_special_tokens=special)]
            theirs = self.tokenizer(probe, add_special_tokens=special)["input_ids"]
            if mine != [list(t) for t in theirs]:
                return False
        return True

    def _tokenize(self, chunks: list[str], special: bool) -> list[tuple[list[int], np.ndarray | None]]:
        if self._backend is not None:
            return [(e.ids, np.asarray(e.offsets, dtype=np.int64).reshape(-1, 2))
                    for e in self._backend.encode_batch(chunks, add_special_tokens=special)]
        ids = self.tokenizer(chunks, add_special_tokens=special)["input_ids"]
        return [(list(x), None) for x in ids]

    # -- public -------------------------------------------------------------------------------
    def prompt(self, conversations: Sequence[dict], n_images: int) -> Prompt:
        return build_prompt(self.template, conversations, n_images, self.image_tokens.token,
                            self.tokenizer, system=self.system)

    def encode(self, conversations: Sequence[dict], n_images: int) -> Encoded:
        out = self.encode_many([(conversations, n_images)])[0]
        if isinstance(out, MaskError):
            raise out
        return out

    def encode_many(self, samples: Sequence[tuple[Sequence[dict], int]], *,
                    check_reference: bool = False) -> list[Encoded | MaskError]:
        """Encode many samples with one batched tokenizer call per special-token setting.

        ``check_reference`` also replays the reference repo's masking arithmetic (the template's
        ``reference_masking``) and flags the samples it would have trained with no loss."""
        results: list[Encoded | MaskError | None] = [None] * len(samples)
        plans = []  # (sample index, prompt, chunks, chunk starts)
        for i, (conv, n_images) in enumerate(samples):
            try:
                p = self.prompt(conv, n_images)
            except MaskError as e:
                results[i] = e
                continue
            chunks = p.text.split(self.image_tokens.token)
            starts, pos = [], 0
            for c in chunks:
                starts.append(pos)
                pos += len(c) + len(self.image_tokens.token)
            plans.append((i, p, chunks, starts, n_images))
        for special in (True, False):
            group = [pl for pl in plans if pl[1].add_special_tokens == special]
            if not group:
                continue
            flat = [c for pl in group for c in pl[2]]
            toks = self._tokenize(flat, special)
            k = 0
            for i, p, chunks, starts, n_images in group:
                mine = toks[k:k + len(chunks)]
                k += len(chunks)
                try:
                    if len(chunks) - 1 != n_images:  # e.g. a marker in a leading gpt turn the template dropped
                        raise MaskError("image marker count differs from the number of images",
                                        f"{len(chunks) - 1} markers in the prompt, {n_images} images")
                    results[i] = self._assemble(p, chunks, starts, mine, special)
                except MaskError as e:
                    results[i] = e
                    continue
                check = REFERENCE_CHECKS.get(get_template(self.template).reference_masking or "")
                if check_reference and check is not None:
                    results[i].reference_masked = check(p.text, self.image_tokens.token, self.tokenizer,
                                                        self.model_max_length)
        return results  # type: ignore[return-value]

    def encode_prompt(self, text: str, *, special: bool = True) -> np.ndarray:
        """A generation prompt (no labels) tokenised the way training prompts are: chunks between image
        markers on their own, one leading BOS kept, ``per_image`` image token ids per marker.
        ``special=False`` for chat templates, which write their own special tokens."""
        it = self.image_tokens
        chunks = text.split(it.token)
        toks = [ids for ids, _ in self._tokenize(chunks, special)]
        offset = 1 if toks[0] and self.bos_id is not None and toks[0][0] == self.bos_id else 0
        out: list[int] = [self.bos_id] if offset else []
        for k, ids in enumerate(toks):
            if k:
                out += [it.token_id] * it.per_image
            out += list(ids[offset:])
        return np.asarray(out, dtype=np.int64)

    # -- internals ----------------------------------------------------------------------------
    @staticmethod
    def _char_mask(p: Prompt) -> tuple[np.ndarray, np.ndarray]:
        """Per character of the prompt: trained or not; and its prefix sums."""
        char = np.zeros(len(p.text) + 1, dtype=bool)
        for s, e in p.targets:
            char[s:e] = True
        return char, np.concatenate([[0], np.cumsum(char, dtype=np.int64)])

    def _chunk_train_mask(self, p: Prompt, chunk: str, start: int, ids: list[int],
                          offs: np.ndarray | None, special: bool, drop: int,
                          char: np.ndarray | None, cs: np.ndarray | None) -> np.ndarray:
        """Which of this chunk's tokens (after dropping ``drop`` leading ones) carry loss."""
        n = len(ids)
        if offs is not None:
            s = offs[drop:, 0] + start
            e = offs[drop:, 1] + start
            width = e - s
            cnt = cs[e] - cs[s]
            if np.any((cnt > 0) & (cnt < width)):
                raise MaskError("a token straddles a trained/untrained boundary")
            return np.where(width > 0, cnt == width, char[np.minimum(s, len(p.text))])
        # Slow tokenizer: the token index of each boundary is the token count of the chunk's prefix.
        train = np.zeros(n - drop, dtype=bool)
        end = start + len(chunk)
        for ts, te in p.targets:
            a, b = max(ts, start), min(te, end)
            if a >= b:
                continue
            lo = self._boundary(chunk, a - start, ids, special) - drop
            hi = self._boundary(chunk, b - start, ids, special) - drop
            train[lo:hi] = True
        return train

    def _boundary(self, chunk: str, b: int, ids: list[int], special: bool) -> int:
        if b >= len(chunk):
            return len(ids)
        pre = list(self.tokenizer(chunk[:b], add_special_tokens=special)["input_ids"])
        if ids[: len(pre)] != pre:
            raise MaskError("tokenization of a span boundary differs from the whole prompt's")
        return len(pre)

    def _assemble(self, p: Prompt, chunks: list[str], starts: list[int],
                  toks: list[tuple[list[int], np.ndarray | None]], special: bool) -> Encoded:
        it = self.image_tokens
        # LLaVA keeps one leading BOS and drops the first token of every chunk when chunk 0 starts with BOS.
        offset = 1 if special and toks[0][0] and self.bos_id is not None and toks[0][0][0] == self.bos_id else 0
        char, cs = self._char_mask(p) if toks[0][1] is not None else (None, None)
        ids_parts, lab_parts = [], []
        image_runs = []
        length = 0
        if offset:
            ids_parts.append(np.array([self.bos_id], dtype=np.int64))
            lab_parts.append(np.array([IGNORE_INDEX], dtype=np.int64))
            length = 1
        for k, (chunk, start, (ids, offs)) in enumerate(zip(chunks, starts, toks)):
            if k:
                run = np.full(it.per_image, it.token_id, dtype=np.int64)
                ids_parts.append(run)
                lab_parts.append(np.full(it.per_image, IGNORE_INDEX, dtype=np.int64))
                image_runs.append((length, length + it.per_image))
                length += it.per_image
            if offset and (not ids or ids[0] != self.bos_id):
                raise MaskError("a prompt chunk was tokenised without the leading BOS")
            train = self._chunk_train_mask(p, chunk, start, ids, offs, special, offset, char, cs)
            arr = np.asarray(ids[offset:], dtype=np.int64)
            if np.any(arr == it.token_id):
                raise MaskError("the text contains the image token id", f"id {it.token_id}")
            ids_parts.append(arr)
            lab_parts.append(np.where(train, arr, IGNORE_INDEX))
            length += len(arr)
        input_ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, dtype=np.int64)
        labels = np.concatenate(lab_parts) if lab_parts else np.zeros(0, dtype=np.int64)
        truncated = False
        if len(input_ids) > self.model_max_length:
            if image_runs and image_runs[-1][1] > self.model_max_length:
                raise MaskError("images do not fit in model_max_length",
                                f"image tokens end at {image_runs[-1][1]} > {self.model_max_length}")
            input_ids = input_ids[: self.model_max_length]
            labels = labels[: self.model_max_length]
            truncated = True
        if not np.any(labels != IGNORE_INDEX):
            raise MaskError("no trained tokens" + (" within model_max_length" if truncated else ""))
        return Encoded(input_ids, labels, len(image_runs), truncated)

