"""Read a published checkpoint as it ships (config.json + safetensors / .bin shards) and load it key for key.

The towers and LLMs whose published layout is not a transformers class (InternViT-6B, Qwen-1_8B) or
that need a wrapper (ConvLLaVA's ConvNeXt) are read here as plain state dicts, renamed by their own
module, and handed to transformers' ``from_pretrained(None, config=..., state_dict=...)``: nothing
runs the publisher's code. A folder or a Hub id both work (a
Hub id goes through the local cache, so ``HF_HUB_OFFLINE=1`` runs stay offline).

:func:`from_state_dict` refuses a checkpoint whose keys or shapes differ from the model's (beyond the
keys the caller says are new), so a layout mistake is an error, not a silently random tower.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from vlmtrain.config import ConfigError

WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")


def _resolve(name: str, filename: str) -> Path | None:
    """``name/filename`` for a local folder; the cached (or downloaded) file for a Hub id; None if absent."""
    local = Path(name).expanduser()
    if local.is_dir():
        p = local / filename
        return p if p.is_file() else None
    from transformers.utils import cached_file

    try:
        found = cached_file(name, filename, _raise_exceptions_for_missing_entries=False)
    except (OSError, ValueError):
        return None
    return Path(found) if found else None


def read_config_json(name: str) -> dict | None:
    """The raw config.json of a checkpoint (no class, no remote code), or None when there is none."""
    p = _resolve(name, "config.json")
    if p is None:
        return None
    try:
        data = json.loads(p.read_text())
    except ValueError as e:
        raise ConfigError(f"{p} is not valid JSON: {e}") from None
    return data if isinstance(data, dict) else None


def read_state_dict(name: str) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint: one file or the shards its index names, safetensors or .bin."""
    for fname in WEIGHT_FILES:
        p = _resolve(name, fname)
        if p is None:
            continue
        if fname.endswith(".index.json"):
            shards = sorted(set(json.loads(p.read_text())["weight_map"].values()))
            files = []
            for s in shards:
                f = _resolve(name, s)
                if f is None:
                    raise ConfigError(f"{name}: {fname} names {s}, which is missing",
                                      hint="download the checkpoint completely (every shard)")
                files.append(f)
        else:
            files = [p]
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(_read_one(f))
        return state
    raise ConfigError(f"no weights in {name} (looked for {', '.join(WEIGHT_FILES)})",
                      hint="point the config at the downloaded checkpoint folder, or use `random_init: true`")


def _read_one(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def from_state_dict(cls, config, state: dict[str, torch.Tensor], *, source: str, new: Iterable[str] = (),
                    **kwargs) -> nn.Module:
    """``cls.from_pretrained`` on an in-memory state dict (renamed from a published layout), checked key for key.

    transformers does the loading (dtype, attention implementation, non-persistent buffers, tied
    weights); this adds the strictness: every model key must come from the checkpoint and every
    checkpoint key must land, same shapes, except keys under the ``new`` prefixes (a stage the run
    adds on purpose). Anything else is a ConfigError naming the first few keys.
    """
    model, info = cls.from_pretrained(None, config=config, state_dict=state, output_loading_info=True, **kwargs)
    new = tuple(new)
    missing = [k for k in info.get("missing_keys", []) if not (new and k.startswith(new))]
    unexpected = list(info.get("unexpected_keys", []))
    shapes = [str(m) for m in info.get("mismatched_keys", [])]
    if missing or unexpected or shapes:
        raise ConfigError(
            f"{source}: the checkpoint does not match the model built from its config "
            f"(missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}, shapes {shapes[:3]})",
            hint="check that the folder holds the checkpoint the config names, complete and unmodified")
    return model
