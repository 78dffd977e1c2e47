"""MoE-LLaVA's own code, run beside ours: the yardstick for what vlmtrain exports.

``python -m tools.moellava_reference.build_env DIR --moellava SRC`` prepares DIR (network to the package
index needed, ~1 minute): MoE-LLaVA's package at the commit our docs cite, from a checkout or a bare git
folder; the versions it pins, installed with ``pip --target`` beside (not into) our environment; DeepSpeed
0.9.5's source; and a one-line stand-in for timm. Our torch is used: MoE-LLaVA's Python runs on it.

``VLMTRAIN_TEST_MOELLAVA_ENV=DIR pytest tests/train/test_moellava_reference_code.py`` then trains a tiny
stage 2 -> stage 3 of each family, exports it, and has MoE-LLaVA's classes load the export and answer
(``their_side.py``, run in a child Python on DIR's path), beside ``vlmtrain generate``'s forward
(``our_side.py``): the same prompt, input ids, pixels, logits and greedy answer.
"""
