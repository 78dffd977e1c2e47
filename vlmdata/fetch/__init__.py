"""Getting bytes: the HTTP engine, verified downloads, streamed tar subsets, URL lists, progress, and the `fetch` run.

Nothing is imported here: `vlmdata fetch` with nothing to do reads only vlmdata.fetch.outcome,
and must not pay for http.client and the engine (import vlmdata.fetch.orchestrate for the run)."""
