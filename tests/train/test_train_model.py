"""Model build on transformers' Llava: projector types, towers, feature selection, mm_projector.bin naming."""
from __future__ import annotations

import pytest
import torch

from train_helpers import TINY_TEXT, TINY_VISION
from vlmtrain.config import load_config
from vlmtrain.model.build import apply_freeze, build_model, param_counts
from vlmtrain.model.projector import from_reference, projector_module, save_mm_projector, load_mm_projector

SIGLIP = dict(TINY_VISION, model_type="siglip_vision_model")


def _cfg(**over):
    raw = {"stage": 2, "random_init": True, "text_config": dict(TINY_TEXT, vocab_size=200),
           "vision_config": dict(TINY_VISION), "tokenizer_train_vocab_size": 100}
    raw.update(over)
    return load_config(None, raw=raw)


def _forward(built, n_images=2):
    per = built.tokens_per_image
    ids = torch.randint(3, 150, (n_images, per + 8))
    ids[:, 2:2 + per] = built.image_token_id
    labels = ids.clone()
    labels[:, :2 + per] = -100
    pix = torch.randn(n_images, 3, 32, 32)
    return built.model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pix, labels=labels)


@pytest.mark.parametrize("kind, n_linear", [("linear", 1), ("mlp2x_gelu", 2), ("mlp3x_gelu", 3)])
def test_projector_types_train(kind, n_linear):
    built = build_model(_cfg(mm_projector_type=kind), vocab_size=201, image_token_id=200)
    proj = projector_module(built.model)
    assert sum(isinstance(m, torch.nn.Linear) for m in proj.modules()) == n_linear
    out = _forward(built)
    out.loss.backward()
    assert all(p.grad is not None for p in proj.parameters())


def test_identity_projector_needs_equal_widths():
    cfg = _cfg(mm_projector_type="identity", vision_config=dict(TINY_VISION, hidden_size=64, num_attention_heads=2))
    built = build_model(cfg, vocab_size=201, image_token_id=200)
    assert param_counts(built.model)["projector"]["total"] == 0
    assert torch.isfinite(_forward(built).loss)
    with pytest.raises(ValueError, match="identity projector"):
        build_model(_cfg(mm_projector_type="identity"), vocab_size=201, image_token_id=200)


@pytest.mark.parametrize("vision, feature, tokens", [
    (TINY_VISION, "patch", 16), (TINY_VISION, "cls_patch", 17), (SIGLIP, "patch", 16)])
def test_towers_and_feature_selection(vision, feature, tokens):
    built = build_model(_cfg(vision_config=dict(vision), mm_vision_select_feature=feature, mm_vision_select_layer=-1),
                        vocab_size=201, image_token_id=200)
    assert built.tokens_per_image == tokens
    assert built.model.config.vision_feature_layer == -1
    assert torch.isfinite(_forward(built).loss)


def test_freeze_spec_per_stage():
    built = build_model(_cfg(), vocab_size=201, image_token_id=200)
    apply_freeze(built.model, _cfg(stage=1).frozen())
    c = param_counts(built.model)
    assert c["all"]["trainable"] == c["projector"]["total"] > 0
    apply_freeze(built.model, _cfg(stage=2).frozen())
    c = param_counts(built.model)
    assert c["vision"]["trainable"] == 0 and c["llm"]["trainable"] == c["llm"]["total"]


