"""Extraction into the store: inner-folder mapping, include, flatten, merge, subsets, atomicity."""
from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

import vlmdata.place.zip_workers as zip_workers
from vlmdata.errors import OperationError
from vlmdata.place import extract_tar_stream, place_download

from place_helpers import decodes_as_jpeg, image_bytes, make_spec


def make_zip(path: Path, members: dict[str, bytes], *, dirs=(), method=zipfile.ZIP_DEFLATED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for d in dirs:
            zf.writestr(d.rstrip("/") + "/", b"")
        for i, (name, data) in enumerate(members.items()):
            zf.writestr(name, data, compress_type=method if method is not None else
                        (zipfile.ZIP_STORED if i % 2 else zipfile.ZIP_DEFLATED))
    return path


def make_tar(path: Path | None, members: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(raw)
    return raw


def jpgs(prefix: str, n: int) -> dict[str, bytes]:
    return {f"{prefix}{i:012d}.jpg": image_bytes("jpeg", (16 + i % 7, 12 + i % 3), (i * 9 % 255, 80, 3)) for i in range(n)}


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def no_temporaries(folder: Path) -> bool:
    return not any(p.name.startswith(".tmp-") for p in folder.rglob("*"))


def test_inner_folder_content_lands_in_target_and_archive_is_deleted(tmp_path, root):
    members = jpgs("train2017/", 30)
    z = make_zip(tmp_path / "dl" / "train2017.zip", members, dirs=["train2017"], method=None)
    spec = make_spec(to="coco/train2017", inner="train2017", count=30, name="train2017.zip")
    res = place_download(spec, z, root, merge=False)
    final = root.store_path("coco/train2017")
    assert res.files == 30 and res.warnings == [] and res.to == "coco/train2017"
    assert listing(final) == sorted(n.split("/", 1)[1] for n in members)
    for name, data in members.items():
        assert (final / name.split("/", 1)[1]).read_bytes() == data
    assert not z.exists()
    assert no_temporaries(root.path)


def test_keep_archive_keeps_it(tmp_path, root):
    z = make_zip(tmp_path / "a.zip", jpgs("", 3))
    place_download(make_spec(inner=""), z, root, merge=False, keep_archive=True)
    assert z.exists() and len(listing(root.store_path("ds/images"))) == 3


def test_no_top_folder_places_everything_as_is(tmp_path, root):
    # LLaVA-Pretrain: <5-digit shard>/<9-digit id>.jpg with no root folder
    members = {f"{s:05d}/{s * 10 + i:09d}.jpg": image_bytes("jpeg") for s in range(3) for i in range(4)}
    z = make_zip(tmp_path / "images.zip", members)
    res = place_download(make_spec(to="LLaVA-Pretrain/images", inner="", count=12), z, root, merge=False)
    assert res.files == 12 and res.warnings == []
    assert listing(root.store_path("LLaVA-Pretrain/images")) == sorted(members)


def test_unknown_inner_with_one_top_folder_strips_it_and_says_so(tmp_path, root):
    z = make_zip(tmp_path / "x.zip", jpgs("VG_100K/", 5))
    res = place_download(make_spec(to="vg/VG_100K", inner=None), z, root, merge=False)
    assert len(listing(root.store_path("vg/VG_100K"))) == 5
    assert all("/" not in n for n in listing(root.store_path("vg/VG_100K")))
    assert any("one top folder 'VG_100K'" in w for w in res.warnings)


def test_unknown_inner_with_several_top_entries_places_as_is(tmp_path, root):
    members = {**jpgs("a/", 2), **jpgs("b/", 2), "readme.txt": b"hi"}
    z = make_zip(tmp_path / "x.zip", members)
    res = place_download(make_spec(inner=None), z, root, merge=False)
    assert listing(root.store_path("ds/images")) == sorted(members)
    assert any("3 top-level entries" in w for w in res.warnings)


def test_wrong_inner_falls_back_with_a_warning(tmp_path, root):
    z = make_zip(tmp_path / "x.zip", jpgs("images/", 4))
    res = place_download(make_spec(to="gqa/images", inner="gqa_images"), z, root, merge=False)
    assert len(listing(root.store_path("gqa/images"))) == 4
    assert all("/" not in n for n in listing(root.store_path("gqa/images")))
    assert any("says the inner folder is 'gqa_images'" in w for w in res.warnings)


def test_members_outside_inner_and_macos_forks_are_not_placed(tmp_path, root):
    members = {**jpgs("train_images/", 3), "other/x.jpg": b"x", "__MACOSX/train_images/._a.jpg": b"junk"}
    z = make_zip(tmp_path / "t.zip", members)
    res = place_download(make_spec(to="textvqa/train_images", inner="train_images", count=3), z, root, merge=False)
    assert len(listing(root.store_path("textvqa/train_images"))) == 3
    assert not (root.path / "other").exists()
    text = " ".join(res.warnings)
    assert "outside the inner folder" in text and "__MACOSX" in text


def test_include_keeps_only_matching_members_of_a_tar(tmp_path, root):
    members = {}
    for i in range(4):
        members[f"sa_{i}.jpg"] = image_bytes("jpeg")
        members[f"sa_{i}.json"] = b'{"annotations": []}'
    t = tmp_path / "sa_000000.tar"
    make_tar(t, members)
    spec = make_spec(to="sam/images", inner=None, include=["*.jpg"], fmt="tar", count=4, name="sa_000000.tar")
    res = place_download(spec, t, root, merge=True)
    assert listing(root.store_path("sam/images")) == [f"sa_{i}.jpg" for i in range(4)]
    assert res.files == 4


def test_flatten_drops_folders_like_unzip_j(tmp_path, root):
    members = {"chunk0/a/100.jpeg": image_bytes("jpeg"), "chunk0/b/200.jpeg": image_bytes("jpeg"),
               "chunk0/300.jpeg": image_bytes("jpeg")}
    z = make_zip(tmp_path / "images_0.zip", members)
    place_download(make_spec(to="allava_laion/images", inner=None, flatten=True), z, root, merge=True)
    assert listing(root.store_path("allava_laion/images")) == ["100.jpeg", "200.jpeg", "300.jpeg"]


def test_merge_of_two_archives_into_one_folder_keeps_what_is_there(tmp_path, root):
    target = root.store_path("allava_laion/images")
    target.mkdir(parents=True)
    (target / "from_urls.jpg").write_bytes(b"someone else's file")
    z0 = make_zip(tmp_path / "images_0.zip", {"x/1.jpeg": b"one", "x/2.jpeg": b"two"})
    z1 = make_zip(tmp_path / "images_1.zip", {"y/3.jpeg": b"three"})
    spec0 = make_spec(to="allava_laion/images", inner=None, flatten=True, name="images_0.zip")
    spec1 = make_spec(to="allava_laion/images", inner=None, flatten=True, name="images_1.zip")
    assert place_download(spec0, z0, root, merge=True).files == 2
    assert place_download(spec1, z1, root, merge=True).files == 1
    assert listing(target) == ["1.jpeg", "2.jpeg", "3.jpeg", "from_urls.jpg"]
    assert (target / "from_urls.jpg").read_bytes() == b"someone else's file"
    assert (target / "3.jpeg").read_bytes() == b"three"
    assert no_temporaries(root.path)


def test_without_merge_the_folder_is_replaced_whole(tmp_path, root):
    target = root.store_path("ds/images")
    target.mkdir(parents=True)
    (target / "stale.jpg").write_bytes(b"old")
    z = make_zip(tmp_path / "a.zip", {"new.jpg": b"new"})
    place_download(make_spec(inner=""), z, root, merge=False)
    assert listing(target) == ["new.jpg"]


def test_wanted_keeps_only_referenced_members(tmp_path, root):
    members = jpgs("train2017/", 20)
    z = make_zip(tmp_path / "train2017.zip", members)
    wanted = {"000000000003.jpg", "000000000011.jpg", "not_in_archive.jpg"}
    res = place_download(make_spec(to="coco/train2017", inner="train2017", count=20), z, root, merge=False,
                         wanted=wanted)
    assert listing(root.store_path("coco/train2017")) == ["000000000003.jpg", "000000000011.jpg"]
    assert res.files == 2 and res.warnings == []  # no count warning for a subset


def test_count_mismatch_is_a_warning(tmp_path, root):
    z = make_zip(tmp_path / "a.zip", jpgs("", 3))
    res = place_download(make_spec(inner="", count=5), z, root, merge=False)
    assert len(listing(root.store_path("ds/images"))) == 3
    assert any("placed 3 files, the manifest expects 5" in w for w in res.warnings)


class NonSeekable(io.RawIOBase):
    """What an HTTP response body looks like to tarfile: read() only."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)
        self.reads = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, b) -> int:
        self.reads += 1
        chunk = self._buf.read(min(len(b), 7000))  # small, uneven reads like a socket
        b[:len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_streaming_tar_subset_from_a_non_seekable_stream(tmp_path, root, mode):
    members = {}
    for i in range(30):
        members[f"sa_{i:07d}.jpg"] = image_bytes("jpeg", (20 + i % 5, 20))
        members[f"sa_{i:07d}.json"] = b"{}" * 50
    raw = make_tar(None, members, mode=mode)
    stream = NonSeekable(raw)
    spec = make_spec(to="sam/images", inner=None, include=["*.jpg"], fmt="tar", name="sa_000000.tar",
                     size=len(raw), count=30)
    wanted = {"sa_0000002.jpg", "sa_0000017.jpg", "sa_0000029.jpg", "sa_0000002.json"}
    res = extract_tar_stream(io.BufferedReader(stream), spec, root, wanted=wanted, merge=True)
    final = root.store_path("sam/images")
    assert listing(final) == ["sa_0000002.jpg", "sa_0000017.jpg", "sa_0000029.jpg"]  # include drops the .json
    for n in listing(final):
        assert (final / n).read_bytes() == members[n]
        decodes_as_jpeg(final / n)
    assert res.files == 3 and stream.reads > 1
    assert no_temporaries(root.path)
    assert not list(root.path.rglob("*.tar"))  # the tar itself was never stored


def test_tar_gz_named_zip_is_sniffed_by_its_bytes(tmp_path, root):
    data = make_tar(None, jpgs("train_images/", 3), mode="w:gz")
    p = tmp_path / "train_val_images.zip"
    p.write_bytes(data)
    res = place_download(make_spec(to="textvqa/train_images", inner="train_images"), p, root, merge=False)
    assert len(listing(root.store_path("textvqa/train_images"))) == 3
    assert res.files == 3


def test_large_members_stream_in_chunks(tmp_path, root, monkeypatch):
    monkeypatch.setattr(zip_workers, "SMALL_MEMBER", 1000)
    monkeypatch.setattr(zip_workers, "CHUNK", 777)
    big = os.urandom(20_000) + b"\0" * 50_000
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        z = make_zip(tmp_path / f"big{method}.zip", {"big.bin": big, "small.jpg": b"x"}, method=method)
        place_download(make_spec(inner=""), z, root, merge=False)
        assert (root.store_path("ds/images") / "big.bin").read_bytes() == big


def test_corrupt_member_fails_and_places_nothing(tmp_path, root):
    z = make_zip(tmp_path / "a.zip", {"a.jpg": b"A" * 5000, "b.jpg": b"B" * 5000}, method=zipfile.ZIP_STORED)
    data = bytearray(z.read_bytes())
    i = data.find(b"B" * 100)
    data[i + 10] ^= 0xFF  # flip a byte of the second member: its CRC no longer matches
    z.write_bytes(bytes(data))
    with pytest.raises(OperationError, match="CRC"):
        place_download(make_spec(inner=""), z, root, merge=False)
    assert not root.store_path("ds/images").exists()
    assert no_temporaries(root.path)


def test_not_an_archive_is_a_clear_error(tmp_path, root):
    p = tmp_path / "a.zip"
    p.write_bytes(b"<html>Too many requests</html>")
    with pytest.raises(OperationError, match="neither a zip nor a tar"):
        place_download(make_spec(inner=""), p, root, merge=False)


def test_kill_mid_extraction_leaves_final_untouched_and_no_temp(tmp_path, root, monkeypatch):
    final = root.store_path("coco/train2017")
    final.mkdir(parents=True)
    (final / "old.jpg").write_bytes(b"the old complete tree")
    z = make_zip(tmp_path / "train2017.zip", jpgs("train2017/", 40))
    real = zip_workers.extract_member
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 25:
            raise KeyboardInterrupt  # what Ctrl-C / a kill looks like from inside
        return real(*args, **kwargs)

    monkeypatch.setattr(zip_workers, "extract_member", dying)
    with pytest.raises(KeyboardInterrupt):
        place_download(make_spec(to="coco/train2017", inner="train2017"), z, root, merge=False, jobs=1)
    assert listing(final) == ["old.jpg"]
    assert no_temporaries(root.path)
    assert z.exists()  # the archive stays for the next run


def test_kind_file_is_moved_atomically(tmp_path, root):
    src = tmp_path / "dl" / "llava_v1_5_mix665k.json"
    src.parent.mkdir()
    src.write_text("[]")
    spec = make_spec(kind="file", to="LLaVA-Instruct-150K/llava_v1_5_mix665k.json", name="llava_v1_5_mix665k.json")
    res = place_download(spec, src, root, merge=False)
    assert res.files == 1
    assert root.store_path(spec.place.to).read_text() == "[]" and not src.exists()
    src.write_text("[1]")
    place_download(spec, src, root, merge=False, keep_archive=True)
    assert root.store_path(spec.place.to).read_text() == "[1]" and src.exists()


def test_a_kept_file_is_linked_or_copied_under_a_name_no_one_else_uses(tmp_path, monkeypatch):
    # (kept archives placed as files, and `mirror`): the link went through `.tmp-<name>.<pid>`, which two
    # threads of one process placing the same name shared (one's rename then found nothing), and the copy
    # fallback was renamed into place without an fsync.
    import errno
    import threading

    from vlmdata import atomic

    src, dest = tmp_path / "src.json", tmp_path / "store" / "a.json"
    src.write_bytes(b"[1, 2]")
    errors = []

    def place() -> None:
        try:
            for _ in range(200):
                assert atomic.link_or_copy(src, dest) == "hardlink"
        except BaseException as e:  # noqa: BLE001 - collected for the assertion below
            errors.append(e)
    threads = [threading.Thread(target=place) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and dest.read_bytes() == b"[1, 2]" and os.path.samefile(src, dest)
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    monkeypatch.setattr(os, "link", lambda a, b: (_ for _ in ()).throw(OSError(errno.EXDEV, "cross-device")))
    dest.unlink()
    assert atomic.link_or_copy(src, dest) == "copy" and dest.read_bytes() == b"[1, 2]" and synced
    assert not os.path.samefile(src, dest) and sorted(p.name for p in dest.parent.iterdir()) == ["a.json"]


def test_in_archive_symlink_is_kept_as_a_relative_link(tmp_path, root):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("top/real.jpg")
        data = image_bytes("jpeg")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
        li = tarfile.TarInfo("top/sub/alias.jpg")
        li.type = tarfile.SYMTYPE
        li.linkname = "../real.jpg"
        tf.addfile(li)
        hi = tarfile.TarInfo("top/hard.jpg")
        hi.type = tarfile.LNKTYPE
        hi.linkname = "top/real.jpg"
        tf.addfile(hi)
    p = tmp_path / "a.tar"
    p.write_bytes(buf.getvalue())
    res = place_download(make_spec(inner="top"), p, root, merge=False)
    final = root.store_path("ds/images")
    assert (final / "sub" / "alias.jpg").is_symlink()
    assert os.readlink(final / "sub" / "alias.jpg") == "../real.jpg"
    assert (final / "sub" / "alias.jpg").read_bytes() == data
    assert (final / "hard.jpg").read_bytes() == data
    assert res.files == 3


def test_flatten_name_clashes_keep_the_last_copy_with_one_warning(tmp_path, root):
    members = {f"d{i}/same.jpeg": bytes([i]) * 10 for i in range(5)}
    z = make_zip(tmp_path / "images_0.zip", members)
    res = place_download(make_spec(to="allava_laion/images", inner=None, flatten=True), z, root, merge=True)
    assert listing(root.store_path("allava_laion/images")) == ["same.jpeg"]
    assert (root.store_path("allava_laion/images") / "same.jpeg").read_bytes() == bytes([4]) * 10
    assert [w for w in res.warnings if "more than once" in w] == [
        "images_0.zip: 4 name(s) appear more than once (e.g. same.jpeg, same.jpeg, same.jpeg); the last copy was kept"]


def test_temp_folders_of_a_killed_process_are_cleaned_up(tmp_path, root):
    parent = root.store_path("coco")
    stale = parent / ".tmp-train2017.999999999.abc" / "out"  # no such pid
    stale.mkdir(parents=True)
    (stale / "half.jpg").write_bytes(b"x" * 100)
    other = parent / ".tmp-val2017.999999999.abc"  # another target's: not ours to judge here
    other.mkdir()
    from vlmdata.atomic import machine_tag

    (parent / f".tmp-train2017.999999999-{machine_tag()}.abc").mkdir()  # this machine's, its pid gone
    elsewhere = f".tmp-train2017.999999999-{'0' * 8}.abc"  # another machine's (a shared root): its pid means nothing here
    (parent / elsewhere).mkdir()
    z = make_zip(tmp_path / "train2017.zip", jpgs("train2017/", 2))
    place_download(make_spec(to="coco/train2017", inner="train2017"), z, root, merge=False)
    assert sorted(p.name for p in parent.iterdir()) == [elsewhere, ".tmp-val2017.999999999.abc", "train2017"]


def test_large_highly_compressible_member_with_output_held_back(tmp_path, root, monkeypatch):
    # Input runs out while zlib still holds output back (the per-call output cap is tiny here):
    # the member is still unpacked whole.
    monkeypatch.setattr(zip_workers, "SMALL_MEMBER", 1000)
    monkeypatch.setattr(zip_workers, "CHUNK", 64)
    big = b"\0" * 300_000 + os.urandom(3000) + b"\1" * 200_000
    z = make_zip(tmp_path / "zeros.zip", {"z.bin": big}, method=zipfile.ZIP_DEFLATED)
    place_download(make_spec(inner=""), z, root, merge=False)
    assert (root.store_path("ds/images") / "z.bin").read_bytes() == big


@pytest.mark.parametrize("name", ["share_textvqa", "web-celebrity", "web-landmark", "wikiart"])
def test_sharegpt4v_web_zip_lands_where_the_json_paths_point(tmp_path, root, name):
    """ShareGPT4V's web-data zips hold data/<name>/images/<file> (the path inside its data/ folder;
    third-party scripts move data/<name>/images/* up after unzipping). With the inner folder unknown,
    only the single top folder data/ was removed: the images landed in <name>/images/<name>/images/,
    where cap100k's "<name>/images/<file>" does not reach."""
    from vlmdata.manifest import load_catalog

    spec = load_catalog().dataset("sharegpt4v_web").file(f"{name}.zip")
    members = jpgs(f"data/{name}/images/", 3)
    z = make_zip(tmp_path / f"{name}.zip", members, dirs=["data", f"data/{name}", f"data/{name}/images"])
    res = place_download(spec, z, root, merge=False)
    assert listing(root.store_path(f"{name}/images")) == sorted(n.rsplit("/", 1)[1] for n in members)
    assert res.warnings == []
