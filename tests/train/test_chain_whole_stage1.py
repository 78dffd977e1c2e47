"""A stage 1 that also trains part of the tower (ConvLLaVA's, `tune_vit_from_layer`) saves the whole model, not
`mm_projector.bin`: the stage 2 chained after it starts from that model. Before, the chain pointed stage 2 at
a projector file stage 1 never wrote, and stage 2 failed only after stage 1 had trained."""
from __future__ import annotations

import pytest
import torch

from train_helpers import REPO, TINY_VISION, run_vlmtrain, tiny_config, write_config
from vlmtrain.config import ConfigError

TOWER = dict(TINY_VISION, num_hidden_layers=4)


def test_shipped_convllava_chain_links_stage_2_to_stage_1s_model():
    from vlmtrain.train.chain import plan_chain

    s1, s2 = plan_chain([REPO / "configs" / f"convllava-stage{i}.yaml" for i in (1, 2)], [])
    assert s2.cfg.model_name_or_path == s2.cfg.tokenizer_name_or_path == s1.cfg.output_dir
    assert s2.cfg.pretrain_mm_mlp_adapter is None
    assert not any(link.startswith("pretrain_mm_mlp_adapter=") for link in s2.links)


def test_llava_stage_1_still_hands_stage_2_its_projector_file(tmp_path):
    from vlmtrain.train.chain import plan_chain

    s1 = write_config(tmp_path / "a.yaml", tiny_config(tmp_path, tmp_path / "a", stage=1, version="plain"))
    s2 = write_config(tmp_path / "b.yaml", tiny_config(tmp_path, tmp_path / "b"))
    _, second = plan_chain([s1, s2], [])
    assert second.cfg.pretrain_mm_mlp_adapter == str(tmp_path / "a" / "mm_projector.bin")
    assert second.cfg.random_init  # it builds its own LLM; only the projector comes from stage 1


def test_a_projector_file_after_a_whole_model_stage_1_is_refused(tmp_path):
    from vlmtrain.train.chain import plan_chain

    s1 = write_config(tmp_path / "a.yaml", tiny_config(tmp_path, tmp_path / "a", stage=1, version="plain",
                                                       vision_config=TOWER, tune_vit_from_layer=2))
    s2 = write_config(tmp_path / "b.yaml", tiny_config(tmp_path, tmp_path / "b",
                                                       pretrain_mm_mlp_adapter="x/mm_projector.bin"))
    with pytest.raises(ConfigError, match="would replace the projector that stage trained"):
        plan_chain([s1, s2], [])


def test_chain_trains_stage_2_from_stage_1s_tuned_tower(caption_blend, instruct_blend, tmp_path):
    from safetensors.torch import load_file

    s1 = write_config(tmp_path / "s1.yaml", tiny_config(caption_blend, tmp_path / "s1", stage=1, version="plain",
                                                        vision_config=TOWER, tune_vit_from_layer=2, max_steps=3,
                                                        learning_rate=1e-2))
    s2 = write_config(tmp_path / "s2.yaml", tiny_config(instruct_blend, tmp_path / "s2", max_steps=2))
    r = run_vlmtrain("run", s1, s2)
    assert r.code == 0, r.err
    assert not (tmp_path / "s1" / "mm_projector.bin").exists()
    first, second = (load_file(tmp_path / s / "model.safetensors") for s in ("s1", "s2"))
    tower = [k for k in first if ".vision_tower." in f".{k}"]
    assert tower and sorted(tower) == sorted(k for k in second if ".vision_tower." in f".{k}")
    # stage 2 keeps the tower frozen: it ends with exactly the tower stage 1 tuned
    assert all(torch.equal(first[k], second[k]) for k in tower)


def test_a_relaunched_chained_stage_reads_what_the_chain_set(instruct_blend, tmp_path):
    """Under torchrun / deepspeed a stage re-reads its config with the chain's links as --set: it must come out
    as the chain planned it. A stage 2 after a stage 2, both random_init with a tokenizer trained on the fly
    (tiny configs), came out random_init with a tokenizer trained anew there."""
    from vlmtrain.config import load_config
    from vlmtrain.train.chain import plan_chain

    paths = [write_config(tmp_path / f"s{n}.yaml", tiny_config(instruct_blend, tmp_path / f"out{n}")) for n in (1, 2)]
    first, second = plan_chain(paths, [])
    assert second.cfg.random_init is False and second.cfg.tokenizer_train_vocab_size is None
    again = load_config(second.path, second.links)
    for key in ("random_init", "tokenizer_train_vocab_size", "model_name_or_path", "tokenizer_name_or_path"):
        assert getattr(again, key) == getattr(second.cfg, key), key
