"""MoE-LLaVA's, LLaVA's, ConvLLaVA's and InternVL's own code, run beside ours: the yardstick for what vlmtrain trains and exports.

``python -m tools.reference_code.build_env DIR --moellava SRC --llava SRC`` prepares DIR (network to the
package index needed, ~1 minute): both repos' packages at the commits our docs cite, from checkouts or bare
git folders; the versions they pin, installed with ``pip --target`` beside (not into) our environment;
DeepSpeed 0.9.5's source; and a one-line stand-in for timm. Our torch is used: their Python runs on it.

``VLMTRAIN_TEST_REFERENCE_ENV=DIR pytest tests/train/test_moellava_reference_code.py`` then trains a tiny
stage 2 -> stage 3 of each family, exports it, and has MoE-LLaVA's classes load the export and answer
(``moellava_side.py``, run in a child Python on DIR's path), beside ``vlmtrain generate``'s forward
(``our_side.py``): the same prompt, input ids, pixels, logits and greedy answer, and one training step's
labels, loss and gradients; ``tests/train/test_moellava_init_reference_code.py`` has its train.py's
``initialize_moe_modules`` convert a tiny vlmtrain stage 2 handed over as its stage 2 saves
(``moellava_init_side.py``) beside vlmtrain's stage 3 start (``moellava_init_ours.py``).
``tests/train_data/test_llava_reference_code.py`` has LLaVA's train.py
tokenise and mask conversations (``llava_side.py``) beside our encoder; ``tests/train/test_llava_stage1_reference_code.py``
has its pretrain set-up load a vlmtrain stage-1 ``mm_projector.bin``, step, save its own, and a vlmtrain stage 2
start from that (``llava_stage1_side.py``, ``llava_stage1_ours.py``).

With ``--convllava SRC``, ConvLLaVA's ``llava`` goes to its own folder under its transformers 4.39.3, and
``tests/train/test_convllava_reference_code.py`` runs its ConvNeXt tower, tower save, image path and a
stage-2 training step (``convllava_side.py``) on the weights of a tiny vlmtrain ConvLLaVA chain handed over
as its stage 1 leaves them (``convllava_ours.py``, through vlmtrain's own ``export-llava``);
``tests/train/test_convllava_export.py`` has its ``load_pretrained_model`` load such an export and answer.

``python -m tools.reference_code.internvl_env DIR --internvl SRC`` then adds InternVL-LLaVA's InternViT-6B
folder (its own ``src-internvl``, on DIR's transformers 4.37.2), and ``tests/models/test_internvit_reference_code.py``
has its ``InternVisionModel`` and ``CLIPVisionTower`` build, save and run tiny towers (``internvl_side.py``)
beside vlmtrain's loader: hidden states, the projector's input and the processor's pixels.

``python -m tools.reference_code.sharegpt4v_env DIR --sharegpt4v SRC`` adds ShareGPT4V's ``share4v`` (its own
``src-sharegpt4v``, on DIR's transformers 4.31.0), and ``tests/train/test_sharegpt4v_reference_code.py`` has its
train.py tokenise, set up its pretrain and finetune and step once on a tiny vlmtrain chain's weights, and its
builder load and answer with ``vlmtrain export-llava``'s output (``sharegpt4v_side.py``, ``sharegpt4v_ours.py``).
"""
