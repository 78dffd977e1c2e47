"""What trying every command as a new user found, beyond the numbered items: each a silent wrong
result or a traceback before its fix."""
from __future__ import annotations

import pytest

from tests.conftest import run_vlmdata


def test_an_option_typed_before_the_command_beats_the_environment(tmp_path, full):
    # VLMDATA_ROOT used to win over `vlmdata --root R status`: the command read the variable again
    env = {"VLMDATA_ROOT": str(tmp_path / "other")}
    r = run_vlmdata("--root", full.root, "status", env=env)
    assert r.code == 0 and r.out.startswith(f"root: {full.root}\n")
    assert run_vlmdata("status", env=env).out.startswith(f"root: {tmp_path / 'other'}  (does not exist")
    assert run_vlmdata("--root", tmp_path / "x", "status", "--root", full.root, env=env).out.startswith(
        f"root: {full.root}\n")  # after the command still wins
    r = run_vlmdata("--manifests", tmp_path / "nope", "list", env={"VLMDATA_MANIFESTS": str(full.demo.manifests)})
    assert r.code == 2 and f"manifest folder {tmp_path / 'nope'} does not exist" in r.err


def test_layout_check_of_a_folder_that_does_not_exist(tmp_path):
    r = run_vlmdata("layout", "check", "--layout", "llava", tmp_path / "playground" / "data")
    assert r.code == 2 and "does not exist" in r.err and "vlmdata layout build --layout llava" in r.err


def test_layout_build_with_nothing_fetched_is_no_view(tmp_path):
    r = run_vlmdata("--root", tmp_path / "typo", "layout", "build", "--layout", "llava")
    assert r.code == 2 and "does not exist" in r.err and not (tmp_path / "typo").exists()
    (tmp_path / "empty").mkdir()
    r = run_vlmdata("--root", tmp_path / "empty", "layout", "build", "--layout", "llava")
    assert r.code == 1 and "`vlmdata fetch llava_instruct coco gqa ocr_vqa textvqa vg --layout llava`" in r.err
    assert not (tmp_path / "empty" / "layouts").exists()  # no tree of empty folders left behind


def test_status_of_a_root_that_does_not_exist_says_so(tmp_path):
    r = run_vlmdata("--root", tmp_path / "typo", "status")
    assert r.code == 0 and "does not exist: nothing fetched into it yet" in r.out.splitlines()[0]


def test_ctrl_c_says_what_was_kept(full, monkeypatch):
    # typer turned a Ctrl-C that no command handled into a silent exit 130; blend said nothing either
    import vlmdata.blend.pipeline as pipeline

    assert full.run("blend", "llava-665k", "--max-drop", "100").code == 0
    out = full.root / "blends" / "llava-665k"
    before = (out / "blend.json").read_bytes()

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "analyse", ctrl_c)  # the Ctrl-C arrives while the inputs are read
    r = full.run("blend", "llava-665k", "--max-drop", "100")
    assert r.code == 130 and f"interrupted: nothing was written; {out} is as it was" in r.err
    assert (out / "blend.json").read_bytes() == before and [p.name for p in out.parent.iterdir()] == ["llava-665k"]
    r = full.run("report", "llava-665k")
    assert r.code == 130 and "interrupted; nothing is left half-done" in r.err


