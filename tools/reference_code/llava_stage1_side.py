"""Runs in a child Python with LLaVA's folder on its path (build_env.paths, its transformers 4.37.2).

``python llava_stage1_side.py WORK``: LLaVA's stage 1 and its hand-off to stage 2, on the inputs
sharegpt4v_ours.hand_over wrote to WORK (a plain Llama folder with its tokenizer, a CLIP folder, an image,
spec.json). Float32 on the CPU where its scripts run bf16 under DeepSpeed; nothing of vlmtrain is imported.

1. Its model built as its train() builds one for scripts/v1_5/pretrain.sh (``--version plain
   --tune_mm_mlp_adapter True --mm_projector_type mlp2x_gelu --mm_vision_select_layer -2
   --mm_use_im_start_end False --mm_use_im_patch_token False``, no ``--image_aspect_ratio``: its default,
   square; ``--mm_projector_type`` the spec's: LLaVA-1's was linear), its projector then set from the spec's ``projector`` (vlmtrain stage 1's ``mm_projector.bin``)
   through ``initialize_vision_modules``' ``pretrain_mm_mlp_adapter`` branch: its own starts random.
2. One forward with labels and a backward per spec conversation (its LazySupervisedDataset and collator),
   then on all of them as one right-padded micro-batch: ids, labels, loss, the gradients and what it marks
   trainable.
3. One AdamW step on the micro-batch's gradients (its Trainer's optimizer; lr 1e-3, no weight decay, as
   pretrain.sh), so that what it saves
   is its own weights and not ours, then its save: ``safe_save_model_for_hf_trainer``'s
   ``tune_mm_mlp_adapter`` branch (``get_mm_adapter_state_maybe_zero_3``) writes WORK/theirs-pretrain/
   mm_projector.bin.
4. Its model built as its train() builds one for scripts/v1_5/finetune.sh (``--version v1
   --image_aspect_ratio pad --pretrain_mm_mlp_adapter`` the file step 3 wrote), and one forward with labels
   on each of the spec's ``finetune_conversations``.

WORK/theirs.pt gets each step's results.
"""
import json
import os
import sys
import types

import torch

PROJECTOR_LR = 1e-3  # scripts/v1_5/pretrain.sh --learning_rate


def their_train():
    """Its train.py, imported without its trainer (see llava_side.their_train)."""
    import transformers

    class NotLoaded:
        pass
    transformers.Trainer = NotLoaded
    sys.modules.setdefault("llava.train.llava_trainer", types.SimpleNamespace(LLaVATrainer=NotLoaded))
    from llava.train import train

    return train


def build(spec, train, version, adapter, aspect):
    """train()'s model set-up for one of its scripts' flag sets, in its order."""
    import transformers

    from llava import conversation as conversation_lib
    from llava.model import LlavaLlamaForCausalLM

    pretrain = version == "plain"
    model = LlavaLlamaForCausalLM.from_pretrained(spec["llm"], torch_dtype=torch.float32)
    model.config.use_cache = False
    tokenizer = transformers.AutoTokenizer.from_pretrained(spec["llm"], model_max_length=spec["model_max_length"],
                                                           padding_side="right", use_fast=False)
    tokenizer.pad_token = tokenizer.unk_token
    conversation_lib.default_conversation = conversation_lib.conv_templates[version]
    model_args = train.ModelArguments(
        model_name_or_path=spec["llm"], version=version, vision_tower=spec["tower"], pretrain_mm_mlp_adapter=adapter,
        tune_mm_mlp_adapter=pretrain, mm_projector_type=spec["mm_projector_type"], mm_vision_select_layer=-2,
        mm_use_im_start_end=False, mm_use_im_patch_token=False)
    model.get_model().initialize_vision_modules(model_args=model_args, fsdp=[])
    tower = model.get_vision_tower()
    data_args = train.DataArguments(is_multimodal=True, image_folder=spec["work"], image_aspect_ratio=aspect)
    data_args.image_processor = tower.image_processor
    model.config.image_aspect_ratio = data_args.image_aspect_ratio
    model.config.tune_mm_mlp_adapter = model_args.tune_mm_mlp_adapter
    if model_args.tune_mm_mlp_adapter:
        model.requires_grad_(False)
        for p in model.get_model().mm_projector.parameters():
            p.requires_grad = True
    model.config.mm_use_im_start_end = data_args.mm_use_im_start_end = False
    model.config.mm_use_im_patch_token = False
    model.initialize_vision_tokenizer(model_args, tokenizer=tokenizer)
    return model, tokenizer, data_args


def batches(spec, train, tokenizer, data_args, conversations, name):
    """Its dataset and collator on the conversations: one micro-batch each, then (last) all in one."""
    records = [{"id": str(i), "image": spec["image"], "conversations": c} for i, c in enumerate(conversations)]
    path = os.path.join(spec["work"], name)
    with open(path, "w") as fh:
        json.dump(records, fh)
    dataset = train.LazySupervisedDataset(path, tokenizer, data_args)
    collate = train.DataCollatorForSupervisedDataset(tokenizer=tokenizer)
    return [collate([dataset[i]]) for i in range(len(records))] + [collate([dataset[i] for i in range(len(records))])]


def projector_state(model):
    return {k: v.detach().clone() for k, v in model.get_model().mm_projector.state_dict().items()}


def step(model, batch, backward):
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(**batch, return_dict=True)
    if backward:
        out.loss.backward()
    return {"ids": batch["input_ids"][0], "labels": batch["labels"][0], "pixel_values": batch["images"],
            "logits": out.logits[0].detach(), "loss": out.loss.detach(), "batch_ids": batch["input_ids"],
            "batch_labels": batch["labels"],
            "grads": {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}}


def main(work):
    with open(os.path.join(work, "spec.json")) as fh:
        spec = json.load(fh)
    spec["work"] = work
    import transformers

    train = their_train()
    model, tokenizer, data_args = build(spec, train, "plain", spec["projector"], "square")
    loaded = projector_state(model)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    *steps, batched = [step(model, b, True) for b in batches(spec, train, tokenizer, data_args,
                                                             spec["conversations"], "captions.json")]
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=PROJECTOR_LR, weight_decay=0.0)
    optim.step()  # on the padded micro-batch's gradients
    saved_dir = os.path.join(work, "theirs-pretrain")
    os.makedirs(saved_dir, exist_ok=True)
    trainer = types.SimpleNamespace(model=model, args=types.SimpleNamespace(
        tune_mm_mlp_adapter=True, use_im_start_end=False, local_rank=-1))  # what train() sets on its args
    train.safe_save_model_for_hf_trainer(trainer=trainer, output_dir=saved_dir)
    stepped = projector_state(model)

    model, tokenizer, data_args = build(spec, train, "v1", os.path.join(saved_dir, "mm_projector.bin"), "pad")
    *finetune, _ = [step(model, b, False) for b in batches(spec, train, tokenizer, data_args,
                                                           spec["finetune_conversations"], "conversations.json")]
    torch.save({"loaded": loaded, "trainable": trainable, "steps": steps, "batched": batched, "stepped": stepped,
                "saved": os.path.join(saved_dir, "mm_projector.bin"), "finetune_loaded": projector_state(model),
                "finetune": finetune, "transformers": transformers.__version__}, os.path.join(work, "theirs.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
