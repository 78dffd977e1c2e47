"""Found by trying vlmtrain as a new user would: wrong config paths, an output_dir it cannot use, the same command run
twice, --resume with a changed config. Each is a clear error (exit 2) or a clear note, never a traceback or a silent
overwrite."""
from __future__ import annotations

import json

from train_helpers import REPO, read_metrics, run_vlmtrain


def test_config_path_mistakes_get_a_did_you_mean(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = REPO / "configs"
    r = run_vlmtrain("run", "tiny-cpu.yaml")  # the shipped name, from another folder
    assert r.code == 2 and f"did you mean {shipped / 'tiny-cpu.yaml'}?" in r.err
    r = run_vlmtrain("run", shipped / "tiny-cpu")  # no extension
    assert r.code == 2 and f"did you mean {shipped / 'tiny-cpu.yaml'}?" in r.err
    r = run_vlmtrain("run", "llava-7b-finetune.yaml")  # close to a shipped one
    assert r.code == 2 and "llava-1.5-7b-finetune.yaml" in r.err
    r = run_vlmtrain("run", shipped)  # the folder
    assert r.code == 2 and "(it is a folder)" in r.err and "tiny-cpu.yaml" in r.err


def test_relative_dataset_dir_names_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run_vlmtrain("run", REPO / "configs" / "tiny-cpu.yaml")
    assert r.code == 2
    assert f"demo-out/root/blends/llava-665k does not exist (relative to the working directory {tmp_path})" in r.err
    assert "make demo" in r.err and "make-tiny-data" in r.err


def test_output_dir_that_cannot_be_used(instruct_blend, make_config, tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    cfg = make_config(instruct_blend, "o")
    r = run_vlmtrain("run", cfg, "--set", f"output_dir={f}")
    assert r.code == 2 and "`output_dir`" in r.err and "is a file" in r.err and "Traceback" not in r.err
    r = run_vlmtrain("run", cfg, "--set", f"output_dir={f / 'run'}")
    assert r.code == 2 and f"cannot be created: {f} is a file" in r.err


def test_the_same_command_twice_does_not_overwrite_a_finished_run(instruct_blend, make_config, tmp_path):
    cfg = make_config(instruct_blend, "done", max_steps=2)
    assert run_vlmtrain("run", cfg).code == 0
    model = tmp_path / "done" / "model.safetensors"
    before = model.stat().st_mtime_ns
    r = run_vlmtrain("run", cfg)
    assert r.code == 2 and "holds a finished run (model.safetensors)" in r.err
    assert model.stat().st_mtime_ns == before


def test_a_fresh_start_after_an_attempt_without_checkpoint_keeps_one_run_of_metrics(instruct_blend, make_config,
                                                                                      tmp_path):
    cfg = make_config(instruct_blend, "again", max_steps=3)
    assert run_vlmtrain("run", cfg, env={"VLMTRAIN_SIGNAL_AT_STEP": "2:INT+INT"}).code == 130
    r = run_vlmtrain("run", cfg)
    assert r.code == 0, r.err
    rows = [json.loads(x) for x in (tmp_path / "again" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "loss" in row] == [1, 2, 3]


def test_resume_with_another_model_is_refused_other_changes_are_listed(instruct_blend, make_config, tmp_path):
    cfg = make_config(instruct_blend, "r", max_steps=3)
    assert run_vlmtrain("run", cfg, env={"VLMTRAIN_SIGTERM_AT_STEP": "2"}).code == 143
    r = run_vlmtrain("run", cfg, "--resume", "--set", "text_config.num_hidden_layers=3")
    assert r.code == 2 and "Traceback" not in r.err
    assert "made with another model or tokenizer: `text_config`" in r.err and "vlmtrain_config.json" in r.err
    r = run_vlmtrain("run", cfg, "--resume", "--set", "learning_rate=1e-3")
    assert r.code == 0, r.err


def test_changed_settings_on_resume_are_named(instruct_blend, make_config, tmp_path, caplog):
    import logging

    from vlmtrain.config import load_config
    from vlmtrain.train import rundir

    cfg = load_config(make_config(instruct_blend, "n"))
    out = tmp_path / "n"
    out.mkdir()
    (out / rundir.CONFIG_RECORD).write_text(json.dumps(cfg.to_dict(), default=str))
    cfg.learning_rate, cfg.max_steps = 1e-4, 99
    with caplog.at_level(logging.WARNING, logger="vlmtrain"):
        rundir.check_same_run(cfg, out, "x")
    msgs = " ".join(r.getMessage() for r in caplog.records)
    assert "learning_rate 0.003 -> 0.0001" in msgs and "max_steps" not in msgs


def test_a_key_given_twice_in_the_yaml_is_an_error(tmp_path):
    import yaml

    raw = (REPO / "configs" / "tiny-cpu.yaml").read_text()
    p = tmp_path / "twice.yaml"
    p.write_text(raw + "learning_rate: 1.0e-1\n")  # tiny-cpu.yaml sets it already
    r = run_vlmtrain("run", p, "--dry-run")
    line = 1 + next(i for i, ln in enumerate(raw.splitlines()) if ln.startswith("learning_rate:"))
    assert r.code == 2 and f"`learning_rate` is given twice (lines {line} and {len(raw.splitlines()) + 1})" in r.err
    p.write_text(raw.replace("  num_hidden_layers: 2\n", "  num_hidden_layers: 2\n  num_hidden_layers: 4\n"))
    assert "`num_hidden_layers` is given twice" in run_vlmtrain("run", p, "--dry-run").err
    for shipped in sorted((REPO / "configs").glob("*.yaml")):  # none of the shipped ones does it
        from vlmtrain.yaml_strict import load

        assert load(shipped.read_text()) == yaml.safe_load(shipped.read_text()), shipped


def test_small_cli_mistakes(tmp_path):
    r = run_vlmtrain("run", REPO / "configs" / "tiny-cpu.yaml", "--json")
    assert r.code == 2 and "--json goes with --dry-run" in r.err
    r = run_vlmtrain("--version", env={"VLMTRAIN_LOG": "loud"})
    assert r.code == 0 and "VLMTRAIN_LOG=loud is not a log level" in r.err
    assert run_vlmtrain("--version", env={"VLMTRAIN_LOG": "debug"}).code == 0


def test_export_moe_llava_of_a_stage2_run_says_so_before_reading_weights(tmp_path):
    """Found by trying: it loaded the whole model (with a progress bar) and only then said the stage was wrong."""
    from vlmtrain.config import load_config

    run = tmp_path / "stage2-run"
    run.mkdir()
    cfg = load_config(REPO / "configs" / "tiny-cpu.yaml")
    (run / "vlmtrain_config.json").write_text(json.dumps(cfg.to_dict(), default=str))  # no weights at all
    r = run_vlmtrain("export-moe-llava", run, tmp_path / "out")
    assert r.code == 2 and "is a stage-2 run; MoE-LLaVA's layout is for stage-3" in r.err
    assert not (tmp_path / "out").exists()


def test_export_moe_llava_refuses_a_target_that_would_lose_something(tmp_path):
    """Found by trying: OUT was written into whatever it named, the run's own folder included (its
    config.json replaced by MoE-LLaVA's). Now OUT is replaced whole, so one that holds the run, a file
    or someone else's folder is refused before any weights are read."""
    from vlmtrain.config import load_config

    run = tmp_path / "runs" / "stage3"
    run.mkdir(parents=True)
    cfg = load_config(REPO / "configs" / "tiny-moe-cpu-stage3.yaml")
    (run / "vlmtrain_config.json").write_text(json.dumps(cfg.to_dict(), default=str))  # no weights at all
    (run / "config.json").write_text('{"ours": true, "text_config": {"model_type": "mistral"}}')
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    (tmp_path / "a-file").write_text("keep me too")
    for out, words in [(run, "holds the run"), (tmp_path / "runs", "holds the run"),
                       (other, "not empty and holds no earlier MoE-LLaVA export"), (tmp_path / "a-file", "is a file")]:
        r = run_vlmtrain("export-moe-llava", run, out)
        assert r.code == 2 and words in r.err and "nothing was written" in r.err, (out, r.err)
        if words == "holds the run":  # the hint names the folder this run's family and template load as
            assert str(tmp_path / "runs" / "moe-llava-mistral") in r.err.replace("\n", ""), r.err
    assert (run / "config.json").read_text() == '{"ours": true, "text_config": {"model_type": "mistral"}}'
    assert (other / "todo.txt").read_text() == "keep me" and (tmp_path / "a-file").read_text() == "keep me too"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "notes", "runs"]  # no temporary folder left


def test_resume_of_a_finished_run_trains_nothing_and_keeps_its_model(instruct_blend, make_config, tmp_path):
    """The Trainer resumed from the last checkpoint of a run that ended inside an epoch trained one step past
    max_steps and saved the model again; now a finished run is left as it is, unless max_steps is raised."""
    cfg = make_config(instruct_blend, "fin", max_steps=4, save_steps=2)  # 24 samples / 4: 6 steps an epoch
    assert run_vlmtrain("run", cfg).code == 0
    out = tmp_path / "fin"
    model, metrics = (out / "model.safetensors").read_bytes(), (out / "metrics.jsonl").read_text()
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    r = run_vlmtrain("run", cfg, "--resume")
    assert r.code == 0, r.err
    assert "holds this run, finished at step 4: nothing to train" in r.err and "step 5" not in r.err
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime and (out / "model.safetensors").read_bytes() == model
    assert (out / "metrics.jsonl").read_text() == metrics
    done = out / "vlmtrain_done.json"  # recorded by a vlmtrain without a key added since, at its default
    record = json.loads(done.read_text())
    del record["config"]["router_aux_loss_gradient"]
    done.write_text(json.dumps(record))
    r = run_vlmtrain("run", cfg, "--resume")
    assert r.code == 0 and "finished at step 4: nothing to train" in r.err, r.err
    r = run_vlmtrain("run", cfg, "--resume", "--set", "max_steps=6")  # what the hint says: train it further
    assert r.code == 0, r.err
    assert sorted(read_metrics(out)) == [1, 2, 3, 4, 5, 6]


def test_resume_from_a_checkpoint_of_the_last_step_writes_the_final_model_without_training(instruct_blend,
                                                                                           make_config, tmp_path):
    cfg = make_config(instruct_blend, "last", max_steps=4, save_steps=2)
    out = tmp_path / "last"
    r = run_vlmtrain("run", cfg, env={"VLMTRAIN_SIGNAL_AT_STEP": "4:TERM"})
    assert r.code == 143 and "stopped by SIGTERM after step 4" in r.err, r.err
    assert not (out / "model.safetensors").exists() and (out / "checkpoint-4").is_dir()
    r = run_vlmtrain("run", cfg, "--resume")
    assert r.code == 0, r.err
    assert sorted(read_metrics(out)) == [1, 2, 3, 4]  # no step 5
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "vlmtrain_done.json").read_text())["global_step"] == 4
