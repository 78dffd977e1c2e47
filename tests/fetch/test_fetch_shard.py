"""`vlmdata fetch --shard I/N`: N processes that never talk to each other fill one root, each file once.

The demo datasets (zips, JSONs, SA-1B-like tars through a links file, OCR-VQA's URL list split in
chunks of 2 records) plus a file published in three parts, from the loopback mirror.
"""
from __future__ import annotations

import json
import os
import shutil

import pytest
from fetch_helpers import root_state, sent_settled, split_dataset, start_fetch, store_tree

from vlmdata.fetch.outcome import FetchOptions
from vlmdata.fetch.shard import Shard
from vlmdata.fetch.tasks import Task, chunk_tasks, file_tasks
from vlmdata.fetch.worker import TaskRunner
from vlmdata.manifest import load_catalog
from vlmdata.state import Root

SETS = ["coco", "gqa", "ocr_vqa", "textvqa", "vg", "llava_instruct", "llava_pretrain", "sam", "split"]


@pytest.fixture
def job(demo, server, manifests):
    """``args(root, *extra)``: the fetch command line for the demo + split datasets over ``server``."""
    split_dataset(manifests, server)
    mans = f"{demo.manifests}{os.pathsep}{manifests.folder}"

    def args(root, *extra: str) -> list[str]:
        if not (root / "sam/sa1b_links.txt").exists():  # SA-1B's signed URLs, as Meta hands them out
            (root / "sam").mkdir(parents=True)
            shutil.copy(demo.sam_links, root / "sam/sa1b_links.txt")
        return ["fetch", *SETS, "--manifests", mans, "--root", str(root), "--mirror", server.url, *extra]

    args.manifests = mans
    return args


def test_three_concurrent_shards_equal_one_run_and_fetch_each_file_once(job, server, tmp_path, cli):
    one, many = tmp_path / "one", tmp_path / "many"
    r = cli(*job(one))
    assert r.code == 0, r.err
    once = sent_settled(server)
    server.reset()
    procs = [start_fetch(*job(many, "--shard", f"{i}/3", "--url-chunk", "2", "--json")) for i in range(3)]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        reports.append(json.loads(out))
    assert store_tree(many) == store_tree(one)  # file for file, byte for byte
    assert root_state(many) == root_state(one)  # the same journal, pins and URL-list report
    assert sent_settled(server) == once  # together they downloaded every byte once
    assert all(any(f["state"] == "fetched" for f in rep["files"]) for rep in reports)  # each did a share
    assert not list((many / ".vlmdata/claims").glob("*.claim"))  # every claim given back
    assert not list((many / ".vlmdata/sessions").glob("*.claim"))
    assert not (many / ".vlmdata/chunks").exists() or not any((many / ".vlmdata/chunks").iterdir())
    check = cli("verify", "--manifests", job.manifests, "--root", str(many))
    assert check.code == 0, check.out + check.err
    again = cli(*job(many, "--shard", "1/3"))
    assert again.code == 0 and "everything is already here" in again.err


def test_a_part_is_left_to_the_process_that_holds_its_whole_file(server, manifests, tmp_path):
    # That process downloads what it still lacks itself, then deletes the joined file once placed and only
    # then writes the journal: a part task must not take the moment in between for "nothing done yet".
    split_dataset(manifests, server)
    spec = load_catalog([manifests.folder]).dataset("split").file("whole.bin")
    root = Root(tmp_path / "root")
    task = next(t for t in file_tasks([spec], lambda s: False) if t.kind == "part")
    runner = TaskRunner(root, FetchOptions(mirror=server.url, jobs=1))
    other = root.claim(spec.key, "a one-machine fetch of the whole file", 60.0)
    assert other.acquire() is None
    try:
        held = runner.run(task)
    finally:
        other.release()
    assert held.outcome.state == "present" and sent_settled(server) == 0
    assert not root.download_path("split", task.part).exists()
    free = runner.run(task)  # nobody on the whole file: the part is this task's
    assert free.outcome.state == "fetched", free.outcome.error
    assert sent_settled(server) == spec.parts[0].size and root.download_path("split", task.part).exists()


