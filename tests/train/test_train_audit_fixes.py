"""Defects a new-user audit found: each test is the audit's try, now answered as the project's rules say."""
from __future__ import annotations

import errno
import json
from pathlib import Path

from train_helpers import REPO, run_vlmtrain


def _stage3_stub(tmp_path: Path) -> Path:
    """A stage-3 run folder with its config and no weights: enough for export-moe-llava's checks."""
    from vlmtrain.config import load_config

    run = tmp_path / "runs" / "stage3"
    run.mkdir(parents=True)
    cfg = load_config(REPO / "configs" / "tiny-moe-cpu-stage3.yaml")
    (run / "vlmtrain_config.json").write_text(json.dumps(cfg.to_dict(), default=str))
    return run


def test_export_moe_llava_to_a_read_only_place_says_so_before_reading_weights(tmp_path, monkeypatch):
    """Found by trying: OUT on a read-only mount ended in a traceback (OSError: [Errno 30]) after the
    weights were read. Now the place is tried first; the run stub has no weights, so getting past
    the check would fail differently."""
    import vlmdata.atomic

    def read_only(path):
        raise OSError(errno.EROFS, "Read-only file system", str(Path(path).parent / ".tmp-exp.x"))

    monkeypatch.setattr(vlmdata.atomic, "temp_dir_beside", read_only)
    run = _stage3_stub(tmp_path)
    r = run_vlmtrain("export-moe-llava", run, tmp_path / "ro" / "exp")
    assert r.code == 2, r.err
    assert f"{tmp_path / 'ro' / 'exp'}: cannot write the export there (read-only file system)" in r.err
    assert "-> give another OUT" in r.err and "Traceback" not in r.err


def test_export_moe_llava_under_a_file_says_so(tmp_path):
    run = _stage3_stub(tmp_path)
    (tmp_path / "a-file").write_text("x")
    r = run_vlmtrain("export-moe-llava", run, tmp_path / "a-file" / "exp")
    assert r.code == 2 and f"cannot write the export there (File exists: {tmp_path / 'a-file'})" in r.err, r.err
    assert (tmp_path / "a-file").read_text() == "x"
