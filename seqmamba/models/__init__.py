"""Whole networks built from seqmamba.modules, registered in seqmamba.registry.BACKBONES."""
from .mamba_lm import MambaBackbone, MambaConfig, MambaLM

__all__ = ["MambaLM", "MambaConfig", "MambaBackbone"]
