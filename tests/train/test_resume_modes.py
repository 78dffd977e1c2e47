"""Exact resume in each training mode: a run stopped at a checkpoint (SIGTERM) and continued with
``--resume`` gives the uninterrupted run's log rows (loss, grad norm, learning rate, MoE stats, padding share),
the same samples per step (sample_log) and bitwise the same final weights, on CPU in fp32.

Bitwise needs one thread: with two, MKL may use fewer threads for a matmul when the machine is busy
(MKL_DYNAMIC), which changes the order of a sum; a run's numbers then differ in the last bit from the same run's
on an idle machine (seen: one run of two on this VM had its step-1 grad norm 1 ulp off, before any resume).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from train_helpers import read_metrics, run_vlmtrain, tiny_config, write_config

TIMING = ("samples_per_s", "tokens_per_s", "model_tflops_per_s", "data_wait_s", "data_wait_frac", "mfu")


pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/train/conftest.py)


def _rows(run_dir: Path) -> dict[int, dict]:
    return {s: {k: v for k, v in row.items() if k not in TIMING} for s, row in read_metrics(run_dir).items()}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for name in ("model.safetensors", "adapter_model.safetensors"):
        if (run_dir / name).is_file():
            out.update({f"{name}:{k}": v for k, v in load_file(run_dir / name).items()})
    if (run_dir / "mm_projector.bin").is_file():
        out.update({f"proj:{k}": v for k, v in torch.load(run_dir / "mm_projector.bin", weights_only=True).items()})
    assert out, f"no final weights in {run_dir}"
    return out


def assert_same_run(full: Path, cut: Path) -> None:
    a, b = _rows(full), _rows(cut)
    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    for step in a:
        assert a[step] == b[step], (step, {k: (a[step].get(k), b[step].get(k)) for k in a[step] | b[step]
                                           if a[step].get(k) != b[step].get(k)})
    if (full / "samples").is_dir():
        assert (full / "samples" / "rank-0.jsonl").read_text() == (cut / "samples" / "rank-0.jsonl").read_text()
    wa, wb = _weights(full), _weights(cut)
    assert sorted(wa) == sorted(wb)
    assert [k for k in wa if not torch.equal(wa[k], wb[k])] == []


def full_and_resumed(tmp_path: Path, make, stop: int) -> tuple[Path, Path, str]:
    """``make(name) -> config path`` (its output_dir tmp_path/name): an uninterrupted run, and one stopped after
    step ``stop`` and resumed. Returns both output folders and the resumed run's stderr."""
    full = run_vlmtrain("run", make("full"))
    assert full.code == 0, full.err[-3000:]
    cfg = make("cut")
    r = run_vlmtrain("run", cfg, env={"VLMTRAIN_SIGTERM_AT_STEP": str(stop)})
    assert r.code == 143, r.err[-3000:]
    assert (tmp_path / "cut" / f"checkpoint-{stop}" / "trainer_state.json").is_file()
    r = run_vlmtrain("run", cfg, "--resume")
    assert r.code == 0, r.err[-3000:]
    return tmp_path / "full", tmp_path / "cut", r.err


def _stage2(blend: Path, tmp_path: Path, **over):
    def make(name: str) -> Path:
        cfg = tiny_config(blend, tmp_path / name, sample_log=True, **over)
        return write_config(tmp_path / f"{name}.yaml", cfg)

    return make


# -- a checkpoint cut short -----------------------------------------------------------------------
def test_a_checkpoint_whose_trainer_state_was_cut_short_is_skipped(instruct_blend, tmp_path, caplog):
    """transformers writes trainer_state.json last, but in place (open 'w', then the JSON): a run killed in
    that write leaves the file empty or half a JSON. Resume takes the checkpoint before it and says so; it
    used to take it and stop in a JSONDecodeError traceback."""
    import logging

    make = _stage2(instruct_blend, tmp_path, max_steps=5, save_steps=2, save_total_limit=5)
    cfg = make("half")
    assert run_vlmtrain("run", cfg, env={"VLMTRAIN_SIGTERM_AT_STEP": "3"}).code == 143
    state = tmp_path / "half" / "checkpoint-3" / "trainer_state.json"
    state.write_text(state.read_text()[:40])
    from vlmtrain.train.rundir import last_complete_checkpoint

    with caplog.at_level(logging.WARNING, logger="vlmtrain"):
        assert last_complete_checkpoint(tmp_path / "half") == tmp_path / "half" / "checkpoint-2"
    assert any("checkpoint-3 is not complete" in r.getMessage() for r in caplog.records)
    state.write_text("")
    r = run_vlmtrain("run", cfg, "--resume")
    assert r.code == 0, r.err[-3000:]
    assert "Traceback" not in r.err and sorted(read_metrics(tmp_path / "half")) == [1, 2, 3, 4, 5]


