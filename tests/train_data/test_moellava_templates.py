"""MoE-LLaVA's templates (phi, qwen, stablelm): ids and labels equal its ``preprocess_phi``, token for token.
(openchat and mistral, on Llama tokenizers: test_moellava_openchat.py, with the helpers here.)

The expected ids and labels come from bench/train_data/moellava_reference.py, an independent
re-implementation of the reference algorithm. The tokenizers are trained on the fly in the shape of
the real ones: byte-level BPE with GPT-2's split (phi-2) or the tiktoken split (Qwen-1, StableLM-2's
Arcade100k), no BOS, ``<|endoftext|>`` as eos, and the pad token set the way MoE-LLaVA's train.py
sets it (vlmtrain.train.run.set_pad_token).
"""
from __future__ import annotations

import copy
import random

import pytest

from bench.train_data import moellava_reference as ref
from test_masking_parity import PER_IMAGE, collapse, image_tokens, random_sample
from traindata_helpers import conv, corpus
from vlmtrain.data import Encoder
from vlmtrain.data.templates import VICUNA_SYSTEM, get_template

SHAPES = {"phi": "bytelevel", "qwen": "tiktoken", "stablelm": "tiktoken"}
_TOK: dict = {}


@pytest.fixture(scope="module", params=list(SHAPES))
def shaped(request, tmp_path_factory):
    """(template name, tokenizer) for each MoE-LLaVA LLM family."""
    from vlmtrain.data.tokenizers import train_bytelevel_bpe
    from vlmtrain.train.tokenizer import set_pad_token

    name = request.param
    if name not in _TOK:
        template = get_template(name)
        texts = corpus(llama_like=False) + [template.corpus] * 8
        extra = ("<|extra_0|>",) if name == "qwen" else ()
        tok = train_bytelevel_bpe(texts, 600, kind=SHAPES[name], workdir=tmp_path_factory.mktemp(name),
                                  extra_special=extra)
        tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
        set_pad_token(tok, template)
        _TOK[name] = tok
    return name, _TOK[name]


def reference(tok, turns, has_image, arith=ref.PHI, model_max_length=2048):
    """The reference's ids, labels and mismatch flag; ``arith``: preprocess_phi's (default) or another."""
    sources = [copy.deepcopy(turns)]
    if has_image:
        sources = ref.preprocess_multimodal(sources)
    out = ref.preprocess(sources, tok, has_image, arith, model_max_length)
    return out["input_ids"][0].tolist(), out["labels"][0].tolist(), out["mismatch"][0]


def ours(tok, template, turns, n_images, max_len=100_000):
    it = image_tokens(tok)
    enc = Encoder(tok, template, it, max_len).encode_many([(turns, n_images)], check_reference=True)[0]
    ids, labels = collapse(enc.input_ids.tolist(), enc.labels.tolist(), it.token_id)
    return ids, labels, enc.reference_masked


def compare_random_samples(tok, template, rounds, arith=ref.PHI, *, skip_roles=(0,)) -> list[tuple[list, bool]]:
    """40 random samples of ``rounds`` rounds (every other one with an image) against the reference: the
    same ids, the report flags exactly the samples the reference zeroes (those still train their real
    answers here), the same labels on the others. Samples with "ASSISTANT:" in a turn of ``skip_roles``
    (0: questions, 1: answers) are left out: the reference's own split bug, tested on its own.
    Returns the reference's labels and mismatch flag of each sample compared."""
    rng = random.Random(rounds)
    seen = []
    for n in range(40):
        with_image = n % 2 == 0
        turns = random_sample(rng, with_image)
        while len(turns) < 2 * rounds:
            turns += random_sample(rng, False)
        turns = turns[: 2 * rounds]
        if any("ASSISTANT:" in t["value"] for r in skip_roles for t in turns[r::2]):
            continue
        exp_ids, exp_lab, mismatch = reference(tok, turns, with_image, arith)
        got_ids, got_lab, flagged = ours(tok, template, turns, int(with_image))
        assert flagged == mismatch, turns  # the report counts exactly the samples the reference zeroes
        assert got_ids == exp_ids, turns
        if mismatch:  # the reference trains nothing; we train the real answers
            assert set(exp_lab) == {-100} and any(lab != -100 for lab in got_lab)
        else:
            assert got_lab == exp_lab, turns
        seen.append((exp_lab, mismatch))
    return seen


def test_tokenizer_shape_and_pad_rule(shaped):
    name, tok = shaped
    assert tok.eos_token == "<|endoftext|>"
    assert tok("hello there").input_ids[0] != tok.convert_tokens_to_ids("<|endoftext|>")  # no BOS added
    want_unk = {"phi": "<|extra_0|>", "qwen": "<|extra_0|>", "stablelm": "<|reg0|>"}[name]
    assert tok.unk_token == want_unk and tok.pad_token == want_unk
    assert tok.pad_token_id != tok.eos_token_id  # pad = eos would count every answer's eos as padding


