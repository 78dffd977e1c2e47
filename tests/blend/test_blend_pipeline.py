"""blend: determinism, sampling, image checks, strictness, parallel reading, atomic output.

One file of ~480 lines: these tests share the module's input writers and recipe helpers, and each
section is short; by theme they would be six files importing the same fixtures."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from blend_helpers import REPO_ROOT, PNG, Shape, rows, touch_images, turns, write_json
from vlmdata.blend import scan as scan_mod
from vlmdata.blend import writer as writer_mod
from vlmdata.blend.pipeline import Options, run_blend
from vlmdata.blend.recipe import sample_mask
from vlmdata.errors import OperationError, UserError

MIX = "llava_instruct:llava_v1_5_mix665k.json"


def recipe_file(tmp_path: Path, entries: str, *, seed: int = 0, layout: str = "llava") -> Path:
    p = tmp_path / "my-mix.toml"
    p.write_text(f'name = "my-mix"\ntitle = "t"\nlayout = "{layout}"\nseed = {seed}\n{entries}')
    return p


def data_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("data-*.arrow"))}


def test_same_inputs_same_rows_same_bytes(tree, tmp_path):
    tree.place_recipe("convllava-stage2")
    a = tree.blend("convllava-stage2", out=tmp_path / "a")
    b = tree.blend("convllava-stage2", out=tmp_path / "b", jobs=1)
    assert rows(a.out) == rows(b.out)
    assert data_files(a.out) == data_files(b.out)
    ma, mb = (json.loads((x.out / "blend.json").read_text()) for x in (a, b))
    ma.pop("created"), mb.pop("created")
    assert ma == mb


def test_parallel_ranges_equal_one_piece(tree, tmp_path):
    shape = Shape(["coco/train2017", "gqa/images"], n=900, text_only=60, ids="int", multi=True)
    tree.place(MIX, shape, indent=1)
    tree.place_recipe("llava-665k")
    one = tree.blend("llava-665k", out=tmp_path / "one", jobs=1)
    par = tree.blend("llava-665k", out=tmp_path / "par", jobs=3, parallel_min_bytes=4096)
    meta = json.loads((par.out / "blend.json").read_text())
    size = tree.root.store_path("LLaVA-Instruct-150K/llava_v1_5_mix665k.json").stat().st_size
    n_ranges = len(scan_mod.range_targets(size, 3, scan_mod.range_least(4096))) + 1
    assert n_ranges > 3 and meta["inputs"][0]["read_in_ranges"] == n_ranges
    assert rows(one.out) == rows(par.out)
    # one shard per range: the scan's files, moved in as they are
    assert len(data_files(par.out)) == n_ranges
    again = tree.blend("llava-665k", out=tmp_path / "again", jobs=3, parallel_min_bytes=4096)
    assert data_files(again.out) == data_files(par.out)


def test_bad_records_in_parallel_ranges_keep_their_lines(tree, tmp_path):
    """Lines are counted only for ranges with a bad record; each line is still the file's own."""
    recs = [{"id": f"r{i}", "image": f"coco/train2017/{i % 7}.jpg",
             "conversations": turns("<image>\nq" + " word" * (i % 13), "a" if i % 50 else "")}
            for i in range(600)]
    path = write_json(tree.root.store_path("LLaVA-Instruct-150K/llava_v1_5_mix665k.json"), recs, indent=1)
    touch_images(tree.view("llava"), [f"coco/train2017/{k}.jpg" for k in range(7)])
    starts = [n + 1 for n, line in enumerate(path.read_text().splitlines()) if line == " {"]
    want = [(i, starts[i]) for i in range(0, 600, 50)]
    for jobs, name in ((1, "one"), (3, "par")):
        res = tree.blend("llava-665k", out=tmp_path / name, jobs=jobs, parallel_min_bytes=4096)
        dropped = [json.loads(x) for x in (res.out / "dropped.jsonl").read_text().splitlines()]
        assert [(d["index"], d["line"]) for d in dropped] == want, name
    assert json.loads((res.out / "blend.json").read_text())["inputs"][0]["read_in_ranges"] > 1


