"""Packing (vlmtrain.data.packing): rows of several samples with attention confined to each, the same loss
and gradients as the padded batch (stages 2 and 3, CPU, fp32), and `vlmtrain run` with `packing: true`."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from train_helpers import read_metrics
from vlmtrain.config import load_config


def test_pack_rows_first_fit_decreasing():
    from vlmtrain.data.packing import best_rows, pack_rows, packed_positions, padded_positions

    lengths = [5, 9, 3, 7, 2, 6]
    rows = pack_rows(lengths, 10)
    assert rows == [[1], [3, 2], [5, 4], [0]]  # longest first, each into the first row with room
    assert sorted(i for r in rows for i in r) == list(range(6))
    assert all(sum(lengths[i] for i in r) <= 10 for r in rows)
    assert pack_rows([12, 3], 10) == [[0], [1]]  # too long for a row: a row of its own
    assert padded_positions(lengths) == 6 * 9 and packed_positions(lengths, 10) == 4 * 9  # rows cut at 9
    assert packed_positions(lengths, 10, flat=True) == sum(lengths)
    # rows are cut where they give the fewest positions; never more than padding
    assert best_rows([250] * 3, 512) == [[0], [1], [2]] and packed_positions([250] * 3, 512) == 750
    assert best_rows([300, 200, 250, 180], 512) == [[0, 3], [2, 1]]  # 2 x 480, not 2 x 500 (cap 512)
    # attention over a whole row's square: longer rows cost more per position, and may not be worth it
    assert best_rows([200, 150, 150, 100], 400) == [[0, 3], [1, 2]]  # 2 x 300 positions < 4 x 200
    assert best_rows([200, 150, 150, 100], 400, attention_weight=0.01) == [[0], [1], [2], [3]]
    import random

    rng = random.Random(0)
    for _ in range(200):
        ls = [rng.randint(1, 300) for _ in range(rng.randint(1, 12))]
        assert packed_positions(ls, 512) <= padded_positions(ls)
    with pytest.raises(ValueError):
        pack_rows([1], 0)


def _items():
    """Four items with 0, 1 and 2 images (2 image tokens each, id 9), ragged lengths."""
    def item(i, n, images):
        ids = torch.arange(100 * i + 10, 100 * i + 10 + n)
        ids[1:1 + 2 * images] = 9
        labels = ids.clone()
        labels[:3] = -100
        return {"input_ids": ids, "labels": labels, "id": f"s{i}",
                "pixel_values": torch.full((images, 3, 2, 2), float(i))}

    return [item(0, 7, 1), item(1, 4, 0), item(2, 6, 2), item(3, 3, 1)]


def test_collator_layout_positions_labels_and_images():
    from vlmtrain.data import PackingCollator, pop_batch_meta

    items = _items()
    batch = PackingCollator(pad_token_id=0, max_length=10)(items + [{"skipped": True, "id": "bad", "reason": "r",
                                                                      "path": "p"}])
    meta = pop_batch_meta(batch)
    assert "attention_mask" not in batch and set(batch) == {"input_ids", "labels", "position_ids", "pixel_values"}
    # rows (first-fit decreasing, capacity 10): [s0 (7), s3 (3)], [s2 (6), s1 (4)]
    assert meta["ids"] == ["s0", "s3", "s2", "s1"] and meta["sample_lengths"] == [7, 3, 6, 4]
    assert meta["supervised"] == int((batch["labels"][:, 1:] != -100).sum()) > 0
    assert meta["skipped"] == [{"id": "bad", "reason": "r", "path": "p"}]
    assert batch["input_ids"].shape == (2, 10)
    assert batch["position_ids"].tolist() == [list(range(7)) + list(range(3)), list(range(6)) + list(range(4))]
    assert torch.equal(batch["input_ids"][0, 7:], items[3]["input_ids"])
    # each sample's first label is masked (it would be the previous sample's target), the rest kept
    assert batch["labels"][0, 7] == -100 and batch["labels"][1, 6] == -100
    assert torch.equal(batch["labels"][1, 7:], items[1]["labels"][1:])
    # images follow the samples' packed order: s0 (1), s3 (1), s2 (2)
    assert batch["pixel_values"][:, 0, 0, 0].tolist() == [0.0, 3.0, 2.0, 2.0]
    # padding at a row's end is a segment of its own, labelled -100
    short = PackingCollator(0, 10)(items[:2])  # one row: s0 (7) + s1 (4) does not fit -> two rows
    assert short["position_ids"][1].tolist() == [0, 1, 2, 3, 0, 1, 2] and (short["labels"][1, 4:] == -100).all()
    flat = PackingCollator(0, 10, flat=True)(items)
    assert flat["input_ids"].shape == (1, 20) and flat["sample_lengths"] == [7, 3, 6, 4]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Llava (fp32), its tokenizer and the items of a tiny instruct blend."""
    from train_helpers import tiny_config, write_config
    from vlmtrain.data import DataArgs, ImageTokens, build_train_data
    from vlmtrain.model.build import apply_freeze, build_model
    from vlmtrain.tinydata import write_tiny_blend
    from vlmtrain.train.run import build_image_processor
    from vlmtrain.train.tokenizer import load_tokenizer

    tmp = tmp_path_factory.mktemp("pack")
    blend = write_tiny_blend(tmp / "blend", n=16, kind="instruct", seed=3)
    cfg = load_config(write_config(tmp / "c.yaml", tiny_config(blend, tmp / "out")))
    tok = load_tokenizer(cfg)
    torch.manual_seed(0)
    built = build_model(cfg, vocab_size=len(tok), image_token_id=tok.convert_tokens_to_ids("<image>"))
    apply_freeze(built.model, cfg.frozen())
    data = build_train_data(DataArgs(dataset_dir=str(blend), model_max_length=512), tok,
                            build_image_processor(cfg, built.vision),
                            ImageTokens("<image>", built.image_token_id, built.tokens_per_image))
    items = [data.dataset[i] for i in range(8)]
    return built.model, tok.pad_token_id, items


