"""Multi-node, run for real: `vlmtrain run` started on two "nodes" of this machine (two processes, each
with its NODE_RANK, MASTER_ADDR=127.0.0.1), re-launching itself through torchrun (ZeRO-2) or the
deepspeed launcher without ssh (ZeRO-3), gloo on CPU, a tiny stage 2. The ZeRO-3 run is cut by a
SIGTERM after step 2 (a checkpoint with both ranks' partitions) and resumed with --resume on both
nodes (one cut, not two: each two-node start costs some 20 s of CPU on a 2-core box). Checked
against one process with the same global batch: the ranks' samples (sample_log) are disjoint and
together are that process's batch at every step, and the losses are the same at every step,
resumed or not.

DeepSpeed's CPU shared-memory op is not compiled (multinode/sitecustomize.py, on PYTHONPATH of every
process the launchers start)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from train_helpers import REPO, read_metrics, tiny_config
from vlmtrain.train.sample_log import read_sample_logs

STEPS, CUT, BATCH = 3, 2, 4  # global batch 4 = 2 nodes x 1 process x 2


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    # (PYTHONFAULTHANDLER: a rank that aborts, as one did at its exit once in a few full suites with
    # 'terminate called without an active exception', prints its threads' Python stacks into the
    # stderr this test shows)
    return dict(os.environ, PYTHONPATH=f"{REPO / 'tests/train/multinode'}{os.pathsep}{REPO}", CUDA_VISIBLE_DEVICES="",
                MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONFAULTHANDLER="1",
                **extra)


def _config(path: Path, blend: Path, out: Path, **over) -> Path:
    # (ddp_timeout: a rank left waiting in a collective fails in 3 minutes, with its stack, rather than in 30)
    settings = dict(max_steps=STEPS, save_steps=100, per_device_train_batch_size=BATCH, sample_log=True,
                    learning_rate=3e-3, ddp_timeout=180)
    cfg = tiny_config(blend, out, **{**settings, **over})
    path.write_text(yaml.safe_dump(cfg))
    return path


def _zero3_on_two_nodes(tmp_path: Path) -> dict:
    """The config keys of a ZeRO-3 run on two nodes, one process each, started by the deepspeed launcher
    (with NODE_RANK set on each node, the hostfile only names them: nobody is reached over ssh)."""
    hosts = tmp_path / "hostfile"
    hosts.write_text("node-a slots=1\nnode-b slots=1\n")
    return dict(num_nodes=2, num_gpus=1, launcher="deepspeed", hostfile=str(hosts),
                deepspeed=str(REPO / "configs/deepspeed/zero3.json"))


def _start_nodes(cfg: Path, *args: str, env: dict[str, str] | None = None, ranks: tuple[int, ...] = (0, 1),
                 per_rank: tuple[tuple[str, ...], ...] | None = None) -> list[subprocess.Popen]:
    """`vlmtrain run CFG` as each of ``ranks``' nodes, each in its own process group (``per_rank``: more
    arguments for each)."""
    port = _port()
    return [subprocess.Popen([sys.executable, "-m", "vlmtrain.cli", "run", str(cfg), "--set", f"master_port={port}",
                              *args, *extra], env=_env(NODE_RANK=str(rank), **(env or {})), cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
            for rank, extra in zip(ranks, per_rank or [()] * len(ranks))]


def _wait(procs: list[subprocess.Popen], timeout: int = 420) -> list[subprocess.CompletedProcess]:
    """Every node must end within ``timeout`` seconds (else: their stacks, then their trees killed)."""
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    except subprocess.TimeoutExpired:
        pytest.fail(f"the nodes did not end in {timeout} s; where each process waited:\n{_stop_hung(procs)}")
    return [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(procs, outs)]


def _two_nodes(cfg: Path, *args: str, env: dict[str, str] | None = None,
               per_rank: tuple[tuple[str, ...], ...] | None = None) -> list[subprocess.CompletedProcess]:
    """Both nodes started; both must end."""
    return _wait(_start_nodes(cfg, *args, env=env, per_rank=per_rank))


def _stop_hung(procs: list[subprocess.Popen]) -> str:
    """The nodes' whole process trees (launcher, launch, rank) print their threads' stacks (SIGUSR1:
    multinode/sitecustomize.py), one process at a time so that the stacks do not interleave in the stderr
    they share, then are killed; the nodes' stderr tails, which hold the stacks."""
    import signal
    import time

    for p in procs:
        for pid in _group(p.pid):
            try:
                os.kill(pid, signal.SIGUSR1)
            except ProcessLookupError:
                continue
            time.sleep(0.5)
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return "\n".join(f"--- node {rank} ---\n{p.communicate()[1][-8000:]}" for rank, p in enumerate(procs))


