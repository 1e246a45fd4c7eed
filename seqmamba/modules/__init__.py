"""nn.Modules built on seqmamba.ops: the mixers (registered in seqmamba.registry.MIXERS), the residual
Block and its builder, norms and MLPs.

Mixers: "mamba" (alias "Mamba1"), "attention", and the baselines of seqmamba.modules.baselines
("s4d", "hyena", and Table 1's "<arch>_<inner>" for arch in nogate / h3 / mamba, inner in s4d / hyena / s6).
"""
from . import baselines  # noqa: F401  (registers s4d, hyena and Table 1's mixers)
from .attention import CausalSelfAttention
from .block import Block, build_block, mixer_factory
from .inference_params import InferenceParams
from .mamba import Mamba
from .mlp import MLP, GatedMLP
from .norm import LayerNorm, RMSNorm

__all__ = ["Mamba", "CausalSelfAttention", "Block", "build_block", "mixer_factory", "RMSNorm", "LayerNorm",
           "GatedMLP", "MLP", "InferenceParams"]
