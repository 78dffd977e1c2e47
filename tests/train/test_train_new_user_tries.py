"""Found by trying `vlmtrain` as a new user would (2026-12-02): each wrong input stops with exit 2
and a message, before anything is written or a minute is spent waiting on the network."""
from __future__ import annotations

import json
import time

from train_helpers import REPO, read_metrics, run_vlmtrain, tiny_config, write_config


def test_generate_with_a_file_that_is_no_image_says_so_before_loading_a_model(tmp_path):
    fake = tmp_path / "fake.jpg"
    fake.write_text("not an image")
    r = run_vlmtrain("generate", tmp_path / "no-run", "-i", fake, "-p", "hi")
    assert r.code == 2, r.err
    assert f"{fake} is not an image this can read" in r.err and "Traceback" not in r.err


def test_a_stage2_adapter_that_is_no_projector_file_stops_before_anything_is_written(instruct_blend, tmp_path):
    fake = tmp_path / "mm_projector.bin"
    fake.write_text("not a checkpoint")
    cfg = write_config(tmp_path / "s2.yaml", tiny_config(instruct_blend, tmp_path / "out", pretrain_mm_mlp_adapter=str(fake)))
    r = run_vlmtrain("run", cfg)
    assert r.code == 2, r.err
    assert f"{fake} is not a stage-1 mm_projector.bin" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "out").exists()


def test_an_output_dir_that_cannot_be_made_is_a_clear_error(instruct_blend, tmp_path):
    cfg = write_config(tmp_path / "s2.yaml", tiny_config(instruct_blend, "/proc/vlmtrain-nope"))
    r = run_vlmtrain("run", cfg)
    assert r.code == 2, r.err
    assert "/proc/vlmtrain-nope" in r.err and "Traceback" not in r.err


def test_a_chain_checks_every_stages_dataset_before_the_first_stage(caption_blend, instruct_blend, tmp_path):
    s1 = write_config(tmp_path / "s1.yaml", tiny_config(caption_blend, tmp_path / "r1", stage=1, version="plain"))
    s2 = write_config(tmp_path / "s2.yaml", tiny_config(tmp_path / "no-such-blend", tmp_path / "r2"))
    r = run_vlmtrain("run", s1, s2)
    assert r.code == 2, r.err
    assert "no-such-blend" in r.err and str(s2) in r.err
    assert not (tmp_path / "r1").exists()  # stage 1 never started


def test_a_model_path_that_is_neither_a_folder_nor_reachable_fails_at_once(tmp_path):
    """Offline (here: a closed endpoint), a run folder not made yet reads like a Hub id: say both, now."""
    t0 = time.monotonic()
    r = run_vlmtrain("run", REPO / "configs" / "tiny-moe-cpu-stage3.yaml", "--dry-run",
                     "--set", f"model_name_or_path={tmp_path.name}/stage2", env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": ""})
    assert r.code == 2, r.err
    assert f"'{tmp_path.name}/stage2' is not a local folder, and the Hub (127.0.0.1) cannot be reached" in r.err
    assert "run that stage first" in r.err
    assert "`vlmdata list` names them" in r.err and "ROOT/models/NAME" in r.err  # the offline way to a base model
    assert time.monotonic() - t0 < 30  # (huggingface_hub's retries took ~50 s)


def test_a_chains_dry_run_in_json_is_one_document():
    stages = [REPO / "configs" / f"tiny-moe-cpu-stage{k}.yaml" for k in (1, 2, 3)]
    r = run_vlmtrain("run", *stages, "--dry-run", "--json")
    assert r.code == 0, r.err
    assert [d["stage"] for d in json.loads(r.out)] == [1, 2, 3]
    one = run_vlmtrain("run", stages[0], "--dry-run", "--json")
    assert one.code == 0 and json.loads(one.out)["stage"] == 1  # one stage: one object, as before


def test_a_resumed_run_says_from_where_and_its_logs_hold_each_step_once(instruct_blend, make_config, tmp_path, caplog):
    """Killed after step 4 but with checkpoint-2 the last whole one: the resume says so, and the
    rows of steps 3-4 (and a half-written line) leave metrics.jsonl and the samples log before the
    resumed run writes those steps again."""
    import logging

    cfg = make_config(instruct_blend, "cut", max_steps=4, save_steps=2, save_total_limit=5, sample_log=True)
    assert run_vlmtrain("run", cfg).code == 0
    out = tmp_path / "cut"
    (out / "checkpoint-4" / "trainer_state.json").unlink()  # as if killed while writing it
    (out / "vlmtrain_done.json").unlink()
    for name in ("model.safetensors", "config.json"):
        (out / name).unlink(missing_ok=True)
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 5, "lo')  # killed mid-line
    caplog.set_level(logging.INFO, logger="vlmtrain")
    r = run_vlmtrain("run", cfg, "--set", "max_steps=5", "--resume")
    assert r.code == 0, r.err
    assert any("resuming from checkpoint-2 (step 2 of 5)" in rec.getMessage() for rec in caplog.records)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4, 5]
    sampled = [json.loads(line)["step"] for line in (out / "samples" / "rank-0.jsonl").read_text().splitlines()]
    assert sampled == sorted(sampled) and len(sampled) == len(set(sampled))


