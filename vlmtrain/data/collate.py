"""Batch collation: right padding, -100 labels on padding, attention mask, images of the batch in order."""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch

from .encode import IGNORE_INDEX

log = logging.getLogger("vlmtrain.data")

# Keys a batch carries besides the model inputs; pop them (``pop_batch_meta``) before ``model(**batch)``.
# ``sample_lengths``: each sample's true length; ``supervised``: the label positions the loss counts. Both
# are counted here, on the CPU, so the trainer's throughput bookkeeping never waits for the GPU (counting
# them from the batch once it is on the device is a host sync before every forward).
BATCH_META_KEYS = ("ids", "skipped", "sample_lengths", "supervised")


def pop_batch_meta(batch: dict) -> dict:
    """Remove and return the non-model keys: ``ids`` (kept samples), ``skipped`` ([{id, reason, path}]),
    ``sample_lengths`` (in the batch's order) and ``supervised`` (labels after the first position that
    are not -100: the targets of the shifted loss)."""
    return {k: batch.pop(k) for k in BATCH_META_KEYS if k in batch}


def add_counts(batch: dict[str, Any], lengths: Sequence[int]) -> None:
    """The batch's ``sample_lengths`` and ``supervised`` count, from its CPU tensors."""
    batch["sample_lengths"] = list(lengths)
    batch["supervised"] = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


class Collator:
    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = int(pad_token_id)

    @staticmethod
    def split(items: Sequence[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
        """(kept items, [{id, reason, path}] of the items the dataset marked skipped), the latter logged."""
        kept = [it for it in items if not it.get("skipped")]
        skipped = [{k: it.get(k) for k in ("id", "reason", "path")} for it in items if it.get("skipped")]
        for s in skipped:
            log.warning("skipped sample %s: %s (%s)", s["id"], s["reason"], s["path"])
        return kept, skipped

    @staticmethod
    def add_pixels(batch: dict[str, Any], kept: Sequence[dict[str, Any]], items: Sequence[dict[str, Any]] = ()) -> None:
        """The items' images in item order, as one tensor (or a list when the processor gives several sizes).

        A batch of text only gets ``image_stand_in``, one black image of the processor's size: the model
        runs its tower and projector on it and adds them to the loss times zero, as LLaVA gives every
        text-only sample a black image. Every rank then runs the same modules on every micro-batch (under
        ZeRO-3 a rank that skipped the tower would miss the tower's parameter gathers, and the ranks' collectives
        would no longer pair: gloo said 'collective mismatch', NCCL hangs), and the projector's gradient is a
        zero, not absent, for the optimizer, as in LLaVA. ``items``: the batch's skipped items too, whose
        empty image tensors give the size when every item was skipped (the trainer still runs the model)."""
        pix = [it["pixel_values"] for it in kept if it["pixel_values"].shape[0] > 0]
        if pix:
            if all(p.shape[1:] == pix[0].shape[1:] for p in pix):
                batch["pixel_values"] = torch.cat(pix, dim=0)
            else:  # processors that give several sizes: the model has to take a list
                batch["pixel_values"] = [row for p in pix for row in p]
        else:  # (a text-only or skipped item holds a [0, C, H, W] tensor)
            sized = [p for p in (it.get("pixel_values") for it in [*kept, *items]) if torch.is_tensor(p) and p.dim() == 4]
            if sized:
                batch["image_stand_in"] = torch.zeros((1, *sized[0].shape[1:]))

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        kept, skipped = self.split(items)
        width = max((len(it["input_ids"]) for it in kept), default=0)
        input_ids = torch.full((len(kept), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(kept), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(kept), width), dtype=torch.long)
        for b, it in enumerate(kept):
            n = len(it["input_ids"])
            input_ids[b, :n] = it["input_ids"]
            labels[b, :n] = it["labels"]
            attention_mask[b, :n] = 1
        batch: dict[str, Any] = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        self.add_pixels(batch, kept, items)
        batch["ids"] = [it["id"] for it in kept]
        batch["skipped"] = skipped
        add_counts(batch, [len(it["input_ids"]) for it in kept])
        return batch
