"""A Llama-style SentencePiece tokenizer trained on the fly (tests, offline tiny runs).

The model is trained with the options of Llama's own ``tokenizer.model`` (BPE, byte fallback,
split digits, a dummy prefix, no normalisation, whitespace kept as is; unk/bos/eos = 0/1/2, no pad
piece) and loaded through transformers' ``LlamaTokenizer`` with the ``legacy`` flag the caller
asks for. ``legacy`` decides what happens right after a special token such as ``</s>``: legacy
tokenizers give the next word its ``▁`` prefix again, non-legacy ones do not (the difference that
LLaVA's ``preprocess_v1`` corrects with its "-1" for rounds after the first).

Which pieces exist is up to the texts: tests/train_data/conftest.py shapes its corpus so that
``USER`` is a piece and ``▁USER`` is not, the situation LLaVA's correction was written for (after
``</s>`` a non-legacy tokenizer writes ``USER``, one token; the round on its own starts ``▁`` ``USER``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable


def train_llama_sentencepiece(
    texts: Iterable[str],
    vocab_size: int,
    *,
    legacy: bool,
    workdir: Path,
):
    """Train a SentencePiece BPE model on ``texts`` into ``workdir`` and return a transformers tokenizer.

    The vocabulary may come out smaller than ``vocab_size`` when the texts are too few to fill it
    (the limit is soft). Deterministic for the same texts and options.
    """
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(texts)),
        model_prefix=str(workdir / "tokenizer"),
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    (workdir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "LlamaTokenizer",
                "add_bos_token": True,
                "add_eos_token": False,
                "legacy": legacy,
                "model_max_length": 1_000_000,
                "padding_side": "right",
            },
            indent=2,
        )
    )
    return LlamaTokenizer.from_pretrained(str(workdir), legacy=legacy)


# Pre-tokenisation regexes of the byte-level BPE families MoE-LLaVA's LLMs use (facts, from the
# published tokenizers): GPT-2's (phi-2) and the tiktoken one of Qwen-1 / StableLM-2's Arcade100k.
GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
TIKTOKEN_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"


def train_bytelevel_bpe(
    texts: Iterable[str],
    vocab_size: int,
    *,
    kind: str,
    workdir: Path,
    extra_special: tuple[str, ...] = (),
):
    """A byte-level BPE tokenizer shaped like phi-2's (``kind="bytelevel"``, GPT-2 split) or Qwen's /
    StableLM-2's (``kind="tiktoken"``), trained on ``texts`` and saved in ``workdir``.

    Like those tokenizers: no BOS is added, ``<|endoftext|>`` is the one special token and serves as
    eos (and as bos / unk, as phi-2's config says), no pad token (the template's rule sets one).
    ``extra_special`` adds reserved specials such as Qwen's ``<|extra_0|>``.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if kind not in ("bytelevel", "tiktoken"):
        raise ValueError(f"unknown byte-level tokenizer kind {kind!r}")
    split = GPT2_SPLIT if kind == "bytelevel" else TIKTOKEN_SPLIT
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    specials = [ENDOFTEXT, *extra_special]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT,
                                   unk_token=ENDOFTEXT if kind == "bytelevel" else None,
                                   additional_special_tokens=list(extra_special) or None,
                                   model_max_length=1_000_000, padding_side="right", clean_up_tokenization_spaces=False)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(workdir))
    return fast