def test_a_chain_wide_output_dir_is_told_to_go_into_each_yaml():
    stages = [REPO / "configs" / f"tiny-moe-cpu-stage{k}.yaml" for k in (1, 2, 3)]
    r = run_vlmtrain("run", *stages, "--dry-run", "--set", "output_dir=runs/chainy")
    assert r.code == 2 and "two stages of the chain write the same output_dir" in r.err
    assert "a --set applies to every stage: set output_dir in each stage's YAML instead" in r.err


def test_a_yes_for_a_key_with_choices_lists_the_choices():
    r = run_vlmtrain("run", REPO / "configs" / "tiny-cpu.yaml", "--dry-run", "--set", "compile=yes")
    assert r.code == 2 and "`compile` is True (bool); choose one of none, layers, model" in r.err


def test_a_cpu_run_writes_nothing_on_stdout(instruct_blend, make_config, tmp_path):
    """DeepSpeed's import said "[WARNING] Setting accelerator to CPU" there, the run's only line."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    env["PYTHONPATH"] = str(REPO)
    cfg = make_config(instruct_blend, "quiet", max_steps=1)
    p = subprocess.run([sys.executable, "-m", "vlmtrain.cli", "run", str(cfg)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout == "" and "done: 1 steps" in p.stderr
    # and --dry-run counts the LLM at the size this run's trained tokenizer gives it, as the run did
    dry = run_vlmtrain("run", cfg, "--dry-run", "--json")
    assert dry.code == 0, dry.err
    llm = dry.json()["params"]["llm"]["total"]
    logged = p.stderr.split("params llm", 1)[1].split("trainable", 1)[0].strip()  # "params llm  125,376 trainable"
    assert logged == f"{llm:,}", (logged, llm)


def test_the_advice_to_train_a_finished_run_further_works_as_written(instruct_blend, make_config, tmp_path):
    cfg = make_config(instruct_blend, "done", max_steps=2)
    assert run_vlmtrain("run", cfg).code == 0
    r = run_vlmtrain("run", cfg)
    assert r.code == 2 and "holds a finished run" in r.err
    told = r.err.split("to train it further: ", 1)[1].split(" (the config", 1)[0].replace("MORE", "3")
    assert told.startswith("vlmtrain run ") and told.endswith("--resume")
    again = run_vlmtrain(*told.split()[1:])
    assert again.code == 0, again.err
    assert max(read_metrics(tmp_path / "done")) == 3


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: 2\nlearning_rate: [1e-3\n")
    r = run_vlmtrain("run", bad, "--dry-run")
    assert r.code == 2 and f"{bad}: not valid YAML at line 3, column 1" in r.err and "unicode string" not in r.err


def test_stage3_pointed_at_a_stage1_run_says_so(instruct_blend, tmp_path):
    s1 = tmp_path / "s1"
    s1.mkdir()
    (s1 / "config.json").write_text(json.dumps({"model_type": "llava"}))
    (s1 / "mm_projector.bin").write_bytes(b"x")
    cfg = tiny_config(instruct_blend, tmp_path / "s3", stage=3, random_init=False, model_name_or_path=str(s1),
                      tokenizer_train_vocab_size=None, moe_enable=True)
    r = run_vlmtrain("run", write_config(tmp_path / "s3.yaml", cfg))
    assert r.code == 2, r.err
    assert f"{s1} is a stage-1 run (its projector only)" in r.err and not (tmp_path / "s3").exists()


def test_a_tokenizer_folder_without_a_tokenizer_is_said_and_no_empty_output_dir_stays(instruct_blend, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    cfg = tiny_config(instruct_blend, tmp_path / "out", tokenizer_train_vocab_size=None, tokenizer_name_or_path=str(model))
    r = run_vlmtrain("run", write_config(tmp_path / "c.yaml", cfg))
    assert r.code == 2 and f"{model} holds no tokenizer" in r.err
    assert not (tmp_path / "out").exists()


def test_a_wrong_type_given_by_set_is_blamed_on_that_set():
    r = run_vlmtrain("run", REPO / "configs" / "tiny-cpu.yaml", "--dry-run", "--set", "learning_rate=abc")
    assert r.code == 2 and "--set learning_rate=abc: `learning_rate` must be float" in r.err, r.err


def test_training_a_finished_run_further_moves_the_weights_on_its_first_new_step(instruct_blend, make_config, tmp_path):
    """Found by trying: the first step after raising max_steps on a finished cosine run ran at the old
    schedule's last learning rate, 0 (the optimizer's saved lr), and changed nothing. It now runs at
    the new schedule's rate for that step."""
    from safetensors.torch import load_file

    cfg = make_config(instruct_blend, "further", max_steps=2, save_steps=1, save_total_limit=10)
    assert run_vlmtrain("run", cfg).code == 0
    r = run_vlmtrain("run", cfg, "--set", "max_steps=4", "--resume")
    assert r.code == 0, r.err
    out = tmp_path / "further"
    w = {k: load_file(out / f"checkpoint-{k}" / "model.safetensors") for k in (1, 2, 3)}
    moved = {k: sorted(name for name in w[k] if not w[k][name].equal(w[k - 1][name])) for k in (2, 3)}
    assert moved[3] == moved[2] and moved[2], moved  # every trained tensor moved, as in the step before


def test_an_empty_output_dir_is_refused_not_taken_for_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run_vlmtrain("run", REPO / "configs" / "tiny-cpu.yaml", "--dry-run", "--set", "output_dir=")
    assert r.code == 2 and "`output_dir` is empty (a shell variable that is not set?)" in r.err, r.err
    assert list(tmp_path.iterdir()) == []