@pytest.mark.parametrize("kind, keys", [
    ("mlp2x_gelu", ["model.mm_projector.0.bias", "model.mm_projector.0.weight",
                    "model.mm_projector.2.bias", "model.mm_projector.2.weight"]),
    ("linear", ["model.mm_projector.bias", "model.mm_projector.weight"]),  # LLaVA's nn.Linear: no index
])
def test_mm_projector_bin_uses_reference_names_and_round_trips(tmp_path, kind, keys):
    a = build_model(_cfg(mm_projector_type=kind), vocab_size=201, image_token_id=200).model
    state = save_mm_projector(a, tmp_path / "mm_projector.bin")
    assert sorted(torch.load(tmp_path / "mm_projector.bin", weights_only=True)) == keys == sorted(state)
    # Loading strips everything up to "mm_projector." like the reference's get_w.
    torch.manual_seed(123)
    b = build_model(_cfg(mm_projector_type=kind), vocab_size=201, image_token_id=200).model
    load_mm_projector(b, tmp_path / "mm_projector.bin")
    for (k1, v1), (k2, v2) in zip(projector_module(a).state_dict().items(), projector_module(b).state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


def test_loads_a_reference_repo_projector_file(tmp_path):
    """A file as the reference LLaVA writes it (mlp2x_gelu, 'model.mm_projector.N.*') loads into the stock projector."""
    ref = {"model.mm_projector.0.weight": torch.randn(64, 32), "model.mm_projector.0.bias": torch.randn(64),
           "model.mm_projector.2.weight": torch.randn(64, 64), "model.mm_projector.2.bias": torch.randn(64)}
    torch.save(ref, tmp_path / "ref.bin")
    m = build_model(_cfg(), vocab_size=201, image_token_id=200).model
    load_mm_projector(m, tmp_path / "ref.bin")
    proj = projector_module(m)
    assert torch.equal(proj.linear_1.weight, ref["model.mm_projector.0.weight"])
    assert torch.equal(proj.linear_2.bias, ref["model.mm_projector.2.bias"])
    assert set(from_reference(ref, proj)) == {"linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"}


def test_projector_shape_mismatch_is_a_clear_error(tmp_path):
    a = build_model(_cfg(), vocab_size=201, image_token_id=200).model
    save_mm_projector(a, tmp_path / "p.bin")
    b = build_model(_cfg(text_config=dict(TINY_TEXT, hidden_size=32, vocab_size=200)), vocab_size=201,
                    image_token_id=200).model
    with pytest.raises(ValueError, match="has shape"):
        load_mm_projector(b, tmp_path / "p.bin")


def test_mfu_flops_by_stage():
    from vlmtrain.train.mfu import flop_model, mfu, peak_flops

    built = build_model(_cfg(), vocab_size=201, image_token_id=200)
    apply_freeze(built.model, _cfg(stage=2).frozen())
    f2 = flop_model(built.model)
    apply_freeze(built.model, _cfg(stage=1).frozen())
    f1 = flop_model(built.model)
    assert (f2.llm_factor, f2.vision_factor, f2.projector_factor) == (6, 2, 6)
    assert (f1.llm_factor, f1.vision_factor, f1.projector_factor) == (4, 2, 6)
    assert f2.step_flops([40, 20], 1) > f1.step_flops([40, 20], 1) > 0
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12 and peak_flops(None) is None
    assert mfu(494.5e12, 1, 989e12) == pytest.approx(0.5) and mfu(1e12, 1, None) is None


def test_supervised_chunked_loss_equals_transformers_loss():
    """The LM head on labelled positions only, in chunks, gives transformers' causal-LM loss exactly."""
    from transformers import LlavaForConditionalGeneration

    from vlmtrain.model.loss import supervised_lm_loss

    built = build_model(_cfg(), vocab_size=201, image_token_id=200)
    m = built.model
    ids = torch.randint(3, 150, (3, 40))
    ids[:, 2:18] = 200
    labels = ids.clone()
    labels[:, :20] = -100
    labels[2, 30:] = -100
    mask = torch.ones_like(ids)
    mask[2, 35:] = 0
    kw = dict(input_ids=ids, attention_mask=mask, pixel_values=torch.randn(3, 3, 32, 32), labels=labels)
    n = (labels[:, 1:] != -100).sum()
    for extra in ({}, {"num_items_in_batch": n * 2}):
        ours = m(**kw, **extra).loss
        stock = LlavaForConditionalGeneration.forward(m, **kw, **extra).loss
        assert torch.allclose(ours, stock, rtol=1e-6, atol=1e-6)
    hidden = m.model(input_ids=ids, attention_mask=mask, pixel_values=kw["pixel_values"]).last_hidden_state
    a = supervised_lm_loss(m.lm_head, hidden, labels, chunk_tokens=5)
    b = supervised_lm_loss(m.lm_head, hidden, labels, chunk_tokens=10_000)
    assert torch.allclose(a, b, rtol=1e-6) and m(**kw).logits is None


def test_stage1_from_separate_pretrained_parts(tmp_path):
    """LLaVA stage 1's way in: an LLM and a vision tower from local folders, fresh projector, vocab resized."""
    from transformers import AutoConfig, AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    llm = AutoModelForCausalLM.from_config(AutoConfig.for_model(**dict(TINY_TEXT, vocab_size=200)))
    llm.save_pretrained(tmp_path / "llm")
    tower = CLIPVisionModel(CLIPVisionConfig(**{k: v for k, v in TINY_VISION.items() if k != "model_type"}))
    tower.save_pretrained(tmp_path / "tower")
    cfg = load_config(None, raw={"stage": 1, "model_name_or_path": str(tmp_path / "llm"),
                                 "vision_tower": str(tmp_path / "tower"), "mm_projector_type": "mlp2x_gelu"})
    built = build_model(cfg, vocab_size=202, image_token_id=201)
    m = built.model
    mine, theirs = m.model.vision_tower.state_dict(), tower.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert torch.equal(m.model.language_model.layers[0].mlp.up_proj.weight, llm.model.layers[0].mlp.up_proj.weight)
    assert m.get_input_embeddings().weight.shape[0] == 202 and m.config.image_token_id == 201
    assert not any(p.device.type == "meta" for p in m.parameters())
    assert torch.isfinite(_forward(built).loss)


def test_padding_enters_the_llm_as_zero_vectors_and_changes_no_real_token():
    """LLaVA / MoE-LLaVA pad the embedded sequence with zeros: an MoE router sees them so; real tokens' hidden
    states are the stock forward's (attention skips padded keys), and the image positions are still found."""
    built = build_model(_cfg(), vocab_size=201, image_token_id=200)
    m = built.model.eval()
    ids = torch.randint(3, 150, (2, 40))
    ids[:, 2:18] = 200
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    ids[1, 30:] = 0  # the pad id: its embedding row is not zero
    labels = ids.clone()
    labels[:, :20] = -100
    labels[1, 30:] = -100
    seen = {}
    first = m.model.language_model.layers[0]
    handle = first.register_forward_pre_hook(
        lambda mod, args, kw: seen.update(h=kw.get("hidden_states", args[0] if args else None)), with_kwargs=True)
    pix = torch.randn(2, 3, 32, 32)
    try:
        with torch.no_grad():
            m(input_ids=ids, attention_mask=mask, pixel_values=pix, labels=labels)
            zeroed = seen["h"].clone()
            m.model(input_ids=ids, attention_mask=mask, pixel_values=pix)  # the stock path: pad embeddings
            stock = seen["h"].clone()
    finally:
        handle.remove()
    assert torch.count_nonzero(stock[1, 30:]) > 0 and torch.count_nonzero(zeroed[1, 30:]) == 0
    torch.testing.assert_close(zeroed[mask.bool()], stock[mask.bool()], rtol=0, atol=0)  # images placed alike


def test_a_text_only_batch_runs_the_tower_on_a_stand_in_and_gives_the_projector_zero_gradients():
    """LLaVA gives text-only samples a black image: the projector's gradient is zero, not absent (the
    optimizer steps it as LLaVA's does), and every rank runs the same modules (ZeRO-3, test_train_multinode)."""
    from vlmtrain.data.collate import Collator

    built = build_model(_cfg(), vocab_size=201, image_token_id=200)
    m = built.model
    items = [{"input_ids": torch.randint(3, 150, (12,)), "labels": torch.randint(3, 150, (12,)), "id": str(k),
              "pixel_values": torch.zeros((0, 3, 32, 32))} for k in range(2)]
    batch = Collator(pad_token_id=0)(items)
    assert "pixel_values" not in batch and batch["image_stand_in"].shape == (1, 3, 32, 32)
    for k in ("ids", "skipped"):
        batch.pop(k)
    stand_in = batch.pop("image_stand_in")
    plain = m(**batch).loss
    loss = m(**batch, image_stand_in=stand_in).loss
    assert torch.equal(loss, plain)
    loss.backward()
    grads = [p.grad for p in m.model.multi_modal_projector.parameters()]
    assert grads and all(g is not None and torch.count_nonzero(g) == 0 for g in grads)


def test_a_linear_projector_file_written_with_an_index_still_loads(tmp_path):
    """vlmtrain before 2026-12-03 wrote a linear projector as model.mm_projector.0.*; LLaVA's is .weight/.bias."""
    a = build_model(_cfg(mm_projector_type="linear"), vocab_size=201, image_token_id=200).model
    state = save_mm_projector(a, tmp_path / "new.bin")
    torch.save({k.replace("mm_projector.", "mm_projector.0."): v for k, v in state.items()}, tmp_path / "old.bin")
    b = build_model(_cfg(mm_projector_type="linear"), vocab_size=201, image_token_id=200).model
    load_mm_projector(b, tmp_path / "old.bin")
    assert torch.equal(projector_module(b).weight, projector_module(a).weight)
