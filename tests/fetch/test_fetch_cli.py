"""`vlmdata fetch` end to end on the demo mirror and on small manifests; assertions on the files on disk."""
from __future__ import annotations

import json
import os
import shutil
import zipfile

import pytest
from fetch_helpers import Fault, file_toml, http, sha256

from vlmdata.state import Journal, Root

DEMO_SETS = ["coco", "gqa", "ocr_vqa", "textvqa", "vg", "llava_instruct", "llava_pretrain"]


def fetch(cli, demo, root, *args, mirror=None):
    common = ["--manifests", str(demo.manifests), "--root", str(root)]
    if mirror:
        common += ["--mirror", mirror]
    return cli("fetch", *args, *common)


def test_demo_over_http_mirror_then_layout_check_then_nothing_to_do(cli, demo, server, root):
    r = fetch(cli, demo, root, *DEMO_SETS, "--layout", "llava", mirror=server.url)
    assert r.code == 0, r.err
    assert len(list((root / "coco/train2017").glob("*.jpg"))) == demo.counts["coco/train2017"]
    vg2 = zipfile.ZipFile(demo.file("vg:images2.zip").path).namelist()
    assert sorted(p.name for p in (root / "vg/VG_100K_2").iterdir()) == sorted(
        n.split("/")[-1] for n in vg2 if n.endswith(".jpg"))  # inner VG_100K_2/ mapped away
    assert (root / "LLaVA-Instruct-150K/llava_v1_5_mix665k.json").read_bytes() == \
        demo.file("llava_instruct:llava_v1_5_mix665k.json").path.read_bytes()
    # LLaVA-Pretrain's zip has no top folder: shard folders land straight in the target
    assert any(p.is_dir() and len(p.name) == 5 for p in (root / "LLaVA-Pretrain/images").iterdir())
    # OCR-VQA: every image a real .jpg, the dead and corrupt ones absent
    ocr = root / "ocr_vqa/images"
    assert len(list(ocr.iterdir())) == demo.counts["ocr_vqa/images"]
    for oid in demo.ocr_converted:
        assert (ocr / f"{oid}.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    assert not (ocr / f"{demo.ocr_dead[0]}.jpg").exists()
    # archives are deleted after unpacking unless --keep-archives
    assert not any(p.suffix == ".zip" for p in (root / ".vlmdata/downloads").rglob("*"))
    # the view
    check = cli("layout", "check", "--layout", "llava", str(root / "layouts/llava"), "--manifests", str(demo.manifests))
    assert check.code == 0, check.out
    journal = Journal(root / ".vlmdata").entries()
    assert journal["coco:train2017.zip"].sha256 == demo.file("coco:train2017.zip").sha256
    # the second run makes no request at all and says so
    server.reset()
    again = fetch(cli, demo, root, *DEMO_SETS, "--layout", "llava", mirror=server.url)
    assert again.code == 0, again.err
    assert server.requests == []
    assert "everything is already here" in again.err


def test_a_password_in_the_mirror_url_is_written_nowhere(cli, demo, server, root):
    # a mirror behind basic auth: the requests carry user:password, what is shown and kept does not
    secret = "pw-" + "Z" * 20
    mirror = server.url.replace("://", f"://someone:{secret}@", 1)
    r = fetch(cli, demo, root, "llava_instruct", "ocr_vqa", "-v", "--json", mirror=mirror)
    assert r.code == 0, r.err
    assert "…@" in r.out + r.err and secret not in r.out + r.err
    for p in root.rglob("*"):
        assert not p.is_file() or secret.encode() not in p.read_bytes(), p
    # nothing listening there: "cannot reach" names the host and port, not who logs in
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    r = fetch(cli, demo, root / "other", "llava_instruct", mirror=f"http://someone:{secret}@127.0.0.1:{closed}")
    assert r.code != 0 and f"cannot reach 127.0.0.1:{closed}" in r.err and secret not in r.out + r.err


def test_local_folder_mirror_and_json_summary(cli, demo, root):
    r = cli("fetch", "coco", "vg", "--json", "--manifests", str(demo.manifests), "--root", str(root),
            "--mirror", str(demo.mirror))
    assert r.code == 0, r.err
    out = r.json()
    assert out["ok"] is True
    states = {f["key"]: f for f in out["files"]}
    assert states["coco:train2017.zip"]["state"] == "fetched"
    assert states["coco:train2017.zip"]["source"].startswith(str(demo.mirror))
    assert states["vg:images2.zip"]["files"] == demo.counts["vg/VG_100K_2"]
    assert len(list((root / "vg/VG_100K").glob("*.jpg"))) == demo.counts["vg/VG_100K"]


def test_keep_archives(cli, demo, root):
    r = fetch(cli, demo, root, "textvqa", "--keep-archives", mirror=str(demo.mirror))
    assert r.code == 0, r.err
    kept = Root(root).download_path("textvqa", "train_val_images.zip")
    assert kept.read_bytes() == demo.file("textvqa:train_val_images.zip").path.read_bytes()


def test_fallback_through_sources(cli, manifests, files_server, root):
    data = os.urandom(50_000)
    (files_server.folder / "good.bin").write_bytes(data)
    manifests.dataset("t", file_toml("x.bin", size=len(data), sha=sha256(data),
                                     sources=[http(f"{files_server.url}/missing.bin"), http(f"{files_server.url}/good.bin")],
                                     place='{ kind = "file", to = "t/x.bin" }'))
    r = cli("fetch", "t", "--manifests", str(manifests.folder), "--root", str(root))
    assert r.code == 0, r.err
    assert (root / "t/x.bin").read_bytes() == data
    assert Journal(root / ".vlmdata").get("t:x.bin").source.endswith("/good.bin")
    assert files_server.count("missing.bin") == 1


def test_wrong_bytes_once_is_retried(cli, manifests, files_server, root):
    data = os.urandom(40_000)
    (files_server.folder / "f.bin").write_bytes(data)
    files_server.fault("f.bin", Fault("wrong", times=1))
    manifests.dataset("t", file_toml("f.bin", size=len(data), sha=sha256(data), sources=[http(f"{files_server.url}/f.bin")],
                                     place='{ kind = "file", to = "t/f.bin" }'))
    r = cli("fetch", "t", "--manifests", str(manifests.folder), "--root", str(root), "--json")
    assert r.code == 0, r.err
    assert (root / "t/f.bin").read_bytes() == data
    out = json.loads(r.out)
    assert out["bytes"] == 2 * len(data)  # what the network carried, the bad download included
    [note] = out["files"][0]["warnings"]
    assert "expected" in note and f"downloaded again ({len(data):,} bytes more) and this download matched" in note


def test_wrong_bytes_always_is_never_placed(cli, manifests, files_server, root):
    data = os.urandom(40_000)
    (files_server.folder / "f.bin").write_bytes(data)
    files_server.fault("f.bin", Fault("wrong", times=-1))
    manifests.dataset("t", file_toml("f.bin", size=len(data), sha=sha256(data), sources=[http(f"{files_server.url}/f.bin")],
                                     place='{ kind = "file", to = "t/f.bin" }'))
    r = cli("fetch", "t", "--manifests", str(manifests.folder), "--root", str(root))
    assert r.code == 1
    assert "t:f.bin" in r.err and f"expected {sha256(data)}" in r.err and "got " in r.err
    assert not (root / "t/f.bin").exists()
    assert not list((root / ".vlmdata/downloads").rglob("f.bin*"))
    assert Journal(root / ".vlmdata").get("t:f.bin") is None


def test_md5_checked(cli, manifests, files_server, root):
    data = os.urandom(10_000)
    (files_server.folder / "f.bin").write_bytes(data)
    manifests.dataset("t", file_toml("f.bin", size=len(data), md5="0" * 32, sources=[http(f"{files_server.url}/f.bin")],
                                     place='{ kind = "file", to = "t/f.bin" }'))
    r = cli("fetch", "t", "--manifests", str(manifests.folder), "--root", str(root))
    assert r.code == 1 and "md5: expected 00000000" in r.err
    assert not (root / "t/f.bin").exists()


def test_lock_pin_then_mismatch(cli, manifests, files_server, root):
    data = os.urandom(30_000)
    src = files_server.folder / "f.bin"
    src.write_bytes(data)
    manifests.dataset("t", file_toml("f.bin", sources=[http(f"{files_server.url}/f.bin")],
                                     place='{ kind = "file", to = "t/f.bin" }'))
    args = ["fetch", "t", "--manifests", str(manifests.folder), "--root", str(root)]
    assert cli(*args).code == 0
    lock = json.loads((root / "vlmdata.lock").read_text())["files"]["t:f.bin"]
    assert lock["sha256"] == sha256(data) and lock["size"] == len(data) and lock["source"].endswith("/f.bin")
    # the publisher silently changes the file: a later fetch (here: --refetch) refuses it
    src.write_bytes(os.urandom(len(data)))
    os.utime(src, (1e9, 1e9))
    r = cli(*args, "--refetch")
    assert r.code == 1
    assert "pinned in vlmdata.lock" in r.err and sha256(data) in r.err
    assert "will not help" in r.err and "remove its entry from vlmdata.lock" in r.err
    assert (root / "t/f.bin").read_bytes() == data  # the old, verified file is untouched


def test_a_wrong_size_in_the_manifest_is_told_where_it_is_and_that_retrying_will_not_help(cli, manifests,
                                                                                         files_server, root):
    data = os.urandom(3694)
    (files_server.folder / "f.bin").write_bytes(data)
    manifests.dataset("t", file_toml("f.bin", size=3690, sources=[http(f"{files_server.url}/f.bin")],
                                     place='{ kind = "file", to = "t/f.bin" }'))
    r = cli("fetch", "t", "--manifests", str(manifests.folder), "--root", str(root))
    assert r.code == 1
    assert "size: expected 3,690 bytes, got 3,694 (the same bytes on all 2 downloads)" in r.err
    assert r.err.count("size: expected 3,690 bytes") == 1  # one line for both downloads, not one each
    assert f"correct its size/sha256/md5 in {manifests.folder / 'datasets' / 't.toml'} (the entry of f.bin)" in r.err
    assert "will not help" in r.err and "run the same command again" not in r.err
    assert not (root / "t/f.bin").exists()


def test_disk_preflight_refuses_then_force(cli, manifests, files_server, root, monkeypatch):
    data = os.urandom(20_000)
    (files_server.folder / "f.bin").write_bytes(data)
    manifests.dataset("t", file_toml("f.bin", size=len(data), sources=[http(f"{files_server.url}/f.bin")],
                                     place='{ kind = "file", to = "t/f.bin" }'))
    monkeypatch.setattr(Root, "free_bytes", lambda self: 1000)
    args = ["fetch", "t", "--manifests", str(manifests.folder), "--root", str(root)]
    r = cli(*args)
    assert r.code == 1 and "not enough disk" in r.err and "--force" in r.err
    assert not (root / "t/f.bin").exists() and files_server.requests == []
    assert cli(*args, "--force").code == 0
    assert (root / "t/f.bin").read_bytes() == data


def test_manual_source_says_what_to_do_then_picks_up_the_file(cli, manifests, root):
    data = b'{"1": {"imageURL": "http://x/1.jpg"}}'
    manifests.dataset("t", file_toml("dataset.json", size=len(data), sha=sha256(data),
                                     sources=['{ kind = "manual", url = "https://drive.example/folder", note = "download dataset.json from the Drive folder" }'],
                                     place='{ kind = "file", to = "t/dataset.json" }'))
    args = ["fetch", "t", "--manifests", str(manifests.folder), "--root", str(root)]
    r = cli(*args)
    dl = Root(root).download_path("t", "dataset.json")
    assert r.code == 1
    assert "cannot be downloaded automatically" in r.err and "https://drive.example/folder" in r.err and str(dl) in r.err
    dl.parent.mkdir(parents=True, exist_ok=True)
    dl.write_bytes(data)
    r = cli(*args)
    assert r.code == 0, r.err
    assert (root / "t/dataset.json").read_bytes() == data


def test_parts_are_joined_then_placed(cli, manifests, files_server, root):
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(5):
            zf.writestr(f"top/img{i}.jpg", os.urandom(3000))
    whole = buf.getvalue()
    a, b = whole[: len(whole) // 2], whole[len(whole) // 2:]
    (files_server.folder / "x.zip.001").write_bytes(a)
    (files_server.folder / "x.zip.002").write_bytes(b)
    parts = (f'parts = [{{ name = "x.zip.001", size = {len(a)}, sha256 = "{sha256(a)}", sources = [{http(files_server.url + "/x.zip.001")}] }}, '
             f'{{ name = "x.zip.002", size = {len(b)}, sha256 = "{sha256(b)}", sources = [{http(files_server.url + "/x.zip.002")}] }}]')
    text = ('name = "t"\ntitle = "t"\nlicense = "t"\n\n[[files]]\nname = "x.zip"\n' + parts +
            '\nplace = { kind = "extract", inner = "top", to = "t/images", count = 5 }\n')
    (manifests.folder / "datasets/t.toml").write_text(text)
    r = cli("fetch", "t", "--manifests", str(manifests.folder), "--root", str(root))
    assert r.code == 0, r.err
    assert sorted(p.name for p in (root / "t/images").iterdir()) == [f"img{i}.jpg" for i in range(5)]
    assert json.loads((root / "vlmdata.lock").read_text())["files"]["t:x.zip"]["sha256"] == sha256(whole)
    assert not list((root / ".vlmdata/downloads/t").glob("x.zip*"))


def test_sam_through_the_links_file(cli, demo, server, root):
    args = ["sam", "--manifests", str(demo.manifests), "--root", str(root), "--mirror", server.url]
    r = cli("fetch", *args)
    assert r.code == 1
    assert "sam/sa1b_links.txt" in r.err and "accept the SA-1B licence" in r.err
    (root / "sam").mkdir(parents=True, exist_ok=True)
    shutil.copy(demo.sam_links, root / "sam/sa1b_links.txt")
    r = cli("fetch", *args)
    assert r.code == 0, r.err
    names = sorted(p.name for p in (root / "sam/images").iterdir())
    assert len(names) == demo.counts["sam/images"] and all(n.endswith(".jpg") for n in names)  # include = *.jpg
    assert all("?" not in p for _, p, _ in server.requests)  # signed query strings dropped by the mirror


def test_only_referenced_by_streams_the_tar_subset(cli, demo, server, root):
    (root / "sam").mkdir(parents=True)
    shutil.copy(demo.sam_links, root / "sam/sa1b_links.txt")
    args = ["fetch", "sam", "--only-referenced-by", str(demo.sam_subset_json), "--manifests", str(demo.manifests),
            "--root", str(root), "--mirror", server.url]
    r = cli(*args)
    assert r.code == 0, r.err
    assert sorted(p.name for p in (root / "sam/images").iterdir()) == demo.sam_subset
    assert not any(p.name.endswith(".tar") for p in (root / ".vlmdata/downloads").rglob("*"))  # never stored
    server.reset()
    assert cli(*args).code == 0 and server.requests == []  # same subset: nothing to do
    # the whole set later: the subset placement is not mistaken for the full one
    r = cli("fetch", "sam", "--manifests", str(demo.manifests), "--root", str(root), "--mirror", server.url)
    assert r.code == 0, r.err
    assert len(list((root / "sam/images").iterdir())) == demo.counts["sam/images"]


def test_only_referenced_by_on_zips(cli, demo, root, tmp_path):
    names = sorted(p for p in zipfile.ZipFile(demo.file("coco:train2017.zip").path).namelist() if p.endswith(".jpg"))[:3]
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps([{"id": i, "image": "coco/" + n, "conversations": []} for i, n in enumerate(names)]))
    r = fetch(cli, demo, root, "coco", "--only-referenced-by", str(ref), mirror=str(demo.mirror))
    assert r.code == 0, r.err
    assert sorted(p.name for p in (root / "coco/train2017").iterdir()) == sorted(n.split("/")[-1] for n in names)


def test_unknown_dataset_is_a_user_error(cli, demo, root):
    r = fetch(cli, demo, root, "cocoo")
    assert r.code == 2 and "did you mean coco" in r.err


@pytest.mark.parametrize("bad", ["ftp://host/x", "/does/not/exist"])
def test_bad_mirror(cli, demo, root, bad):
    r = fetch(cli, demo, root, "coco", mirror=bad)
    assert r.code == 2


def test_streamed_subset_survives_a_dropped_connection(cli, demo, server, root):
    (root / "sam").mkdir(parents=True)
    shutil.copy(demo.sam_links, root / "sam/sa1b_links.txt")
    tar0 = demo.file("sam:sa_000000.tar")
    rel = str(tar0.path.relative_to(demo.mirror))
    server.fault(rel, Fault("drop", times=1, after=tar0.size // 2))
    r = cli("fetch", "sam", "--only-referenced-by", str(demo.sam_subset_json), "--manifests", str(demo.manifests),
            "--root", str(root), "--mirror", server.url)
    assert r.code == 0, r.err
    assert sorted(p.name for p in (root / "sam/images").iterdir()) == demo.sam_subset
    assert server.count(rel, "GET") == 2  # cut once, streamed again from the start


def test_signed_link_query_never_shows(cli, manifests, files_server, root):
    data = os.urandom(5000)
    (files_server.folder / "x.bin").write_bytes(data)
    (root / "links").mkdir(parents=True)
    (root / "links/table.tsv").write_text(
        "file_name\tcdn_link\n"
        f"x.bin\t{files_server.url}/x.bin?oh=SECRETSIG&oe=65AB\n"
        f"y.bin\t{files_server.url}/gone.bin?oh=SECRETSIG&oe=65AB\n")
    link = '{ kind = "linkfile", path = "links/table.tsv", name_column = "file_name", url_column = "cdn_link" }'
    manifests.dataset("t", file_toml("x.bin", size=len(data), sources=[link], place='{ kind = "file", to = "t/x.bin" }'),
                      file_toml("y.bin", sources=[link], place='{ kind = "file", to = "t/y.bin" }'))
    r = cli("fetch", "t", "--manifests", str(manifests.folder), "--root", str(root))
    assert r.code == 1  # y.bin is gone
    assert (root / "t/x.bin").read_bytes() == data
    assert "gone.bin" in r.err and "HTTP 404" in r.err
    assert "SECRETSIG" not in r.out + r.err
    assert "SECRETSIG" not in (root / ".vlmdata/journal.json").read_text()
    assert "SECRETSIG" not in (root / "vlmdata.lock").read_text()


def test_a_refetch_announces_the_bytes_it_downloads_again(cli, manifests, files_server, root):
    """Found by trying: `fetch --refetch` said "(0 B to download)" and then downloaded everything."""
    data = os.urandom(40_000)
    (files_server.folder / "f.bin").write_bytes(data)
    manifests.dataset("t", file_toml("f.bin", size=len(data), sources=[http(f"{files_server.url}/f.bin")],
                                     place='{ kind = "file", to = "t/f.bin" }'))
    args = ["fetch", "t", "--manifests", str(manifests.folder), "--root", str(root)]
    assert cli(*args).code == 0
    r = cli(*args, "--refetch")
    assert r.code == 0 and "fetching 1 of 1 file(s)" in r.err and "(40.0 kB to download)" in r.err, r.err
    plan = cli(*args, "--refetch", "--dry-run", "--json").json()
    assert plan["items"][0]["state"] == "missing" and plan["items"][0]["download_bytes"] == len(data)
