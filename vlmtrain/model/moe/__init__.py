"""MoE-LLaVA's stage 3: sparse MoE FFNs (gating.py: routing; layer.py: the block; convert.py: dense ->
MoE and what trains; checkpoint_keys.py: MoE-LLaVA's state-dict names)."""
from .convert import MOE_MODES, MoeSpec, apply_train_modules, convert_to_moe, moe_blocks, moe_layer_indices
from .gating import Routing, route
from .layer import MoeSettings, MoeStats, SparseMoeBlock

__all__ = ["MOE_MODES", "MoeSettings", "MoeSpec", "MoeStats", "Routing", "SparseMoeBlock", "apply_train_modules",
           "convert_to_moe", "moe_blocks", "moe_layer_indices", "route"]
