"""A tokenizer trained on the fly by every rank of a run at once (several processes, one output folder,
as on one machine or on nodes sharing it): all load the same vocabulary, none reads a half-written file."""
from __future__ import annotations

import subprocess
import sys

import pytest

from train_helpers import REPO

LOAD = """
import hashlib, json, sys
from vlmtrain.config import load_config
from vlmtrain.train.tokenizer import load_tokenizer
tok = load_tokenizer(load_config(sys.argv[1]))
print(hashlib.sha256(json.dumps(sorted(tok.get_vocab().items())).encode()).hexdigest())
"""


@pytest.mark.parametrize("kind", ["sentencepiece", "bytelevel"])
def test_ranks_training_the_tokenizer_at_once_share_one_vocabulary(kind, instruct_blend, make_config, tmp_path):
    cfg = make_config(instruct_blend, tokenizer_train_kind=kind)
    procs = [subprocess.Popen([sys.executable, "-c", LOAD, str(cfg)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    hashes = {out.strip() for out, _ in outs}
    assert len(hashes) == 1, hashes
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".tokenizer")) == []  # no leftovers
    files = {p.name: p.stat().st_mtime_ns for p in (run / "tokenizer").iterdir()}
    again = subprocess.run([sys.executable, "-c", LOAD, str(cfg)], cwd=REPO, capture_output=True, text=True,
                           timeout=300)  # a later (resumed) run: the same one, loaded, not trained again
    assert again.returncode == 0 and again.stdout.strip() in hashes, again.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in (run / "tokenizer").iterdir()} == files
