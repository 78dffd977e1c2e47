"""The dataset contract between vlmdata (writes) and vlmtrain (reads): one module owns it.

A blend is a folder that ``datasets.load_from_disk`` opens, plus ``blend.json`` beside the Arrow
files. Required columns, in this order:

| column        | Arrow type                                  |
| ------------- | ------------------------------------------- |
| id            | string (unique within the blend)            |
| source        | string (the recipe entry's name)            |
| images        | list<string> (relative to the image root)   |
| conversations | list<struct<from: string, value: string>>   |
| n_images      | int32                                       |
| text_chars    | int32                                       |

Optional: ``record_extra`` (string, JSON or null: what of each source record the other columns do
not hold, for a lossless `vlmdata export`; vlmdata.blend.extra; written by every `vlmdata blend`
since version 2), and, by flag, ``image_widths`` / ``image_heights`` (list<int32>, one per image,
``--image-sizes``) and ``image_bytes`` (``--embed-images``: the images themselves, one per path,
as ``datasets.Image`` values, list<struct<bytes: binary, path: string>>, so ``load_from_disk``
decodes them; a missing image kept with ``--missing keep`` is null).

``blend.json`` (a JSON object) must carry ``schema_version`` (an int, see SCHEMA_VERSION) and,
when rows have images that are not embedded, ``image_root`` (absolute, or relative to the blend
folder). Everything else in it (recipe, inputs, counts, ...) is a record for people, not part of
the contract. A blend.json without ``schema_version`` predates this module; the only version
written before it was 1, so it reads as 1.

Versions: 1: ``image_bytes`` was list<binary>. 2: ``image_bytes`` holds ``datasets.Image`` structs
(bytes + path), ``record_extra`` added. ``image_blob`` reads either.

This module imports only pyarrow, the standard library and vlmdata.errors, so vlmtrain can import
it without pulling in the data toolchain. ``datasets`` is imported only by ``features``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa

from vlmdata.errors import UserError

SCHEMA_VERSION = 2  # bump when a reader written for the old version would misread the new data
READABLE_VERSIONS = frozenset({1, 2})
BLEND_JSON = "blend.json"
IMAGE_TOKEN = "<image>"

# column names
ID, SOURCE, IMAGES, CONVERSATIONS, N_IMAGES, TEXT_CHARS = "id", "source", "images", "conversations", "n_images", "text_chars"
IMAGE_WIDTHS, IMAGE_HEIGHTS, IMAGE_BYTES = "image_widths", "image_heights", "image_bytes"
RECORD_EXTRA = "record_extra"
TURN_FROM, TURN_VALUE = "from", "value"  # the fields of one turn

TURN_TYPE = pa.struct([pa.field(TURN_FROM, pa.string()), pa.field(TURN_VALUE, pa.string())])
CONVERSATIONS_TYPE = pa.list_(TURN_TYPE)
IMAGES_TYPE = pa.list_(pa.string())

REQUIRED = [
    pa.field(ID, pa.string()),
    pa.field(SOURCE, pa.string()),
    pa.field(IMAGES, IMAGES_TYPE),
    pa.field(CONVERSATIONS, CONVERSATIONS_TYPE),
    pa.field(N_IMAGES, pa.int32()),
    pa.field(TEXT_CHARS, pa.int32()),
]
SIZES = [pa.field(IMAGE_WIDTHS, pa.list_(pa.int32())), pa.field(IMAGE_HEIGHTS, pa.list_(pa.int32()))]
IMAGE_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])  # datasets.Image's storage
BYTES = [pa.field(IMAGE_BYTES, pa.list_(IMAGE_TYPE))]
EXTRA = [pa.field(RECORD_EXTRA, pa.string())]
REQUIRED_NAMES = tuple(f.name for f in REQUIRED)
TRAINER_COLUMNS = (ID, IMAGES, CONVERSATIONS)  # what a trainer cannot do without (n_images is used when there)


class ContractError(UserError):
    """A folder that does not hold a blend this version of the contract can read (exit code 2)."""


def arrow_schema(*, extra: bool = False, sizes: bool = False, embed: bool = False) -> pa.Schema:
    """The Arrow schema of a blend, without the `datasets` metadata (see ``features``)."""
    return pa.schema(REQUIRED + (EXTRA if extra else []) + (SIZES if sizes else []) + (BYTES if embed else []))


BASE_SCHEMA = arrow_schema()
BLEND_SCHEMA = arrow_schema(extra=True)  # what `vlmdata blend` writes before the columns its flags add


def features(schema: pa.Schema = BASE_SCHEMA) -> Any:
    """The `datasets.Features` of ``schema`` (conversations stay a list of structs; embedded images
    are ``datasets.Image`` values, which ``load_from_disk`` users get decoded)."""
    import datasets

    feats = datasets.Features.from_arrow_schema(schema)
    if IMAGE_BYTES in schema.names and schema.field(IMAGE_BYTES).type == BYTES[0].type:
        seq = getattr(datasets, "List", None) or datasets.Sequence
        feats[IMAGE_BYTES] = seq(datasets.Image())
    return feats


def image_blob(value: Any) -> bytes | None:
    """The bytes of one embedded image as a reader gets it from ``image_bytes``: raw bytes
    (version 1) or a ``datasets.Image`` value (version 2: a dict with ``bytes``); None when absent."""
    if value is None or isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value) if value is not None else None
    if isinstance(value, dict):
        data = value.get("bytes")
        return bytes(data) if data is not None else None
    raise ContractError(f"image_bytes holds a {type(value).__name__}, not bytes or an image struct",
                        hint="write the blend again with `vlmdata blend --embed-images`")


def blend_meta(*, image_root: str | Path | None, recipe: Any, **extra: Any) -> dict[str, Any]:
    """The blend.json of a blend written by something other than `vlmdata blend` (tiny data, benches)."""
    meta: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "recipe": recipe}
    if image_root is not None:
        meta["image_root"] = str(image_root)
    meta.update(extra)
    return meta


def write_blend_meta(folder: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``folder/blend.json`` atomically (a reader never sees half of it)."""
    from vlmdata.atomic import write_json

    path = Path(folder) / BLEND_JSON
    write_json(path, meta)
    return path


def check_version(meta: dict[str, Any], where: str) -> int:
    """The schema version of a blend.json, or a ContractError when this reader cannot read it."""
    version = meta.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ContractError(f"schema_version must be an integer, found {version!r}", where=where,
                            hint="write the blend again with `vlmdata blend`")
    if version not in READABLE_VERSIONS:
        newer = version > max(READABLE_VERSIONS)
        raise ContractError(
            f"blend schema_version {version} is unknown to this reader (it reads "
            f"{', '.join(map(str, sorted(READABLE_VERSIONS)))})", where=where,
            hint=("the blend was written by a newer vlmdata: upgrade vlmdata/vlmtrain" if newer else
                  "write the blend again with this version's `vlmdata blend`"))
    return version


def read_blend_meta(folder: str | Path) -> dict[str, Any]:
    """``folder/blend.json`` checked against the contract; ``{}`` when there is none."""
    path = Path(folder) / BLEND_JSON
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ContractError(f"cannot read it as JSON: {e}", where=str(path),
                            hint="write the blend again with `vlmdata blend`") from e
    if not isinstance(meta, dict):
        raise ContractError("must be a JSON object", where=str(path))
    check_version(meta, str(path))
    return meta


def missing_columns(names: Iterable[str], required: Iterable[str] = REQUIRED_NAMES) -> list[str]:
    """The ``required`` columns absent from ``names``, in schema order."""
    have = set(names)
    return [n for n in required if n not in have]
