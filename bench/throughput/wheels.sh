#!/usr/bin/env bash
# The wheels device_check.sh installs on the lent GPU machine (it has no network; its python3 is 3.12 with
# torch, transformers, triton, accelerate, pyarrow, pandas, ... but not these). Run here, from the repo
# root; name the folder in the device call's `carry` (it must be git-ignored: add `/whl/` to
# .git/info/exclude). liger-kernel for `kernels: liger`; datasets, dill, multiprocess for `vlmtrain run`'s
# Arrow data; deepspeed (built here as a pure-Python wheel: its ops compile on first use) with hjson and
# pydantic for the ZeRO-2 row.
set -euo pipefail
DEST=${1:-whl}
mkdir -p "$DEST"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$DEST" \
  liger_kernel==0.8.5 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
  hjson==3.1.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
python3 -m pip wheel -q --no-deps deepspeed==0.19.8 -w "$DEST"
ls "$DEST"
