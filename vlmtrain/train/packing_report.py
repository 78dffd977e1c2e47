"""``vlmtrain packing-stats CONFIG``: the padding a run's batches would carry, padded and packed.

Reads what ``vlmtrain run`` would read to measure true lengths (the tokenizer, the blend, the
template, the tokens per image from the model's config on the meta device: no weight, no image)
and reuses the run's length cache, then lays out one epoch's batches both ways
(vlmtrain.data.packing_stats).
"""
from __future__ import annotations

from dataclasses import replace

from vlmtrain.config import ConfigError, TrainConfig, check_inputs


def packing_stats(cfg: TrainConfig) -> dict:
    import numpy as np

    from vlmtrain.data import ImageTokens
    from vlmtrain.data.dataset import cached_lengths, open_blend
    from vlmtrain.data.encode import Encoder
    from vlmtrain.data.packing_stats import padding_report
    from vlmtrain.model.build import apply_freeze, build_model
    from vlmtrain.train.mfu import flop_model
    from vlmtrain.train.preflight import refuse_empty
    from vlmtrain.train.tokenizer import load_tokenizer

    # No weight is read: stage 1's projector (a finetune's pretrain_mm_mlp_adapter) need not exist yet. Stage 3's
    # stage-2 model is still checked: its tokenizer and config are what this measures with.
    check_inputs(replace(cfg, pretrain_mm_mlp_adapter=None))
    tok = load_tokenizer(cfg)
    image_token_id = tok.convert_tokens_to_ids(cfg.image_token)
    built = build_model(cfg, meta=True, vocab_size=len(tok), image_token_id=image_token_id)
    apply_freeze(built.model, cfg.frozen(), cfg.tune_vit_from_layer)  # what trains sets the FLOPs per position
    encoder = Encoder(tok, cfg.template, ImageTokens(cfg.image_token, built.image_token_id, built.tokens_per_image),
                      cfg.model_max_length)
    ds, blend, _ = open_blend(cfg.dataset_dir, cfg.image_root)
    where = cfg._source or "config"
    refuse_empty(len(ds), blend, cfg, where)
    lengths, *_ = cached_lengths(cfg.dataset_dir, ds, blend, encoder, num_proc=cfg.data_num_proc)
    lengths = lengths[np.nonzero(lengths)[0]].astype(int).tolist()
    if not lengths:  # (a zero length is a sample the run leaves out)
        raise ConfigError(f"no trainable sample in {cfg.dataset_dir}: all {len(ds)} are left out", where=where,
                          hint="check `version` (the template), `model_max_length` and the tokenizer; "
                               "`vlmtrain run` lists the reasons per sample")
    world = cfg.num_gpus * cfg.num_nodes * cfg.gradient_accumulation_steps  # LLaVA's megabatch, in batches
    report = padding_report(lengths, cfg.per_device_train_batch_size, cfg.model_max_length, world_size=world,
                            seed=cfg.seed, flat=built.attn == "flash_attention_2",
                            attention_weight=flop_model(built.model).attention_weight())
    report["config"] = cfg._source
    report["run_order"] = "length-grouped" if cfg.group_by_modality_length else "random"
    return report
