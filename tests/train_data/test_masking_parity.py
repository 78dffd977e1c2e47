"""Label masking parity with LLaVA's preprocess_plain / preprocess_v1, token for token.

The expected ids and labels come from bench/train_data/llava_reference.py, an independent
re-implementation of the documented reference algorithm (tokenise the whole prompt, split rounds on
"</s>", cur_len = 1, round_len / instruction_len with "-2", the non-legacy "-1" for later rounds,
the mismatch guard). vlmtrain.data builds its masks differently (character spans of the answers
mapped through token offsets); the results must be identical, modulo the image expansion
(LLaVA's one -200 sentinel per image == our `per_image` copies of the image token id).
"""
from __future__ import annotations

import copy
import random

import pytest

from bench.train_data import llava_reference as ref
import traindata_helpers
from traindata_helpers import WORDS, conv, sentence
from vlmtrain.data import Encoder, ImageTokens, MaskError

PER_IMAGE = 5


def image_tokens(tok) -> ImageTokens:
    return ImageTokens("<image>", len(tok), PER_IMAGE)  # an id past the vocabulary, as Llava's 32000


def collapse(ids, labels, token_id):
    """Our expanded image runs -> one IMAGE_TOKEN_INDEX each (their labels must all be -100)."""
    return traindata_helpers.collapse(ids, labels, token_id, PER_IMAGE)


def random_text(rng: random.Random) -> str:
    s = sentence(rng, 1, 25)
    r = rng.random()
    if r < 0.15:
        s += rng.choice(["?", ".", "!", ":"])
    elif r < 0.25:
        s = s.capitalize() + " 2024, 3.14"
    elif r < 0.32:
        s += "\nline two"
    elif r < 0.38:
        s += " café 中文"
    elif r < 0.42:
        s = "  " + s + "  "
    elif r < 0.43:
        s = s + " ASSISTANT: not a turn"
    return s


def random_sample(rng: random.Random, with_image: bool):
    turns = []
    for k in range(rng.randint(1, 4)):
        q, a = random_text(rng).strip() or "q", random_text(rng).strip() or "a"
        if k == 0 and with_image:
            q = "<image>\n" + q if rng.random() < 0.6 else q + "\n<image>"  # at the start or at the end
        turns += [q, a]
    return conv(*turns)


def reference_v1(tok, turns, has_image, legacy_fix=True):
    sources = [copy.deepcopy(turns)]
    if has_image:
        sources = ref.preprocess_multimodal(sources)
    out = ref.preprocess_v1(sources, tok, has_image=has_image, legacy_fix=legacy_fix)
    return out["input_ids"][0].tolist(), out["labels"][0].tolist(), out["mismatch"][0]


def ours(tok, template, turns, n_images):
    it = image_tokens(tok)
    enc = Encoder(tok, template, it, 100_000).encode(turns, n_images)
    return collapse(enc.input_ids.tolist(), enc.labels.tolist(), it.token_id)


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "non-legacy"])
def test_vicuna_v1_parity_multiturn_with_and_without_image(make_tokenizer, legacy):
    tok = make_tokenizer(legacy)
    rng = random.Random(1)
    checked = trained = 0
    for n in range(80):
        with_image = n % 2 == 0
        turns = random_sample(rng, with_image)
        exp_ids, exp_lab, mismatch = reference_v1(tok, turns, with_image)
        if mismatch:  # the reference's own guard: it would train this sample with no loss
            assert any(" ASSISTANT: " in t["value"] for t in turns), turns
            continue
        got_ids, got_lab = ours(tok, "vicuna_v1", turns, int(with_image))
        assert got_ids == exp_ids, turns
        assert got_lab == exp_lab, turns
        checked += 1
        trained += sum(l != -100 for l in exp_lab)
    assert checked >= 65 and trained > 1000


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "non-legacy"])
def test_image_at_end_of_turn_moves_to_start(make_tokenizer, legacy):
    tok = make_tokenizer(legacy)
    turns = conv("what color is the car?\n<image>", "left", "and the dog?", "two dog")
    exp_ids, exp_lab, mismatch = reference_v1(tok, turns, True)
    assert not mismatch
    assert ours(tok, "vicuna_v1", turns, 1) == (exp_ids, exp_lab)
    assert exp_ids.index(ref.IMAGE_TOKEN_INDEX) < 60  # right after "USER: ", before the question


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "non-legacy"])
def test_plain_parity(make_tokenizer, legacy):
    tok = make_tokenizer(legacy)
    rng = random.Random(2)
    for n in range(40):
        caption = random_text(rng).strip() or "a dog"
        q = rng.choice(["<image>", "<image>\ndescribe the image", "describe\n<image>"])
        turns = conv(q, caption)
        out = ref.preprocess_plain(copy.deepcopy([turns]), tok)
        exp_ids, exp_lab = out["input_ids"][0].tolist(), out["labels"][0].tolist()
        got_ids, got_lab = ours(tok, "plain", turns, 1)
        assert (got_ids, got_lab) == (exp_ids, exp_lab), turns
        assert exp_lab[:2] == [-100, -100] and all(l != -100 for l in exp_lab[2:])


