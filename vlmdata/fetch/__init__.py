"""Getting bytes: the HTTP engine, verified downloads, streamed tar subsets, URL lists, progress, and the `fetch` run."""
from vlmdata.fetch.http import Fetched, HttpEngine, copy_local  # noqa: F401
from vlmdata.fetch.orchestrate import FetchOptions, FetchReport, Fetcher, FileOutcome  # noqa: F401
