"""Fixtures for vlmtrain's model / config / trainer / CLI tests (helpers in train_helpers.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from train_helpers import caption_blend, instruct_blend, make_config, vlmtrain  # noqa: E402,F401


@pytest.fixture
def one_thread():
    """Torch on one thread, for tests that compare two runs bitwise: with two, MKL may use fewer threads for
    a matmul when the machine is busy (MKL_DYNAMIC), which changes the order of a sum, and a run then
    differs in the last bit from the same run on an idle machine (tests/train/test_resume_modes.py)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
