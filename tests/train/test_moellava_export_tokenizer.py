"""The tokenizer files of a MoE-LLaVA export: MoE-LLaVA's loader runs transformers 4.37 and builds the
slow tokenizer (use_fast=False) from vocab.json / merges.txt / added_tokens.json, which transformers 5
no longer writes. Checked by building a tokenizer from those files alone with the `tokenizers` library
(what a slow GPT-2 / CodeGen tokenizer computes) and comparing ids with the saved one. For a SentencePiece
tokenizer (openchat's) the slow LlamaTokenizer is built from tokenizer.model, which the run's save keeps:
checked with SentencePiece and the added tokens (tests/slow_llama_tokenizer.py), and with a real 4.37
where one is installed."""
from __future__ import annotations

import json

from vlmtrain.data.templates import VICUNA_SYSTEM as VICUNA
from vlmtrain.model.legacy_tokenizer import write_legacy_tokenizer_files

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


OPENCHAT_TEXTS = [f"{VICUNA} USER: <image>\nwhat color is it? ASSISTANT: blue<|end_of_turn|>USER: and? ASSISTANT: red"
                  "<|end_of_turn|>", f"{VICUNA} USER: hello ASSISTANT:"]


def openchat_folder_tokenizer(tmp_path, with_model: bool = True):
    """openchat-3.5's tokenizer as vlmtrain loads it from its folder (a TokenizersBackend in transformers 5),
    set up for the openchat template; ``with_model=False``: the folder without tokenizer.model, as a
    tokenizer.json-only repo."""
    from transformers import AutoTokenizer

    from tests.slow_llama_tokenizer import openchat_like_folder
    from vlmtrain.data.templates import get_template
    from vlmtrain.train.tokenizer import set_pad_token

    template = get_template("openchat")
    texts = ["the square is blue. what is it? hello"] * 20 + [template.corpus] * 8
    folder = openchat_like_folder(tmp_path / "openchat", texts)
    if not with_model:
        (folder / "tokenizer.model").unlink()
    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    set_pad_token(tok, template)
    return folder, tok


def test_run_output_keeps_the_sentencepiece_model_of_the_tokenizers_folder(tmp_path):
    """transformers 5 saves openchat's (a Llama SentencePiece) tokenizer as tokenizer.json only; the run's
    save copies the folder's tokenizer.model and writes the added tokens and the slow fields, and the
    export names the class 4.37 builds from them: the slow tokenizer's ids are the run's."""
    from tests.slow_llama_tokenizer import slow_llama_ids, transformers_437_ids
    from vlmtrain.data.slow_tokenizer_files import save_tokenizer

    source, tok = openchat_folder_tokenizer(tmp_path)
    assert type(tok).__name__ == "TokenizersBackend"
    out = tmp_path / "run"
    tok.save_pretrained(str(out))
    assert not (out / "tokenizer.model").exists()  # what transformers 5 alone writes
    assert {"tokenizer.model", "added_tokens.json", "tokenizer_config.json"} <= set(save_tokenizer(tok, out))
    assert (out / "tokenizer.model").read_bytes() == (source / "tokenizer.model").read_bytes()
    added = json.loads((out / "added_tokens.json").read_text())
    assert added == {t: tok.convert_tokens_to_ids(t) for t in ("<|end_of_turn|>", "<|pad_0|>", "<image>")}
    conf = json.loads((out / "tokenizer_config.json").read_text())
    assert conf["legacy"] is True and conf["add_bos_token"] is True and conf["additional_special_tokens"] == ["<image>"]
    assert conf["tokenizer_class"] == "TokenizersBackend"  # a run output keeps the class transformers 5 reads
    assert write_legacy_tokenizer_files(out) == ["tokenizer_config.json"]  # the export's step
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "LlamaTokenizer"
    assert not (out / "vocab.json").exists()  # (its tokenizer.json is a BPE too, but a SentencePiece one)
    fast = [tok(t).input_ids for t in OPENCHAT_TEXTS]
    assert [slow_llama_ids(out, t) for t in OPENCHAT_TEXTS] == fast
    assert transformers_437_ids(out, OPENCHAT_TEXTS) in (None, fast)


def test_export_of_a_tokenizer_json_only_source_says_moellava_will_not_load_it(tmp_path):
    from vlmtrain.data.slow_tokenizer_files import save_tokenizer
    from vlmtrain.model.moe.checkpoint_keys import export_notes
    from vlmtrain.model.legacy_tokenizer import slow_tokenizer_problem

    _, tok = openchat_folder_tokenizer(tmp_path, with_model=False)
    out = tmp_path / "moe-llava-openchat"
    save_tokenizer(tok, out)
    write_legacy_tokenizer_files(out)
    assert not (out / "tokenizer.model").exists()
    problem = slow_tokenizer_problem(out)
    assert "has no tokenizer.model" in problem and "will not load" in problem
    assert export_notes(out, "mistral", "openchat") == [problem]  # (the name is right: nothing else to say)
    (out / "tokenizer.model").write_bytes(b"not a SentencePiece model")
    assert "without tokenizer.json's vocabulary" in slow_tokenizer_problem(out)


def test_a_legacy_llama_tokenizer_reloads_legacy(tmp_path):
    """transformers 5 does not save `legacy` and rebuilds a saved LlamaTokenizer non-legacy: the text after
    <|end_of_turn|> would be tokenised otherwise by the next stage. The save writes it from tokenizer.json."""
    from transformers import AutoTokenizer

    from vlmtrain.data.slow_tokenizer_files import save_tokenizer
    from vlmtrain.data.templates import get_template
    from vlmtrain.data.tokenizers import train_llama_sentencepiece
    from vlmtrain.train.tokenizer import set_pad_token

    tok = train_llama_sentencepiece([get_template("openchat").corpus] * 8 + ["the square is blue"] * 20, 300,
                                    legacy=True, workdir=tmp_path / "trained")
    set_pad_token(tok, get_template("openchat"))
    save_tokenizer(tok, tmp_path / "run")
    again = AutoTokenizer.from_pretrained(str(tmp_path / "run"))
    assert [again(t).input_ids for t in OPENCHAT_TEXTS] == [tok(t).input_ids for t in OPENCHAT_TEXTS]


def test_an_earlier_tokenizers_model_file_is_not_left_beside_another_tokenizer(tmp_path):
    from vlmtrain.data.slow_tokenizer_files import save_tokenizer

    _, tok = openchat_folder_tokenizer(tmp_path, with_model=False)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "tokenizer.model").write_bytes(b"an earlier run's")
    save_tokenizer(tok, tmp_path / "run")
    assert not (tmp_path / "run" / "tokenizer.model").exists()
