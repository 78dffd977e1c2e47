"""Tokenizer files an export needs for MoE-LLaVA's loader, which runs transformers 4.37.

MoE-LLaVA's ``load_pretrained_model`` loads the tokenizer from the model's folder with
``use_fast=False``: for phi-2 that is the slow ``CodeGenTokenizer``, built from ``vocab.json`` and
``merges.txt`` (and the added tokens from ``added_tokens.json``). transformers 5 saves only
``tokenizer.json``, and names a tokenizer trained on the fly ``TokenizersBackend``, a class 4.37 does
not have. This module writes the older files from ``tokenizer.json`` (same vocabulary, same merges,
same ids), so both generations of transformers read one tokenizer.
"""
from __future__ import annotations

import json
from pathlib import Path

# GPT-2's pre-tokenizer split; a tokenizer trained on the fly for phi (vlmtrain.data.tokenizers) uses it
GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def write_legacy_tokenizer_files(folder: Path) -> list[str]:
    """Write ``vocab.json``, ``merges.txt`` and ``added_tokens.json`` for a BPE ``tokenizer.json`` in
    ``folder`` (nothing for other models), and give ``tokenizer_config.json`` a class 4.37 knows.
    Returns the names of the files written or changed."""
    folder = Path(folder)
    tj_path = folder / "tokenizer.json"
    if not tj_path.is_file():
        return []
    tj = json.loads(tj_path.read_text(encoding="utf-8"))
    model = tj.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        return []
    written = _write_bpe_files(folder, model, tj.get("added_tokens") or [])
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    # "TokenizersBackend" (v5 only) on a GPT-2-style vocabulary is what 4.37 calls GPT2Tokenizer; any
    # other split is left as it is, to fail loudly there rather than tokenise differently
    if cfg.get("tokenizer_class") == "TokenizersBackend" and _gpt2_split(tj.get("pre_tokenizer") or {}):
        cfg["tokenizer_class"] = "GPT2Tokenizer"
        cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(cfg_path.name)
    return written


def _gpt2_split(pre: dict) -> bool:
    """Whether a tokenizer.json pre-tokenizer splits as GPT-2's (byte-level, GPT-2's regex)."""
    if pre.get("type") == "ByteLevel":
        return bool(pre.get("use_regex", True))
    parts = pre.get("pretokenizers") or []
    return (pre.get("type") == "Sequence" and len(parts) == 2 and parts[0].get("type") == "Split"
            and (parts[0].get("pattern") or {}).get("Regex") == GPT2_SPLIT
            and parts[1].get("type") == "ByteLevel" and not parts[1].get("use_regex", True))


def _write_bpe_files(folder: Path, model: dict, added_tokens: list[dict]) -> list[str]:
    vocab = model["vocab"]
    # tokenizers >= 0.20 stores a merge as a pair, older ones as "a b": merges.txt wants the latter
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")
    written = ["vocab.json", "merges.txt"]
    added = {t["content"]: t["id"] for t in sorted(added_tokens, key=lambda t: t["id"]) if t["content"] not in vocab}
    if added:  # 4.37's slow tokenizer takes these with their ids (the unk / pad token and <image> among them)
        (folder / "added_tokens.json").write_text(json.dumps(added, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append("added_tokens.json")
    return written