def _group(pgid: int) -> list[int]:
    """The processes of a process group (Linux: /proc/PID/stat's fifth field)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # (ended meanwhile)
            continue
        if int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


@pytest.fixture(scope="module")
def single(instruct_blend, tmp_path_factory) -> Path:
    """The reference: one process, no DeepSpeed, the whole global batch per step."""
    out = tmp_path_factory.mktemp("single") / "run"
    cfg = _config(out.parent / "single.yaml", instruct_blend, out)
    p = subprocess.run([sys.executable, "-m", "vlmtrain.cli", "run", str(cfg)], env=_env(), cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)  # two-node starts are CPU-bound: under a loaded machine they take minutes
@pytest.mark.parametrize("launcher, zero, cut", [("torchrun", "zero2", False), ("deepspeed", "zero3", True)])
def test_two_nodes_match_one_process(launcher, zero, cut, single, instruct_blend, tmp_path):
    over = dict(num_nodes=2, num_gpus=1, launcher=launcher, deepspeed=str(REPO / f"configs/deepspeed/{zero}.json"),
                per_device_train_batch_size=BATCH // 2)
    if launcher == "deepspeed":
        hosts = tmp_path / "hostfile"  # names the nodes; with NODE_RANK set nobody is reached over ssh
        hosts.write_text("node-a slots=1\nnode-b slots=1\n")
        over["hostfile"] = str(hosts)
    out = tmp_path / "run"
    cfg = _config(tmp_path / "two.yaml", instruct_blend, out, **over)

    if cut:
        stopped = _two_nodes(cfg, env={"VLMTRAIN_SIGTERM_AT_STEP": str(CUT)})
        assert all(p.returncode != 0 for p in stopped), [p.stderr[-2000:] for p in stopped]  # stopped, saved
        ckpt = out / f"checkpoint-{CUT}"
        shards = sorted(p.name for p in (ckpt / f"global_step{CUT}").iterdir())
        assert any("rank_0" in s for s in shards) and any("rank_1" in s for s in shards), shards  # both partitions
        assert max(read_metrics(out)) == CUT
    runs = _two_nodes(cfg, *(["--resume"] if cut else []))
    assert all(p.returncode == 0 for p in runs), [p.stderr[-3000:] for p in runs]
    assert all("launching:" in p.stderr and ("--no_ssh" in p.stderr) == (launcher == "deepspeed") for p in runs)

    ref, got = read_metrics(single), read_metrics(out)
    assert sorted(got) == sorted(ref) == list(range(1, STEPS + 1))
    for step in ref:
        assert got[step]["loss"] == pytest.approx(ref[step]["loss"], rel=1e-5), step
    ref_ids = {r["step"]: r["ids"] for r in read_sample_logs(single)}
    logs = read_sample_logs(out)
    for step in range(1, STEPS + 1):
        per_rank = {r["rank"]: r["ids"] for r in logs if r["step"] == step}
        assert sorted(per_rank) == [0, 1], step  # both ranks trained every step (after a resume too)
        assert not set(per_rank[0]) & set(per_rank[1]), step  # disjoint
        assert per_rank[0] + per_rank[1] == ref_ids[step], step  # together: the one process's batch


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_zero3_ranks_with_an_image_and_without_one_in_the_same_step(instruct_blend, tmp_path):
    """A text-only micro-batch runs the tower and projector too (on a black stand-in image, times zero, as
    LLaVA gives text-only samples a black image): under ZeRO-3 every rank must gather the same parameters
    in the same order, and a rank that skipped the tower aborted with gloo's 'collective mismatch' (NCCL
    would hang). One sample per rank, so some step pairs an image sample with a text-only one."""
    import datasets

    out = tmp_path / "run"
    cfg = _config(tmp_path / "z3.yaml", instruct_blend, out, max_steps=8, per_device_train_batch_size=1,
                  **_zero3_on_two_nodes(tmp_path))
    runs = _two_nodes(cfg)
    assert all(p.returncode == 0 for p in runs), [p.stderr[-3000:] for p in runs]
    ds = datasets.load_from_disk(str(instruct_blend))
    text_only = {str(i) for i, imgs in zip(ds["id"], ds["images"]) if not imgs}
    steps = {}
    for r in read_sample_logs(out):
        steps.setdefault(r["step"], {})[r["rank"]] = [i in text_only for i in r["ids"]]
    assert sorted(steps) == list(range(1, 9))
    assert any(s[0] != s[1] for s in steps.values()), steps  # the case under test happened


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_zero3_rank_whose_samples_were_all_skipped_runs_the_model_too(tmp_path):
    """bad_samples: skip leaves a micro-batch empty when its one sample's image is broken: that rank still runs
    every module (one unlabelled token, the black stand-in image) for a zero loss, or its ZeRO-3 gathers would
    not pair with the other rank's and the run would abort or hang."""
    from vlmtrain.tinydata import write_tiny_blend

    blend = write_tiny_blend(tmp_path / "blend", n=24, kind="instruct", seed=1)
    broken = sorted((blend / "images").iterdir())[::3]
    for f in broken:
        f.write_bytes(b"not a jpeg")
    out = tmp_path / "run"
    cfg = _config(tmp_path / "z3.yaml", blend, out, max_steps=8, per_device_train_batch_size=1, bad_samples="skip",
                  **_zero3_on_two_nodes(tmp_path))
    runs = _two_nodes(cfg)
    assert all(p.returncode == 0 for p in runs), [p.stderr[-3000:] for p in runs]
    steps = {}
    for r in read_sample_logs(out):
        steps.setdefault(r["step"], {})[r["rank"]] = r["ids"]
    assert sorted(steps) == list(range(1, 9))
    assert any(bool(s.get(0)) != bool(s.get(1)) for s in steps.values()), steps  # one rank's batch was emptied
    # data_report.json counts the samples skipped on both ranks (each rank sees only its own batches)
    emptied = {rank: sum(not s.get(rank) for s in steps.values()) for rank in (0, 1)}
    assert emptied[1] > 0, emptied  # (else this run would not show it)
    report = json.loads((out / "data_report.json").read_text())
    assert report["skipped_visits"] == emptied[0] + emptied[1], (report, emptied)
    assert len(set(report["skipped_ids"])) == len(report["skipped_ids"]) == report["skipped"] > 0


