"""`vlmdata mirror build`: a root's downloads laid out as a mirror, then fetched from on a machine with no origin.

The near machine fetches from the demo origins (a loopback server) with --keep-archives and builds
the mirror; the far machine fetches everything from that mirror, served by a second loopback server
or read as a local folder, without one request to the origins; hub files are read from their
resolve-URL place in a mirror; the carried lock file makes the far fetch check the near hashes.
"""
from __future__ import annotations

import json

from fetch_helpers import LoopbackServer, file_toml, http, sha256

from vlmdata.state import Journal

SETS = ["coco", "gqa", "ocr_vqa", "textvqa", "vg", "llava_instruct", "llava_pretrain"]


def _near(cli, demo, server, root, *extra):
    r = cli("fetch", *SETS, "--keep-archives", "--manifests", str(demo.manifests), "--root", str(root),
            "--mirror", server.url, *extra)
    assert r.code == 0, r.err
    return r


def test_built_mirror_serves_a_whole_fetch_over_http_without_the_origins(cli, demo, server, tmp_path):
    near, far, out = tmp_path / "near", tmp_path / "far", tmp_path / "usb" / "mirror"
    _near(cli, demo, server, near)
    built = cli("mirror", "build", str(out), "--root", str(near), "--manifests", str(demo.manifests), "--json")
    assert built.code == 0, built.out
    summary = built.json()
    assert summary["left_out"] == [] and summary["images"] == demo.counts["ocr_vqa/images"]
    assert (out / "images.cocodataset.org/zips/train2017.zip").read_bytes() == \
        demo.file("coco:train2017.zip").path.read_bytes()
    assert {m["how"] for m in summary["files"] if not m["how"].endswith("images")} == {"hardlink"}
    assert json.loads((out / "vlmdata-mirror.json").read_text())["files"] == summary["files"]

    server.reset()
    with LoopbackServer(out) as usb:
        r = cli("fetch", *SETS, "--layout", "llava", "--manifests", str(demo.manifests), "--root", str(far),
                "--mirror", usb.url)
        assert r.code == 0, r.err
        assert usb.requests
    assert server.requests == []  # the origins were not asked for anything
    check = cli("layout", "check", "--layout", "llava", str(far / "layouts/llava"), "--manifests", str(demo.manifests))
    assert check.code == 0, check.out
    a, b = Journal(near / ".vlmdata").entries(), Journal(far / ".vlmdata").entries()
    assert {k: e.sha256 for k, e in a.items()} == {k: e.sha256 for k, e in b.items()}
    # the OCR-VQA images that were saved near are there far too (the dead and corrupt ones are not)
    assert sorted(p.name for p in (far / "ocr_vqa/images").iterdir()) == \
        sorted(p.name for p in (near / "ocr_vqa/images").iterdir())


def test_again_adds_nothing_and_a_local_folder_works_too(cli, demo, server, tmp_path):
    near, out = tmp_path / "near", tmp_path / "mirror"
    _near(cli, demo, server, near)
    common = ["--root", str(near), "--manifests", str(demo.manifests)]
    assert cli("mirror", "build", str(out), *common).code == 0
    again = cli("mirror", "build", str(out), *common, "--json").json()
    assert {m["how"] for m in again["files"] if not m["how"].endswith("images")} == {"there"}
    far = tmp_path / "far"
    r = cli("fetch", "coco", "llava_instruct", "--manifests", str(demo.manifests), "--root", str(far),
            "--mirror", str(out))
    assert r.code == 0, r.err
    assert (far / "coco/train2017").is_dir()