def _loss_and_grads(model, batch, aux_coef: float = 0.0):
    from vlmtrain.data import pop_batch_meta
    from vlmtrain.train.stage3 import aux_loss

    batch = dict(batch)
    pop_batch_meta(batch)
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    total = loss + aux_coef * aux_loss(model) if aux_coef else loss
    total.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(a, b):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6, msg=name)


def _batches(pad, items, capacity, *, ragged=True, flat=False):
    from vlmtrain.data import Collator, PackingCollator

    padded = Collator(pad)(items)
    packed = PackingCollator(pad, capacity, flat=flat)(items)
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]  # samples do share rows
    if ragged:  # ... and padding is saved
        assert packed["input_ids"].numel() < padded["input_ids"].numel()
    assert "pixel_values" in packed and len(packed["sample_lengths"]) == len(items)
    return padded, packed


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_stage2_packed_loss_and_gradients_equal_the_padded_batch(tiny, attn):
    model, pad, items = tiny
    model = copy.deepcopy(model)
    model.config._attn_implementation = attn
    model.model.language_model.config._attn_implementation = attn
    lengths = [len(it["input_ids"]) for it in items]
    padded, packed = _batches(pad, items, capacity=2 * max(lengths))
    _assert_same(_loss_and_grads(model, padded), _loss_and_grads(model, packed))


def test_stage3_packed_loss_and_gradients_equal_the_padded_batch(tiny):
    """MoE routing depends on the tokens of a forward: the Gumbel draw of the second expert is per token
    position, the capacity counts the forward's tokens, and the padded batch routes its padding too. So
    this compares with the second-expert draw and dropping off (each token's route is its own), and the
    aux loss only where both batches hold the same tokens (no padding in either)."""
    from vlmtrain.model.moe import MoeSettings, MoeSpec, convert_to_moe

    model, pad, items = tiny
    model = copy.deepcopy(model)
    settings = MoeSettings(num_experts=4, top_k=2, second_expert_sampling=False, drop_tokens=False)
    convert_to_moe(model, MoeSpec(layers=[0, 1], settings=settings))
    for n, p in model.named_parameters():  # the experts differ, so that routing matters for the result
        if ".experts.1." in n or ".experts.3." in n:
            p.data.mul_(1.5)
    model.train()
    lengths = [len(it["input_ids"]) for it in items]
    padded, packed = _batches(pad, items, capacity=2 * max(lengths))
    _assert_same(_loss_and_grads(model, padded), _loss_and_grads(model, packed))

    # Equal lengths, one row (the flash-attn layout): the same tokens in both layouts, aux loss included.
    n = min(lengths)
    even = [{**it, "input_ids": it["input_ids"][:n], "labels": it["labels"][:n]} for it in items[:4]]
    even = [it for it in even if (it["input_ids"] == model.config.image_token_id).sum() ==
            it["pixel_values"].shape[0] * model.config.image_seq_length]  # keep whole images only
    assert len(even) >= 2
    padded, packed = _batches(pad, even, capacity=2 * n, ragged=False, flat=True)
    assert padded["attention_mask"].all() and packed["input_ids"].numel() == padded["input_ids"].numel()
    _assert_same(_loss_and_grads(model, padded, aux_coef=0.01), _loss_and_grads(model, packed, aux_coef=0.01))