# -- bad_samples: skip --------------------------------------------------------------------------
def test_skipped_samples_before_the_checkpoint_stay_in_the_data_report(tmp_path):
    """A sample skipped (its image broken) before the checkpoint is in the resumed run's data_report.json, once;
    it was dropped: the resumed process's report began empty and data_report.json was rewritten from it."""
    from vlmtrain.tinydata import write_tiny_blend

    blend = write_tiny_blend(tmp_path / "blend", n=24, kind="instruct", seed=1)
    for f in sorted((blend / "images").iterdir())[::5]:
        f.write_bytes(b"not a jpeg")
    full, cut, _ = full_and_resumed(tmp_path, _stage2(blend, tmp_path, max_steps=6, bad_samples="skip"), stop=3)
    assert_same_run(full, cut)
    a, b = (json.loads((d / "data_report.json").read_text()) for d in (full, cut))
    first = json.loads((full / "samples" / "rank-0.jsonl").read_text().splitlines()[0])
    assert len(first["ids"]) < 4  # the first step's batch lost a sample: the skip happened before the checkpoint
    assert a["skipped"] >= 2 and len(set(a["skipped_ids"])) == a["skipped"]
    for key in ("skipped", "skipped_ids", "skipped_visits", "bad_images"):
        assert b[key] == a[key], key


# -- a logging window that spans the checkpoint --------------------------------------------------
def test_a_logging_window_across_the_checkpoint_logs_what_the_uninterrupted_run_does(instruct_blend, tmp_path):
    """logging_steps: 2, stopped after step 3: the row of step 4 is the mean of steps 3 and 4 (loss, padding
    share), as without the stop; it was step 4's alone (the Trainer starts its loss sum anew at a resume)."""
    make = _stage2(instruct_blend, tmp_path, max_steps=6, logging_steps=2)
    full, cut, _ = full_and_resumed(tmp_path, make, stop=3)
    assert sorted(read_metrics(full)) == [2, 4, 6]
    assert_same_run(full, cut)


# -- stage 3 ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def phi_stage2(tmp_path_factory):
    """A finished tiny phi stage 2: stage 3's start (as in test_stage3.py)."""
    from test_stage3 import TINY_PHI
    from vlmtrain.tinydata import write_tiny_blend

    tmp = tmp_path_factory.mktemp("s2")
    blend = write_tiny_blend(tmp / "blend", n=24, kind="instruct", seed=1)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = tiny_config(blend, tmp / "out", text_config=dict(TINY_PHI), version="phi", max_steps=2)
        r = run_vlmtrain("run", write_config(tmp / "s2.yaml", cfg))
    finally:
        torch.set_num_threads(n)
    assert r.code == 0, r.err[-3000:]
    return blend, tmp / "out"


@pytest.mark.parametrize("over", [
    # top-2 with the Gumbel draw for the second expert, packed rows; the routing-stats window spans the checkpoint
    dict(top_k_experts=2, logging_steps=2, group_by_modality_length=True, packing=True),
    # top-1 at a capacity that drops routes: which tokens keep their slot is the random token selection's draw
    dict(top_k_experts=1, capacity_factor=0.5, gradient_accumulation_steps=2, per_device_train_batch_size=2),
], ids=["top2-gumbel-packing-logging2", "top1-rts-accumulation2"])
def test_stage3_resumes_exactly(phi_stage2, tmp_path, over):
    from test_stage3 import stage3_config

    blend, s2 = phi_stage2

    def make(name: str) -> Path:
        return stage3_config(tmp_path / f"{name}.yaml", blend, s2, tmp_path / name, max_steps=6, sample_log=True,
                             **over)

    full, cut, _ = full_and_resumed(tmp_path, make, stop=3)
    rows = read_metrics(full)
    assert all(r["moe/aux_loss"] > 0 for r in rows.values())
    if over["top_k_experts"] == 1:
        assert any(r["moe/dropped"] > 0 for r in rows.values())  # the draw decided something
    assert_same_run(full, cut)


