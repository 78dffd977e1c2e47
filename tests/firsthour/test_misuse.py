"""Misuse of the vlmdata commands that ran on silently (audit of every command's options): an option
that a combination ignores, a run that did nothing yet exits 0, a crash in a terminal."""
from __future__ import annotations

import shutil

from firsthour_helpers import run_in_terminal

from tests.conftest import REPO, run_vlmdata


def test_normalize_in_a_terminal_draws_its_bar(fetched, tmp_path):
    """normalize's progress bar (drawn only on a terminal) used `sys` without importing it: every
    interactive run ended in a NameError traceback before touching a file."""
    folder = tmp_path / "images"
    shutil.copytree(fetched.root / "ocr_vqa" / "images", folder)
    code, text = run_in_terminal(*fetched.args("normalize", "ocr_vqa", folder))
    assert "Traceback" not in text, text
    assert code == 0 and "already ok" in text, text


def _refs(path, *images):
    import json

    path.write_text(json.dumps([{"id": str(i), "image": im, "conversations": []} for i, im in enumerate(images)]))
    return path


def test_only_referenced_by_a_json_without_images_is_refused(empty, tmp_path):
    """A JSON whose records name no image (a text-only file, `[]`, the wrong file) kept nothing of
    every archive after downloading all of them (51 SA-1B tars of ~10 GB), and exited 0."""
    none = _refs(tmp_path / "text-only.json")
    for cmd in ("plan", "fetch"):
        r = empty.run(cmd, "coco", "--only-referenced-by", none)
        assert r.code == 2, (cmd, r.out, r.err)
        assert "text-only.json" in r.err and "no image" in r.err
    assert not (empty.root / "coco").exists()
    r = empty.run("fetch", "coco", "--only-referenced-by", none, "--json")
    assert r.code == 2 and r.json()["exit_code"] == 2


def test_only_referenced_by_where_no_file_is_an_archive_is_refused(empty, tmp_path):
    """The filter applies to unpacked archives only: a URL list (OCR-VQA) or a JSON was fetched whole
    without a word, as if the option had been left out."""
    refs = _refs(tmp_path / "refs.json", "ocr_vqa/images/1893258886.jpg")
    r = empty.run("fetch", "ocr_vqa", "--only-referenced-by", refs)
    assert r.code == 2 and "ocr_vqa:images-from-urls" in r.err, r.err
    assert not (empty.root / "ocr_vqa").exists()
    # beside an archive it applies to, the files it does not filter are said
    r = empty.run("plan", "coco", "llava_instruct", "--only-referenced-by", refs)
    assert r.code == 0, r.err
    assert "llava_instruct:llava_v1_5_mix665k.json" in r.err and "whole" in r.err


def test_only_referenced_by_that_keeps_nothing_says_so(empty, tmp_path):
    """Names that are in none of the archives (a JSON for another dataset): every archive was
    downloaded, nothing placed, and the summary read like any other fetch."""
    refs = _refs(tmp_path / "refs.json", "sam/images/sa_1.jpg")
    r = empty.run("fetch", "coco", "--only-referenced-by", refs)
    assert r.code == 0, r.err
    assert "none of the 1 image name(s)" in r.err and "refs.json" in r.err
    r = empty.run("fetch", "coco", "--only-referenced-by", refs, "--json", "--refetch")
    assert r.code == 0 and any("none of the 1 image name(s)" in w for w in r.json()["warnings"])


def test_layout_beside_a_dataset_it_does_not_use_is_said(empty):
    """`fetch sam --layout llava` fetched sam and built a llava view that links none of it, without a
    word: the user believes sam is in the view the training script reads."""
    for cmd in (("plan",), ("fetch", "--dry-run")):
        r = empty.run(*cmd, "sam", "coco", "--layout", "llava")
        assert r.code == 0, r.err
        assert "sam is not in the llava layout" in r.err, r.err
        assert "coco is not" not in r.err
    r = empty.run("plan", "coco", "--layout", "llava")
    assert r.code == 0 and "not in the llava layout" not in r.err
    r = empty.run("plan", "sam", "--layout", "llava", "--json")
    assert r.code == 0 and "sam is not in the llava layout" in r.json()["notes"][0]


def test_normalize_of_a_folder_without_images_is_an_error(demo, tmp_path):
    """An empty folder (the download not done yet, a typo'd path that was just made) or one with no
    image in it printed `0 converted ... 0 already ok` and exited 0, as if the images were fine."""
    from tests.conftest import run_vlmdata

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "README.txt").write_text("not an image")
    for extra in ((), ("--json",)):
        r = run_vlmdata("normalize", "ocr_vqa", folder, "--manifests", demo.manifests, *extra)
        assert r.code == 2, (r.out, r.err)
        assert "no image" in r.err and str(folder) in r.err
    assert r.json()["exit_code"] == 2
    assert (folder / "README.txt").read_text() == "not an image"


