"""Item 3: a 0-byte image (Visual Genome ships some) is caught by the quick checks: layout check,
report, blend and verify without --deep count it as corrupt."""
from __future__ import annotations


def _empty_one(full) -> str:
    """Empty one VG image that a mix665k record uses; its path relative to the layout view."""
    view = full.root / "layouts" / "llava"
    rel = sorted(p.relative_to(view).as_posix() for p in (view / "vg" / "VG_100K").iterdir())[0]
    for f in (full.root / "vg" / rel.split("/", 1)[1], view / rel):  # the store file and its link in the view
        f.write_bytes(b"")
    return rel


def test_layout_check_names_empty_files(full):
    rel = _empty_one(full)
    r = full.run("layout", "check", "--layout", "llava", full.root / "layouts" / "llava", "--json")
    assert r.code == 1
    vg = next(e for e in r.json()["entries"] if e["path"] == "vg/VG_100K")
    assert vg["status"] == "empty_files" and vg["empty_files"] == [str(full.root / "layouts" / "llava" / rel)]
    text = full.run("layout", "check", "--layout", "llava", full.root / "layouts" / "llava")
    assert "1 empty (0-byte) file(s): " + rel.rsplit("/", 1)[1] in text.out


def test_report_and_blend_count_empty_images_as_corrupt(full):
    rel = _empty_one(full)
    rep = full.run("report", "llava-665k", "--json").json()
    assert rel in rep["corrupt_examples"] and rep["totals"]["images_corrupt"] == 1
    vg = next(f for f in rep["folders"] if f["folder"] == "vg/VG_100K")
    assert vg["corrupt"] == 1
    assert "corrupt 1" in full.run("report", "llava-665k").out
    r = full.run("blend", "llava-665k", "--max-drop", "100", "--json")
    assert r.code == 0, r.err
    dropped = (full.root / "blends" / "llava-665k" / "dropped.jsonl").read_text()
    assert f'"reason": "corrupt image", "detail": "{rel}"' in dropped


def test_quick_verify_finds_empty_images(full):
    rel = _empty_one(full)
    r = full.run("verify", "vg", "--json")
    assert r.code == 1
    probs = r.json()["datasets"][0]["problems"]
    assert [(p["kind"], p["path"]) for p in probs] == [("empty", str(full.root / "vg" / rel.split("/", 1)[1]))]
