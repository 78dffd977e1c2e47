"""The Arrow dataset `vlmdata blend` writes: the contract with vlmtrain (DESIGN.md).

Required columns, in this order:

| column        | Arrow type                                  |
| ------------- | ------------------------------------------- |
| id            | string (unique within the blend)            |
| source        | string (the recipe entry's name)            |
| images        | list<string> (relative to the image root)   |
| conversations | list<struct<from: string, value: string>>   |
| n_images      | int32                                       |
| text_chars    | int32                                       |

Optional, by flag: ``image_widths`` / ``image_heights`` (list<int32>, one per image,
``--image-sizes``) and ``image_bytes`` (list<binary>, ``--embed-images``).
"""
from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1
IMAGE_TOKEN = "<image>"

TURN = pa.struct([pa.field("from", pa.string()), pa.field("value", pa.string())])
CONVERSATIONS = pa.list_(TURN)
IMAGES = pa.list_(pa.string())

REQUIRED = [
    pa.field("id", pa.string()),
    pa.field("source", pa.string()),
    pa.field("images", IMAGES),
    pa.field("conversations", CONVERSATIONS),
    pa.field("n_images", pa.int32()),
    pa.field("text_chars", pa.int32()),
]
SIZES = [pa.field("image_widths", pa.list_(pa.int32())), pa.field("image_heights", pa.list_(pa.int32()))]
BYTES = [pa.field("image_bytes", pa.list_(pa.binary()))]


def arrow_schema(*, sizes: bool = False, embed: bool = False) -> pa.Schema:
    """The output schema, without the `datasets` metadata (see writer.features_for)."""
    return pa.schema(REQUIRED + (SIZES if sizes else []) + (BYTES if embed else []))


BASE_SCHEMA = arrow_schema()