def test_options_a_fetch_of_placed_files_cannot_honour_are_said(full):
    """--keep-archives over archives already unpacked (and deleted) kept nothing, and --update over
    files that are no Hub file on a branch updated nothing; both ran as a plain no-op fetch, exit 0,
    though `mirror build` then finds no archive."""
    r = full.run("fetch", "coco", "--keep-archives")
    assert r.code == 0, r.err
    assert "--keep-archives" in r.err and "coco:train2017.zip" in r.err and "--refetch --keep-archives" in r.err
    assert not (full.root / ".vlmdata" / "downloads" / "coco" / "train2017.zip").exists()
    r = full.run("fetch", "coco", "gqa", "--update", "--json")
    assert r.code == 0, r.err
    assert any("--update" in n and "coco:train2017.zip" in n for n in r.json()["notes"]), r.out
    r = full.run("fetch", "coco")  # the control: no option, no note
    assert "--keep-archives" not in r.err and "--update" not in r.err


def test_info_of_a_name_that_is_two_things_says_so_and_reaches_both():
    """sharegpt4v is a dataset and a layout, vflan a dataset and a recipe: `info` showed the dataset
    alone, and the layout / recipe of that name could not be shown at all."""
    from tests.conftest import run_vlmdata

    r = run_vlmdata("info", "sharegpt4v")
    assert r.code == 0 and r.out.startswith("sharegpt4v: ShareGPT4V annotation JSONs")
    assert "also a layout" in r.err and "--kind layout" in r.err
    r = run_vlmdata("info", "sharegpt4v", "--kind", "layout")
    assert r.code == 0 and "--image_folder" in r.out, r.err
    r = run_vlmdata("info", "vflan", "--kind", "recipe", "--json")
    assert r.code == 0 and r.json()["blend"] == "vflan"
    assert run_vlmdata("info", "vflan", "--json").json()["also"] == ["recipe"]
    r = run_vlmdata("info", "coco", "--kind", "layout")
    assert r.code == 2 and "no layout named 'coco'" in r.err and "it is a dataset" in r.err
    assert "also a" not in run_vlmdata("info", "coco").err


def test_export_over_an_input_of_the_blend_is_refused(full):
    """`export BLEND ROOT/LLaVA-Instruct-150K/llava_v1_5_mix665k.json` replaced the store's own file
    (the one the journal and every view hold) with the checked records, exit 0: verify then failed,
    the next blend read the filtered file. The same file through a view's hard link is refused too."""
    r = full.run("blend", "llava-665k", "--max-drop", "100")
    assert r.code == 0, r.err
    blend = full.root / "blends" / "llava-665k"
    store = full.root / "LLaVA-Instruct-150K" / "llava_v1_5_mix665k.json"
    view = full.root / "layouts" / "llava" / "llava_v1_5_mix665k.json"
    shutil.rmtree(view.parent)  # (the fixture's copy of the root holds copies: the view is links again)
    assert full.run("layout", "build", "--layout", "llava").code == 0
    assert view.stat().st_ino == store.stat().st_ino
    before = store.read_bytes()
    for out in (store, view):
        r = full.run("export", blend, out)
        assert r.code == 2, (out, r.out, r.err)
        assert "input of this blend" in r.err and ".checked.json" in r.err
    assert store.read_bytes() == before and view.read_bytes() == before
    r = full.run("export", blend, full.root / "mix.checked.json")  # the control
    assert r.code == 0, r.err


def test_verify_of_a_file_name_says_to_give_its_dataset(fetched):
    """`verify coco:train2017.zip` (the NAME:FILE that fetch and plan take) answered 'unknown dataset'
    with every dataset of the catalog, coco among them."""
    r = fetched.run("verify", "coco:train2017.zip")
    assert r.code == 2
    assert "verify checks whole datasets" in r.err and "`vlmdata verify coco`" in r.err, r.err


def test_a_tilde_in_any_path_is_the_home_folder(full, tmp_path, monkeypatch):
    """`~` in --root and --mirror was the home folder, but in the path of blend --out, layout build
    --out, export OUT, mirror build FOLDER, layout check, normalize, --only-referenced-by... it was a
    folder named `~` made in the current one (a quoted path, `--out=~/x`, a path from a config)."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    env = {"HOME": str(home)}
    assert full.run("blend", "llava-665k", "--max-drop", "100", "--out", "~/blend", env=env).code == 0
    assert full.run("export", "~/blend", "~/x.json", env=env).code == 0
    assert full.run("layout", "build", "--layout", "llava", "--out", "~/view", env=env).code == 0
    assert full.run("layout", "check", "--layout", "llava", "~/view", env=env).code == 0
    r = full.run("mirror", "build", "~/mirror", "llava_instruct", env=env)
    assert r.code == 0, r.err
    assert not (cwd / "~").exists(), sorted(p.name for p in (cwd / "~").iterdir())
    assert (home / "blend" / "blend.json").is_file() and (home / "x.json").is_file()
    assert (home / "view" / "coco").is_dir() and (home / "mirror" / "vlmdata.lock").is_file()
    shutil.copytree(full.demo.manifests, home / "m")  # --manifests / VLMDATA_MANIFESTS too
    r = run_vlmdata("info", "coco", "--manifests", "~/m", env=env)
    assert r.code == 0 and "(demo)" in r.out, r.err
    r = run_vlmdata("info", "coco", env={**env, "VLMDATA_MANIFESTS": "~/m"})
    assert r.code == 0 and "(demo)" in r.out, r.err
    shutil.copy(REPO / "manifests" / "blends" / "llava-665k.toml", home / "mix.toml")  # a recipe given as a path
    r = run_vlmdata("info", "~/mix.toml", "--kind", "recipe", env=env)
    assert r.code == 0 and r.out.startswith("llava-665k:"), r.err
