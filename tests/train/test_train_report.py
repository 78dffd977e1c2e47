"""Issue 13 item 6: `bad_samples: skip` counts records, not visits (a bad record met in each of 2 epochs is 1)."""
from __future__ import annotations

import json
import shutil

from train_helpers import run_vlmtrain


def test_skipped_records_are_counted_once_over_two_epochs(instruct_blend, make_config, tmp_path):
    copy = tmp_path / "one-bad"
    shutil.copytree(instruct_blend, copy)
    meta = json.loads((copy / "blend.json").read_text())
    meta["image_root"] = str(copy / "images")
    (copy / "blend.json").write_text(json.dumps(meta))
    bad = sorted((copy / "images").iterdir())[0]
    bad.write_bytes(b"not a jpeg")  # corrupt: decoded at train time, in each epoch
    r = run_vlmtrain("run", make_config(copy, "two", max_steps=-1, num_train_epochs=2, bad_samples="skip"))
    assert r.code == 0, r.err
    report = json.loads((tmp_path / "two" / "data_report.json").read_text())
    assert report["skipped"] == 1 and len(report["skipped_ids"]) == 1
    assert report["skipped_visits"] == 2 and report["bad_images"] == 1


def test_report_counts_records_not_visits():
    from vlmtrain.data import DataReport

    rep = DataReport(rows=3, encoded=3)
    meta = {"skipped": [{"id": "a", "reason": "cannot decode", "path": "a.jpg"}]}
    rep.record_batch(meta)
    rep.record_batch(meta)
    rep.record_batch({"skipped": [{"id": "b", "reason": "file not found", "path": "b.jpg"}]})
    rep.record_bad_image("a", "a.jpg", "cannot decode")
    rep.record_bad_image("a", "a.jpg", "cannot decode")
    d = rep.to_dict()
    assert d["skipped"] == 2 and d["skipped_ids"] == ["a", "b"] and d["skipped_visits"] == 3 and d["bad_images"] == 1
    assert "2 skipped at train time (3 visits)" in rep.summary()