# -- stage 2 modes that resume exactly already (checked here so they stay so) ---------------------
@pytest.mark.parametrize("over, stop", [
    # rows packed by first-fit decreasing: a function of the batch, which the sampler gives again
    (dict(max_steps=6, packing=True), 3),
    # LLaVA's grouping over two epochs, resumed in the second (the sampler's order is seeded by the epoch)
    (dict(max_steps=-1, num_train_epochs=2, group_by_modality_length=True), 8),
    # the seeded random order over two epochs, resumed in the second
    (dict(max_steps=-1, num_train_epochs=2), 9),
    # the checkpoint of step 2 is an accumulation boundary (a checkpoint is only ever saved at one)
    (dict(max_steps=4, gradient_accumulation_steps=2, per_device_train_batch_size=2, group_by_modality_length=True), 2),
    # LoRA: adapters, their Adam state, lora_dropout's RNG, and the projector trained beside them
    (dict(max_steps=6, lora_enable=True, lora_r=8, lora_alpha=16), 3),
], ids=["packing", "two-epochs-grouped", "two-epochs-random", "accumulation2", "lora"])
def test_stage2_mode_resumes_exactly(instruct_blend, tmp_path, over, stop):
    full, cut, _ = full_and_resumed(tmp_path, _stage2(instruct_blend, tmp_path, **over), stop=stop)
    assert_same_run(full, cut)
    if over.get("lora_enable"):
        assert (cut / "adapter_model.safetensors").is_file() and (cut / "mm_projector.bin").is_file()
        assert not (cut / "model.safetensors").exists()


# -- the chain ----------------------------------------------------------------------------------
def test_chain_stopped_in_stage2_resumes_it_and_stage3_starts_from_its_end(tmp_path):
    """1 -> 2 -> 3, stopped in stage 2: --resume skips stage 1 (its projector not rewritten), resumes stage 2
    from its checkpoint, and stage 3 starts from stage 2's final weights: every stage as in the chain run
    without a stop."""
    import yaml

    from train_helpers import REPO
    from vlmtrain.tinydata import write_tiny_blend

    cap = write_tiny_blend(tmp_path / "cap", n=12, kind="caption", seed=2)
    ins = write_tiny_blend(tmp_path / "ins", n=16, kind="instruct", seed=1)

    def chain(tag: str) -> list[Path]:
        paths = []
        for i, data, steps in ((1, cap, 2), (2, ins, 4), (3, ins, 3)):  # the stop at step 3 falls in stage 2
            c = yaml.safe_load((REPO / "configs" / f"tiny-moe-cpu-stage{i}.yaml").read_text())
            c.update(dataset_dir=str(data), output_dir=str(tmp_path / tag / f"s{i}"), max_steps=steps, report_to=[])
            paths.append(write_config(tmp_path / f"{tag}-s{i}.yaml", c))
        return paths

    assert run_vlmtrain("run", *chain("full")).code == 0
    cut = chain("cut")
    r = run_vlmtrain("run", *cut, env={"VLMTRAIN_SIGTERM_AT_STEP": "3"})
    assert r.code == 143 and f"checkpoint saved in {tmp_path / 'cut' / 's2' / 'checkpoint-3'}" in r.err, r.err[-2000:]
    assert not (tmp_path / "cut" / "s3").exists()
    projector = tmp_path / "cut" / "s1" / "mm_projector.bin"
    written = projector.stat().st_mtime_ns
    r = run_vlmtrain("run", *cut, "--resume")
    assert r.code == 0, r.err[-3000:]
    assert f"stage 1 ({cut[0]}) already finished" in r.err and projector.stat().st_mtime_ns == written
    for stage in ("s1", "s2", "s3"):
        assert_same_run(tmp_path / "full" / stage, tmp_path / "cut" / stage)
    s3 = json.loads((tmp_path / "cut" / "s3" / "vlmtrain_config.json").read_text())
    assert s3["model_name_or_path"] == str(tmp_path / "cut" / "s2")


