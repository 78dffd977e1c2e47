"""Fetching: the HTTP engine, hub sources, source resolution, progress and the `fetch` orchestration."""
from vlmdata.fetch.http import Cancelled, Fetched, HttpEngine, SourceFailed, copy_local  # noqa: F401
from vlmdata.fetch.orchestrate import FetchOptions, FetchReport, Fetcher, FileOutcome  # noqa: F401
