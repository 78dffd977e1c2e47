"""Issue 13 item 21 (trainer side): one readable line per logging step, no raw dicts, no tqdm frames off a terminal."""
from __future__ import annotations

import logging
import re

from train_helpers import run_vlmtrain


def test_training_log_is_one_readable_line_per_step(instruct_blend, make_config):
    r = run_vlmtrain("run", make_config(instruct_blend, "log", max_steps=4, save_steps=2))
    assert r.code == 0, r.err
    steps = [ln for ln in r.err.splitlines() if ln.startswith("step ")]
    assert [int(re.match(r"step (\d+)/4  loss \d+\.\d{4}  grad \S+  lr \d\.\d\de-\d\d  [\d,]+ tok/s", ln).group(1))
            for ln in steps] == [1, 2, 3, 4], r.err
    assert re.search(r"^finished at step 4 \(\d+\.\d s in this run\), mean loss \d", r.err, re.M)
    assert "{'loss'" not in r.err and "'train_runtime'" not in r.err  # Trainer's raw dicts
    assert "\r" not in r.err and "it/s]" not in r.err and "Writing model shards" not in r.err  # no tqdm frames


def test_format_step():
    from vlmtrain.progress import format_step

    line = format_step({"loss": 5.95912, "grad_norm": 0.58541, "learning_rate": 0.00983, "samples_per_s": 25.24,
                        "tokens_per_s": 1243.4, "model_tflops_per_s": 0.001, "mfu": 0.4123, "epoch": 1.0}, 3, 24)
    assert line == "step 3/24  loss 5.9591  grad 0.585  lr 9.83e-03  1,243 tok/s  25.2 samples/s  MFU 41.2%  epoch 1.00"
    assert format_step({"train_runtime": 4.887, "train_samples_per_second": 19.65, "train_steps_per_second": 4.9,
                        "train_loss": 5.908, "epoch": 8.0}, 24, 24) == "finished at step 24 (4.9 s in this run), mean loss 5.908"
    # after a resume the Trainer's mean is over this process's steps only; from the last checkpoint, over none
    assert format_step({"train_runtime": 2.0, "train_loss": 4.5, "train_loss_first_step": 11}, 24, 24) == \
        "finished at step 24 (2.0 s in this run), mean loss 4.5 over steps 11-24"
    assert format_step({"train_runtime": 0.1, "train_loss": 0.0, "train_loss_first_step": 25}, 24, 24) == \
        "finished at step 24 (0.1 s in this run), nothing left to train"
    # stage 3: six scalars per MoE layer in metrics.jsonl; the line says three things
    moe = {"loss": 2.0, "moe/aux_loss": 0.0213, "moe/dropped": 0.0125}
    for layer in range(0, 32, 2):
        moe |= {f"moe/L{layer}/aux": 0.001, f"moe/L{layer}/dropped": 0.01,
                **{f"moe/L{layer}/load_e{j}": 0.25 for j in range(4)}}
    moe["moe/L6/load_e2"], moe["moe/L6/load_e0"] = 0.41, 0.09
    assert format_step(moe, 5, 10) == "step 5/10  loss 2.0000  moe aux 0.0213  dropped 1.2%  busiest L6/e2 41% (even 25%)"
    assert len(moe) == 3 + 16 * 6  # (the caller's dict is left whole: metrics.jsonl writes it)


def test_long_passes_log_tenths_off_a_terminal(caplog):
    from vlmtrain.progress import LineProgress, progress

    bar = progress(100_000, "true token lengths", "sample", min_total=16_384)
    assert isinstance(bar, LineProgress)  # pytest's stderr is not a terminal
    with caplog.at_level(logging.INFO, logger="vlmtrain"):
        for _ in range(6):
            bar.update(16_384)
        bar.update(100_000 - 6 * 16_384)
        bar.close()
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs[0] == "true token lengths: 10% (16,384 of 100,000 samples)"
    assert msgs[-1] == "true token lengths: 100% (100,000 of 100,000 samples)"
    pcts = [int(re.search(r"(\d+)%", m).group(1)) for m in msgs]
    assert pcts == [10, 30, 40, 60, 80, 90, 100]  # one line per tenth crossed, never a redraw
    assert isinstance(progress(1000, "x", "sample", min_total=16_384), type(progress(0, "x", "s", min_total=1)))


def test_stage1_on_a_random_llm_says_why_its_loss_is_flat(caption_blend, make_config, tmp_path):
    """Issue 13 item 22: the demo's stage 1 (projector only, random frozen LLM) barely moves; the output says why."""
    r = run_vlmtrain("run", make_config(caption_blend, "s1", stage=1, version="plain", max_steps=4, learning_rate=1e-2))
    assert r.code == 0, r.err
    assert re.search(r"^loss \d\.\d{3} -> \d\.\d{3} \(mean of the first and last 1 of 4 logged steps\)$", r.err, re.M)
    assert "why it barely moves: this stage trains only the projector, and the LLM it feeds is frozen and random" in r.err
    # ... and asking that run a question says what to expect of the answer.
    g = run_vlmtrain("generate", tmp_path / "s1", "-p", "What is shown?", "--max-new-tokens", "4")
    assert g.code == 0, g.err
    assert "trained only the projector of a random LLM (random_init, stage 1): expect noise" in g.err


def test_no_excuse_for_a_stage_that_trains_the_llm(tmp_path):
    import json

    from vlmtrain.config import load_config
    from vlmtrain.progress import loss_summary

    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 6.0 - s / 4}) + "\n"
                                                    for s in range(1, 9)) + '{"step": 8, "train_runtime": 1.0}\n')
    stage2 = load_config("configs/tiny-cpu.yaml")
    assert loss_summary(str(tmp_path), stage2) == ["loss 5.625 -> 4.125 (mean of the first and last 2 of 8 logged steps)"]
    stage1 = load_config("configs/tiny-cpu.yaml", ["stage=1", "version=plain"])
    assert len(loss_summary(str(tmp_path), stage1)) == 2
    pretrained_llm = load_config("configs/llava-1.5-7b-pretrain.yaml")
    assert len(loss_summary(str(tmp_path), pretrained_llm)) == 1
    assert loss_summary(str(tmp_path / "none"), stage1) == []


def test_no_special_token_warning_from_trainer(instruct_blend, make_config):
    """Trainer warns "the tokenizer has new PAD/BOS/EOS tokens" on every vlmtrain run unless they are aligned first."""
    from transformers.trainer_utils import align_special_tokens

    from vlmtrain.config import load_config
    from vlmtrain.model.build import build_model
    from vlmtrain.progress import align_special_tokens_quietly
    from vlmtrain.train.tokenizer import load_tokenizer

    cfg = load_config(make_config(instruct_blend, "tok"))
    tok = load_tokenizer(cfg)
    model = build_model(cfg, vocab_size=len(tok), image_token_id=tok.convert_tokens_to_ids("<image>")).model
    seen: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    tu_log = logging.getLogger("transformers.trainer_utils")
    tu_log.addHandler(Catch())
    try:
        align_special_tokens_quietly(model, tok)
        assert model.config.get_text_config().pad_token_id == tok.pad_token_id
        align_special_tokens(model, tok)  # what Trainer calls: now nothing to change, nothing to say
    finally:
        tu_log.handlers = [h for h in tu_log.handlers if not isinstance(h, Catch)]
    assert not [m for m in seen if "PAD/BOS/EOS" in m], seen
