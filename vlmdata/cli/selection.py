"""What `fetch` and `plan` work on: named datasets/files, or everything a layout or a recipe needs.

- ``NAME ...``: those datasets (their default files) or files; ``--layout L`` then only builds L's view
  (a named file that view does not link is said in ``notes``: it is fetched, but not in the view).
- ``--layout L`` alone: every file L's required entries need (vlmdata.manifest.needs).
- ``--recipe R``: R's JSON files and the image folders its inputs use; its layout's view is built
  after (unless ``--layout`` names another).
"""
from __future__ import annotations

from typing import List, Optional

import msgspec

from vlmdata.errors import UserError
from vlmdata.manifest import Catalog, FileSpec, Layout
from vlmdata.manifest.needs import layout_files, overlaps, recipe_files, with_lists

RECIPE_HELP = "Fetch every file this blend recipe needs (its JSONs and the image folders it uses), then build its layout."


class Selection(msgspec.Struct):
    specs: list[FileSpec]
    layout: Layout | None  # whose view to build afterwards
    label: str  # the selection in words, for the lock holder and messages
    notes: list[str] = []  # what the user should know before the run (stderr)


def select(catalog: Catalog, names: Optional[List[str]], layout: Optional[str], recipe: Optional[str]) -> Selection:
    names = list(names or [])
    lay = catalog.layout(layout) if layout else None
    if recipe is not None:
        blend = catalog.blend(recipe)
        specs = catalog.select_files(names) + recipe_files(catalog, blend)
        return Selection(_unique(specs), lay or catalog.layout(blend.layout), f"--recipe {recipe}")
    if names:
        specs = catalog.select_files(names)
        return Selection(specs, lay, " ".join(names), _not_linked(catalog, specs, lay) if lay else [])
    if lay is not None:
        return Selection(layout_files(catalog, lay), lay, f"--layout {lay.name}")
    raise UserError("nothing to fetch: name datasets (or DATASET:FILE), or give --layout or --recipe",
                    hint="e.g. `vlmdata fetch coco gqa`, `vlmdata fetch --layout llava`, `vlmdata fetch --recipe llava-665k`; "
                         "`vlmdata list` shows the names")


def _not_linked(catalog: Catalog, specs: list[FileSpec], lay: Layout) -> list[str]:
    """A note for the named files ``lay``'s view does not link (`fetch sam --layout llava`): fetched, but
    not where the training script reads; a whole dataset is named once."""
    linked = with_lists(catalog, [f for f in specs if any(e.dataset == f.dataset and overlaps(f.place.to, e.store)
                                                           for e in lay.entries)])
    keys = {f.key for f in linked}
    unused = [f for f in specs if f.key not in keys]
    if not unused:
        return []
    whole = {f.dataset for f in unused} - {f.dataset for f in specs if f.key in keys}
    said = sorted(whole) + [f.key for f in unused if f.dataset not in whole]
    takes = sorted({e.dataset for e in lay.entries if e.dataset})
    return [f"{', '.join(said)} {'is' if len(said) == 1 else 'are'} not in the {lay.name} layout: its "
            f"view will not link {'it' if len(said) == 1 else 'them'} (it takes {', '.join(takes)}; "
            f"`vlmdata info {lay.name}` shows where each goes)"]


def _unique(specs: list[FileSpec]) -> list[FileSpec]:
    seen: set[str] = set()
    return [f for f in specs if not (f.key in seen or seen.add(f.key))]  # type: ignore[func-returns-value]
