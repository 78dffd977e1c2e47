"""MoE-LLaVA's openchat and mistral templates: prompts, ids and labels equal its ``preprocess_openchat``.

The expected ids and labels come from bench/train_data/moellava_reference.py, an independent
re-implementation of the reference algorithm. The tokenizers are Llama SentencePiece ones trained on
the fly, as openchat-3.5's (Mistral's) is: BOS added, ``<unk>`` as pad (MoE-LLaVA's
``pad_token = unk_token``), and for openchat ``<|end_of_turn|>`` one special token that is the eos.
``legacy`` decides how the text after ``<|end_of_turn|>`` is tokenised: with ``legacy=True`` the
reference's per-round count adds up; so it does on a non-legacy tokenizer that has the piece ``▁USER``
(as one trained on the template's corpus has); on a non-legacy one whose vocabulary has ``USER`` but not
``▁USER`` (traindata_helpers.corpus alone: the Llama-2 situation) every round after the first counts one
token too many, and the reference trains those samples with no loss.
"""
from __future__ import annotations

import pytest

from bench.train_data import moellava_reference as ref
from test_masking_parity import image_tokens
from test_moellava_templates import compare_random_samples, ours, reference
from traindata_helpers import conv, corpus
from vlmtrain.data import Encoder
from vlmtrain.data.templates import END_OF_TURN, VICUNA_SYSTEM, get_template

SEP2 = {"openchat": END_OF_TURN, "mistral": "</s>"}
ARITH = {"openchat": ref.OPENCHAT, "mistral": ref.MISTRAL}  # preprocess_openchat's count, each template's sep2
_TOK: dict = {}


def tokenizer(name: str, legacy: bool, with_template: bool, workdir):
    """A Llama SentencePiece tokenizer set up as vlmtrain's loader sets it for template ``name``;
    ``with_template``: its corpus has the template's strings (then ``▁USER`` is one piece)."""
    from vlmtrain.data.tokenizers import train_llama_sentencepiece
    from vlmtrain.train.tokenizer import set_pad_token

    key = (name, legacy, with_template)
    if key not in _TOK:
        template = get_template(name)
        texts = corpus(llama_like=True) + [template.corpus] * (8 if with_template else 0)
        tok = train_llama_sentencepiece(texts, 700, legacy=legacy, workdir=workdir)
        tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
        set_pad_token(tok, template)
        _TOK[key] = tok
    return _TOK[key]


@pytest.fixture(scope="module", params=[("openchat", True, True), ("mistral", True, True),
                                        ("openchat", False, True), ("openchat", False, False)],
                ids=["openchat-legacy", "mistral-legacy", "openchat-nonlegacy", "openchat-nonlegacy-split-USER"])
def shaped(request, tmp_path_factory):
    """(template, whether the reference miscounts every round after the first, tokenizer)."""
    name, legacy, with_template = request.param
    tok = tokenizer(name, legacy, with_template, tmp_path_factory.mktemp(f"{name}-{int(legacy)}-{int(with_template)}"))
    # after <|end_of_turn|> a non-legacy tokenizer writes "USER" where the round alone starts "▁USER"
    miscounts = not legacy and "▁USER" not in tok.get_vocab()
    assert miscounts == (not legacy and not with_template)  # the vocabularies are the ones meant
    return name, miscounts, tok


def trained_text(tok, ids, labels) -> str:
    """The trained tokens' pieces joined, ``▁`` as a space: the exact text they stand for."""
    return "".join(tok.convert_ids_to_tokens([i for i, lab in zip(ids, labels) if lab != -100])).replace("▁", " ")


def test_tokenizer_shape_bos_eos_and_pad_rule(shaped):
    name, _, tok = shaped
    ids = tok("hello" + SEP2[name] + "USER").input_ids
    assert ids[0] == tok.bos_token_id  # Llama's BOS, unlike phi's tokenizer
    assert tok.convert_tokens_to_ids(SEP2[name]) in ids  # the separator is one token, not its characters
    assert tok.eos_token == SEP2[name]  # `vlmtrain generate` stops at the eos
    assert tok.unk_token == "<unk>" and tok.pad_token == "<unk>" and tok.pad_token_id != tok.eos_token_id


def test_prompt_is_get_prompt_and_labels_are_the_answers(shaped):
    name, miscounts, tok = shaped
    turns = conv("<image>\nwhat color is the car?", "left", "and the dog?", "two dog")
    p = Encoder(tok, name, image_tokens(tok), 4096).prompt(turns, 1)
    end = SEP2[name]
    # conv_openchat / conv_mistral get_prompt() for these two rounds, written out
    assert p.text == (f"{VICUNA_SYSTEM} USER: <image>\nwhat color is the car? ASSISTANT: left{end}"
                      f"USER: and the dog? ASSISTANT: two dog{end}")
    assert p.text == ref.phi_prompt(turns, end)
    assert [p.text[a:b] for a, b in p.targets] == [f" left{end}", f" two dog{end}"]
    ids, labels, flagged = ours(tok, name, turns, 1)
    assert trained_text(tok, ids, labels) == f" left{end} two dog{end}"
    assert ids[0] == tok.bos_token_id and labels[0] == -100
    exp_ids, exp_lab, mismatch = reference(tok, turns, True, ARITH[name])
    assert ids == exp_ids and flagged == mismatch == miscounts
    if not miscounts:
        assert labels == exp_lab


