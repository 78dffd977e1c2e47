"""Manifests: the declarative data (datasets, layouts, blend recipes) and their loading."""
from vlmdata.manifest.schema import (  # noqa: F401
    Blend,
    BlendEntry,
    Dataset,
    FileSpec,
    Layout,
    LayoutEntry,
    Part,
    Placement,
    Source,
)
from vlmdata.manifest.catalog import Catalog, load_catalog  # noqa: F401
