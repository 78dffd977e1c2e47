"""Fixtures for vlmtrain's model / config / trainer / CLI tests (helpers in train_helpers.py)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from train_helpers import caption_blend, instruct_blend, make_config, vlmtrain  # noqa: E402,F401
