"""`plan` arithmetic: bytes to download, disk needed, present and partial files, disk refusal."""
from __future__ import annotations

import json

from vlmdata.manifest import load_catalog
from vlmdata.plan import plan_files
from vlmdata.state import Journal, JournalEntry, Root


def test_plan_arithmetic_for_missing_files(tmp_path, manifests):
    cat = load_catalog([manifests])
    plan = plan_files(Root(tmp_path / "r"), cat.select_files(["tiny", "tiny:extra.tar"]))
    by = {i.file: i for i in plan.items}
    assert by["pics.zip"].download_bytes == 1000 and by["pics.zip"].disk_bytes == 1000 + 1500
    assert by["labels.json"].download_bytes == 200 and by["labels.json"].disk_bytes == 200  # moved, not copied
    assert by["extra.tar"].download_bytes == 5000 and not by["extra.tar"].size_exact  # an approximate size
    assert by["extra.tar"].disk_bytes == 5000 + 5000  # unpacked size unknown: assume the archive's
    assert plan.download_bytes == 6200
    assert plan.disk_bytes == 2500 + 200 + 10000
    assert all(i.state == "missing" for i in plan.items)


def test_present_and_partial_files_reduce_the_plan(tmp_path, manifests):
    cat = load_catalog([manifests])
    root = Root(tmp_path / "r")
    root.ensure_writable()
    (root.path / "tiny" / "pics").mkdir(parents=True)
    Journal(root.state_dir).record(JournalEntry(key="tiny:pics.zip", size=1000, sha256="0" * 64,
                                                source="http://example.org/pics.zip", to="tiny/pics"))
    part = root.part_path(root.download_path("tiny", "labels.json"))
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 150)
    plan = plan_files(root, cat.select_files(["tiny"]))
    by = {i.file: i for i in plan.items}
    assert by["pics.zip"].state == "present" and by["pics.zip"].download_bytes == 0 and by["pics.zip"].disk_bytes == 0
    assert by["labels.json"].state == "partial" and by["labels.json"].download_bytes == 50
    assert plan.download_bytes == 50


def test_journal_entry_without_its_target_is_not_present(tmp_path, manifests):
    cat = load_catalog([manifests])
    root = Root(tmp_path / "r")
    root.ensure_writable()
    Journal(root.state_dir).record(JournalEntry(key="tiny:pics.zip", size=1000, sha256=None, source="x", to="tiny/pics"))
    plan = plan_files(root, cat.select_files(["tiny:pics.zip"]))
    assert plan.items[0].state == "missing"  # someone deleted the folder: fetch again


def test_plan_cli_on_an_empty_root_prints_bytes_and_disk(cli, tmp_path, monkeypatch):
    # COCO + GQA need ~82 GB; the answer must not depend on this machine's free disk.
    monkeypatch.setattr(Root, "free_bytes", lambda self: 10**14)
    r = cli("plan", "coco", "gqa", "--root", str(tmp_path / "empty"))
    assert r.code == 0, r.err
    assert "coco:train2017.zip" in r.out and "gqa:" in r.out
    assert "to download:" in r.out and "disk needed:" in r.out and "free on" in r.out
    r = cli("plan", "coco", "gqa", "--root", str(tmp_path / "empty"), "--json")
    doc = json.loads(r.out)
    assert doc["download_bytes"] >= 19_336_861_798
    assert doc["fits"] is True and doc["free_bytes"] > 0
    assert not (tmp_path / "empty").exists()  # a dry run writes nothing


def test_plan_refuses_when_the_disk_cannot_hold_it(cli, tmp_path, manifests, writer):
    writer(manifests / "datasets" / "huge.toml", """
        name = "huge"
        title = "too big"
        license = "test"
        [[files]]
        name = "h.zip"
        size = 900000000000000000
        sha256 = "unknown"
        sources = [{ kind = "http", url = "http://example.org/h.zip" }]
        place = { kind = "extract", inner = "", to = "huge" }
        """)
    r = cli("plan", "huge", "--root", str(tmp_path), "--manifests", str(manifests))
    assert r.code == 1
    assert "not enough disk" in r.err and "fits: NO" in r.out


def test_a_download_another_process_finishes_mid_look_is_counted_not_a_crash(tmp_path, monkeypatch):
    """Three `fetch --shard` processes on one root: one plans while another renames a finished .part
    into place. The plan looked (.part exists), then stat'ed the vanished .part: FileNotFoundError."""
    import os
    from pathlib import Path

    from vlmdata.state import partial

    dl = tmp_path / "whole.bin"
    part = partial.part_path(dl)
    real_stat, looks = Path.stat, []

    def stat(self, *a, **k):  # the other process renames the .part between the first look and the second
        if self == part:
            looks.append(1)
            if len(looks) == 2 and os.path.exists(part):
                os.rename(part, dl)
        return real_stat(self, *a, **k)

    monkeypatch.setattr(Path, "stat", stat)
    part.write_bytes(b"x" * 10)
    assert partial.partial_progress(dl) == 0 and dl.stat().st_size == 10  # no partial bytes left: it finished
    dl.unlink()
    part.write_bytes(b"y" * 7)
    looks.clear()
    assert partial._bytes_of(dl) == 7  # counted as the finished file it became
