"""Turn a stage-2 (dense) model into MoE-LLaVA's sparse model, and say what stage 3 trains.

MoE-LLaVA's ``initialize_moe_modules`` (facts in training-recipes.md §2), step for step:

1. the chosen decoder layers (``moe_mode``: ``sparse`` = every other layer from 0, ``dense`` = all,
   ``first_half`` / ``second_half``, or an explicit list) get ``num_experts`` copies of their FFN
   behind a fresh router; right after the conversion the model computes what the dense one did
   (every expert is the same FFN and the kept gate weights of a token sum to one);
2. ``train_modules`` are parameter-name substrings; every LLM parameter that matches none is frozen.
   The routers (new modules) train whatever the list says, as in MoE-LLaVA, where ``wg`` is listed
   but a new gate would train anyway. The projector trains too: MoE-LLaVA's
   ``initialize_vision_modules`` runs after the freeze and turns its gradients back on.
3. the settings are kept in the model config as ``moe`` (MoE-LLaVA's key names), so a saved stage-3
   model is rebuilt with its experts before its weights load.

Names: MoE-LLaVA filters parameter names *before* the conversion, so a substring such as
``mlp.fc1`` matches every expert copy of ``fc1``; here an expert's parameter is matched under the
name it had in the dense model (``layers.N.mlp.experts.E.fc1`` is matched as ``layers.N.mlp.fc1``).
MoE-LLaVA's Qwen (remote code) calls its FFN ``w1`` / ``w2`` / ``c_proj`` (its script passes
``mlp.w1 mlp.w2 mlp.c_proj wg``); on the native ``qwen2`` class those are ``up_proj`` / ``gate_proj``
/ ``down_proj``, and a bare ``c_proj`` would also match Qwen's attention output projection
(``attn.c_proj``, native ``o_proj``). :func:`native_train_modules` applies those equivalences.
"""
from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .layer import MoeSettings, SparseMoeBlock

log = logging.getLogger(__name__)

MOE_MODES = ("sparse", "dense", "first_half", "second_half")
ROUTER_NAMES = ("wg", "router")  # DeepSpeed's and ours: both name the router
# MoE-LLaVA's Qwen names -> the native qwen2 modules that hold the same weights.
QWEN_NAMES = {"w1": ["up_proj"], "w2": ["gate_proj"], "c_proj": ["down_proj", "o_proj"],
              "mlp.w1": ["mlp.up_proj"], "mlp.w2": ["mlp.gate_proj"], "mlp.c_proj": ["mlp.down_proj"]}
_EXPERT = re.compile(r"\.mlp\.(experts\.\d+|residual_mlp)\.")


@dataclass
class MoeSpec:
    """What stage 3 builds: which layers, the routing settings, the loss weight, what trains."""

    layers: list[int]
    settings: MoeSettings = field(default_factory=MoeSettings)
    moe_mode: str = "sparse"
    router_aux_loss_coef: float = 0.01
    train_modules: list[str] = field(default_factory=list)

    def to_config(self) -> dict:
        """The ``config.moe`` dict, with MoE-LLaVA's key names (plus DeepSpeed's gate switches)."""
        s = self.settings
        return {
            "moe_enable": True, "moe_mode": self.moe_mode, "moe_layers_idx": list(self.layers), "ep_size": 1,
            "num_experts": [s.num_experts] * len(self.layers), "top_k_experts": s.top_k,
            "capacity_factor": s.capacity_factor, "eval_capacity_factor": s.eval_capacity_factor,
            "min_capacity": s.min_capacity, "use_residual": s.use_residual,
            "router_aux_loss_coef": self.router_aux_loss_coef, "train_modules": list(self.train_modules),
            "second_expert_sampling": s.second_expert_sampling,
            "random_token_selection": s.random_token_selection, "drop_tokens": s.drop_tokens,
        }

    @classmethod
    def from_config(cls, d: dict) -> "MoeSpec":
        experts = d.get("num_experts", 4)
        if isinstance(experts, list):
            if len(set(experts)) > 1:
                raise ValueError(f"MoE layers with different expert counts ({experts}) are not supported")
            experts = experts[0]
        settings = MoeSettings(
            num_experts=int(experts), top_k=int(d.get("top_k_experts", 2)),
            capacity_factor=float(d.get("capacity_factor", 1.0)),
            eval_capacity_factor=float(d.get("eval_capacity_factor", 2.0)),
            min_capacity=int(d.get("min_capacity", 0)), use_residual=bool(d.get("use_residual", False)),
            second_expert_sampling=bool(d.get("second_expert_sampling", True)),
            random_token_selection=bool(d.get("random_token_selection", True)),
            drop_tokens=bool(d.get("drop_tokens", True)))
        return cls(layers=[int(i) for i in d["moe_layers_idx"]], settings=settings,
                   moe_mode=str(d.get("moe_mode", "custom")),
                   router_aux_loss_coef=float(d.get("router_aux_loss_coef", 0.01)),
                   train_modules=list(d.get("train_modules") or []))


