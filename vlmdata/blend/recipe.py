"""Resolve a recipe (manifests/blends/*.toml) into input files, an image root and an output folder."""
from __future__ import annotations

import random
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

import numpy as np

from vlmdata.errors import UserError
from vlmdata.manifest import Blend, BlendEntry, Catalog, Layout
from vlmdata.state import Root


@dataclass(frozen=True)
class Input:
    entry: BlendEntry
    path: Path
    label: str  # "dataset:file" or the path as written in the recipe

    @property
    def name(self) -> str:
        return self.entry.name


@dataclass(frozen=True)
class ImageRoot:
    path: Path
    origin: str  # how it was chosen, in words


@dataclass(frozen=True)
class Resolved:
    recipe: Blend
    layout: Layout
    inputs: list[Input]
    image_root: ImageRoot
    recipe_toml: str
    root: Root | None = None  # the data root it was resolved against


def resolve(recipe: Blend, catalog: Catalog, root: Root, *, image_root: Path | None = None) -> Resolved:
    layout = catalog.layout(recipe.layout)
    inputs = [_input(e, catalog, root) for e in recipe.entries]
    try:
        toml = Path(recipe.origin).read_text(encoding="utf-8")
    except OSError:
        toml = ""
    return Resolved(recipe, layout, inputs, find_image_root(layout, root, image_root), toml, root)


def _input(e: BlendEntry, catalog: Catalog, root: Root) -> Input:
    if e.path is not None:
        p = Path(e.path).expanduser()
        path = p if p.is_absolute() else root.path / p
        if not path.is_file():
            raise UserError(f"input {e.name!r}: {path} does not exist" + (" (relative paths are relative to the root)"
                                                                           if not p.is_absolute() else ""),
                            hint="fix `path` in the recipe, or pass the right --root")
        return Input(e, path, e.path)
    spec = catalog.dataset(e.dataset or "").file(e.file or "")
    assert spec is not None  # the catalog checked it
    if spec.place.kind != "file":
        raise UserError(f"input {e.name!r}: {spec.key} is an archive ({spec.place.kind}), not a JSON/JSONL file",
                        hint="name the dataset's JSON file in the recipe (`vlmdata info " + spec.dataset + "`)")
    path = root.store_path(spec.place.to)
    if not path.is_file():
        raise UserError(f"input {e.name!r}: {spec.key} is not fetched yet ({path} does not exist)",
                        hint=f"run `vlmdata fetch {spec.key}` with the same --root ({root.path})")
    return Input(e, path, spec.key)


def find_image_root(layout: Layout, root: Root, given: Path | None) -> ImageRoot:
    """--image-root; else the layout's view under ROOT/layouts; else the store itself when the
    layout's image folders sit at the same paths in the store (llava)."""
    if given is not None:
        given = Path(given).expanduser().absolute()
        if not given.is_dir():
            raise UserError(f"--image-root {given} is not a folder")
        return ImageRoot(given, "--image-root")
    view = root.layout_dir(layout.name) / layout.image_folder
    if view.is_dir():
        return ImageRoot(_norm(view), f"the {layout.name} layout view, which `vlmdata layout build --layout {layout.name}` makes")
    dirs = [e for e in layout.entries if e.kind == "dir"]
    if all(e.store == e.path for e in dirs):
        return ImageRoot(_norm(root.store_path(layout.image_folder)),
                         f"the store (the {layout.name} layout's image folders sit at the same paths there)")
    raise UserError(
        f"no image root for layout {layout.name!r}: {view} does not exist, and the store does not have the "
        f"layout's folders at the paths its records use (e.g. {dirs[0].path!r} is {dirs[0].store!r} in the store)"
        if dirs else f"no image root for layout {layout.name!r}: {view} does not exist",
        hint=f"run `vlmdata layout build --layout {layout.name}` (or `vlmdata fetch ... --layout {layout.name}`), "
             f"or pass --image-root DIR")


def _norm(p: Path) -> Path:
    return Path(str(p.absolute()).rstrip("/").removesuffix("/."))


# -- sampling


def sample_limit(sample: str) -> int | None:
    """first:N is applied while reading (the rest of the file is not read)."""
    return int(sample.split(":", 1)[1]) if sample.startswith("first:") else None


def sample_mask(sample: str, n: int, seed: int, name: str) -> np.ndarray | None:
    """Which of the ``n`` records read are sampled (None: all of them). Deterministic for a given
    seed and entry name; the sampled records keep their file order."""
    if sample == "all" or sample.startswith("first:"):
        return None
    if sample.startswith("random:"):
        k = min(n, int(sample.split(":", 1)[1]))
    else:
        frac = float(sample)
        if frac >= 1.0:
            return None
        k = min(n, max(1, round(frac * n))) if n else 0
    if k >= n:
        return None
    rng = random.Random(int.from_bytes(sha256(f"{seed}/{name}".encode()).digest()[:8], "big"))
    mask = np.zeros(n, dtype=bool)
    mask[rng.sample(range(n), k)] = True
    return mask
