"""A saved tokenizer folder that a slow tokenizer (transformers 4.37, ``use_fast=False``) loads with the
run's ids, beside the ``tokenizer.json`` transformers 5 saves.

transformers 5 saves a Llama / Mistral (SentencePiece) tokenizer as ``tokenizer.json`` only, while a slow
``LlamaTokenizer`` (MoE-LLaVA's and LLaVA's loaders) is built from ``tokenizer.model``. That file cannot be
rebuilt from tokenizer.json (it holds the merge scores and normaliser of the trained model), so it is
carried from where the tokenizer came from (a model folder, the Hub cache, the model trained on the fly)
into every output that saves the tokenizer: stage 2's output, stage 3's (loaded from stage 2's), the
export. The saved config also loses what a slow tokenizer reads, written back here from what
tokenizer.json does: ``legacy`` (4.37 defaults it to True and transformers 5 to False, and the two
tokenise the text after a special token differently), whether a BOS / EOS is added, and which added
tokens are special (``additional_special_tokens``, 4.37's name for 5's ``extra_special_tokens``). The
added tokens (pad, ``<image>``, ``<|end_of_turn|>``) go to ``added_tokens.json`` with their ids, the
file a slow tokenizer takes them from. transformers 5 reads these fields too, with the values its
tokenizer.json already has (without ``legacy`` it would rebuild a legacy tokenizer saved as a
LlamaTokenizer as a non-legacy one). The class name 4.37 needs is the export's business
(vlmtrain.model.legacy_tokenizer): here a folder keeps the class transformers 5 saved, which decides
how 5 rebuilds the tokenizer.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

SPIECE = "\u2581"  # SentencePiece's word-start mark, "▁"


def save_tokenizer(tokenizer, folder: str | Path) -> list[str]:
    """``tokenizer.save_pretrained(folder)``, then what a slow tokenizer needs (keep_sentencepiece_model).
    Returns the names of the files added or changed after transformers' save."""
    tokenizer.save_pretrained(str(folder))
    return keep_sentencepiece_model(tokenizer, Path(folder))


def keep_sentencepiece_model(tokenizer, folder: Path) -> list[str]:
    """For a SentencePiece-style ``folder/tokenizer.json``: copy the ``tokenizer.model`` the tokenizer was
    built from (when it has tokenizer.json's vocabulary), write ``added_tokens.json`` and the slow fields
    of ``tokenizer_config.json``. Nothing for other tokenizers. Returns the names of the files written."""
    tj = read_tokenizer_json(folder)
    if tj is None or prefix_scheme(tj) is None:
        return []
    written = []
    source = _source_model(tokenizer)
    target = folder / "tokenizer.model"
    if source is not None and same_vocabulary(source, tj):
        if not (target.exists() and os.path.samefile(source, target)):
            shutil.copyfile(source, target)
        written.append(target.name)
    elif target.is_file() and not same_vocabulary(target, tj):
        target.unlink()  # an earlier tokenizer's: a slow loader (and the next stage) would take it for this one's
    if write_added_tokens(folder, tj):
        written.append("added_tokens.json")
    if _write_slow_config(folder, tj):
        written.append("tokenizer_config.json")
    return written


def prefix_scheme(tj: dict) -> str | None:
    """Where the tokenizer.json puts SentencePiece's "▁" before text: "always" (before each text between
    added tokens: a legacy Llama tokenizer), "first" (only at the start: non-legacy), "never"; None when it
    is not a SentencePiece-style tokenizer."""
    for node in _parts(tj.get("normalizer"), "normalizers") + _parts(tj.get("pre_tokenizer"), "pretokenizers"):
        if node.get("type") == "Metaspace":
            if node.get("prepend_scheme"):
                return node["prepend_scheme"]
            return "always" if node.get("add_prefix_space", True) else "never"  # (tokenizers < 0.14's field)
        if node.get("type") == "Prepend" and node.get("prepend") == SPIECE:
            return "always"  # a normaliser runs on each text between added tokens
    return None