def test_unpacked_archives_and_files_never_fetched_are_listed_with_what_to_do(cli, demo, server, tmp_path):
    near, out = tmp_path / "near", tmp_path / "mirror"
    r = cli("fetch", "coco", "llava_instruct", "--manifests", str(demo.manifests), "--root", str(near),
            "--mirror", server.url)
    assert r.code == 0, r.err
    b = cli("mirror", "build", str(out), "coco", "llava_instruct", "gqa", "--root", str(near),
            "--manifests", str(demo.manifests))
    assert b.code == 1
    told = "vlmdata fetch coco:train2017.zip --refetch --keep-archives"
    assert f"coco:train2017.zip: the archive was unpacked and deleted; download it again and keep it: {told}" in b.out
    assert "gqa:images.zip: not fetched into this root" in b.out
    assert (out / "huggingface.co/datasets/liuhaotian/LLaVA-Instruct-150K/resolve/main/llava_v1_5_mix665k.json").is_file()
    r = cli(*told.split()[1:], "--manifests", str(demo.manifests), "--root", str(near), "--mirror", server.url)
    assert r.code == 0, r.err  # what it said to run does it
    b = cli("mirror", "build", str(out), "coco", "llava_instruct", "--root", str(near), "--manifests", str(demo.manifests))
    assert b.code == 0, b.out + b.err


def test_mirror_inside_the_root_is_refused(cli, demo, server, tmp_path):
    near = tmp_path / "near"
    _near(cli, demo, server, near)
    r = cli("mirror", "build", str(near / "mirror"), "--root", str(near), "--manifests", str(demo.manifests))
    assert r.code == 2 and "inside the root" in r.err


def test_hub_file_is_read_from_its_resolve_place_in_a_mirror_with_the_hub_offline(cli, manifests, tmp_path):
    data = b'[{"id": "1", "conversations": []}]\n' * 50
    src = ('{ kind = "hf", repo_type = "dataset", repo_id = "someone/data", revision = "0123456789abcdef0123456789abcdef01234567", '
           'path = "sub/train.json" }')
    manifests.dataset("hubset", file_toml("train.json", sources=[src], place='{ kind = "file", to = "hubset/train.json" }',
                                          size=len(data)))
    mirror = tmp_path / "mirror"
    where = mirror / "huggingface.co/datasets/someone/data/resolve/0123456789abcdef0123456789abcdef01234567/sub/train.json"
    common = ["--manifests", str(manifests.folder), "--root", str(tmp_path / "root"), "--mirror", str(mirror)]
    mirror.mkdir()
    missing = cli("fetch", "hubset", *common)  # HF_HUB_OFFLINE=1 in the tests: the hub is never asked
    assert missing.code == 1 and "no such file in the mirror" in missing.err and "HF_HUB_OFFLINE" in missing.err
    where.parent.mkdir(parents=True)
    where.write_bytes(data)
    r = cli("fetch", "hubset", *common, "--json")
    assert r.code == 0, r.err
    assert (tmp_path / "root/hubset/train.json").read_bytes() == data


def test_the_carried_lock_file_makes_the_far_fetch_check_the_near_hashes(cli, manifests, files_server, tmp_path):
    good = b"the bytes the near machine verified " * 100
    (files_server.folder / "f.bin").write_bytes(good)  # no sha256 published: the lock pins it
    manifests.dataset("unpinned", file_toml("f.bin", sources=[http(files_server.url + "/f.bin")],
                                            place='{ kind = "file", to = "unpinned/f.bin" }', size=len(good)))
    near, out, far = tmp_path / "near", tmp_path / "mirror", tmp_path / "far"
    m = ["--manifests", str(manifests.folder)]
    assert cli("fetch", "unpinned", "--root", str(near), *m).code == 0
    b = cli("mirror", "build", str(out), "--root", str(near), *m, "--json")
    assert b.code == 0 and b.json()["pins"] == 1
    assert json.loads((out / "vlmdata.lock").read_text())["files"]["unpinned:f.bin"]["sha256"] == sha256(good)
    # the copy on the way was damaged (same size, other bytes): the far fetch with the lock refuses it
    copy = out / files_server.url.split("://", 1)[1] / "f.bin"
    copy.unlink()
    copy.write_bytes(good[::-1])
    far.mkdir()
    (far / "vlmdata.lock").write_bytes((out / "vlmdata.lock").read_bytes())
    r = cli("fetch", "unpinned", "--root", str(far), "--mirror", str(out), *m)
    assert r.code == 1 and "do not match" in r.err
    assert not (far / "unpinned/f.bin").exists()
    # building the mirror again finds the damaged copy by the pinned hash and puts the root's bytes back
    again = cli("mirror", "build", str(out), "--root", str(near), *m, "--json")
    assert again.code == 0 and again.json()["replaced"] == 1 and again.json()["files"][0]["how"] == "replaced"
    assert copy.read_bytes() == good


