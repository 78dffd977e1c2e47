"""What a real run checks before a tokenizer or model is touched (``preflight``): the dataset it names (is there
anything to train on, can its images be found?) and what it needs installed (image backend, report_to).

Each guards against a run that would otherwise "succeed" on nothing: a blend with no rows trains
0 steps and saves a random model with exit 0; a dataset whose image root is wrong (a blend made on
another machine) drops every sample with ``bad_samples: skip``; a LLaVA JSON given as
``data_path`` is not a dataset folder at all. All are user errors (exit 2) that say what to run.
"""
from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Any

from vlmtrain.config import ConfigError, TrainConfig

log = logging.getLogger("vlmtrain")

PROBE_IMAGES = 64  # images looked up before training (evenly spread over the rows)


# -- a LLaVA JSON where a dataset folder goes ---------------------------------------------------
def json_instead_of_dataset(path: Path, cfg: TrainConfig, where: str) -> ConfigError:
    """The error for ``dataset_dir: …/llava_v1_5_mix665k.json``: the `vlmdata blend` command that makes the dataset.

    (Which shipped recipe reads a given JSON is the data toolchain's knowledge, which the trainer
    does not import: the recipe below works for any LLaVA-format JSON, and `vlmdata list` names the
    shipped ones.)
    """
    image = f" --image-root {cfg.image_root}" if cfg.image_root else " --image-root IMAGE_FOLDER"
    what = (f"`dataset_dir` (LLaVA's data_path) is the JSON file {path}; vlmtrain trains on the checked Arrow "
            f"dataset that `vlmdata blend` makes from it")
    hint = (f"write a recipe my-data.toml:\n"
            f"         name = \"my-data\"\n         title = \"{path.name}\"\n         layout = \"llava\"\n"
            f"         [[entries]]\n         name = \"my-data\"\n         path = \"{path.resolve()}\"\n"
            f"     then run\n         vlmdata blend ./my-data.toml{image} --out DIR\n"
            f"     and train with --set dataset_dir=DIR. (A published JSON such as llava_v1_5_mix665k.json also has "
            f"a shipped recipe: `vlmdata list` shows them, e.g. `vlmdata blend llava-665k`.)")
    return ConfigError(what, where=where, hint=hint)


def missing_dataset(path: Path, cfg: TrainConfig, where: str) -> ConfigError:
    rel = "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"
    demo = "demo-out" in path.parts
    hint = ("`make demo` writes it (run vlmtrain from the checkout's top folder), or make a small dataset with "
            "`vlmtrain make-tiny-data DIR` and --set dataset_dir=DIR" if demo else
            "make it with `vlmdata blend RECIPE` (a recipe name or TOML), or for a smoke run "
            "`vlmtrain make-tiny-data DIR`; then --set dataset_dir=DIR")
    return ConfigError(f"dataset folder {path} does not exist{rel}", where=where, hint=hint)


def not_a_folder(path: Path, cfg: TrainConfig, where: str) -> ConfigError:
    if path.suffix.lower() in (".json", ".jsonl"):
        return json_instead_of_dataset(path, cfg, where)
    return ConfigError(f"`dataset_dir` {path} is a file, not a dataset folder", where=where,
                       hint="point it at the folder `vlmdata blend --out` wrote (it holds blend.json)")


# -- something to train on -----------------------------------------------------------------------
def _blend_hint(blend: dict[str, Any], dataset_dir: str) -> str:
    """The `vlmdata report` / `vlmdata blend` commands that remake this blend into ``dataset_dir``,
    as blend.json says it was made (the recipe's name or TOML path, an --image-root given)."""
    recipe = blend.get("recipe") if isinstance(blend.get("recipe"), dict) else {}
    arg = _recipe_arg(recipe)
    if arg is None and recipe.get("origin"):
        return (f"the recipe file {recipe['origin']} this blend was made from is not there (blend.json keeps its "
                f"text under recipe.toml): write that to a .toml file, then `vlmdata report FILE.toml` lists what "
                f"its records need; fetch that, then `vlmdata blend FILE.toml --out {shlex.quote(str(dataset_dir))}`")
    if arg is None:
        return "point `dataset_dir` at a blend that has samples (`vlmdata blend RECIPE`)"
    given = blend.get("image_root_origin") == "--image-root" and blend.get("image_root")
    image = f" --image-root {shlex.quote(str(given))}" if given else ""
    return (f"`vlmdata report {arg}{image}` lists what its records need; fetch that, then "
            f"`vlmdata blend {arg}{image} --out {shlex.quote(str(dataset_dir))}` again{_dropped_note(dataset_dir)}")


def _dropped_note(dataset_dir: str) -> str:
    """Where the dropped records are listed, when the blend dropped any (an empty list says nothing)."""
    dropped = Path(dataset_dir) / "dropped.jsonl"
    has = dropped.is_file() and dropped.stat().st_size > 0
    return f" (see {dropped} for why records were dropped)" if has else ""


def _recipe_arg(recipe: dict[str, Any]) -> str | None:
    """How `vlmdata blend` takes the recipe blend.json names: a shipped recipe by its name, one from
    a TOML file by that file's path (its name is unknown to `vlmdata`); None when that file is gone.
    A blend.json that records no origin (older, or written by hand) is taken at its name."""
    name, origin = recipe.get("name"), recipe.get("origin")
    if not origin:
        return str(name) if name else None
    path = Path(origin)
    if name and path.resolve() in _shipped_recipe_files(str(name)):
        return str(name)
    return shlex.quote(str(path)) if path.is_file() else None


