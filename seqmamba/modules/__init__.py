"""nn.Modules built on seqmamba.ops: the Mamba mixer, the residual Block, norms and MLPs."""
from .block import Block
from .inference_params import InferenceParams
from .mamba import Mamba
from .mlp import MLP, GatedMLP
from .norm import LayerNorm, RMSNorm

__all__ = ["Mamba", "Block", "RMSNorm", "LayerNorm", "GatedMLP", "MLP", "InferenceParams"]
