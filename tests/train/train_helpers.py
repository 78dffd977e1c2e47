"""Helpers for vlmtrain's model / config / trainer / CLI tests: tiny blends, tiny configs, a CLI runner."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.cli_runner import CliResult, run_main

REPO = Path(__file__).resolve().parents[2]


TINY_TEXT = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024}
TINY_VISION = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 2, "patch_size": 8, "image_size": 32}


def run_vlmtrain(*args: str, env: dict[str, str] | None = None) -> CliResult:
    """Run the real `vlmtrain` entry point in-process; capture output and exit code."""
    from vlmtrain.cli import main

    return run_main(main, "vlmtrain", *args, env=env)


@pytest.fixture
def vlmtrain():
    return run_vlmtrain


@pytest.fixture(scope="session")
def instruct_blend(tmp_path_factory) -> Path:
    from vlmtrain.tinydata import write_tiny_blend

    return write_tiny_blend(tmp_path_factory.mktemp("blend") / "instruct", n=24, kind="instruct", seed=1)


@pytest.fixture(scope="session")
def caption_blend(tmp_path_factory) -> Path:
    from vlmtrain.tinydata import write_tiny_blend

    return write_tiny_blend(tmp_path_factory.mktemp("blend") / "caption", n=16, kind="caption", seed=2)


def tiny_config(dataset_dir: Path, output_dir: Path, **overrides) -> dict:
    cfg = {
        "stage": 2, "random_init": True, "text_config": dict(TINY_TEXT), "vision_config": dict(TINY_VISION),
        "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "tokenizer_train_vocab_size": 400,
        "version": "vicuna_v1", "dataset_dir": str(dataset_dir), "model_max_length": 512,
        "output_dir": str(output_dir), "per_device_train_batch_size": 4, "max_steps": 6, "learning_rate": 3e-3,
        "warmup_ratio": 0.0, "save_steps": 100, "logging_steps": 1, "seed": 7, "report_to": [],
    }
    cfg.update(overrides)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture
def make_config(tmp_path):
    def make(dataset_dir: Path, name: str = "run", **overrides) -> Path:
        return write_config(tmp_path / f"{name}.yaml", tiny_config(dataset_dir, tmp_path / name, **overrides))

    return make


def read_metrics(run_dir: Path) -> dict[int, dict]:
    import json

    rows = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            rows[row["step"]] = row
    return rows


SHIPPED_CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