def moe_layer_indices(mode: str | list[int], num_layers: int) -> list[int]:
    """MoE-LLaVA's layer choice. Raises ValueError for an unknown mode or a layer outside the model."""
    if isinstance(mode, (list, tuple)):
        bad = [i for i in mode if not isinstance(i, int) or not 0 <= i < num_layers]
        if bad or not mode:
            raise ValueError(f"layer list {list(mode)} must name layers 0..{num_layers - 1}")
        return sorted(set(mode))
    choices = {"sparse": list(range(num_layers))[::2], "dense": list(range(num_layers)),
               "first_half": list(range(num_layers // 2)), "second_half": list(range(num_layers // 2, num_layers))}
    if mode not in choices:
        raise ValueError(f"moe_mode {mode!r}: choose one of {', '.join(MOE_MODES)} or a list of layer indices")
    return choices[mode]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model.language_model.layers


def moe_blocks(model: nn.Module) -> list[tuple[int, SparseMoeBlock]]:
    return [(i, layer.mlp) for i, layer in enumerate(decoder_layers(model)) if isinstance(layer.mlp, SparseMoeBlock)]


def convert_to_moe(model: nn.Module, spec: MoeSpec, *, check: bool = True) -> list[int]:
    """Replace the FFN of each layer in ``spec.layers`` by a SparseMoeBlock of copies of it.

    ``check`` verifies, as MoE-LLaVA asserts, that every expert equals the FFN it was copied from
    (skipped on the meta device). Records ``spec`` as ``model.config.moe``. Returns the layers.
    """
    layers = decoder_layers(model)
    hidden = model.config.text_config.hidden_size
    for i in spec.layers:
        dense = layers[i].mlp
        if isinstance(dense, SparseMoeBlock):
            raise ValueError(f"layer {i} is already an MoE layer")
        block = SparseMoeBlock(hidden, dense, spec.settings)
        block.train(dense.training)  # a model converted in eval mode routes with eval_capacity_factor
        ref = next(dense.parameters(), None)
        if ref is not None:
            block.to(device=ref.device)
            block.experts.to(dtype=ref.dtype)
        if check and ref is not None and ref.device.type != "meta":
            want = dense.state_dict()
            for e, expert in enumerate(block.experts):
                for k, v in expert.state_dict().items():
                    if not torch.equal(v, want[k]):
                        raise RuntimeError(f"layer {i} expert {e}: {k} differs from the dense FFN it was copied from")
        layers[i].mlp = block
    model.config.moe = spec.to_config()
    # said once per run: a model rebuilt from its saved config (check=False: loading, a FLOP count's
    # meta copy, a dry run that prints its own summary) converts again without news
    log.log(logging.INFO if check else logging.DEBUG, "MoE: %d of %d layers now have %d experts (top-%d): %s",
            len(spec.layers), len(layers), spec.settings.num_experts, spec.settings.top_k, spec.layers)
    return list(spec.layers)


def native_train_modules(names: list[str], text_model_type: str) -> list[str]:
    """MoE-LLaVA's ``train_modules`` substrings -> substrings of this model's parameter names."""
    out: list[str] = []
    for n in names:
        if text_model_type == "qwen2" and n in QWEN_NAMES:
            out += QWEN_NAMES[n]
        elif n in ROUTER_NAMES:
            out.append("router")
        else:
            out.append(n)
    return out


def apply_train_modules(model: nn.Module, train_modules: list[str], text_model_type: str) -> int:
    """Freeze every LLM parameter whose name matches no substring; routers stay trainable. An empty
    list freezes nothing (MoE-LLaVA's rule: its list is applied only when it has names).

    Only the language model is touched: the tower and projector follow the freeze spec. Returns the
    number of LLM parameters that matched a substring (0 means the list names nothing that exists).
    """
    subs = native_train_modules(train_modules, text_model_type) or [""]  # ("" is in every name)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    matched = 0
    for module in (base.model.language_model, base.lm_head):
        for name, p in module.named_parameters():
            dense_name = _EXPERT.sub(".mlp.", f".{name}")[1:]  # the name MoE-LLaVA's filter saw
            hit = any(s in dense_name for s in subs)
            new = ".router." in f".{name}" or ".coefficient." in f".{name}"
            p.requires_grad_(hit or new)
            matched += int(hit and not new)
    return matched


def spec_summary(spec: MoeSpec) -> dict:
    return {"layers": spec.layers, **asdict(spec.settings), "router_aux_loss_coef": spec.router_aux_loss_coef,
            "train_modules": spec.train_modules}