@pytest.mark.parametrize("rounds", [1, 2, 5])
def test_masks_equal_preprocess_openchat(shaped, rounds):
    """Random samples compared with the reference (compare_random_samples): it zeroes none of them, unless
    the tokenizer miscounts, then every one of two rounds or more (the report flags exactly those)."""
    name, miscounts, tok = shaped
    seen = compare_random_samples(tok, name, rounds, ARITH[name], skip_roles=(0, 1))
    assert len(seen) >= 30 and all(mismatch == (miscounts and rounds > 1) for _, mismatch in seen)
    if not (miscounts and rounds > 1):
        assert sum(lab != -100 for labels, _ in seen for lab in labels) > 100 * rounds


def test_image_marker_stays_where_the_record_has_it(shaped):
    name, _, tok = shaped
    turns = conv("what color is the car?\n<image>", "left")
    p = Encoder(tok, name, image_tokens(tok), 4096).prompt(turns, 1)
    assert p.text == f"{VICUNA_SYSTEM} USER: what color is the car?\n<image> ASSISTANT: left{SEP2[name]}"
    exp_ids, exp_lab, mismatch = reference(tok, turns, True, ARITH[name])
    assert not mismatch and ours(tok, name, turns, 1) == (exp_ids, exp_lab, False)


def test_answer_marker_inside_a_question_is_reported(shaped):
    """A question holding " ASSISTANT: " makes the reference stop counting at that round: a mismatch, the
    whole sample trained with no loss. The report flags it; vlmtrain trains the two answers."""
    name, _, tok = shaped
    turns = conv("say ASSISTANT: now", "left sign", "and the dog?", "two")
    _, exp_lab, mismatch = reference(tok, turns, False, ARITH[name])
    assert mismatch and set(exp_lab) == {-100}
    ids, labels, flagged = ours(tok, name, turns, 0)
    assert flagged and trained_text(tok, ids, labels) == f" left sign{SEP2[name]} two{SEP2[name]}"


def test_truncated_text_only_sample_is_not_flagged(shaped):
    name, _, tok = shaped
    turns = conv("describe the picture in detail", "the man is sitting at a table")
    exp_ids, _, _ = reference(tok, turns, False, ARITH[name])
    cut = len(exp_ids) - 5
    got_ids, _, flagged = ours(tok, name, turns, 0, max_len=cut)
    _, _, mismatch = reference(tok, turns, False, ARITH[name], model_max_length=cut)
    assert got_ids == exp_ids[:cut] and not flagged and not mismatch


def test_saved_tokenizer_gives_moellavas_slow_tokenizer_the_same_ids(shaped, tmp_path):
    """A run's output and its MoE-LLaVA export keep the tokenizer.model the tokenizer was trained into:
    MoE-LLaVA's loader builds its slow LlamaTokenizer (transformers 4.37, use_fast=False) from it, the
    added tokens and tokenizer_config.json, and on this template's prompts (the image token, each round's
    end, the generation prompt) that gives the ids vlmtrain trained with, legacy or not."""
    from tests.slow_llama_tokenizer import slow_llama_ids, transformers_437_ids
    from vlmtrain.data.slow_tokenizer_files import save_tokenizer
    from vlmtrain.data.templates import generation_prompt
    from vlmtrain.model.legacy_tokenizer import write_legacy_tokenizer_files

    name, _, tok = shaped
    out = tmp_path / "export"
    save_tokenizer(tok, out)
    write_legacy_tokenizer_files(out)
    assert {"tokenizer.model", "added_tokens.json"} <= {p.name for p in out.iterdir()}  # (5 saves neither)
    encoder = Encoder(tok, name, image_tokens(tok), 4096)
    texts = [encoder.prompt(conv("<image>\nwhat color is the car?", "left", "and the dog?", "two dog"), 1).text,
             encoder.prompt(conv("is it 12 or 3.5?", "neither"), 0).text,
             generation_prompt(name, "what is in the picture?", 1, "<image>", tok)]
    assert "<image>" in texts[0] and texts[0].count(SEP2[name]) == 2 and texts[2].endswith("ASSISTANT:")
    fast = [tok(t).input_ids for t in texts]
    assert [slow_llama_ids(out, t) for t in texts] == fast
    assert transformers_437_ids(out, texts) in (None, fast)  # (a real 4.37 where one is installed)