def _blend_with_long_answers(out: Path, n: int, words: int) -> Path:
    """Every other record's answer is ``words`` words long: more supervised tokens than one LM-head chunk."""
    import random

    import datasets

    from vlmdata import contract
    from vlmtrain.tinydata import WORDS, _draw

    (out / "images").mkdir(parents=True)
    rng = random.Random(3)
    rows: dict[str, list] = {k: [] for k in contract.REQUIRED_NAMES}
    for i in range(n):
        _draw(out / "images" / f"{i:05d}.jpg", "red", "circle", 40, rng)
        answer = " ".join(rng.choice(WORDS) for _ in range(words if i % 2 == 0 else 10)) + "."
        conv = [{"from": "human", "value": "<image>\nwhat color is it?"}, {"from": "gpt", "value": answer}]
        for key, value in ((contract.ID, f"s{i}"), (contract.SOURCE, "long"), (contract.IMAGES, [f"{i:05d}.jpg"]),
                           (contract.CONVERSATIONS, conv), (contract.N_IMAGES, 1),
                           (contract.TEXT_CHARS, sum(len(t["value"]) for t in conv))):
            rows[key].append(value)
    datasets.Dataset.from_dict(rows, features=contract.features()).save_to_disk(str(out))
    contract.write_blend_meta(out, contract.blend_meta(image_root="images", recipe="long", counts={"long": n},
                                                       dropped={}, note="long answers"))
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_zero3_ranks_whose_answers_need_different_numbers_of_head_chunks(tmp_path):
    """The LM head runs on supervised positions in chunks of 8,192 rows, and ZeRO-3 gathers its weight at
    each call: every rank now calls it as often as the rank with the most chunks (empty calls included).
    A rank with a long answer next to one with a short answer aborted ('collective mismatch')."""
    blend = _blend_with_long_answers(tmp_path / "blend", n=8, words=8400)
    out = tmp_path / "run"
    cfg = _config(tmp_path / "z3.yaml", blend, out, max_steps=4, per_device_train_batch_size=1, model_max_length=9000,
                  text_config=dict(tiny_config(blend, out)["text_config"], max_position_embeddings=9216),
                  **_zero3_on_two_nodes(tmp_path))
    runs = _two_nodes(cfg)
    assert all(p.returncode == 0 for p in runs), [p.stderr[-3000:] for p in runs]
    long = {f"s{i}" for i in range(0, 8, 2)}
    steps: dict[int, dict] = {}
    for r in read_sample_logs(out):
        steps.setdefault(r["step"], {})[r["rank"]] = bool(set(r["ids"]) & long)
    assert any(s[0] != s[1] for s in steps.values()), steps  # a long answer beside a short one happened


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_stage3_rank_whose_first_batch_was_skipped_joins_the_first_log(tmp_path):
    """Stage 3 logs its routing stats with an all-reduce at every log; a rank whose first micro-batches were all
    skipped (bad_samples: skip) had no stats window yet, skipped that all-reduce, and both ranks hung."""
    from vlmtrain.tinydata import write_tiny_blend
    from vlmtrain.train.trainer import SeededRandomSampler

    seed = 7
    blend = write_tiny_blend(tmp_path / "blend", n=24, kind="caption", seed=2)  # (every record has an image)
    first_of_rank1 = list(SeededRandomSampler(24, seed))[1]  # one sample per rank: the order's second is rank 1's
    (blend / "images" / f"{first_of_rank1:05d}.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "run"
    cfg = _config(tmp_path / "z3.yaml", blend, out, stage=3, version="plain", moe_mode="sparse", train_modules=["mlp"],
                  num_experts=4, top_k_experts=2, bad_samples="skip", seed=seed, max_steps=3,
                  per_device_train_batch_size=1, **_zero3_on_two_nodes(tmp_path))
    runs = _two_nodes(cfg)
    assert all(p.returncode == 0 for p in runs), [p.stderr[-3000:] for p in runs]
    first = {r["rank"]: r["ids"] for r in read_sample_logs(out) if r["step"] == 1}
    assert first[1] == [] and first[0], first  # the case under test happened
    assert "moe/aux_loss" in read_metrics(out)[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_nodes_that_see_different_checkpoints_refuse_together(instruct_blend, tmp_path):
    """output_dir on each node's own disk (here: node 1 gets another folder): node 1 holds only its ZeRO shards of
    checkpoint-2, no trainer_state.json (rank 0's), so it saw no complete checkpoint and started from step 0 beside
    a node that resumed. Now every rank says what it sees and both stop with the same error."""
    cfg = _config(tmp_path / "z3.yaml", instruct_blend, tmp_path / "out0", max_steps=4, per_device_train_batch_size=2,
                  **_zero3_on_two_nodes(tmp_path))

    def per_node(*args: str, env=None):
        outs = tuple(("--set", f"output_dir={tmp_path / f'out{rank}'}") for rank in (0, 1))
        return [(p.stdout, p.stderr, p.returncode) for p in _two_nodes(cfg, *args, env=env, per_rank=outs)]

    cut = per_node(env={"VLMTRAIN_SIGTERM_AT_STEP": "2"})
    assert all(rc != 0 for _, _, rc in cut)
    assert (tmp_path / "out0" / "checkpoint-2" / "trainer_state.json").is_file()
    assert not (tmp_path / "out1" / "checkpoint-2" / "trainer_state.json").exists()
    runs = per_node("--resume")
    for _, err, rc in runs:
        assert rc != 0 and "the ranks do not see the same run" in err, err[-3000:]
        assert "rank 1: --resume, sees no complete checkpoint" in err and "one folder every node shares" in err


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_node_that_stops_answering_makes_the_other_fail_within_ddp_timeout(instruct_blend, tmp_path):
    """Node 1 frozen (SIGSTOP, as a machine that stalls) in the middle of the run: node 0's rank waits in a
    collective for ``ddp_timeout`` seconds and fails with an error instead of waiting for ever."""
    import signal
    import time

    out = tmp_path / "run"
    cfg = _config(tmp_path / "z3.yaml", instruct_blend, out, max_steps=10_000, per_device_train_batch_size=1,
                  ddp_timeout=15, **_zero3_on_two_nodes(tmp_path))
    procs = _start_nodes(cfg)
    try:
        deadline = time.monotonic() + 300
        while not (out / "metrics.jsonl").is_file() or not read_metrics(out):  # both nodes are training
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                pytest.fail(f"the nodes did not start training:\n{_stop_hung(procs)}")
            time.sleep(0.2)
        os.killpg(procs[1].pid, signal.SIGSTOP)
        stopped = time.monotonic()
        _, err = procs[0].communicate(timeout=240)
        waited = time.monotonic() - stopped
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
    assert procs[0].returncode == 1, err[-3000:]
    assert 15 <= waited < 200, (waited, err[-3000:])
    assert "error: rank 0 waited ddp_timeout (15 s) for another rank that did not join a collective" in err, err[-3000:]
    assert "the first error in the other ranks' logs" in err and "--set ddp_timeout=SECONDS" in err


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("started, said", [
    ("0", ["error: rank 0: only 1 of 2 ranks joined the run within ddp_timeout (3 s)",
           "each with the same MASTER_ADDR and master_port"]),
    ("1", ["error: rank 1 could not reach rank 0 at 127.0.0.1:", "within ddp_timeout (3 s)",
           "start the command on node 0 too; check that MASTER_ADDR (127.0.0.1) names node 0"])])
def test_a_node_that_never_starts_is_said_within_ddp_timeout(started, said, instruct_blend, tmp_path):
    """Only one node started: its rank gives up on the rendezvous after ``ddp_timeout`` and says what it
    waited for and what to check, instead of a traceback from torch's store."""
    cfg = _config(tmp_path / "z3.yaml", instruct_blend, tmp_path / "run", ddp_timeout=3, **_zero3_on_two_nodes(tmp_path))
    [p] = _wait(_start_nodes(cfg, ranks=(int(started),)), timeout=240)
    assert p.returncode == 1, p.stderr[-3000:]
    for words in said:
        assert words in p.stderr, (words, p.stderr[-3000:])


def test_ranks_that_forget_resume_leave_the_runs_record_as_it_was(instruct_blend, tmp_path):
    """Found in review: launched ranks wrote vlmtrain_config.json before they refused a start without
    --resume beside a checkpoint, so the next --resume was compared with the refused config, not the
    one the checkpoint was made by. The refusal now comes first."""
    out = tmp_path / "run"
    cfg = _config(tmp_path / "two.yaml", instruct_blend, out, num_nodes=2, num_gpus=1, launcher="torchrun",
                  per_device_train_batch_size=BATCH // 2)
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "trainer_state.json").write_text("{}")  # (complete, as far as a start can tell)
    record = out / "vlmtrain_config.json"
    record.write_text('{"learning_rate": 0.003, "made_by": "the run that saved checkpoint-2"}')
    runs = _two_nodes(cfg, "--set", "learning_rate=1e-4")
    for p in runs:
        assert p.returncode != 0 and "already has checkpoint-2" in p.stderr, p.stderr[-3000:]  # (torchrun: 1)
    assert record.read_text() == '{"learning_rate": 0.003, "made_by": "the run that saved checkpoint-2"}'


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_ranks_resumed_in_their_second_epoch_take_its_order(instruct_blend, tmp_path):
    """Found in review: the Trainer's set_epoch did not reach the sampler of a loader resumed on several
    ranks (accelerate's SkipBatchSampler around its BatchSamplerShard), so the rest of a resumed second
    epoch went in the first epoch's order. 24 samples, 4 a step: steps 7-8 are the second epoch's; the
    run is stopped after step 7 and resumed, and step 8 must be the uninterrupted run's step 8."""
    steps = dict(max_steps=8, num_train_epochs=2)
    ref_out = tmp_path / "single"
    ref = subprocess.run([sys.executable, "-m", "vlmtrain.cli", "run",
                          str(_config(tmp_path / "single.yaml", instruct_blend, ref_out, **steps))],
                         env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "run"
    cfg = _config(tmp_path / "two.yaml", instruct_blend, out, num_nodes=2, num_gpus=1, launcher="torchrun",
                  per_device_train_batch_size=BATCH // 2, **steps)
    stopped = _two_nodes(cfg, env={"VLMTRAIN_SIGTERM_AT_STEP": "7"})
    assert all(p.returncode != 0 for p in stopped) and (out / "checkpoint-7").is_dir()
    runs = _two_nodes(cfg, "--resume")
    assert all(p.returncode == 0 for p in runs), [p.stderr[-3000:] for p in runs]
    want = {r["step"]: r["ids"] for r in read_sample_logs(ref_out)}
    assert want[8] != want[2]  # (else the test could not tell the two epochs' orders apart)
    got = {}
    for r in read_sample_logs(out):
        got.setdefault(r["step"], {})[r["rank"]] = r["ids"]
    assert got[8][0] + got[8][1] == want[8]
    assert read_metrics(out)[8]["loss"] == pytest.approx(read_metrics(ref_out)[8]["loss"], rel=1e-5)


def test_a_checkpoint_is_marked_complete_after_every_ranks_files(instruct_blend, tmp_path):
    """Found in review: rank 0 wrote trainer_state.json (what makes a checkpoint complete) and deleted the
    older checkpoint without waiting for the other ranks' RNG state and logging window; a kill in between
    left the only checkpoint looking complete without them. Rank 1 is made 2 s slow to write its window."""
    out = tmp_path / "run"
    cfg = _config(tmp_path / "two.yaml", instruct_blend, out, num_nodes=2, num_gpus=1, launcher="torchrun",
                  per_device_train_batch_size=BATCH // 2, max_steps=2, save_steps=1)
    runs = _two_nodes(cfg, env={"VLMTEST_SLOW_SAVE_RANK": "1"})
    assert all(p.returncode == 0 for p in runs), [p.stderr[-3000:] for p in runs]
    ckpt = out / "checkpoint-2"
    marked = (ckpt / "trainer_state.json").stat().st_mtime_ns
    for name in ("log_window_rank-1.pt", "rng_state_1.pth", "log_window_rank-0.pt"):
        assert (ckpt / name).stat().st_mtime_ns <= marked, name
