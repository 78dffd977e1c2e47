"""What a slow Llama tokenizer of transformers 4.37 (MoE-LLaVA's loader: ``use_fast=False``) makes of a
tokenizer folder, for tests of the files a run and an export save. transformers 5 has no slow
LlamaTokenizer any more, so ``slow_llama_ids`` computes it with SentencePiece and the added-token map
alone, as 4.37's class does; ``transformers_437_ids`` asks a real 4.37 where one is installed.

A real 4.37: ``pip install --target DIR transformers==4.37.2 tokenizers==0.15.2 huggingface_hub==0.20.3
--no-deps`` and ``VLMTRAIN_TEST_TRANSFORMERS_437=DIR`` (put first on the path of a child Python).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

SPIECE = "\u2581"
TRANSFORMERS_437 = "VLMTRAIN_TEST_TRANSFORMERS_437"


def slow_llama_ids(folder: Path, text: str) -> list[int]:
    """The ids 4.37's LlamaTokenizer gives ``text`` from ``folder``'s tokenizer.model, tokenizer_config.json
    and added tokens (added_tokens.json, and tokenizer.json's list, which 4.37 reads too): the text split at
    the added and special tokens (longest first), each stretch between them through the SentencePiece model
    (legacy: each stretch with SentencePiece's "▁" prefix; not legacy: only the text's start has one, the
    model is used without its dummy prefix), the tokens at their ids, and a BOS first where
    ``add_bos_token`` (4.37's default: yes)."""
    folder = Path(folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    legacy = cfg.get("legacy", True)  # 4.37's default
    sp = _processor(folder / "tokenizer.model", dummy_prefix=legacy)
    special = {t for t in [cfg.get(k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")]
               + list(cfg.get("additional_special_tokens") or []) if isinstance(t, str)}
    token_ids = {t: sp.piece_to_id(t) for t in special}
    token_ids.update(_read(folder / "added_tokens.json") or {})
    # 4.37 also takes tokenizer.json's added tokens (with their ids) where the folder has one
    token_ids.update({t["content"]: t["id"] for t in (_read(folder / "tokenizer.json") or {}).get("added_tokens", [])})
    if not legacy:
        text = SPIECE + text  # (4.37 prefixes the whole text, then splits it)
    ids = [token_ids[cfg["bos_token"]]] if cfg.get("add_bos_token", True) else []
    split = "|".join(re.escape(t) for t in sorted(token_ids, key=len, reverse=True))
    for n, part in enumerate(re.split(f"({split})", text)):
        if n % 2:
            ids.append(token_ids[part])
        elif part == SPIECE and not legacy and n == 0 and text[1:].startswith(tuple(special)):
            continue  # 4.37 drops the lone prefix before a special token that starts the text
        elif part:
            ids += sp.encode(part)
    if cfg.get("add_eos_token"):
        ids.append(token_ids[cfg["eos_token"]])
    return ids


def _read(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _processor(model_file: Path, *, dummy_prefix: bool):
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto.FromString(model_file.read_bytes())
    proto.normalizer_spec.add_dummy_prefix = dummy_prefix and proto.normalizer_spec.add_dummy_prefix
    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


def transformers_437_ids(folder: Path, texts: list[str]) -> list[list[int]] | None:
    """The ids a real transformers 4.37 gives ``texts`` with ``AutoTokenizer.from_pretrained(folder,
    use_fast=False)`` (MoE-LLaVA's builder.py), or None where none is installed (see the module doc)."""
    where = os.environ.get(TRANSFORMERS_437)
    if not where:
        return None
    code = ("import json, sys, transformers\n"
            "assert transformers.__version__.startswith('4.37'), transformers.__version__\n"
            "tok = transformers.AutoTokenizer.from_pretrained(sys.argv[1], use_fast=False)\n"
            "print(json.dumps([tok(t).input_ids for t in json.loads(sys.argv[2])]))\n")
    env = {**os.environ, "PYTHONPATH": where}
    done = subprocess.run([sys.executable, "-c", code, str(folder), json.dumps(texts)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def openchat_like_folder(folder: Path, texts: list[str]) -> Path:
    """A tokenizer folder shaped as a Hub Mistral / openchat-3.5 one: tokenizer.model (a SentencePiece model
    trained on ``texts`` as Llama's), tokenizer.json, ``<|end_of_turn|>`` and ``<|pad_0|>`` added after the
    pieces, ``<|end_of_turn|>`` the eos, ``legacy: true``, and a config.json naming a mistral model (with
    which transformers 5 loads it as a TokenizersBackend, as it loads openchat-3.5-1210's)."""
    from vlmtrain.data.tokenizers import train_llama_sentencepiece

    tok = train_llama_sentencepiece(texts, 700, legacy=True, workdir=folder)
    tok.add_special_tokens({"eos_token": "<|end_of_turn|>",
                            "additional_special_tokens": ["<|end_of_turn|>", "<|pad_0|>"]})
    tok.save_pretrained(str(folder))  # tokenizer.json beside the trained tokenizer.model
    cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg["legacy"] = True
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    (folder / "config.json").write_text(json.dumps({"model_type": "mistral", "architectures": ["MistralForCausalLM"]}),
                                        encoding="utf-8")
    return folder