def test_damaged_state_files_are_errors_not_tracebacks(full, tmp_path):
    journal = full.root / ".vlmdata" / "journal.json"
    good = journal.read_text()
    for bad, says in [('[1, 2]', "not a vlmdata journal"), ('{"files": []}', "not a vlmdata journal"),
                      ('{"files": {"coco:train2017.zip": {"key": 1}}}', "entry 'coco:train2017.zip' is damaged"),
                      ('{"files": {"a": 3}}', "entry 'a' is damaged")]:
        journal.write_text(bad)
        for cmd in (["status"], ["verify"], ["fetch", "coco"], ["plan", "coco"]):
            r = full.run(*cmd)
            assert r.code == 2 and says in r.err and "Traceback" not in r.err, (bad, cmd, r.err)
    journal.write_text(good)
    assert full.run("blend", "llava-665k", "--max-drop", "100").code == 0
    out = full.root / "blends" / "llava-665k"
    meta = (out / "blend.json").read_bytes()
    (out / "blend.json").write_text("{")
    for cmd in (["stats", out], ["export", out, tmp_path / "x.json"]):
        r = full.run(*cmd)
        assert r.code == 2 and "blend.json: cannot read it as JSON" in r.err
    (out / "blend.json").write_bytes(meta)
    shard = next(out.glob("data-*.arrow"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size * 6 // 10])  # the schema survives, rows do not
    for cmd in (["stats", out], ["export", out, tmp_path / "x.json"]):
        r = full.run(*cmd)
        assert r.code == 2 and f"{shard} is damaged or missing" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "x.json").exists()


def test_blend_out_never_deletes_what_is_not_a_blend(full, tmp_path):
    # `blend --out FOLDER` swaps its output in whole: it used to delete whatever FOLDER held
    mine = tmp_path / "precious"
    mine.mkdir()
    (mine / "thesis.txt").write_text("three years of work")
    r = full.run("blend", "llava-665k", "--max-drop", "100", "--out", mine)
    assert r.code == 2 and "holds other files (thesis.txt)" in r.err
    assert [p.name for p in mine.iterdir()] == ["thesis.txt"] and not list(tmp_path.glob(".tmp-*"))
    r = full.run("blend", "llava-665k", "--max-drop", "100", "--out", full.root)  # the data root itself
    assert r.code == 2 and (full.root / ".vlmdata" / "journal.json").is_file()
    (tmp_path / "f").write_text("x")
    assert full.run("blend", "llava-665k", "--max-drop", "100", "--out", tmp_path / "f").code == 2
    (tmp_path / "empty").mkdir()
    for _ in range(2):  # an empty folder, then the earlier blend in it
        r = full.run("blend", "llava-665k", "--max-drop", "100", "--out", tmp_path / "empty")
        assert r.code == 0, r.err


def test_export_and_stats_to_a_folder(full, tmp_path):
    assert full.run("blend", "llava-665k", "--max-drop", "100").code == 0
    out = full.root / "blends" / "llava-665k"
    r = full.run("export", out, tmp_path)
    assert r.code == 2 and "is a folder; export writes one JSON file" in r.err
    r = full.run("stats", out, "--png", tmp_path)
    assert r.code == 2 and "--png" in r.err
    r = full.run("stats", out, "--png", tmp_path / "hist")  # matplotlib adds .png: say so
    assert r.code == 0 and f"histograms: {tmp_path / 'hist.png'}" in r.out and (tmp_path / "hist.png").is_file()


def test_option_values_that_cannot_work_are_usage_errors(full):
    for cmd in (["verify", "--deep", "--jobs", "-3"], ["normalize", "ocr_vqa", full.root, "--jobs", "0"],
                ["blend", "llava-665k", "--jobs", "-1"], ["blend", "llava-665k", "--max-drop", "-5"]):
        r = full.run(*cmd)
        assert r.code == 2 and "Invalid value for '--" in r.err and "Traceback" not in r.err, cmd
    r = full.run("fetch", "coco", "--hf-endpoint", "hf-mirror.com")
    assert r.code == 2 and "is not an http(s) URL" in r.err


def test_a_colon_with_no_file_name_is_a_user_error(tmp_path):
    """`fetch coco:` used to fetch the whole dataset: a file name left out is a mistake, not "everything"."""
    from vlmdata.errors import UserError
    from vlmdata.manifest.catalog import load_catalog

    cat = load_catalog()
    with pytest.raises(UserError, match="names no file after the colon") as e:
        cat.select_files(["coco:"])
    assert "train2017.zip" in (e.value.hint or "")
    assert cat.select_files(["coco"])  # the whole default set still works
