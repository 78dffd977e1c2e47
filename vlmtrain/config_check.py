"""Checks of a run config that need transformers' own tables: model config fields, logging integrations.

Why not in config.py: these import transformers (config classes, the integration registry), and
config.py stays importable without it. They still run before any model is built. This module imports
nothing of vlmtrain (config.py and model/ both call it), so its errors are vlmdata's UserError
(exit 2), which ConfigError specialises.

- ``text_config: {num_hidden_layer: 2}`` would otherwise be kept by transformers as an extra
  attribute while ``num_hidden_layers`` silently stays at the class default (32 for Llama): a
  model of another shape, no message. Every key is checked against the config class of its
  ``model_type`` (or of the pretrained config it overrides), with a did-you-mean.
- ``report_to`` names are checked against transformers' integrations, and for a real run that the
  package behind each is installed (Trainer would otherwise stop with a traceback after the model
  is built).
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from vlmdata.errors import UserError


def _declared(cls: type) -> set[str]:
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    if not names:  # configs written as plain classes: their __init__ parameters
        import inspect

        names = {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")}
    return names | set(getattr(cls, "attribute_map", {}) or {})


def unknown_fields(cls: type, fields: dict[str, Any]) -> list[str]:
    """The keys of ``fields`` that a ``cls`` config would keep only as extra attributes (typos, other models' keys).

    Keys its own backward-compatibility code consumes (``torch_dtype``, ``rope_theta``,
    ``rope_scaling``, generation settings, ...) are known: building the config with the candidates
    tells which ones it keeps as plain attributes.
    """
    declared = _declared(cls)
    candidates = {k: v for k, v in fields.items() if k not in declared and not hasattr(cls, k)}
    if not candidates:
        return []
    try:
        built = cls(**candidates)
    except Exception:  # the values themselves are wrong; the config's own error comes later
        return []
    folded = _folded_keys(built)
    return [k for k in candidates if k in vars(built) and k not in folded]


def _folded_keys(built: Any) -> set[str]:
    """Keys a config moved into one of its nested settings (transformers 5 folds ``rope_theta`` and
    ``partial_rotary_factor`` into ``rope_parameters``): used, even where a version also keeps the flat
    copy as a plain attribute (5.17 does for StableLM's ``partial_rotary_factor``; 5.25 does not)."""
    return {key for value in vars(built).values() if isinstance(value, dict) for key in value if isinstance(key, str)}


def suggestion(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else "remove it"


def check_fields(cls: type, fields: dict[str, Any], section: str, where: str | None) -> None:
    """Raise a ConfigError naming the first key of ``fields`` that ``cls`` does not know."""
    bad = unknown_fields(cls, fields)
    if bad:
        known = _declared(cls)
        more = f" (and {', '.join(f'`{k}`' for k in bad[1:])})" if len(bad) > 1 else ""
        raise UserError(f"unknown key `{section}.{bad[0]}`{more}: {cls.__name__} has no such field "
                          f"(transformers would set it aside and build the model with its default)",
                          where=where, hint=suggestion(bad[0], known))


def config_class(model_type: str, section: str, where: str | None) -> type:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        close = difflib.get_close_matches(model_type, list(CONFIG_MAPPING.keys()), n=1, cutoff=0.6)
        raise UserError(f"`{section}.model_type` is {model_type!r}, which transformers does not know", where=where,
                          hint=f"did you mean {close[0]!r}?" if close else
                          "e.g. llama, qwen2, phi, stablelm, clip_vision_model, siglip_vision_model")
    return CONFIG_MAPPING[model_type]


def check_section(fields: dict[str, Any], section: str, where: str | None) -> None:
    """A ``text_config`` / ``vision_config`` mapping with a ``model_type`` transformers knows: every key a field of it.

    (Mappings in a published layout that vlmtrain translates, and fields without a ``model_type``
    that override a pretrained config, are checked by their own readers: see vlmtrain.model.build.)
    """
    cls = config_class(str(fields["model_type"]), section, where)
    check_fields(cls, {k: v for k, v in fields.items() if k != "model_type"}, section, where)


def check_overrides(base: Any, fields: dict[str, Any] | None, section: str) -> None:
    """Overrides of a pretrained config (``model_name_or_path`` + ``text_config: {...}``), checked against its class."""
    if fields:
        check_fields(type(base), fields, section, None)


def check_report_to(report_to: list, where: str | None) -> list[str]:
    """Integration names, with "all" expanded to the installed ones, as Trainer would."""
    from transformers.integrations.integration_utils import (INTEGRATION_TO_CALLBACK,
                                                             get_available_reporting_integrations)

    names = [str(n) for n in report_to]
    if "all" in names:
        names = [n for n in names if n != "all"] + [n for n in get_available_reporting_integrations() if n not in names]
    for n in names:
        if n not in INTEGRATION_TO_CALLBACK:
            close = difflib.get_close_matches(n, list(INTEGRATION_TO_CALLBACK), n=1, cutoff=0.6)
            raise UserError(f"`report_to` names {n!r}, which transformers cannot report to", where=where,
                              hint=(f"did you mean {close[0]!r}? " if close else "") +
                              f"choose from {', '.join(INTEGRATION_TO_CALLBACK)}, or [] for none")
    return names


def check_reporters_installed(report_to: list[str], where: str | None) -> None:
    """For a real run: each ``report_to`` integration's package is installed."""
    if not report_to:
        return
    from transformers.integrations.integration_utils import get_available_reporting_integrations

    available = set(get_available_reporting_integrations())
    missing = [n for n in report_to if n not in available]
    if missing:
        raise UserError(f"`report_to` names {', '.join(missing)}, but {'it is' if len(missing) == 1 else 'they are'} "
                          f"not installed", where=where,
                          hint=f"pip install {' '.join(missing)}, or drop {'it' if len(missing) == 1 else 'them'} "
                               f"from `report_to` (metrics.jsonl is always written)")
