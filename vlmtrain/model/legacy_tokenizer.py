"""Tokenizer files an export needs for MoE-LLaVA's and LLaVA's loaders, which run transformers 4.37.

Their ``load_pretrained_model`` loads the tokenizer from the model's folder with ``use_fast=False``: for phi-2 that is the slow ``CodeGenTokenizer``, built from ``vocab.json`` and
``merges.txt`` (and the added tokens from ``added_tokens.json``). transformers 5 saves only
``tokenizer.json``, and names a tokenizer trained on the fly ``TokenizersBackend``, a class 4.37 does
not have. This module writes the older files from ``tokenizer.json`` (same vocabulary, same merges,
same ids), so both generations of transformers read one tokenizer.

For a SentencePiece tokenizer (openchat's, Mistral's, Llama's) the slow ``LlamaTokenizer`` is built from
``tokenizer.model``, which every run output keeps (vlmtrain.data.slow_tokenizer_files); here the export
names the class 4.37 builds from it, and says when the file is missing (slow_tokenizer_problem).
"""
from __future__ import annotations

import json
from pathlib import Path

from vlmtrain.data.slow_tokenizer_files import prefix_scheme, read_tokenizer_json, same_vocabulary, write_added_tokens

# GPT-2's pre-tokenizer split; a tokenizer trained on the fly for phi (vlmtrain.data.tokenizers) uses it
GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# Class names transformers 5 writes that 4.37 has no slow tokenizer for; on a SentencePiece tokenizer
# with its tokenizer.model they are what 4.37 calls LlamaTokenizer (a SentencePiece model plus added tokens)
FAST_ONLY_CLASSES = {"TokenizersBackend", "PreTrainedTokenizerFast", "LlamaTokenizerFast"}


def write_legacy_tokenizer_files(folder: Path) -> list[str]:
    """The files 4.37's slow tokenizer is built from, beside ``folder/tokenizer.json``: for a byte-level BPE
    ``vocab.json``, ``merges.txt`` and ``added_tokens.json``; for a SentencePiece tokenizer whose
    ``tokenizer.model`` the run kept, nothing more than a class 4.37 has in ``tokenizer_config.json``;
    nothing for other models. Returns the names of the files written or changed."""
    folder = Path(folder)
    tj = read_tokenizer_json(folder)
    if tj is None:
        return []
    if prefix_scheme(tj) is not None:  # (its model is also a BPE with a piece -> id vocabulary)
        return _name_class(folder, "LlamaTokenizer") if (folder / "tokenizer.model").is_file() else []
    model = tj.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        return []
    written = _write_bpe_files(folder, model)
    if write_added_tokens(folder, tj):  # the unk / pad token and <image> among them, with their ids
        written.append("added_tokens.json")
    # "TokenizersBackend" (v5 only) on a GPT-2-style vocabulary is what 4.37 calls GPT2Tokenizer; any
    # other split is left as it is, to fail loudly there rather than tokenise differently
    if _gpt2_split(tj.get("pre_tokenizer") or {}):
        written += _name_class(folder, "GPT2Tokenizer", replaces={"TokenizersBackend"})
    return written


def slow_tokenizer_problem(folder: Path, loader: str = "MoE-LLaVA") -> str | None:
    """Why ``loader``'s load_pretrained_model (transformers 4.37, ``use_fast=False``) cannot build a slow
    tokenizer from the SentencePiece tokenizer in ``folder``, or None (also for tokenizers of other kinds)."""
    folder = Path(folder)
    tj = read_tokenizer_json(folder)
    if tj is None or prefix_scheme(tj) is None:
        return None
    model = folder / "tokenizer.model"
    if model.is_file() and same_vocabulary(model, tj):
        return None
    why = ("holds a tokenizer.model without tokenizer.json's vocabulary" if model.is_file() else
           "has no tokenizer.model (transformers 5 saves tokenizer.json only, and the run's tokenizer came "
           "from a folder or Hub repo without one, or with another vocabulary)")
    return (f"the tokenizer in {folder.name} {why}: {loader}'s loader builds its slow LlamaTokenizer from that "
            "file and will not load this folder; put the SentencePiece model this tokenizer.json was made from "
            "there as tokenizer.model")


def _name_class(folder: Path, name: str, replaces: set[str] = FAST_ONLY_CLASSES) -> list[str]:
    """``tokenizer_config.json``'s tokenizer_class set to ``name`` where it is one of ``replaces``."""
    path = folder / "tokenizer_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if cfg.get("tokenizer_class") not in replaces:
        return []
    cfg["tokenizer_class"] = name
    path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return [path.name]


def _gpt2_split(pre: dict) -> bool:
    """Whether a tokenizer.json pre-tokenizer splits as GPT-2's (byte-level, GPT-2's regex)."""
    if pre.get("type") == "ByteLevel":
        return bool(pre.get("use_regex", True))
    parts = pre.get("pretokenizers") or []
    return (pre.get("type") == "Sequence" and len(parts) == 2 and parts[0].get("type") == "Split"
            and (parts[0].get("pattern") or {}).get("Regex") == GPT2_SPLIT
            and parts[1].get("type") == "ByteLevel" and not parts[1].get("use_regex", True))


def _write_bpe_files(folder: Path, model: dict) -> list[str]:
    vocab = model["vocab"]
    # tokenizers >= 0.20 stores a merge as a pair, older ones as "a b": merges.txt wants the latter
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")
    return ["vocab.json", "merges.txt"]