def same_vocabulary(model_file: Path, tj: dict) -> bool:
    """Whether the SentencePiece model has tokenizer.json's vocabulary: as many pieces, each at its id (an
    id that tokenizer.json's added tokens name is theirs in a slow tokenizer too)."""
    import sentencepiece as spm

    pieces = _pieces_by_id(tj)
    try:
        sp = spm.SentencePieceProcessor(model_file=str(model_file))
    except (OSError, RuntimeError):  # not a SentencePiece model
        return False
    added = {t["id"] for t in tj.get("added_tokens") or []}
    size = sp.get_piece_size()
    return len(pieces) == size and all(i in added or sp.id_to_piece(i) == pieces.get(i) for i in range(size))


def added_tokens_map(tj: dict) -> dict[str, int]:
    """tokenizer.json's added tokens that its model's vocabulary lacks, by content, with their ids."""
    known = set(_pieces_by_id(tj).values())
    return {t["content"]: t["id"] for t in sorted(tj.get("added_tokens") or [], key=lambda t: t["id"])
            if t["content"] not in known}


def write_added_tokens(folder: Path, tj: dict) -> bool:
    """``folder/added_tokens.json`` (what a slow tokenizer adds to its vocabulary, at these ids) when there are
    any. Returns whether it was written."""
    added = added_tokens_map(tj)
    if added:
        (folder / "added_tokens.json").write_text(json.dumps(added, ensure_ascii=False) + "\n", encoding="utf-8")
    return bool(added)


def _write_slow_config(folder: Path, tj: dict) -> bool:
    """tokenizer_config.json's fields a slow LlamaTokenizer reads, set to what tokenizer.json does."""
    path = folder / "tokenizer_config.json"
    cfg = read_json(path) or {}
    before = dict(cfg)
    scheme = prefix_scheme(tj)
    if scheme in ("always", "first"):  # ("never": 4.37's LlamaTokenizer cannot say it; left as saved)
        cfg["legacy"] = scheme == "always"
    cfg["add_bos_token"], cfg["add_eos_token"] = _added_around(tj)
    if "add_prefix_space" in cfg and cfg["add_prefix_space"] is None:
        # transformers 5 saves null for "the default"; a slow LlamaTokenizer of 4.38+ (ConvLLaVA pins 4.39.3)
        # stores it and puts no "▁" before a text, so every prompt's first word got other ids (and its
        # preprocess_v1 masked every multi-round sample). Left out, every version takes its default: True.
        del cfg["add_prefix_space"]
    if cfg.get("extra_special_tokens") and not cfg.get("additional_special_tokens"):
        # without it 4.37 takes <image> for a plain added token: not skipped when decoding, and a non-legacy
        # tokenizer keeps a lone "▁" before it at the start of a text
        cfg["additional_special_tokens"] = cfg["extra_special_tokens"]
    if cfg == before:
        return False
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return True


def _added_around(tj: dict) -> tuple[bool, bool]:
    """Whether tokenizer.json's post-processor adds a special token before / after a single text (BOS, EOS)."""
    for node in _parts(tj.get("post_processor"), "processors"):
        if node.get("type") == "TemplateProcessing":
            single = node.get("single") or []
            return (bool(single) and "SpecialToken" in single[0], bool(single) and "SpecialToken" in single[-1])
    return False, False


def _parts(node: dict | None, key: str) -> list[dict]:
    """A tokenizer.json component as a flat list (a Sequence's members in order)."""
    if not node:
        return []
    if node.get("type") == "Sequence":
        return [p for sub in node.get(key) or [] for p in _parts(sub, key)]
    return [node]


def _pieces_by_id(tj: dict) -> dict[int, str]:
    vocab = (tj.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):  # BPE / WordPiece: piece -> id
        return {i: p for p, i in vocab.items()}
    if isinstance(vocab, list):  # Unigram: [piece, score] in id order
        return {i: entry[0] for i, entry in enumerate(vocab)}
    return {}


def _source_model(tokenizer) -> Path | None:
    """The SentencePiece model file transformers resolved when it loaded ``tokenizer`` (its ``vocab_file``)."""
    name = getattr(tokenizer, "vocab_file", None) or (getattr(tokenizer, "init_kwargs", None) or {}).get("vocab_file")
    if not isinstance(name, (str, os.PathLike)):
        return None
    path = Path(name)
    return path if path.is_file() else None


def read_tokenizer_json(folder: Path) -> dict | None:
    """``folder/tokenizer.json``, or None where there is none (or it is not JSON)."""
    return read_json(Path(folder) / "tokenizer.json")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
