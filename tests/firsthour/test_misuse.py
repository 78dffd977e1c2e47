"""Misuse of the vlmdata commands that ran on silently (audit of every command's options): an option
that a combination ignores, a run that did nothing yet exits 0, a crash in a terminal."""
from __future__ import annotations

import shutil

from firsthour_helpers import run_in_terminal


def test_normalize_in_a_terminal_draws_its_bar(fetched, tmp_path):
    """normalize's progress bar (drawn only on a terminal) used `sys` without importing it: every
    interactive run ended in a NameError traceback before touching a file."""
    folder = tmp_path / "images"
    shutil.copytree(fetched.root / "ocr_vqa" / "images", folder)
    code, text = run_in_terminal(*fetched.args("normalize", "ocr_vqa", folder))
    assert "Traceback" not in text, text
    assert code == 0 and "already ok" in text, text
