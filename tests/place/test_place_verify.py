"""`vlmdata verify`: quick and deep checks of what the journal says was placed."""
from __future__ import annotations

import hashlib
import json
import textwrap
import zipfile
from pathlib import Path

import pytest

from vlmdata.manifest import load_catalog
from vlmdata.place import place_download
from vlmdata.state import Journal, JournalEntry, LockEntry, LockFile, Root

from place_helpers import image_bytes


@pytest.fixture
def toy(tmp_path):
    """A manifests folder with dataset `toy` (an image zip and a JSON), both fetched into a root
    the way `vlmdata fetch` does it (placed, journaled, the zip kept)."""
    pics = {f"images/{i}.jpg": image_bytes("jpeg", (20 + i, 20)) for i in range(6)}
    zpath = tmp_path / "src" / "images.zip"
    zpath.parent.mkdir()
    with zipfile.ZipFile(zpath, "w") as zf:
        for n, b in pics.items():
            zf.writestr(n, b)
    meta = b'[{"id": "1", "image": "toy/images/1.jpg"}]'
    zsize, zsha = zpath.stat().st_size, hashlib.sha256(zpath.read_bytes()).hexdigest()
    m = tmp_path / "manifests"
    (m / "datasets").mkdir(parents=True)
    (m / "datasets" / "toy.toml").write_text(textwrap.dedent(f"""
        name = "toy"
        title = "Toy"
        license = "test"

        [[files]]
        name = "images.zip"
        size = {zsize}
        sha256 = "{zsha}"
        sources = [{{ kind = "http", url = "http://example.test/images.zip" }}]
        place = {{ kind = "extract", inner = "images", to = "toy/images", count = 6 }}

        [[files]]
        name = "meta.json"
        size = {len(meta)}
        sha256 = "unknown"
        sources = [{{ kind = "http", url = "http://example.test/meta.json" }}]
        place = {{ kind = "file", to = "toy/meta.json" }}
        """))
    cat = load_catalog([str(m)])
    root = Root(tmp_path / "root")
    root.ensure_writable()
    journal = Journal(root.state_dir)
    ds = cat.dataset("toy")
    dl = root.download_path("toy", "images.zip")
    dl.parent.mkdir(parents=True)
    dl.write_bytes(zpath.read_bytes())
    res = place_download(ds.file("images.zip"), dl, root, merge=False, keep_archive=True)
    journal.record(JournalEntry("toy:images.zip", zsize, zsha, "http://example.test/images.zip", "toy/images",
                                files=res.files))
    mj = root.download_path("toy", "meta.json")
    mj.write_bytes(meta)
    msha = hashlib.sha256(meta).hexdigest()
    place_download(ds.file("meta.json"), mj, root, merge=False)
    journal.record(JournalEntry("toy:meta.json", len(meta), msha, "http://example.test/meta.json", "toy/meta.json",
                                files=1))
    LockFile(root.lock_path).pin("toy:meta.json", LockEntry(msha, len(meta), "http://example.test/meta.json"))
    args = ["--manifests", str(m), "--root", str(root.path)]
    return root, args


def kinds(report: dict) -> list[tuple[str, str]]:
    return sorted((p["kind"], Path(p["path"]).name) for d in report["datasets"] for p in d["problems"])


def test_quick_and_deep_pass_on_a_good_root_and_status_says_verified(toy, cli):
    root, args = toy
    r = cli("verify", "toy", *args, "--json")
    assert r.code == 0, r.out + r.err
    assert r.json()["ok"] and r.json()["datasets"][0]["files"] == 2
    r = cli("verify", "toy", "--deep", *args, "--json")
    assert r.code == 0, r.out
    assert r.json()["datasets"][0]["images"] == 6
    rows = {x["name"]: x["state"] for x in cli("status", *args, "--json").json()}
    assert rows["toy"] == "verified"
    report = json.loads((root.state_dir / "reports" / "verify.json").read_text())
    assert report["ok"] and report["deep"]
    assert Journal(root.state_dir).verified()["toy"]["deep"] is True


def test_deep_finds_empty_truncated_and_gif_named_jpg(toy, cli):
    root, args = toy
    imgs = root.store_path("toy/images")
    (imgs / "0.jpg").write_bytes(b"")
    full = (imgs / "1.jpg").read_bytes()
    (imgs / "1.jpg").write_bytes(full[: len(full) - 60])
    (imgs / "2.jpg").write_bytes(image_bytes("gif"))
    quick = cli("verify", "toy", *args, "--json")
    assert quick.code == 1 and kinds(quick.json()) == [("empty", "0.jpg")]  # quick only sees sizes
    r = cli("verify", "toy", "--deep", *args, "--json")
    assert r.code == 1
    assert kinds(r.json()) == [("empty", "0.jpg"), ("truncated", "1.jpg"), ("wrong_format", "2.jpg")]
    assert all(p["path"].startswith(str(imgs)) for p in r.json()["datasets"][0]["problems"])
    report = json.loads((root.state_dir / "reports" / "verify.json").read_text())
    assert kinds(report) == kinds(r.json())
    assert Journal(root.state_dir).verified()["toy"]["ok"] is False
    rows = {x["name"]: x["state"] for x in cli("status", *args, "--json").json()}
    assert rows["toy"] == "damaged"  # (a failed verify with nothing placed since: status says so)
    human = cli("verify", "toy", "--deep", *args)
    assert "wrong_format" in human.out and "vlmdata normalize" in human.out and "2.jpg" in human.out


def test_quick_finds_missing_files_sizes_and_targets(toy, cli):
    root, args = toy
    (root.store_path("toy/images") / "3.jpg").unlink()
    kept = root.download_path("toy", "images.zip")
    with open(kept, "ab") as fh:
        fh.write(b"junk")
    root.store_path("toy/meta.json").unlink()
    r = cli("verify", *args, "--json")
    assert r.code == 1
    assert kinds(r.json()) == [("count", "images"), ("missing", "meta.json"), ("size", "images.zip")]


def test_deep_checks_hashes_of_plain_files_and_kept_archives(toy, cli):
    root, args = toy
    meta = root.store_path("toy/meta.json")
    meta.write_bytes(meta.read_bytes().replace(b"1", b"2"))  # same size, other bytes
    kept = root.download_path("toy", "images.zip")
    data = bytearray(kept.read_bytes())
    data[-30] ^= 1
    kept.write_bytes(bytes(data))
    r = cli("verify", "toy", "--deep", *args, "--json")
    assert r.code == 1
    assert kinds(r.json()) == [("sha256", "images.zip"), ("sha256", "meta.json")]
    details = " ".join(p["detail"] for p in r.json()["datasets"][0]["problems"])
    assert "(manifest)" in details and "(vlmdata.lock)" in details


def test_never_fetched_datasets(toy, cli, tmp_path):
    root, args = toy
    r = cli("verify", *args)
    assert r.code == 0
    assert "never fetched" in r.out and "coco" in r.out
    r = cli("verify", "coco", *args, "--json")
    assert r.code == 1 and r.json()["datasets"][0]["problems"][0]["kind"] == "not_fetched"
    empty = cli("verify", "--root", str(tmp_path / "nothing"))  # a root that does not exist: a wrong --root
    assert empty.code == 2 and not (tmp_path / "nothing").exists()
    assert cli("verify", "no_such_dataset", *args).code == 2
