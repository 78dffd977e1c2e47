# The whole set-up on a fresh machine is `make demo` (install + the main job, offline on the
# bundled demo mirror) and `make test`. Both need the data toolchain and the trainer: the
# [train] extra (torch, transformers, deepspeed, ...) on top of `pip install .`, which is the
# data CLI alone. torch is pinned on the install line: on these machines `torch==2.13.0` is a CPU
# wheel on local disk, anything looser may pull a multi-GB CUDA build. The [ray] extra is installed
# too: tests/fetch/test_fetch_ray.py runs `fetch --ray` on a three-node local cluster.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test docs clean-demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet torch==2.13.0 -e '.[train,dev,ray]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m vlmdata.demo

# The suite in TEST_JOBS worker processes (pytest-xdist), each test file whole on one worker (its
# module fixtures, a Ray cluster or a trained tokenizer, built once). 2: the CI machine's cores, where
# it takes about half the one-process time; `make test TEST_JOBS=0` runs it in pytest's own process.
TEST_JOBS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile

# The generated pages of docs/ (command reference, datasets, recipes, layouts); tests/docs fails when
# the committed ones differ from what this writes.
docs: $(STAMP)
	$(PY) -m tools.docgen

clean-demo:
	rm -rf demo-out
