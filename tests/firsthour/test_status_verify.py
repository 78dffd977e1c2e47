"""Items 4 and 5: a subset placement says so in status, verify and plan; verify's counts and exit
codes are right on an empty root, a missing root and for named datasets that were never fetched."""
from __future__ import annotations

import shutil

from tests.conftest import run_vlmdata


def _fetch_sam_subset(root):
    (root.root / "sam").mkdir(parents=True)
    shutil.copy(root.demo.sam_links, root.root / "sam" / "sa1b_links.txt")
    return root.run("fetch", "sam", "--only-referenced-by", root.demo.sam_subset_json)


def test_a_subset_placement_is_not_complete(empty):
    r = _fetch_sam_subset(empty)
    assert r.code == 0, r.err
    n, of = len(empty.demo.sam_subset), empty.demo.counts["sam/images"]
    st = {x["name"]: x for x in empty.run("status", "--json").json()}["sam"]
    assert st["state"] == "subset" and (st["subset_images"], st["subset_of"]) == (n, of)
    text = empty.run("status").out
    assert f"subset ({n} of {of} images)" in text and "complete" not in text
    v = empty.run("verify", "sam")
    assert v.code == 0 and f"subset: {n} of {of} images (placed with --only-referenced-by)" in v.out
    assert empty.run("verify", "sam", "--json").json()["datasets"][0]["subset"] == {"images": n, "of": of}
    assert f"subset ({n} of {of} images, verified)" in empty.run("status").out
    # plan: the subset is present for the same JSON, and "subset" (the whole tar to fetch) without it
    p = empty.run("plan", "sam", "--only-referenced-by", empty.demo.sam_subset_json, "--json")
    assert p.code == 0 and {i["state"] for i in p.json()["items"]} == {"present"}
    p = empty.run("plan", "sam", "--json")
    assert {i["state"] for i in p.json()["items"]} == {"subset"} and p.json()["download_bytes"] > 0
    assert "this fetch asks for the whole archive" in empty.run("plan", "sam").out


def test_plan_of_a_subset_counts_no_unpacked_tars(tmp_path):
    # the shipped sam: 51 tars of ~10 GB; a subset streams them and keeps a few images
    (tmp_path / "refs.json").write_text('[{"id": "1", "image": "sam/images/sa_1.jpg", "conversations": []}]')
    whole = run_vlmdata("--root", tmp_path / "r", "plan", "sam", "--json")
    part = run_vlmdata("--root", tmp_path / "r", "plan", "sam", "--only-referenced-by", tmp_path / "refs.json", "--json")
    assert part.code == 0, part.err
    assert part.json()["disk_bytes"] == 0 < whole.json()["disk_bytes"]
    assert part.json()["download_bytes"] == whole.json()["download_bytes"]
    r = run_vlmdata("--root", tmp_path / "r", "plan", "sam", "--only-referenced-by", tmp_path / "nope.json")
    assert r.code == 2 and "nope.json: no such file" in r.err


def test_verify_counts_and_exit_codes(empty, tmp_path):
    empty.root.mkdir(parents=True)
    r = empty.run("verify")
    assert r.code == 1 and "nothing has been fetched into" in r.out and "all good" not in r.out
    j = empty.run("verify", "--json")
    assert j.code == 1 and j.json()["ok"] is False and j.json()["checked"] == 0
    r = empty.run("verify", "coco")
    assert r.code == 1 and "verify of 1 dataset(s): 1 problem(s)" in r.out and "[FAIL] coco" in r.out
    r = run_vlmdata("--root", tmp_path / "typo", "verify")
    assert r.code == 2 and "does not exist" in r.err
    r = empty.run("verify", "cocoo", "--deep")
    assert r.code == 2 and "did you mean coco" in r.err


def test_verify_of_fetched_and_unfetched_names(full):
    r = full.run("verify", "coco", "sam")
    assert r.code == 1
    assert "[ok  ] coco" in r.out and "[FAIL] sam" in r.out and "verify of 2 dataset(s): 1 problem(s) in 1 of them" in r.out
    r = full.run("verify")
    assert r.code == 0 and "verify of 6 dataset(s): all good" in r.out


def test_verify_names_the_command_that_repairs_what_it_found(full):
    """A deleted image and a damaged JSON: verify says which files to place again, and that command
    (run as said) leaves a root verify finds all good."""
    victim = sorted((full.root / "gqa" / "images").iterdir())[0]
    victim.unlink()
    mix = full.root / "LLaVA-Instruct-150K" / "llava_v1_5_mix665k.json"
    mix.write_bytes(b" " + mix.read_bytes()[1:])
    r = full.run("verify", "--deep")
    assert r.code == 1 and "[FAIL] gqa" in r.out
    told = [line.split(": ", 1)[1] for line in r.out.splitlines() if "-> to download and place them again" in line]
    assert told and told[0].startswith("vlmdata fetch ") and told[0].endswith(" --refetch"), r.out
    keys = told[0].split()[2:-1]
    assert any(k.startswith("gqa:") for k in keys) and any(k.startswith("llava_instruct:") for k in keys)
    assert not any(k.startswith("coco:") for k in keys)  # only what is damaged
    states = {d["name"]: d["state"] for d in full.run("status", "--json").json()}
    assert states["gqa"] == "damaged" and states["llava_instruct"] == "damaged" and states["coco"] == "verified"
    assert "(`vlmdata verify gqa` says what" in full.run("status").out
    r = full.run(*told[0].split()[1:])
    assert r.code == 0, r.err
    states = {d["name"]: d["state"] for d in full.run("status", "--json").json()}
    assert states["gqa"] == "complete"  # placed again after that verify: not known to be damaged
    assert full.run("verify", "--deep").code == 0
    assert {d["name"]: d["state"] for d in full.run("status", "--json").json()}["gqa"] == "verified"
