"""The offline demo (a tool of the source checkout, not part of the library): a small generated
mirror shaped like the real origins, its JSONs, manifests derived from the shipped ones
(build_mirror.py, manifests.py), and the whole pipeline run on it (run.py; `make demo`)."""