# -- --resume over changed data ------------------------------------------------------------------
def test_resume_over_data_changed_in_place_says_so(tmp_path, caplog):
    """The same dataset_dir, blended again with other records: the checkpoint's step count now skips other
    samples of the epoch (some trained twice, some never). The config did not change, so nothing was said."""
    import logging

    from vlmtrain.tinydata import write_tiny_blend

    blend = write_tiny_blend(tmp_path / "blend", n=24, kind="instruct", seed=1)
    make = _stage2(blend, tmp_path, max_steps=6, save_steps=4, save_total_limit=5)
    cfg = make("d")
    assert run_vlmtrain("run", cfg, env={"VLMTRAIN_SIGTERM_AT_STEP": "3"}).code == 143
    write_tiny_blend(blend, n=20, kind="instruct", seed=5)
    with caplog.at_level(logging.WARNING, logger="vlmtrain"):
        r = run_vlmtrain("run", cfg, "--resume")
    assert r.code == 0, r.err[-3000:]
    said = [rec.getMessage() for rec in caplog.records if "checkpoint-3 was trained on" in rec.getMessage()]
    assert len(said) == 1 and "24 samples" in said[0] and "now 20" in said[0], said
    caplog.clear()
    # checkpoint-4 was saved on the new data: nothing to say
    assert run_vlmtrain("run", cfg, "--set", "max_steps=7", "--resume").code == 0
    assert not [rec for rec in caplog.records if "was trained on" in rec.getMessage()]


def test_resume_with_max_steps_below_the_checkpoint_says_what_the_final_model_is(instruct_blend, tmp_path, caplog):
    """max_steps lowered under the step of the checkpoint resumed from: nothing can be trained and the final
    model is that checkpoint's, not max_steps'; it printed 'step 6 of 4' and wrote the step-6 model silently."""
    import logging

    cfg = _stage2(instruct_blend, tmp_path, max_steps=6, save_steps=2, save_total_limit=5)("low")
    assert run_vlmtrain("run", cfg).code == 0
    with caplog.at_level(logging.INFO, logger="vlmtrain"):
        r = run_vlmtrain("run", cfg, "--set", "max_steps=4", "--resume")
    assert r.code == 0, r.err[-3000:]
    said = " ".join(rec.getMessage() for rec in caplog.records)
    assert "checkpoint-6 is past max_steps 4: nothing is trained and the final model is step 6's" in said, said
    assert "checkpoint-4" in said  # the one that ends at max_steps


def test_killed_after_a_periodic_checkpoint_resumes_exactly(instruct_blend, tmp_path):
    """SIGKILL after step 5 (no stop checkpoint): the resume takes the periodic checkpoint-2, whose step cuts a
    logging window (logging_steps 3), drops the log rows after it and trains steps 3-6 again as the
    uninterrupted run did."""
    make = _stage2(instruct_blend, tmp_path, max_steps=6, save_steps=2, save_total_limit=5, logging_steps=3)
    assert run_vlmtrain("run", make("full")).code == 0
    cfg = make("cut")
    assert run_vlmtrain("run", cfg).code == 0
    out = tmp_path / "cut"
    import shutil

    for p in [out / "checkpoint-4", out / "checkpoint-6", out / "vlmtrain_done.json", out / "model.safetensors"]:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 6, "lo')  # killed mid-line
    r = run_vlmtrain("run", cfg, "--resume")
    assert r.code == 0, r.err[-3000:]
    assert_same_run(tmp_path / "full", out)


def test_resume_with_only_a_cut_checkpoint_says_so_once(instruct_blend, tmp_path):
    """The first checkpoint cut short and none before it: --resume said 'no checkpoint-* folder' beside a
    checkpoint-2 folder, after the warning about it printed twice (the CLI and the run each looked)."""
    import subprocess
    import sys

    from train_helpers import REPO

    cfg = _stage2(instruct_blend, tmp_path, max_steps=4)("only")
    (tmp_path / "only" / "checkpoint-2").mkdir(parents=True)
    (tmp_path / "only" / "checkpoint-2" / "trainer_state.json").write_text('{"global_st')
    p = subprocess.run([sys.executable, "-m", "vlmtrain.cli", "run", str(cfg), "--resume"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr[-3000:]
    assert p.stderr.count("checkpoint-2 is not complete") == 1, p.stderr
    assert f"--resume: no complete checkpoint in {tmp_path / 'only'} (checkpoint-2: cut short" in p.stderr
    assert "start without --resume: the run starts over" in p.stderr