def _shipped_recipe_files(name: str) -> list[Path]:
    """Where vlmdata's shipped recipe ``name`` is: vlmdata.manifest.catalog.shipped_manifest_dir's two
    places (a checkout, an installed package), said again here because the trainer imports only
    vlmdata's contract and errors (tests/structure; a test checks the two agree)."""
    import sys

    from vlmdata import contract

    dirs = [Path(contract.__file__).resolve().parents[1] / "manifests", Path(sys.prefix) / "share" / "vlmdata" / "manifests"]
    return [(d / "blends" / f"{name}.toml").resolve() for d in dirs]


def _dropped_summary(blend: dict[str, Any]) -> str:
    totals = blend.get("totals") or {}
    reasons: dict[str, int] = {}
    for c in (blend.get("counts") or {}).values():
        for r, n in ((c or {}).get("dropped") or {}).items():
            reasons[r] = reasons.get(r, 0) + int(n)
    why = "; ".join(f"{r}: {n}" for r, n in sorted(reasons.items(), key=lambda x: -x[1]))
    if totals.get("read"):
        return f"the blend read {totals['read']} records and dropped {totals.get('dropped', '?')}" + (f" ({why})" if why else "")
    return ""


def refuse_empty(rows: int, blend: dict[str, Any], cfg: TrainConfig, where: str) -> None:
    """A blend of no rows is a ConfigError naming what its blend dropped (for a run and for
    packing-stats, whose report of nothing read "100% padding")."""
    if rows == 0:
        read = (blend.get("totals") or {}).get("read")
        dropped = _dropped_summary(blend) or ("the blend read no records from its inputs" if read == 0 else "")
        raise ConfigError(f"dataset {cfg.dataset_dir} has no samples to train on" + (f": {dropped}" if dropped else ""),
                          where=where, hint=_blend_hint(blend, cfg.dataset_dir))


def check_dataset(cfg: TrainConfig, where: str) -> None:
    """No rows: a ConfigError. A blend that dropped most of its records: a warning. No image found: a ConfigError."""
    from vlmtrain.data.dataset import DataError, open_blend

    try:
        ds, blend, root = open_blend(cfg.dataset_dir, cfg.image_root)
    except DataError as e:
        raise ConfigError(str(e), where=where) from None
    refuse_empty(len(ds), blend, cfg, where)
    totals = blend.get("totals") or {}
    if totals.get("read") and len(ds) < 0.5 * int(totals["read"]):
        log.warning("dataset %s keeps %d of the %d records its blend read (%s); %s", cfg.dataset_dir, len(ds),
                    totals["read"], _dropped_summary(blend), _blend_hint(blend, cfg.dataset_dir))
    if root is not None and "image_bytes" not in ds.column_names:
        _probe_images(ds, root, cfg, where, "`image_root`" if cfg.image_root else f"{Path(cfg.dataset_dir) / 'blend.json'}")


def _probe_images(ds: Any, root: Path, cfg: TrainConfig, where: str, origin: str) -> None:
    n = len(ds)
    rows = sorted({int(i * n / PROBE_IMAGES) for i in range(min(PROBE_IMAGES, n))})
    paths = [p for row in ds.select_columns(["images"]).select(rows)["images"] for p in (row or [])[:1]]
    if not paths:
        return
    missing = [p for p in paths if not (root / p).is_file()]
    if len(missing) == len(paths):
        raise ConfigError(
            f"none of the {len(paths)} images sampled from {cfg.dataset_dir} exist under the image root {root} "
            f"(from {origin}); e.g. {root / missing[0]}", where=where,
            hint="set `image_root` (LLaVA's image_folder) to the folder the records' image paths are relative to, "
                 "or fetch the images (`vlmdata fetch ... --layout LAYOUT`)")
    if missing:
        log.warning("%d of %d images sampled from %s are missing under %s (e.g. %s); %s", len(missing), len(paths),
                    cfg.dataset_dir, root, missing[0],
                    "training stops at the first one (bad_samples: fail)" if cfg.bad_samples == "fail"
                    else "those samples will be skipped (bad_samples: skip)")


def preflight(cfg: TrainConfig, *, linked: bool = False) -> None:
    """Everything a real run checks on disk and in the environment before a tokenizer or model is touched.
    ``linked``: a later stage of a chain, checked before the first stage starts; its model or
    adapter is what an earlier stage will write, so only the rest is checked."""
    from vlmtrain.config import check_inputs
    from vlmtrain.config_check import check_reporters_installed
    from vlmtrain.data.image_processor import ImageBackendError, check_backend
    from vlmtrain.train.rundir import check_writable

    where = cfg._source or "config"
    if cfg.dataset_dir and Path(cfg.dataset_dir).is_file():
        raise not_a_folder(Path(cfg.dataset_dir), cfg, where)
    if cfg.dataset_dir and not Path(cfg.dataset_dir).exists():
        raise missing_dataset(Path(cfg.dataset_dir), cfg, where)
    check_inputs(cfg, models=not linked)
    check_writable(cfg, where)
    try:
        check_backend(cfg.image_backend)
    except ImageBackendError as e:
        raise ConfigError(str(e), where=where) from None
    check_reporters_installed(cfg.report_to, where)
    check_dataset(cfg, where)


def require_trainable(report: Any, cfg: TrainConfig) -> None:
    """After the length pass: refuse a run in which every sample was left out."""
    if report.encoded == 0:
        raise ConfigError(f"no trainable sample in {cfg.dataset_dir}: {report.summary()}", where=cfg._source or "config",
                          hint="every record was left out (bad_samples: skip); check `version` (the template), "
                               "`model_max_length` and the tokenizer, or the data report's reasons above")
