"""The tokenizer files of a MoE-LLaVA export: MoE-LLaVA's loader runs transformers 4.37 and builds the
slow tokenizer (use_fast=False) from vocab.json / merges.txt / added_tokens.json, which transformers 5
no longer writes. Checked by building a tokenizer from those files alone with the `tokenizers` library
(what a slow GPT-2 / CodeGen tokenizer computes) and comparing ids with the saved one."""
from __future__ import annotations

import json

from vlmtrain.model.moe.legacy_tokenizer import write_legacy_tokenizer_files

TEXTS = ["the square is blue. <image>\nWhat  is\tit?<|endoftext|>", "USER: hello ASSISTANT: hi<|extra_0|>"]


def phi_tokenizer(tmp_path):
    from vlmtrain.data.templates import get_template
    from vlmtrain.data.tokenizers import train_bytelevel_bpe
    from vlmtrain.train.tokenizer import set_pad_token

    tok = train_bytelevel_bpe(["the square is blue. what is it? hello hi"] * 20 + [get_template("phi").corpus] * 4,
                              400, kind="bytelevel", workdir=tmp_path / "train")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    set_pad_token(tok, get_template("phi"))
    return tok


def from_legacy_files(folder):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    t = Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    added = json.loads((folder / "added_tokens.json").read_text())
    for content in sorted(added, key=added.get):
        assert t.add_special_tokens([AddedToken(content, special=True)]) == 1
        assert t.token_to_id(content) == added[content]  # the same id as in the run
    # a slow tokenizer also matches its special tokens already in the vocabulary (eos) whole
    conf = json.loads((folder / "tokenizer_config.json").read_text())
    t.add_special_tokens([AddedToken(conf["eos_token"], special=True)])
    return t


def test_export_writes_the_files_a_slow_tokenizer_is_built_from(tmp_path):
    tok = phi_tokenizer(tmp_path)
    out = tmp_path / "export"
    tok.save_pretrained(str(out))
    assert not (out / "vocab.json").exists()  # transformers 5 writes tokenizer.json only
    written = write_legacy_tokenizer_files(out)
    assert {"vocab.json", "merges.txt", "added_tokens.json"} <= set(written)
    legacy = from_legacy_files(out)
    for text in TEXTS:
        assert legacy.encode(text).ids == tok(text)["input_ids"], text
    conf = json.loads((out / "tokenizer_config.json").read_text())
    assert conf["tokenizer_class"] == "GPT2Tokenizer"  # transformers 4.37 has no "TokenizersBackend"
    assert conf["unk_token"] == conf["pad_token"] == "<|extra_0|>"


def test_non_bpe_tokenizer_is_left_alone(tmp_path):
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}))
    assert write_legacy_tokenizer_files(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json"]
