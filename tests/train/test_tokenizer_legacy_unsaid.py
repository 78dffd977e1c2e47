"""A SentencePiece tokenizer whose tokenizer_config.json has no ``legacy`` (transformers 5's
save_pretrained drops the key; many Hub folders never had it) is loaded with the ``legacy`` its
tokenizer.json does (found in review: transformers 5 rebuilt every such tokenizer non-legacy, so
``</s>USER`` gave ``USER`` where the original repos, on transformers 4.37, give ``▁USER``)."""
from __future__ import annotations

import json

import pytest

from train_helpers import tiny_config, write_config

TEXTS = ["USER: hello there ASSISTANT: hi</s>USER: what is this ASSISTANT: a cat"] * 50 + \
        ["USER said hello", "the cat sat on the mat"] * 50


def saved_without_the_key(folder, legacy: bool):
    """A tokenizer trained with ``legacy``, saved by transformers 5 (which writes no ``legacy``)."""
    from vlmtrain.data.tokenizers import train_llama_sentencepiece

    tok = train_llama_sentencepiece(TEXTS, 300, legacy=legacy, workdir=folder / "trained")
    tok.save_pretrained(folder / "saved")
    conf = json.loads((folder / "saved" / "tokenizer_config.json").read_text())
    assert "legacy" not in conf  # (what this test is about: if transformers starts writing it, it says so)
    return folder / "saved"


def load(tmp_path, folder):
    from vlmtrain.config import load_config
    from vlmtrain.train.tokenizer import load_tokenizer

    cfg = tiny_config(tmp_path / "missing-data", tmp_path / "out", tokenizer_train_vocab_size=None,
                      tokenizer_name_or_path=str(folder))
    return load_tokenizer(load_config(write_config(tmp_path / "c.yaml", cfg)))


@pytest.mark.parametrize("legacy, after_eos", [(True, ["▁", "USER"]), (False, ["USER"])])
def test_the_tokenizer_json_decides_where_the_config_is_silent(tmp_path, legacy, after_eos):
    tok = load(tmp_path, saved_without_the_key(tmp_path, legacy))
    assert tok.legacy is legacy
    pieces = tok.convert_ids_to_tokens(tok("hi</s>USER: x")["input_ids"])
    eos = pieces.index("</s>")
    assert pieces[eos + 1:eos + 1 + len(after_eos)] == after_eos and pieces[eos + len(after_eos) + 1] == ":"


def test_a_config_that_says_legacy_is_taken_as_it_says(tmp_path):
    folder = saved_without_the_key(tmp_path, True)
    conf = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**conf, "legacy": False}))
    assert load(tmp_path, folder).legacy is False
