"""vlmtrain's data side: a vlmdata blend (Arrow) -> tokenised, masked, image-processed batches.

    from vlmtrain.data import DataArgs, ImageTokens, build_train_data, make_length_grouped_sampler
    data = build_train_data(DataArgs(dataset_dir="blends/llava-665k"), tokenizer, image_processor,
                            ImageTokens(token="<image>", token_id=model.config.image_token_id, per_image=576))
    sampler = make_length_grouped_sampler(data.lengths, batch_size=16, world_size=8, seed=0, group_by_modality=True)
    loader = DataLoader(data.dataset, batch_size=16, sampler=sampler, collate_fn=data.collator, num_workers=4)
    for batch in loader:
        meta = pop_batch_meta(batch)          # "ids" and "skipped" are not model inputs
        data.report.record_batch(meta)
        model(**batch)

Items: {"input_ids" LongTensor[T], "labels" LongTensor[T] (-100 = no loss), "pixel_values"
FloatTensor[n_images,3,H,W] (n_images may be 0), "id" str}. Batches: "input_ids" [B,T] right-padded
with pad_token_id, "labels" [B,T] (-100 on padding), "attention_mask" [B,T], "pixel_values" [N,3,H,W]
(the batch's images in order; only when N > 0), plus "ids" and "skipped" ([{id, reason, path}] of
samples dropped with bad_samples="skip"): pop those two (``pop_batch_meta``) before the forward.
Every ``<image>`` becomes ``ImageTokens.per_image`` copies of ``token_id`` in input_ids (transformers'
Llava scatters the image features there), so lengths are true lengths.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from vlmdata.contract import IMAGE_BYTES

from .collate import BATCH_META_KEYS, Collator, pop_batch_meta
from .dataset import BadSampleError, ConversationDataset, DataError, DataReport, cached_lengths, open_blend
from .encode import IGNORE_INDEX, Encoded, Encoder
from .images import ASPECT_RATIOS, IMAGE_DECODES, ImageLoader, expand2square
from .packing import PackingCollator
from .sampler import LengthGroupedSampler, make_length_grouped_sampler
from .templates import TEMPLATES, VICUNA_SYSTEM, MaskError

log = logging.getLogger("vlmtrain.data")

__all__ = [
    "BATCH_META_KEYS", "BadSampleError", "Collator", "DataArgs", "DataError", "DataReport", "Encoder", "Encoded",
    "IGNORE_INDEX", "ImageTokens", "LengthGroupedSampler", "MaskError", "PackingCollator", "TEMPLATES", "TrainData",
    "VICUNA_SYSTEM",
    "build_train_data", "expand2square", "make_length_grouped_sampler", "pop_batch_meta",
]
BAD_SAMPLES = ("fail", "skip")


@dataclass
class ImageTokens:
    token: str = "<image>"   # the marker in the conversations
    token_id: int = 32000    # the id the model's config uses as image_token_id
    per_image: int = 576     # ids per image (576 for CLIP-L/14-336 "patch")


@dataclass
class DataArgs:
    dataset_dir: str                  # a vlmdata blend output: datasets.load_from_disk(dir) + dir/blend.json
    image_root: str | None = None     # overrides blend.json's image root
    template: str = "vicuna_v1"       # a name in vlmtrain.data.templates.TEMPLATES: plain (stage 1), vicuna_v1, phi, qwen, stablelm, openchat, mistral, chat_template
    model_max_length: int = 2048      # counts image tokens
    image_aspect_ratio: str = "pad"   # "pad" (expand2square on the processor mean colour) | "square" (processor's resize/crop)
    bad_samples: str = "fail"         # "fail" | "skip": bad image or unencodable sample
    group_by_modality_length: bool = False
    num_proc: int = 1                 # processes for the one-off token-length pass
    cache_dir: str | None = None      # where the token-length cache goes (default: next to the dataset)
    system_prompt: str | None = None  # vicuna_v1's system prompt (default: LLaVA's)
    packing: bool = False             # several samples per row up to model_max_length (vlmtrain.data.packing)
    packing_flat: bool = False        # packing: the whole batch in one row (flash-attn's varlen kernel)
    packing_attention_weight: float = 0.0  # packing: what attention adds per token of row width (FlopModel.attention_weight)
    image_decode: str = "exact"       # "exact" | "draft": JPEG draft decoding of images far larger than the target

    def validate(self) -> None:
        if self.template not in TEMPLATES:
            raise DataError(f"template must be one of {', '.join(TEMPLATES)}, not {self.template!r}")
        if self.image_aspect_ratio not in ASPECT_RATIOS:
            raise DataError(f"image_aspect_ratio must be one of {', '.join(ASPECT_RATIOS)}, not {self.image_aspect_ratio!r}")
        if self.bad_samples not in BAD_SAMPLES:
            raise DataError(f"bad_samples must be one of {', '.join(BAD_SAMPLES)}, not {self.bad_samples!r}")
        if self.image_decode not in IMAGE_DECODES:
            raise DataError(f"image_decode must be one of {', '.join(IMAGE_DECODES)}, not {self.image_decode!r}")
        if int(self.model_max_length) < 1 or int(self.num_proc) < 1:
            raise DataError("model_max_length and num_proc must be >= 1")


@dataclass
class TrainData:
    dataset: torch.utils.data.Dataset
    collator: Callable
    lengths: list[int]               # true token counts incl. image tokens; negative for text-only
    report: DataReport
    encoder: Encoder | None = field(default=None, repr=False)


def _say_kept_bad_images(blend: dict, args: DataArgs) -> None:
    """A blend made with ``--missing keep`` holds rows whose image was missing or corrupt (blend.json counts
    them per source): with bad_samples "fail" the run stops at the first one it meets, however far in."""
    counts = blend.get("counts") if isinstance(blend.get("counts"), dict) else {}
    n = sum(int(c.get("kept_with_missing_or_corrupt_images") or 0) for c in counts.values() if isinstance(c, dict))
    if n and args.bad_samples == "fail":
        log.warning("%s keeps %d row(s) whose image was missing or corrupt when it was blended (--missing keep): "
                    "with bad_samples: fail the run stops at the first of them it meets; set bad_samples: skip to "
                    "train past them (the data report lists them), or blend again with --missing drop",
                    args.dataset_dir, n)


def build_train_data(args: DataArgs, tokenizer: Any, image_processor: Any, image_tokens: ImageTokens) -> TrainData:
    """Open the blend, measure (or load cached) true lengths, and return dataset + collator + lengths + report.

    Records that cannot be encoded right (LLaVA's "tokenization mismatch" family, images that do
    not fit in model_max_length, ...) are found here, before training: with bad_samples="fail" a
    DataError lists them; with "skip" they are left out of the dataset and listed in the report.
    """
    args.validate()
    ds, blend, root = open_blend(args.dataset_dir, args.image_root)
    encoder = Encoder(tokenizer, args.template, image_tokens, args.model_max_length, system=args.system_prompt)
    lengths, failures, truncated, reference_masked, cache, hit = cached_lengths(
        args.dataset_dir, ds, blend, encoder, num_proc=args.num_proc, cache_dir=args.cache_dir)
    report = DataReport(rows=len(ds), truncated=int(truncated), mask_failures=list(failures),
                        reference_masked=list(reference_masked), lengths_cache=str(cache), lengths_cache_hit=hit)
    if failures and args.bad_samples == "fail":
        shown = "; ".join(f"{f['id']!r} (row {f['row']}): {f['reason']}" + (f" ({f['detail']})" if f.get("detail") else "")
                          for f in failures[:5])
        more = f" and {len(failures) - 5} more" if len(failures) > 5 else ""
        raise DataError(f"{len(failures)} sample(s) of {args.dataset_dir} cannot be encoded with template "
                        f"{args.template!r} and model_max_length {args.model_max_length}: {shown}{more}. "
                        f"Set bad_samples: skip to leave them out (they are listed in the data report).")
    _say_kept_bad_images(blend, args)
    rows = np.nonzero(lengths)[0]
    kept = lengths[rows]
    report.encoded = int(len(rows))
    report.text_only = int((kept < 0).sum())
    if (kept > 0).any() and root is None and IMAGE_BYTES not in ds.column_names:
        raise DataError(f"{args.dataset_dir} has samples with images but no image root: blend.json has no "
                        f"image_root and none was given; set image_root")
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise DataError("the tokenizer has no pad, unk or eos token to pad with; set tokenizer.pad_token")
    images = ImageLoader(image_processor, args.image_aspect_ratio, draft=args.image_decode == "draft")
    dataset = ConversationDataset(ds, rows, encoder, images, root, args.bad_samples, report)
    log.info("data: %s (lengths %s %s)", report.summary(), "cached in" if hit else "measured, cached in", cache)
    collator = (PackingCollator(pad_id, args.model_max_length, flat=args.packing_flat,
                                attention_weight=args.packing_attention_weight) if args.packing else Collator(pad_id))
    return TrainData(dataset, collator, kept.astype(int).tolist(), report, encoder)
