"""Runs in a child Python with LLaVA's folder on its path (build_env.paths): LLaVA's own ``train.py``
tokenises and masks conversations, as its LazySupervisedDataset does for ``--version v1`` (instruction
tuning) and ``--version plain`` (projector pretraining).

Usage: ``python llava_side.py SPEC OUT``: SPEC a JSON file (``tokenizer``: a folder, ``model_max_length``,
``samples``: [{"version", "conversations", "has_image"}]); OUT gets, per sample, its input ids and labels.
The tokenizer is loaded as its train() loads it (``use_fast=False``, pad = unk); nothing of vlmtrain is
imported.
"""
import copy
import json
import sys
import types


def main(spec_path: str, out_path: str) -> None:
    with open(spec_path) as fh:
        spec = json.load(fh)
    import transformers

    class NotLoaded:  # its train.py imports its LLaVATrainer (and so transformers' Trainer, datasets, pandas
        pass          # built for our numpy) at the top; tokenising and masking use neither
    transformers.Trainer = NotLoaded
    sys.modules.setdefault("llava.train.llava_trainer", types.SimpleNamespace(LLaVATrainer=NotLoaded))
    from llava import conversation as conversation_lib
    from llava.train import train as their_train

    tokenizer = transformers.AutoTokenizer.from_pretrained(spec["tokenizer"], model_max_length=spec["model_max_length"],
                                                           padding_side="right", use_fast=False)
    tokenizer.pad_token = tokenizer.unk_token  # train(), for every version but v0
    data_args = their_train.DataArguments(is_multimodal=True)
    data_args.mm_use_im_start_end = False  # as train() copies it from the model arguments
    out = []
    for sample in spec["samples"]:
        conversation_lib.default_conversation = conversation_lib.conv_templates[sample["version"]]
        sources = [copy.deepcopy(sample["conversations"])]
        if sample["has_image"]:
            sources = their_train.preprocess_multimodal(sources, data_args)
        data = their_train.preprocess(sources, tokenizer, has_image=sample["has_image"])
        out.append({"input_ids": data["input_ids"][0].tolist(), "labels": data["labels"][0].tolist()})
    with open(out_path, "w") as fh:
        json.dump({"samples": out, "transformers": transformers.__version__,
                   "legacy": getattr(tokenizer, "legacy", None)}, fh)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