def test_misaligned_range_falls_back_to_one_piece(tree, tmp_path, monkeypatch):
    tree.place(MIX, Shape(["coco/train2017"], n=400))
    tree.place_recipe("llava-665k")
    ref = rows(tree.blend("llava-665k", out=tmp_path / "ref", jobs=1).out)
    path = tree.root.store_path("LLaVA-Instruct-150K/llava_v1_5_mix665k.json")
    wrong = path.read_bytes().index(b'{"from": "gpt"', path.stat().st_size // 2)  # a turn, not a record
    monkeypatch.setattr(scan_mod, "cut_near", lambda p, targets: [0, wrong, path.stat().st_size])
    res = tree.blend("llava-665k", out=tmp_path / "fb", jobs=2, parallel_min_bytes=1024)
    assert rows(res.out) == ref
    assert json.loads((res.out / "blend.json").read_text())["inputs"][0]["read_in_ranges"] == 1


def test_sampling(tree, tmp_path):
    tree.place("sharegpt4v:sharegpt4v_instruct_gpt4-vision_cap100k.json", Shape(["coco/train2017"], n=200))
    touch_images(tree.view("sharegpt4v"), [f"coco/train2017/sharegpt4v_instruct_gpt4-vision_cap100k_{i}.jpg"
                                           for i in range(200)])
    entry = '\n[[entries]]\nname = "cap"\ndataset = "sharegpt4v"\nfile = "sharegpt4v_instruct_gpt4-vision_cap100k.json"\n'
    cat = tree.catalog

    def blend(sample, seed=0, out="o"):
        p = recipe_file(tmp_path, entry + f'sample = "{sample}"\n', seed=seed, layout="sharegpt4v")
        from vlmdata.blend.recipe import resolve

        res = resolve(cat.blend(str(p)), cat, tree.root)
        return rows(run_blend(res, Options(progress=False), tmp_path / out).out)

    first = blend("first:10")
    assert [r["id"] for r in first] == [f"sharegpt4v_instruct_gpt4-vision_cap100k_{i:06d}" for i in range(10)]
    r1, r2, r3 = blend("random:50"), blend("random:50"), blend("random:50", seed=1)
    assert len(r1) == 50 and r1 == r2 and r1 != r3
    ids = [int(r["id"].rsplit("_", 1)[1]) for r in r1]
    assert ids == sorted(ids)  # file order kept
    assert len(blend("0.25")) == 50
    assert len(blend("random:1000")) == 200
    meta = json.loads((tmp_path / "o" / "blend.json").read_text())
    assert meta["counts"]["cap"]["sampled"] == 200


def test_sample_mask_deterministic():
    a = sample_mask("random:10", 100, 3, "x")
    assert a.sum() == 10 and (a == sample_mask("random:10", 100, 3, "x")).all()
    assert not (a == sample_mask("random:10", 100, 3, "y")).all()
    assert sample_mask("all", 5, 0, "x") is None and sample_mask("1.0", 5, 0, "x") is None


def _mix_with_problems(tree):
    recs = [
        {"id": "ok", "image": "coco/train2017/1.jpg", "conversations": turns("<image>\nq", "a")},
        {"id": "gone", "image": "coco/train2017/404.jpg", "conversations": turns("<image>\nq", "a")},
        {"id": "broken", "image": "coco/train2017/bad.jpg", "conversations": turns("<image>\nq", "a")},
        {"id": "empty", "image": "coco/train2017/1.jpg", "conversations": turns("<image>\nq", "")},
        {"id": "text", "conversations": turns("q", "a")},
    ]
    path = write_json(tree.root.store_path("LLaVA-Instruct-150K/llava_v1_5_mix665k.json"), recs, indent=1)
    view = tree.view("llava")
    touch_images(view, ["coco/train2017/1.jpg"])
    touch_images(view, ["coco/train2017/bad.jpg"], data=b"not an image")
    return [n + 1 for n, line in enumerate(path.read_text().splitlines()) if line == " {"]  # line of each record


def test_missing_and_corrupt_images(tree):
    lines = _mix_with_problems(tree)
    res = tree.blend("llava-665k")
    assert [r["id"] for r in rows(res.out)] == ["ok", "broken", "text"]  # existence only: bad.jpg is a file
    deep = tree.blend("llava-665k", deep=True)
    assert [r["id"] for r in rows(deep.out)] == ["ok", "text"]
    c = deep.meta["counts"]["llava-mix665k"]
    assert c["dropped"] == {"corrupt image": 1, "empty turn value": 1, "missing image": 1}
    assert c["images"] == {"needed": 3, "present": 1, "missing": 1, "corrupt": 1}
    dropped = [json.loads(x) for x in (deep.out / "dropped.jsonl").read_text().splitlines()]
    assert [(d["index"], d["id"], d["reason"]) for d in dropped] == [
        (1, "gone", "missing image"), (2, "broken", "corrupt image"), (3, "empty", "empty turn value")]
    assert dropped[2]["line"] == lines[3] and dropped[0]["detail"] == "coco/train2017/404.jpg"
    assert set(dropped[0]) == {"source", "file", "index", "line", "id", "reason", "detail"}


def test_missing_keep_and_fail(tree):
    _mix_with_problems(tree)
    kept = tree.blend("llava-665k", missing="keep")
    assert [r["id"] for r in rows(kept.out)] == ["ok", "gone", "broken", "text"]
    assert kept.meta["counts"]["llava-mix665k"]["kept_with_missing_or_corrupt_images"] == 1
    with pytest.raises(OperationError) as e:
        tree.blend("llava-665k", missing="fail")
    assert "1 image(s) missing" in str(e.value) and "coco/train2017/404.jpg" in str(e.value)


def test_strict_fails_on_the_first_bad_record(tree):
    lines = _mix_with_problems(tree)
    with pytest.raises(UserError) as e:
        tree.blend("llava-665k", strict=True)
    msg = str(e.value)
    assert f"record 3 (line {lines[3]}), id 'empty'" in msg and "empty turn value" in msg and "llava_v1_5_mix665k.json" in msg
    assert not (tree.root.path / "blends" / "llava-665k").exists()


def test_image_sizes_and_embedded_bytes(tree):
    tree.place_recipe("llava-665k")
    res = tree.blend("llava-665k", image_sizes=True, embed_images=True)
    import datasets

    ds = datasets.load_from_disk(str(res.out))
    assert ds.column_names[-3:] == ["image_widths", "image_heights", "image_bytes"]
    r = ds[0]
    # load_from_disk users get the images decoded (datasets.Image); the bytes are the file's, with its path
    assert r["image_widths"] == [3] and r["image_heights"] == [2] and r["image_bytes"][0].size == (3, 2)
    raw = ds.with_format("arrow")[0].to_pylist()[0]["image_bytes"]
    assert raw == [{"bytes": PNG, "path": r["images"][0]}]
    text = [x for x in ds if x["n_images"] == 0]
    assert text and text[0]["image_bytes"] == [] and text[0]["image_widths"] == []


def test_image_root_choice(tree, tmp_path):
    tree.place(MIX, Shape(["coco/train2017"], n=3))
    # no layout view, but llava's folders sit at the same paths in the store: the root itself
    touch_images(tree.root.path, [f"coco/train2017/llava_v1_5_mix665k_{i}.jpg" for i in range(3)])
    res = tree.blend("llava-665k")
    assert res.meta["image_root"] == str(tree.root.path) and res.rows == 3
    # an explicit --image-root wins
    other = tmp_path / "imgs"
    touch_images(other, ["coco/train2017/llava_v1_5_mix665k_0.jpg"])
    res = tree.blend("llava-665k", image_root=other)
    assert res.meta["image_root"] == str(other) and res.rows == 1
    # sharegpt4v's store paths differ from its layout paths: build the view, or say so
    tree.place("vflan:annotation_191-task_1k.json")
    with pytest.raises(UserError) as e:
        tree.resolve("vflan")
    assert "vlmdata layout build --layout sharegpt4v" in str(e.value)


def test_layout_view_built_from_the_store(tree):
    """The ALLaVA paths resolve through the sharegpt4v view that `layout build` links from the store."""
    from vlmdata.layouts.build import build_layout

    made = tree.place_recipe("allava-caption", images=False)
    store = tree.root.path
    touch_images(store, [p for p in made["allava-laion-caption"].images])  # allava_laion/images/...
    touch_images(store / "vflan", [p.replace("allava_vflan/images/", "") for p in made["allava-vflan-caption"].images])
    build_layout(tree.catalog.layout("sharegpt4v"), tree.root)
    res = tree.blend("allava-caption")
    assert res.rows == 12 and not res.meta["totals"]["images_missing"]


def test_input_not_fetched(tree):
    with pytest.raises(UserError) as e:
        tree.resolve("llava-665k")
    assert "vlmdata fetch llava_instruct:llava_v1_5_mix665k.json" in str(e.value)


def test_error_inside_the_writer_keeps_the_previous_output(tree, monkeypatch):
    tree.place_recipe("llava-665k")
    first = tree.blend("llava-665k")
    before = {p.name: p.read_bytes() for p in first.out.iterdir()}
    tree.place(MIX, Shape(["coco/train2017"], n=3))  # a different input

    def boom(self, batch):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(writer_mod.DatasetWriter, "write", boom)
    with pytest.raises(RuntimeError):
        tree.blend("llava-665k")
    assert {p.name: p.read_bytes() for p in first.out.iterdir()} == before
    assert [p.name for p in first.out.parent.iterdir()] == ["llava-665k"]  # no temporary folder left


def test_killed_blend_keeps_the_previous_output(tree, tmp_path):
    tree.place_recipe("llava-665k")
    first = tree.blend("llava-665k")
    before = {p.name: p.read_bytes() for p in first.out.iterdir()}
    tree.place(MIX, Shape(["coco/train2017"], n=60000, text_only=1000))  # big enough to be caught mid-way
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "vlmdata.cli.app", "--root", str(tree.root.path), "blend",
                             "llava-665k", "--missing", "keep", "--jobs", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = first.out.parent
    deadline = time.time() + 60
    while not any(p.name.startswith(".tmp-llava-665k.") for p in parent.iterdir()):
        assert proc.poll() is None and time.time() < deadline, "the blend ended before it could be killed"
        time.sleep(0.01)
    tmp = next(p for p in parent.iterdir() if p.name.startswith(".tmp-llava-665k."))
    _kill_once_it_wrote_rows(proc, tmp, deadline)
    assert {p.name: p.read_bytes() for p in first.out.iterdir()} == before
    assert any(p.name.startswith(".tmp-llava-665k.") for p in parent.iterdir())  # the dead run's leftovers
    res = tree.blend("llava-665k", missing="keep")  # the next blend removes them and succeeds
    assert res.rows == 61000
    assert [p.name for p in parent.iterdir()] == ["llava-665k"]


def _kill_once_it_wrote_rows(proc: subprocess.Popen, tmp: Path, deadline: float) -> None:
    """SIGKILL ``proc`` mid-way: once rows are on disk in its temporary folder (the scan's files in
    .work, well before the shards are named and the folder replaces the output). Each look is made
    with the process stopped (SIGSTOP), so a fast machine cannot finish between the look and the kill."""
    while True:
        time.sleep(0.005)
        os.kill(proc.pid, signal.SIGSTOP)
        assert proc.poll() is None and tmp.is_dir() and time.time() < deadline, \
            "the blend ended before it could be killed"
        if any(p.is_file() and p.stat().st_size > 0 for p in tmp.rglob("*")):
            break
        os.kill(proc.pid, signal.SIGCONT)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_an_input_without_records_is_refused_and_nothing_is_written(tree):
    """An empty array is what a failed export leaves: a blend of it used to pass as an empty dataset (exit 0)."""
    path = write_json(tree.root.store_path("LLaVA-Instruct-150K/llava_v1_5_mix665k.json"), [])
    tree.view("llava").mkdir(parents=True)
    with pytest.raises(UserError) as e:
        tree.blend("llava-665k")
    msg = str(e.value)
    assert str(path) in msg and "holds no records" in msg
    assert "vlmdata fetch llava_instruct:llava_v1_5_mix665k.json --refetch" in msg and "drop the entry" in msg
    assert not (tree.root.path / "blends").exists() or list((tree.root.path / "blends").iterdir()) == []


def test_records_dropped_to_nothing_are_still_a_dataset(tree):
    """Unlike an empty input, records that all fail a check were read: the blend is written (--max-drop 100)."""
    write_json(tree.root.store_path("LLaVA-Instruct-150K/llava_v1_5_mix665k.json"),
               [{"id": "a", "image": "coco/gone.jpg", "conversations": turns("<image>\nq", "a")}])
    tree.view("llava").mkdir(parents=True)
    res = tree.blend("llava-665k")
    assert res.rows == 0 and rows(res.out) == [] and res.meta["counts"]["llava-mix665k"]["read"] == 1


def test_path_entries_and_jsonl(tree, tmp_path):
    recs = [{"id": f"r{i}", "image": f"x/{i}.jpg", "conversations": turns("<image>\nq", "a")} for i in range(5)]
    write_json(tmp_path / "in" / "recs.jsonl", recs, jsonl=True)
    touch_images(tmp_path / "imgs", [f"pre/x/{i}.jpg" for i in range(5)])
    p = recipe_file(tmp_path, f'[[entries]]\nname = "mine"\npath = "{tmp_path / "in" / "recs.jsonl"}"\n'
                              'image_prefix = "pre"\n')
    from vlmdata.blend.recipe import resolve

    res = run_blend(resolve(tree.catalog.blend(str(p)), tree.catalog, tree.root, image_root=tmp_path / "imgs"),
                    Options(progress=False), tmp_path / "out")
    got = rows(res.out)
    assert [r["images"] for r in got] == [[f"pre/x/{i}.jpg"] for i in range(5)]
    assert res.meta["recipe"]["toml"] == p.read_text()
    assert isinstance(pa.__version__, str)


def _die(task):
    os._exit(3)


def test_a_dead_worker_is_a_clear_error(tree, monkeypatch):
    tree.place(MIX, Shape(["coco/train2017"], n=300))
    tree.place_recipe("llava-665k")
    monkeypatch.setattr(scan_mod, "scan_range", _die)
    with pytest.raises(OperationError) as e:
        tree.blend("llava-665k", jobs=2, parallel_min_bytes=1024)
    assert "died" in str(e.value) and "--jobs" in str(e.value)
    assert [p.name for p in (tree.root.path / "blends").iterdir()] == []  # nothing half-written left


def test_only_dead_runs_leftovers_are_removed(tree):
    tree.place_recipe("llava-665k")
    blends = tree.root.path / "blends"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live_dir = blends / ".tmp-llava-665k.1.abc"  # pid 1 always runs
    dead_dir = blends / f".tmp-llava-665k.{dead.pid}.abc"
    old_dir = blends / f".tmp-llava-665k.old.{dead.pid}"
    for d in (live_dir, dead_dir, old_dir):
        (d / "x").mkdir(parents=True)
    tree.blend("llava-665k")
    assert sorted(p.name for p in blends.iterdir()) == [".tmp-llava-665k.1.abc", "llava-665k"]


def test_files_are_checked_the_same_in_one_thread_threads_or_processes(tmp_path, monkeypatch):
    """One stat per path tells present, absent and 0-byte files apart (a folder or a broken link
    named like an image is not a file); the stats run here, in forked processes when there are
    many, or in threads when storage is slow: the same answer every way."""
    from vlmdata.blend import images_index as ix

    paths, want = [], []
    for i in range(3 * ix._STAT_CHUNK + 5):
        rel = f"d{i % 7}/{i}.jpg"
        paths.append(rel)
        kind = i % 5
        if kind == 4:
            want.append(ix.MISSING)
            continue
        p = tmp_path / rel
        p.parent.mkdir(exist_ok=True)
        if kind == 3:
            p.mkdir()  # a folder named like an image
            want.append(ix.MISSING)
        elif kind == 2:
            p.symlink_to(tmp_path / "nowhere.jpg")  # a broken link
            want.append(ix.MISSING)
        else:
            p.write_bytes(b"" if kind == 1 else b"x")
            want.append(ix.EMPTY_FILE if kind == 1 else ix.PRESENT)
    paths += ["nowhere/x.jpg", "top.jpg"]
    want += [ix.MISSING, ix.MISSING]
    seen: list[int] = []
    assert ix.check_files(tmp_path, paths, jobs=1, on_done=seen.append).tolist() == want
    assert sum(seen) == len(paths)
    monkeypatch.setattr(ix, "PROCESS_MIN", 1)  # forked processes
    forks: list[int] = []
    real = ix._in_processes
    monkeypatch.setattr(ix, "_in_processes", lambda *a, **k: (forks.append(1), real(*a, **k))[1])
    assert ix.check_files(tmp_path, paths, jobs=2).tolist() == want
    assert forks == [1]
    monkeypatch.setattr(ix, "SLOW_STAT", -1.0)  # every stat counts as slow: threads
    assert ix.check_files(tmp_path, paths, jobs=4).tolist() == want
    assert forks == [1]
    assert ix.check_files(tmp_path / "absent-root", paths, jobs=1).tolist() == [ix.MISSING] * len(paths)


def test_a_renamed_id_rewrites_only_the_shard_that_holds_it(tree, tmp_path, monkeypatch):
    """A range's rows are cut into files of FILE_ROWS rows; a file whose rows all stay as they are
    is moved in as a shard, so one renamed id costs one shard's rewrite, not the whole input's."""
    monkeypatch.setattr(scan_mod, "BATCH_ROWS", 4)
    monkeypatch.setattr(scan_mod, "FILE_ROWS", 8)
    recs = [{"id": f"r{i}", "image": f"x/{i}.jpg", "conversations": turns("<image>\nq", f"a{i}")} for i in range(30)]
    recs[13]["id"] = "r2"  # clashes with record 2: both become "mine:r2", then "#<index>" apart
    write_json(tmp_path / "in.json", recs)
    touch_images(tmp_path / "imgs", [f"x/{i}.jpg" for i in range(30)])
    p = recipe_file(tmp_path, f'[[entries]]\nname = "mine"\npath = "{tmp_path / "in.json"}"\n')
    from vlmdata.blend.recipe import resolve

    moved: list[int] = []
    real_add = writer_mod.DatasetWriter.add_file
    monkeypatch.setattr(writer_mod.DatasetWriter, "add_file",
                        lambda self, path, n: (moved.append(n), real_add(self, path, n))[1])
    res = run_blend(resolve(tree.catalog.blend(str(p)), tree.catalog, tree.root, image_root=tmp_path / "imgs"),
                    Options(progress=False, jobs=1), tmp_path / "out")
    got = rows(res.out)
    assert [r["id"] for r in got] == [f"mine:r2#{2}" if i == 2 else f"mine:r2#{13}" if i == 13 else f"r{i}"
                                      for i in range(30)]
    assert len(data_files(res.out)) == 4  # 8 + 8 + 8 + 6 rows
    assert moved == [8, 6]  # rows 2 and 13 sit in the first two files: those are rewritten, the others moved in
    assert res.meta["counts"]["mine"]["ids_renamed"] == 2


def test_an_id_shared_only_with_dropped_rows_is_kept_as_it_is(tree, tmp_path):
    """Ids are counted over the rows that stay: one whose twin lost its image (or is a bad record)
    keeps its own name; ids repeated among the kept rows are renamed."""
    def rec(rid: str, img: str) -> dict:
        return {"id": rid, "image": img, "conversations": turns("<image>\nq", "a")}

    write_json(tmp_path / "a.json", [rec("p", "x/0.jpg"), rec("q", "x/1.jpg"), rec("r", "x/2.jpg")])
    write_json(tmp_path / "b.json", [rec("p", "x/404.jpg"), rec("q", "x/3.jpg"),
                                     {"id": "r", "conversations": turns("q", "")}])
    touch_images(tmp_path / "imgs", [f"x/{i}.jpg" for i in range(4)])
    entries = "".join(f'[[entries]]\nname = "{n}"\npath = "{tmp_path / (n + ".json")}"\n' for n in ("a", "b"))
    from vlmdata.blend.recipe import resolve

    resolved = resolve(tree.catalog.blend(str(recipe_file(tmp_path, entries))), tree.catalog, tree.root,
                       image_root=tmp_path / "imgs")
    res = run_blend(resolved, Options(progress=False, max_drop=100), tmp_path / "out")
    assert [r["id"] for r in rows(res.out)] == ["p", "a:q", "r", "b:q"]


def test_an_id_that_equals_a_renamed_one_stops_the_blend(tree, tmp_path):
    """Renaming makes ids unique unless another record already carries the new name: then the
    blend stops and names it (found by counting only the ids equal to a renamed one)."""
    def rec(rid: str, i: int) -> dict:
        return {"id": rid, "image": f"x/{i}.jpg", "conversations": turns("<image>\nq", "a")}

    write_json(tmp_path / "a.json", [rec("x", 0), rec("x", 1), rec("y", 2)])
    write_json(tmp_path / "b.json", [rec("a:x#0", 3), rec("z", 4)])
    touch_images(tmp_path / "imgs", [f"x/{i}.jpg" for i in range(5)])
    entries = "".join(f'[[entries]]\nname = "{n}"\npath = "{tmp_path / (n + ".json")}"\n' for n in ("a", "b"))
    from vlmdata.blend.recipe import resolve

    resolved = resolve(tree.catalog.blend(str(recipe_file(tmp_path, entries))), tree.catalog, tree.root,
                       image_root=tmp_path / "imgs")
    with pytest.raises(OperationError, match="'a:x#0' still occurs more than once"):
        run_blend(resolved, Options(progress=False), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    write_json(tmp_path / "b.json", [rec("a:x#2", 3), rec("z", 4)])  # no clash: every id unique
    res = run_blend(resolved, Options(progress=False), tmp_path / "out")
    assert [r["id"] for r in rows(res.out)] == ["a:x#0", "a:x#1", "y", "a:x#2", "z"]


def test_progress_bars_only_when_asked(capsys):
    """Without progress (not a terminal, --json, --quiet) the steps get a bar that draws nothing
    (and tqdm is not imported for it); with progress, a tqdm bar."""
    from tqdm import tqdm

    from vlmdata.blend import pipeline

    with pipeline._bar(Options(progress=False), total=10, desc="parse") as bar:
        bar.update(4)
        assert not isinstance(bar, tqdm)
    assert capsys.readouterr().err == ""
    with pipeline._bar(Options(progress=True), total=10, desc="parse") as bar:
        assert isinstance(bar, tqdm)


def test_row_files_go_to_disk_as_they_are_read_for_a_blend_not_for_a_report(tree, tmp_path, monkeypatch):
    """Each range's row files are fsynced as soon as the range is read (a head start for the
    shards' fsyncs, which the blend waits for before its commit); a report's rows are scratch."""
    monkeypatch.setattr(scan_mod, "BATCH_ROWS", 4)
    monkeypatch.setattr(scan_mod, "FILE_ROWS", 8)
    recs = [{"id": f"r{i}", "image": f"x/{i}.jpg", "conversations": turns("<image>\nq", f"a{i}")} for i in range(30)]
    write_json(tmp_path / "in.json", recs)
    touch_images(tmp_path / "imgs", [f"x/{i}.jpg" for i in range(30)])
    p = recipe_file(tmp_path, f'[[entries]]\nname = "mine"\npath = "{tmp_path / "in.json"}"\n')
    from vlmdata.blend.pipeline import run_report
    from vlmdata.blend.recipe import resolve

    synced: list[Path] = []
    real = writer_mod._fsync
    monkeypatch.setattr(writer_mod, "_fsync", lambda path: (synced.append(Path(path)), real(path))[1])
    resolved = resolve(tree.catalog.blend(str(p)), tree.catalog, tree.root, image_root=tmp_path / "imgs")
    run_report(resolved, Options(progress=False, jobs=1))
    assert synced == []
    res = run_blend(resolved, Options(progress=False, jobs=1), tmp_path / "out")
    early = [s for s in synced if s.name.startswith("rows-")]
    assert len(early) == 4 and all(s.parent.name == ".work" for s in early)  # 8 + 8 + 8 + 6 rows: every file
    assert synced.index(early[-1]) < min(synced.index(s) for s in synced if s.name.startswith("data-"))
    assert {s.name for s in synced if s.name.startswith("data-")} == {f"data-{i:05d}.arrow" for i in range(4)}
    assert len(rows(res.out)) == 30
    writer_mod._fsync_if_there(tmp_path / "moved-meanwhile.arrow")  # a file gone by then: skipped, no error


def test_writeback_hint_is_skipped_where_pyarrow_cannot_give_the_descriptor(tmp_path, monkeypatch):
    """pyarrow 22 and older raise AttributeError inside OSFile.fileno(): the hint is skipped, the write goes on."""
    import pyarrow as pa

    from vlmdata.blend import writer

    seen: list[int] = []
    monkeypatch.setattr(writer, "start_writeback", seen.append)

    class OldOSFile:
        def fileno(self) -> int:
            raise AttributeError("'pyarrow.lib.OSFile' object has no attribute 'handle'")

    writer.start_writeback_of(OldOSFile())
    assert seen == []
    with pa.OSFile(str(tmp_path / "x.arrow"), "wb") as f:
        try:
            works = f.fileno() >= 0
        except AttributeError:  # (this pyarrow is one of them)
            works = False
        writer.start_writeback_of(f)
        f.write(b"x")
    assert len(seen) == (1 if works else 0) and (tmp_path / "x.arrow").read_bytes() == b"x"