def test_run_with_packing_matches_the_padded_run(instruct_blend, make_config, vlmtrain, tmp_path, caplog):
    """`packing: true` through `vlmtrain run`: the length-grouped sampler chooses the same batches, the
    logged losses and gradient norms equal the padded run's, less of each batch is padding, and the
    data report and the data-wait figures are written."""
    from train_helpers import TINY_TEXT

    caplog.set_level("INFO", logger="vlmtrain")
    # Wide enough that attention is a small part of a position's cost (as in real LLMs), so rows of
    # several samples are worth their longer attention (vlmtrain.data.packing's cost).
    wide = {**TINY_TEXT, "hidden_size": 256, "intermediate_size": 1024}
    over = dict(max_steps=3, group_by_modality_length=True, per_device_train_batch_size=6, model_max_length=512,
                text_config=wide)
    a = vlmtrain("run", make_config(instruct_blend, "padded", **over))
    assert a.code == 0, a.err
    b = vlmtrain("run", make_config(instruct_blend, "packed", packing=True, **over))
    assert b.code == 0, b.err
    ra, rb = read_metrics(tmp_path / "padded"), read_metrics(tmp_path / "packed")
    assert sorted(ra) == sorted(rb) == [1, 2, 3]
    assert sum(rb[s]["padding_frac"] for s in rb) < sum(ra[s]["padding_frac"] for s in ra)
    for s in ra:
        assert rb[s]["loss"] == pytest.approx(ra[s]["loss"], rel=1e-5), s
        assert rb[s]["grad_norm"] == pytest.approx(ra[s]["grad_norm"], rel=1e-4), s
        assert rb[s]["padding_frac"] <= ra[s]["padding_frac"], s
        assert 0 <= rb[s]["data_wait_frac"] <= 1 and rb[s]["data_wait_s"] >= 0
    report = json.loads((tmp_path / "packed" / "data_report.json").read_text())
    padded_report = json.loads((tmp_path / "padded" / "data_report.json").read_text())
    assert report["encoded"] == padded_report["encoded"] == 24 and report["skipped"] == 0
    assert {k: v for k, v in report.items() if k != "lengths_cache_hit"} == \
        {k: v for k, v in padded_report.items() if k != "lengths_cache_hit"}
    summary = [json.loads(line) for line in (tmp_path / "packed" / "metrics.jsonl").read_text().splitlines()
               if "train_runtime" in line][-1]
    assert 0 < summary["data_wait_s"] < summary["train_runtime"] and 0 < summary["data_wait_frac"] < 1
    assert any("data wait: the training loop waited" in r.getMessage() for r in caplog.records)
    trained = [line for line in b.err.splitlines() if line.startswith("finished at step 3 ")]
    assert trained and "data_wait_s" in trained[0] and "data_wait_frac" in trained[0]  # the run's summary line


def test_padding_report_counts_each_batch_both_ways():
    from vlmtrain.data.packing_stats import layout_totals, padding_report, render

    lengths = [100, 30, 60, -20, 90, 40]
    t = layout_totals(lengths, [0, 1, 2, 3, 4, 5], batch_size=3, max_length=128)
    # [100, 30, 60]: padded 3 x 100, packed [100] [60, 30] = 2 x 100; [20, 90, 40]: 3 x 90, [90] [40, 20] = 2 x 90
    assert (t["tokens"], t["padded_positions"], t["packed_positions"]) == (340, 570, 380)
    assert t["padding_frac_packed"] == pytest.approx(1 - 340 / 380) and t["samples_per_row"] == 6 / 4
    assert layout_totals(lengths, range(6), 3, 128, flat=True)["packed_positions"] == 340
    r = padding_report(lengths * 50, batch_size=4, max_length=256, world_size=2, seed=1)
    assert r["samples"] == 300 and r["lengths"]["text_only"] == 50 and r["lengths"]["max"] == 100
    for order in ("random", "length-grouped"):
        assert r[order]["tokens"] == 340 * 50 and r[order]["packed_positions"] <= r[order]["padded_positions"]
    assert "positions saved" in render(r)


def test_packing_stats_command(instruct_blend, make_config, vlmtrain):
    from train_helpers import TINY_TEXT

    wide = {**TINY_TEXT, "hidden_size": 256, "intermediate_size": 1024}  # see the run test above
    r = vlmtrain("packing-stats", make_config(instruct_blend, "st", per_device_train_batch_size=6, text_config=wide),
                 "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["samples"] == 24 and report["max_length"] == 512 and report["run_order"] == "random"
    assert 0 < report["attention_weight"] < 1e-3
    assert 0 < report["random"]["padding_frac_packed"] < report["random"]["padding_frac_padded"]
    text = vlmtrain("packing-stats", make_config(instruct_blend, "st2"))
    assert text.code == 0 and "padding, packed" in text.out
    bad = vlmtrain("packing-stats", make_config(instruct_blend.parent / "nonexistent", "st3"))
    assert bad.code == 2 and "nonexistent" in bad.err