@pytest.mark.parametrize("rounds", [1, 2, 5])
def test_masks_equal_preprocess_phi(shaped, rounds):
    name, tok = shaped
    trained = [labels for labels, mismatch in compare_random_samples(tok, name, rounds) if not mismatch]
    assert len(trained) >= 30 and sum(lab != -100 for labels in trained for lab in labels) > 100 * rounds


def test_prompt_layout_and_answer_span(shaped):
    name, tok = shaped
    turns = conv("<image>\nwhat color is the car?", "left", "and the dog?", "two dog")
    p = Encoder(tok, name, image_tokens(tok), 4096).prompt(turns, 1)
    assert p.text == (f"{VICUNA_SYSTEM} USER: <image>\nwhat color is the car? ASSISTANT: left<|endoftext|>"
                      "USER: and the dog? ASSISTANT: two dog<|endoftext|>")
    assert [p.text[a:b] for a, b in p.targets] == [" left<|endoftext|>", " two dog<|endoftext|>"]
    ids, labels, _ = ours(tok, name, turns, 1)
    trained = tok.decode([i for i, l in zip(ids, labels) if l != -100])
    assert trained == " left<|endoftext|> two dog<|endoftext|>"


def test_image_marker_stays_where_the_record_has_it(shaped):
    """MoE-LLaVA's preprocess_multimodal does not move a turn's <image> to its start (LLaVA's does):
    a question ending in its image trains on that prompt."""
    name, tok = shaped
    turns = conv("what color is the car?\n<image>", "left")
    p = Encoder(tok, name, image_tokens(tok), 4096).prompt(turns, 1)
    assert p.text == f"{VICUNA_SYSTEM} USER: what color is the car?\n<image> ASSISTANT: left<|endoftext|>"
    exp_ids, exp_lab, mismatch = reference(tok, turns, True)
    assert not mismatch and ours(tok, name, turns, 1)[:2] == (exp_ids, exp_lab)
    assert Encoder(tok, "vicuna_v1", image_tokens(tok), 4096).prompt(turns, 1).text.startswith(
        f"{VICUNA_SYSTEM} USER: <image>\nwhat color")  # LLaVA's templates still move it


def test_leading_gpt_turn_and_separator_inside_a_turn(shaped):
    name, tok = shaped
    lead = [{"from": "gpt", "value": "hello"}] + conv("what color?", "left")
    exp_ids, exp_lab, mismatch = reference(tok, lead, False)
    assert not mismatch and ours(tok, name, lead, 0)[:2] == (exp_ids, exp_lab)
    inside = conv("say ASSISTANT: now", "left sign", "and the dog?", "two")
    _, lab, mismatch = reference(tok, inside, False)
    assert mismatch and set(lab) == {-100}
    ids, labels, flagged = ours(tok, name, inside, 0)
    assert flagged and tok.decode([i for i, l in zip(ids, labels) if l != -100]) == " left sign<|endoftext|> two<|endoftext|>"


def test_truncated_text_only_sample_is_not_flagged(shaped):
    name, tok = shaped
    turns = conv(*(["describe the picture in detail"] * 2 + ["the man is sitting at a table"] * 2) * 3)
    exp_ids, exp_lab, mismatch = reference(tok, turns, False)
    n = len(exp_ids)
    cut = ref.preprocess_phi([copy.deepcopy(turns)], tok, has_image=False, model_max_length=n - 5)
    assert cut["input_ids"][0].tolist() == exp_ids[: n - 5] and not cut["mismatch"][0]
    got_ids, got_lab, flagged = ours(tok, name, turns, 0, max_len=n - 5)
    assert got_ids == exp_ids[: n - 5] and not flagged and not mismatch


def test_question_ending_in_the_role_marker(shaped):
    """A question ending in "ASSISTANT:" makes the reference split its round at the question's marker:
    it trains that marker as part of the answer (no mismatch, so nothing warns). We train the answer only."""
    name, tok = shaped
    turns = conv("what does the sign say ASSISTANT:", "left sign")
    exp_ids, exp_lab, mismatch = reference(tok, turns, False)
    ids, labels, flagged = ours(tok, name, turns, 0)
    assert ids == exp_ids and not mismatch and not flagged
    theirs = tok.decode([i for i, l in zip(exp_ids, exp_lab) if l != -100])
    mine = tok.decode([i for i, l in zip(ids, labels) if l != -100])
    assert theirs == " ASSISTANT: left sign<|endoftext|>" and mine == " left sign<|endoftext|>"