def test_a_lock_left_behind_does_not_let_a_damaged_mirror_in(cli, manifests, files_server, tmp_path):
    """Found by trying: without the lock copied into the far root, a damaged mirror copy was fetched,
    pinned and verified as all good. The mirror's own vlmdata.lock now holds where the root has no pin."""
    good = b"the bytes the near machine verified " * 100
    (files_server.folder / "f.bin").write_bytes(good)
    manifests.dataset("unpinned", file_toml("f.bin", sources=[http(files_server.url + "/f.bin")],
                                            place='{ kind = "file", to = "unpinned/f.bin" }', size=len(good)))
    near, out, far = tmp_path / "near", tmp_path / "mirror", tmp_path / "far"
    m = ["--manifests", str(manifests.folder)]
    assert cli("fetch", "unpinned", "--root", str(near), *m).code == 0
    assert cli("mirror", "build", str(out), "--root", str(near), *m).code == 0
    copy = out / files_server.url.split("://", 1)[1] / "f.bin"
    copy.unlink()
    copy.write_bytes(good[::-1])
    r = cli("fetch", "unpinned", "--root", str(far), "--mirror", str(out), *m)  # no lock carried over
    assert r.code == 1 and "the mirror's file is not the one the connected machine verified" in r.err, r.err
    assert f"pinned in {out / 'vlmdata.lock'}" in r.err and not (far / "unpinned/f.bin").exists()
    copy.unlink()
    copy.write_bytes(good)  # copied again: fetched, and the root keeps the mirror's pin
    assert cli("fetch", "unpinned", "--root", str(far), "--mirror", str(out), *m).code == 0
    assert json.loads((far / "vlmdata.lock").read_text())["files"]["unpinned:f.bin"]["sha256"] == sha256(good)


def test_a_file_the_mirror_folder_lacks_is_told_to_the_mirror_not_the_network(cli, manifests, tmp_path):
    """Found by trying: 'check the network ... run the same command again' for a file absent from a
    local mirror folder, where only building the mirror again (or the right --mirror) can help."""
    manifests.dataset("t", file_toml("f.bin", size=10, sources=[http("http://files.example.org/f.bin")],
                                     place='{ kind = "file", to = "t/f.bin" }'))
    (tmp_path / "usb").mkdir()
    r = cli("fetch", "t", "--manifests", str(manifests.folder), "--root", str(tmp_path / "root"),
            "--mirror", str(tmp_path / "usb"))
    assert r.code == 1 and "t:f.bin: the mirror folder does not hold it" in r.err, r.err
    assert "vlmdata mirror build DIR NAME" in r.err and "check the network" not in r.err


def test_plan_says_which_files_a_local_mirror_folder_lacks(cli, manifests, tmp_path):
    """Found by trying: --mirror one folder too high, and plan said 'missing ... fits: yes' as if all was well."""
    manifests.dataset("t", file_toml("f.bin", size=10, sources=[http("http://files.example.org/f.bin")],
                                     place='{ kind = "file", to = "t/f.bin" }'))
    usb = tmp_path / "usb"
    (usb / "mirror" / "files.example.org").mkdir(parents=True)
    (usb / "mirror" / "files.example.org" / "f.bin").write_bytes(b"0123456789")
    common = ["plan", "t", "--manifests", str(manifests.folder), "--root", str(tmp_path / "root")]
    r = cli(*common, "--mirror", str(usb))
    assert r.code == 0 and "(not in the mirror)" in r.err + r.out
    assert "not in the mirror folder: 1 of the files to fetch (t:f.bin)" in r.err + r.out
    ok = cli(*common, "--mirror", str(usb / "mirror"), "--json")
    assert ok.code == 0 and ok.json()["items"][0]["in_mirror"] is True
