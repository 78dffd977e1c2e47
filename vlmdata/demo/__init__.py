"""`python -m vlmdata.demo` (what `make demo` runs) starts the offline demo of a source checkout.

The demo itself (mirror builder, derived manifests, the pipeline run) is a tool in the checkout's
demo/ folder, not part of the library: it needs the checkout's configs/ and the training extra.
"""
