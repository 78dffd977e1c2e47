"""Item 1 (the blend half): a blend that loses more than --max-drop of a recipe entry's records
stops with exit 1, writes nothing, keeps the previous output, and says what to fetch."""
from __future__ import annotations

import shutil
from pathlib import Path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_only_the_json_fetched_stops_and_names_the_datasets(empty):
    assert empty.run("fetch", "llava_instruct").code == 0
    out = empty.root / "blends" / "llava-665k"
    r = empty.run("blend", "llava-665k")
    assert r.code == 1, r.err
    assert "would drop more than --max-drop 1%" in r.err and "nothing would be kept" not in r.err
    assert f"vlmdata fetch coco gqa ocr_vqa textvqa vg --layout llava --root {empty.root}" in r.err
    assert not out.exists()
    # with the loss accepted it writes; a later blend that stops leaves that output as it was
    ok = empty.run("blend", "llava-665k", "--max-drop", "100", "--json")
    assert ok.code == 0, ok.err
    assert ok.json()["totals"]["rows"] == ok.json()["totals"]["text_only"] > 0
    before = _snapshot(out)
    r = empty.run("blend", "llava-665k")
    assert r.code == 1 and f"{out} is as it was" in r.err
    assert _snapshot(out) == before
    assert not [p for p in out.parent.iterdir() if p.name != "llava-665k"]  # no temporary folder left


def test_known_dead_images_pass_under_the_limit_and_report_says_when_blend_would_stop(full):
    # the demo mirror loses a few records on purpose (a dead URL, a corrupt image, absent images)
    rep = full.run("report", "llava-665k", "--json")
    assert rep.code == 0
    t = rep.json()["totals"]
    lost, n = t["would_drop"], t["sampled"]
    assert 0.01 < lost / n < 0.2
    stop = rep.json()["blend_would_stop"]
    assert stop["max_drop"] == 1.0 and stop["over"][0]["dropped"] == lost
    assert "vlmdata report" not in stop["hint"] and "the examples above are some" in stop["hint"]  # (it is the report)
    limit = int(100 * lost / n) + 1
    r = full.run("blend", "llava-665k")
    assert r.code == 1
    assert f"llava-mix665k: {lost} of {n} dropped ({100 * lost / n:.1f}%)" in r.err
    assert "dead URLs" in r.err and f"--max-drop {limit}" in r.err and "vlmdata fetch" not in r.err
    assert "`vlmdata report llava-665k` lists them" in r.err  # the blend points at the report
    r = full.run("blend", "llava-665k", "--max-drop", str(limit), "--json")
    assert r.code == 0, r.err
    assert r.json()["totals"]["rows"] == n - lost and r.json()["options"]["max_drop"] == limit


def test_a_view_built_before_a_dataset_was_fetched_says_layout_build(full):
    shutil.rmtree(full.root / "layouts" / "llava" / "gqa")  # as if gqa was fetched after `--layout llava`
    r = full.run("blend", "llava-665k")
    assert r.code == 1
    assert f"vlmdata layout build --layout llava --root {full.root}" in r.err
    assert "vlmdata fetch" not in r.err


def test_malformed_records_over_the_limit_point_at_report(full, tmp_path):
    import json

    bad = [{"id": i, "video": "v.mp4", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
           for i in range(3)]
    good = [{"id": "t", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}]
    (tmp_path / "mine.json").write_text(json.dumps(good + bad))
    recipe = tmp_path / "mine.toml"
    recipe.write_text(f'name = "mine"\ntitle = "t"\nlayout = "llava"\n[[entries]]\nname = "m"\n'
                      f'path = "{tmp_path / "mine.json"}"\n')
    r = full.run("blend", recipe)
    assert r.code == 1
    assert "m: 3 of 4 dropped (75.0%): video not supported: 3" in r.err
    assert f"`vlmdata report {recipe}` shows them" in r.err
    assert "--max-drop 76" in r.err