def test_text_only_equals_whole_prompt_tokenisation(make_tokenizer):
    tok = make_tokenizer(False)
    turns = conv("what is two and three?", "five", "and three and three?", "six")
    got_ids, _ = ours(tok, "vicuna_v1", turns, 0)
    assert got_ids == tok(ref.vicuna_prompt(turns)).input_ids


def test_the_non_legacy_correction_and_a_vocabulary_it_does_not_fit(make_tokenizer):
    """LLaVA's "-1" assumes a later round is one token shorter in context than alone. Where the
    vocabulary makes that false, the reference hits its mismatch guard and zeroes the sample
    (LLaVA#1166-style "loss 0"); we build the mask the uncorrected arithmetic gives, which is right."""
    llama_like, other = make_tokenizer(False, True), make_tokenizer(False, False)
    turns = conv("what color is the car?", "left", "and the dog?", "two dog")
    assert not reference_v1(llama_like, turns, False)[2]
    ids, lab, mismatch = reference_v1(other, turns, False)
    assert mismatch and set(lab) == {-100}
    ids0, lab0, mismatch0 = reference_v1(other, turns, False, legacy_fix=False)
    assert not mismatch0
    assert ours(other, "vicuna_v1", turns, 0) == (ids0, lab0)


def test_slow_tokenizer_path_gives_the_same(make_tokenizer):
    """Tokenizers without offsets go through prefix token counts; same ids, same labels."""
    tok = make_tokenizer(False)
    it = image_tokens(tok)
    fast, slow = Encoder(tok, "vicuna_v1", it, 100_000), Encoder(tok, "vicuna_v1", it, 100_000)
    slow._backend = None
    rng = random.Random(3)
    for n in range(20):
        turns = random_sample(rng, n % 2 == 0)
        a, b = fast.encode(turns, int(n % 2 == 0)), slow.encode(turns, int(n % 2 == 0))
        assert a.input_ids.tolist() == b.input_ids.tolist() and a.labels.tolist() == b.labels.tolist()


def test_separator_inside_a_turn_is_a_mask_failure_not_zero_loss(make_tokenizer):
    tok = make_tokenizer(True)
    turns = conv("what is this?", "a dog</s>USER: bark", "and?", "two")
    assert reference_v1(tok, turns, False)[2]  # the reference silently zeroes it
    with pytest.raises(MaskError, match="separator"):
        Encoder(tok, "vicuna_v1", image_tokens(tok), 2048).encode(turns, 0)


def test_structural_failures_are_mask_errors(make_tokenizer):
    tok = make_tokenizer(True)
    enc = Encoder(tok, "vicuna_v1", image_tokens(tok), 2048)
    with pytest.raises(MaskError, match="alternate"):
        enc.encode([{"from": "human", "value": "a"}, {"from": "human", "value": "b"}], 0)
    with pytest.raises(MaskError, match="unanswered"):
        enc.encode(conv("a", "b", "c"), 0)
    with pytest.raises(MaskError, match="marker count"):
        enc.encode(conv("<image> <image> two", "b"), 1)
    with pytest.raises(MaskError, match="text-only"):
        enc.encode(conv("<image> a", "b"), 0)
    with pytest.raises(MaskError, match="plain"):
        Encoder(tok, "plain", image_tokens(tok), 2048).encode(conv("a", "b", "c", "d"), 1)


def test_leading_gpt_turn_is_dropped_like_llava(make_tokenizer):
    tok = make_tokenizer(False)
    turns = [{"from": "gpt", "value": "hello"}] + conv("what color?", "left")
    exp_ids, exp_lab, mismatch = reference_v1(tok, turns, False)
    assert not mismatch
    assert ours(tok, "vicuna_v1", turns, 0) == (exp_ids, exp_lab)


def test_assistant_marker_inside_a_turn_is_masked_right(make_tokenizer):
    """The reference zeroes such a sample (its round split finds three parts); we train exactly the answers."""
    tok = make_tokenizer(False)
    turns = conv("say ASSISTANT: now", "left sign", "and the dog?", "two")
    assert reference_v1(tok, turns, False)[2]
    enc = Encoder(tok, "vicuna_v1", image_tokens(tok), 2048).encode(turns, 0)
    trained = [i for i, l in zip(enc.input_ids.tolist(), enc.labels.tolist()) if l != -100]
    assert tok.convert_ids_to_tokens(trained) == ["▁left", "▁sign", "</s>", "▁two", "</s>"]
