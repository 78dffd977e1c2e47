"""The pretrain case end to end without the Hub at train time: two model repos (a tiny random LLaMA
with its tokenizer, sharded, and a tiny CLIP tower with its image processor, written on the fly)
fetched from the loopback hub by name, linked into a layout's checkpoints folder, then `vlmtrain
run` stage 1 with model_name_or_path / vision_tower pointing at the fetched folders and
HF_HUB_OFFLINE=1: no request reaches the hub."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fetch_helpers import HubServer

LLM, TOWER = "tiny-org/tiny-llama", "tiny-org/tiny-clip"
TINY_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 512}
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "patch_size": 8, "image_size": 32}


def _publish(hub: HubServer, repo: str, folder: Path) -> list[str]:
    names = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            rel = p.relative_to(folder).as_posix()
            hub.add(repo, rel, p.read_bytes(), lfs=rel.endswith((".safetensors", ".model")), repo_type="model")
            names.append(rel)
    return names


def _write_models(tmp: Path, blend: Path) -> tuple[Path, Path]:
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from vlmtrain.data.tokenizers import train_llama_sentencepiece

    torch.manual_seed(0)
    import datasets

    texts = [t["value"] for row in datasets.load_from_disk(str(blend))["conversations"] for t in row]
    llm = tmp / "publish/llm"
    tok = train_llama_sentencepiece(texts * 4, 300, legacy=False, workdir=tmp / "spm")
    tok.save_pretrained(llm)
    model = LlamaForCausalLM(LlamaConfig(**TINY_TEXT, vocab_size=len(tok)))
    model.save_pretrained(llm, max_shard_size="200KB")  # shards + an index, as the real repos have
    tower = tmp / "publish/clip"
    CLIPVisionModel(CLIPVisionConfig(**TINY_VISION)).save_pretrained(tower)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tower)
    return llm, tower


def _manifests(folder: Path) -> None:
    (folder / "datasets").mkdir(parents=True)
    (folder / "layouts").mkdir()
    for name, repo in (("tiny-llama", LLM), ("tiny-clip", TOWER)):
        (folder / f"datasets/{name}.toml").write_text(f"""name = "{name}"
title = "test model {name}"
license = "test"
[[files]]
name = "{repo}"
size = "unknown"
sha256 = "unknown"
sources = [{{ kind = "hfrepo", repo_type = "model", repo_id = "{repo}", revision = "main" }}]
place = {{ kind = "repo", to = "models/{name}" }}
""")
    (folder / "layouts/case.toml").write_text("""name = "case"
title = "checkpoints as the pretrain case keeps them"
[[entries]]
path = "LLaVA-Pretrain/checkpoints/tiny-llama"
store = "models/tiny-llama"
dataset = "tiny-llama"
[[entries]]
path = "LLaVA-Pretrain/checkpoints/tiny-clip"
store = "models/tiny-clip"
dataset = "tiny-clip"
[[entries]]
path = "Output/checkpoints_pretrain"
kind = "mkdir"
""")


def test_fetched_checkpoints_train_offline(cli, hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from tests.cli_runner import run_main
    from vlmtrain.tinydata import write_tiny_blend

    blend = write_tiny_blend(tmp_path / "blend", n=8, kind="caption", seed=3)
    llm, tower = _write_models(tmp_path, blend)
    published = _publish(hub, LLM, llm)
    assert sum(n.endswith(".safetensors") for n in published) >= 2 and "model.safetensors.index.json" in published
    _publish(hub, TOWER, tower)
    _manifests(tmp_path / "manifests")
    root = tmp_path / "data"

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    r = cli("fetch", "tiny-llama", "tiny-clip", "--layout", "case", "--manifests", str(tmp_path / "manifests"),
            "--root", str(root), "--hf-endpoint", hub.hub.url, env={"HF_TOKEN": hub.token})
    assert r.code == 0, r.err
    ckpts = root / "layouts/case/LLaVA-Pretrain/checkpoints"
    for p in llm.rglob("*"):
        if p.is_file():
            assert (ckpts / "tiny-llama" / p.relative_to(llm)).read_bytes() == p.read_bytes()
    lock = json.loads((root / "vlmdata.lock").read_text())["files"]
    assert lock[f"tiny-llama:{LLM}"]["revision"] == HubServer.COMMIT

    # train with no hub at all
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.hub.reset()
    hub.cdn.reset()
    out = root / "layouts/case/Output/checkpoints_pretrain/run"
    cfg = {"stage": 1, "model_name_or_path": str(ckpts / "tiny-llama"), "vision_tower": str(ckpts / "tiny-clip"),
           "version": "plain", "dataset_dir": str(blend), "mm_projector_type": "mlp2x_gelu", "model_max_length": 128,
           "output_dir": str(out), "per_device_train_batch_size": 4, "max_steps": 2, "learning_rate": 1e-3,
           "save_steps": 100, "logging_steps": 1, "seed": 1, "report_to": []}
    (tmp_path / "s1.yaml").write_text(yaml.safe_dump(cfg))
    from vlmtrain.cli import main

    res = run_main(main, "vlmtrain", "run", str(tmp_path / "s1.yaml"), env={"HF_HUB_OFFLINE": "1"})
    assert res.code == 0, res.err[-3000:]
    assert (out / "mm_projector.bin").is_file()  # stage 1 saves the projector
    assert hub.hub.requests == [] and hub.cdn.requests == []


@pytest.fixture(autouse=True)
def _threads():
    import torch

    torch.set_num_threads(1)
