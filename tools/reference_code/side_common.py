"""What the child scripts (``*_side.py``) share, whichever repo's code they run: imported from beside them
(a script's own folder is first on its path), with torch and DeepSpeed only, never vlmtrain."""
import os


def one_step_each(dataset, collate, model, n):
    """A forward with labels and a backward on each of the dataset's first ``n`` records alone, as the repo's
    collator batches one: ids, labels, pixels, logits, loss and every gradient, one dict per record (no backward
    where the record has no supervised token: the repo's loss is NaN there)."""
    import torch

    steps = []
    for i in range(n):
        batch = collate([dataset[i]])
        model.train()
        model.zero_grad(set_to_none=True)
        out = model(**batch, return_dict=True)
        if bool((batch["labels"] != -100).any()):
            out.loss.backward()
        grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
        steps.append({"ids": batch["input_ids"][0], "labels": batch["labels"][0], "pixel_values": batch["images"],
                      "logits": out.logits[0].detach(), "loss": out.loss.detach(), "grads": grads})
    return steps


def deepspeed_one_process(model, port):
    """DeepSpeed's process group of one (gloo, 127.0.0.1:``port``), and ``model``'s MoE layers set to it, as
    MoE-LLaVA's training launch leaves them."""
    import deepspeed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    deepspeed.init_distributed(dist_backend="gloo")
    for m in model.modules():
        if hasattr(m, "set_deepspeed_parallelism"):
            m.set_deepspeed_parallelism()
