"""Runs in a child Python on InternVL's path (internvl_env.internvl_paths): InternVL-LLaVA's own InternViT-6B.

``python internvl_side.py SPEC OUT``. SPEC (JSON): ``towers``: [{``folder``, ``config``, ``seed``, ``sizes``, ``dropout``?}],
``images``: [paths], ``select_layer``. Per tower, its ``InternVisionModel`` is built on
``InternVisionConfig(**config)`` with random weights (norms, layer scales and biases drawn too, so a swapped
or dropped one shows) and saved to ``folder`` with ``save_pretrained`` (config.json + .bin shards: the
published layout and key names). Then its ``CLIPVisionTower`` (clip_encoder.py) loads that folder as
InternVL-LLaVA does (processor built in code, crop 448 or 336 by the folder's name) and OUT (torch.save) gets:

- ``hidden[size]``: every hidden state for seeded random pixels at each of ``sizes`` (float32), ``pixels[size]``;
- ``hidden_bf16[size]`` and ``pos_bf16[size]``: the same in bfloat16 (the tower cast as its train.py casts it),
  and the position table its embeddings add at that size;
- ``processed[aspect]``: its processor's pixels for ``images``, ``square`` and ``pad`` as its train.py
  (``LazySupervisedDataset.__getitem__``, train.py:688-704) makes them;
- ``features[select_feature]``: its tower's forward (``feature_select``, float32) on the ``pad`` pixels, for
  ``patch`` and ``cls_patch``: what its projector gets;
- ``dropout`` (a tower given ``dropout``: p): where its tower built with that ``dropout`` drops in train mode, and
  its embeddings' output there.

Nothing of vlmtrain is imported.
"""
import json
import sys
import types

import torch


def their_encoder():
    """clip_encoder.py's module. It imports EVA-CLIP's and InternVL-14B's towers at the top; an InternViT-6B
    run uses neither, and only its own two files are placed (internvl_env), so those four modules are stubs."""
    for name, attrs in {"eva_clip.configuration_evaclip": ["EvaCLIPVisionConfig"],
                        "eva_clip.modeling_evaclip": ["EvaCLIPVisionModel"],
                        "internvl_14b.configuration_internvl": ["InternVLConfig"],
                        "internvl_14b.modeling_internvl": ["InternVLModel"]}.items():
        sys.modules.setdefault(f"multimodal_encoder.{name}", types.SimpleNamespace(**{a: None for a in attrs}))
    from multimodal_encoder import clip_encoder

    return clip_encoder


def randomise(model, seed: int) -> None:
    """Weights a mix-up cannot hide in: norms and layer scales away from their constant initial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name:
                p.copy_(1.0 + 0.3 * noise)
            elif name.endswith(("ls1", "ls2")):
                p.copy_(0.5 + 0.3 * noise)
            elif name.endswith("bias"):
                p.copy_(0.2 * noise)
            elif name.endswith(("class_embedding", "position_embedding")):
                p.copy_(noise)


def expand2square(pil_img, background_color):
    """Its train.py's, verbatim in behaviour (defined inside __getitem__ there, so not importable)."""
    from PIL import Image

    width, height = pil_img.size
    if width == height:
        return pil_img
    side = max(width, height)
    result = Image.new(pil_img.mode, (side, side), background_color)
    result.paste(pil_img, (0, (width - height) // 2) if width > height else ((height - width) // 2, 0))
    return result


def processed(processor, paths: list) -> dict:
    from PIL import Image

    out = {}
    for aspect in ("square", "pad"):
        rows = []
        for path in paths:
            image = Image.open(path).convert("RGB")
            if aspect == "pad":
                image = expand2square(image, tuple(int(x * 255) for x in processor.image_mean))
            rows.append(processor.preprocess(image, return_tensors="pt")["pixel_values"][0])
        out[aspect] = torch.stack(rows)
    return out


def hidden_states(model, pixels):
    with torch.no_grad():
        return [h.clone() for h in model(pixels.to(model.dtype), output_hidden_states=True).hidden_states]


def position_table(model, side: int):
    """The table its InternVisionEmbeddings.forward adds for a ``side`` px input (its lines, on its tensors)."""
    emb = model.embeddings
    grid = side // emb.patch_size
    with torch.no_grad():
        pos = emb.position_embedding
        return torch.cat([pos[:, :1, :], emb._get_pos_embed(pos[:, 1:, :], grid, grid)], dim=1).to(pos.dtype)


def with_dropout(model, config: dict, p: float, pixels) -> dict:
    """Its tower built with ``dropout`` ``p`` and these weights, in train mode: where it drops (nn.Dropout with
    p > 0, by name) and its embeddings' output (hidden state 0). Only the embeddings run: its encoder in train
    mode wraps each block in torch.utils.checkpoint."""
    from multimodal_encoder.intern_vit_6b.configuration_intern_vit import InternVisionConfig
    from multimodal_encoder.intern_vit_6b.modeling_intern_vit import InternVisionModel

    dropped = InternVisionModel(InternVisionConfig(**dict(config, dropout=p)))
    dropped.load_state_dict(model.state_dict())
    dropped.train()
    sites = sorted(n for n, m in dropped.named_modules() if isinstance(m, torch.nn.Dropout) and m.p > 0)
    with torch.no_grad():
        return {"p": p, "sites": sites, "embeddings": dropped.embeddings(pixels)}


def one_tower(spec: dict, t: dict, clip_encoder) -> dict:
    from multimodal_encoder.intern_vit_6b.configuration_intern_vit import InternVisionConfig
    from multimodal_encoder.intern_vit_6b.modeling_intern_vit import InternVisionModel

    torch.manual_seed(t["seed"])
    built = InternVisionModel(InternVisionConfig(**t["config"]))
    randomise(built, t["seed"])
    built.save_pretrained(t["folder"], safe_serialization=False, max_shard_size="100KB")
    args = types.SimpleNamespace(mm_vision_select_layer=spec["select_layer"], mm_vision_select_feature="patch")
    tower = clip_encoder.CLIPVisionTower(t["folder"], args)  # loads the folder: InternVisionModel.from_pretrained
    model = tower.vision_tower
    g = torch.Generator().manual_seed(t["seed"] + 1)
    pixels = {s: torch.randn(2, 3, s, s, generator=g) for s in t["sizes"]}
    out = {"pixels": pixels, "hidden": {s: hidden_states(model, p) for s, p in pixels.items()},
           "processed": processed(tower.image_processor, spec["images"]),
           "crop": tower.image_processor.crop_size, "size": tower.image_processor.size}
    out["features"] = {}
    for feature in ("patch", "cls_patch"):  # its two mm_vision_select_feature values
        tower.select_feature = feature
        out["features"][feature] = tower(out["processed"]["pad"])
    if t.get("dropout"):
        out["dropout"] = with_dropout(model, t["config"], t["dropout"], pixels[t["sizes"][0]])
    tower.to(torch.bfloat16)  # its train.py: vision_tower.to(dtype=compute_dtype)
    out["hidden_bf16"] = {s: hidden_states(model, p) for s, p in pixels.items()}
    out["pos_bf16"] = {s: position_table(model, s) for s in t["sizes"]}
    return out


def main(spec_path: str, out_path: str) -> None:
    import transformers

    with open(spec_path) as fh:
        spec = json.load(fh)
    clip_encoder = their_encoder()
    towers = {t["folder"]: one_tower(spec, t, clip_encoder) for t in spec["towers"]}
    torch.save({"towers": towers, "transformers": transformers.__version__}, out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
