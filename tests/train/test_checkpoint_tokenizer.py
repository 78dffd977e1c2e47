"""A mid-run ``checkpoint-N`` folder carries the slow-tokenizer files the run's final output has
(vlmtrain.data.slow_tokenizer_files): the SentencePiece ``tokenizer.model``, ``added_tokens.json`` and the
slow fields of tokenizer_config.json, so MoE-LLaVA's / LLaVA's loaders (transformers 4.37, ``use_fast=False``)
build the run's tokenizer from a checkpoint as from the final folder. Checked on a tiny Llama run with a
SentencePiece tokenizer trained on the fly: a checkpoint saved every ``save_steps``, one saved on SIGTERM,
and one saved after ``--resume``."""
from __future__ import annotations

import json

from train_helpers import run_vlmtrain

from vlmtrain.data.templates import VICUNA_SYSTEM

TEXTS = [f"{VICUNA_SYSTEM} USER: <image>\nwhat color is the square? ASSISTANT: red</s>USER: and? ASSISTANT: blue",
         "USER: hello ASSISTANT:"]


def test_every_checkpoint_carries_the_slow_tokenizer_files_of_the_final_output(instruct_blend, make_config,
                                                                                 tmp_path):
    from transformers import AutoTokenizer

    from tests.slow_llama_tokenizer import slow_llama_ids, transformers_437_ids

    cfg = make_config(instruct_blend, "run", max_steps=4, save_steps=2, save_total_limit=5)
    out = tmp_path / "run"
    r = run_vlmtrain("run", cfg, env={"VLMTRAIN_SIGNAL_AT_STEP": "3:TERM"})
    assert r.code == 143 and "stopped by SIGTERM after step 3" in r.err, r.err
    r = run_vlmtrain("run", cfg, "--resume")
    assert r.code == 0, r.err
    # checkpoint-2: a periodic save; checkpoint-3: the SIGTERM stop's; checkpoint-4: after the resume
    ckpts = [out / f"checkpoint-{n}" for n in (2, 3, 4)]
    assert all((c / "trainer_state.json").is_file() for c in ckpts)

    source = (out / "tokenizer" / "tokenizer.model").read_bytes()  # the SentencePiece model trained on the fly
    assert (out / "tokenizer.model").read_bytes() == source
    final_added = json.loads((out / "added_tokens.json").read_text())
    assert "<image>" in final_added
    final_conf = json.loads((out / "tokenizer_config.json").read_text())
    # transformers 5 saves "add_prefix_space": null, which a slow LlamaTokenizer of 4.38+ (ConvLLaVA pins 4.39.3)
    # reads as no "▁" before a text (tests/train/test_convllava_reference_code.py); left out, it is the default
    assert final_conf.get("add_prefix_space", True) is not None
    fast = [AutoTokenizer.from_pretrained(str(out))(t).input_ids for t in TEXTS]
    final = [slow_llama_ids(out, t) for t in TEXTS]
    assert final == fast
    for ckpt in ckpts:
        assert (ckpt / "tokenizer.model").read_bytes() == source, ckpt.name
        assert json.loads((ckpt / "added_tokens.json").read_text()) == final_added, ckpt.name
        conf = json.loads((ckpt / "tokenizer_config.json").read_text())
        for key in ("legacy", "add_bos_token", "add_eos_token", "additional_special_tokens", "add_prefix_space"):
            assert conf.get(key) == final_conf.get(key), (ckpt.name, key)
        assert [slow_llama_ids(ckpt, t) for t in TEXTS] == final, ckpt.name
        assert [AutoTokenizer.from_pretrained(str(ckpt))(t).input_ids for t in TEXTS] == fast, ckpt.name
        assert transformers_437_ids(ckpt, TEXTS) in (None, final)