def test_a_shard_split_is_deterministic_disjoint_and_even(demo):
    cat = load_catalog([demo.manifests])
    specs = cat.select_files(["coco", "gqa", "textvqa", "vg", "llava_pretrain", "llava_instruct", "sam"])
    tasks = file_tasks(specs, lambda s: False)
    shares = [Shard(i, 3).mine(tasks) for i in range(3)]
    shuffled = tasks[1::2] + tasks[::2]  # another process may list them in another order: the same shares
    assert [[t.key for t in s] for s in shares] == [sorted(t.key for t in Shard(i, 3).mine(shuffled)) for i in range(3)]
    keys = [t.key for s in shares for t in s]
    assert sorted(keys) == sorted(t.key for t in tasks) and len(set(keys)) == len(keys)
    loads = [sum(t.weight for t in s) for s in shares]
    assert max(loads) - min(loads) <= max(t.weight for t in tasks)  # within one file of even
    spec = cat.dataset("ocr_vqa").file("images-from-urls")
    chunks = list(chunk_tasks(spec, ((str(i), f"http://x/{i}.jpg") for i in range(7)), 3))
    assert [(t.key, len(t.entries)) for t in chunks] == [
        ("ocr_vqa:images-from-urls#000000", 3), ("ocr_vqa:images-from-urls#000001", 3),
        ("ocr_vqa:images-from-urls#000002", 1)]
    assert [c.chunk for c in chunks if Shard(1, 2).has_chunk(c.chunk)] == [1]
    assert isinstance(chunks[0], Task) and chunks[0].entries[0] == ("0", "http://x/0.jpg")


@pytest.mark.parametrize("bad", ["3/3", "1", "-1/2", "a/b", "0/0"])
def test_a_bad_shard_is_refused_before_anything_is_done(job, tmp_path, cli, bad):
    r = cli(*job(tmp_path / "r", "--shard", bad))
    assert r.code == 2 and "is not I/N" in r.err and "SLURM_ARRAY_TASK_ID" in r.err
    assert not (tmp_path / "r/.vlmdata").exists()


def test_ray_and_shard_together_are_refused(job, tmp_path, cli):
    r = cli(*job(tmp_path / "r", "--shard", "0/2", "--ray", "auto"))
    assert r.code == 2 and "give one of them" in r.err


@pytest.mark.parametrize("raised, said, hint", [
    (RuntimeError("bad header for https://ann:s3cret@mirror.example/split/whole.bin?X-Amz-Signature=abc123 "
                  "token hf_abcdefghijklmnopqrstuvwxyz0123"), "RuntimeError", None),
    (OSError(28, "No space left on device", "/data/root/downloads/split"), "no space", "--root"),
])
def test_a_task_failing_unexpectedly_is_said_without_credentials_and_with_what_to_do(
        server, manifests, tmp_path, monkeypatch, raised, said, hint):
    # A shard's part and URL-list chunk tasks have their own catch-all; it said the exception as it came
    # (urllib3's errors quote the URL they failed on: a mirror's user:password, a signed query string),
    # where a whole file's failure is redacted and a full disk said with what to do.
    split_dataset(manifests, server)
    spec = load_catalog([manifests.folder]).dataset("split").file("whole.bin")
    task = next(t for t in file_tasks([spec], lambda s: False) if t.kind == "part")
    runner = TaskRunner(Root(tmp_path / "root"), FetchOptions(mirror=server.url, jobs=1))

    def fails(*args, **kwargs):
        raise raised
    monkeypatch.setattr(runner.fetcher.downloader, "part", fails)
    out = runner.run(task).outcome
    assert out.state == "failed" and out.error.startswith(task.key)
    assert said.lower() in out.error.lower()
    for secret in ("s3cret", "abc123", "hf_abcdefghijklmnop"):
        assert secret not in out.error
    assert (hint is None) == (out.hint is None) and (hint is None or hint in out.hint)
