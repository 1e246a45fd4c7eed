"""Whole networks built from seqmamba.modules, registered in seqmamba.registry.BACKBONES / HEADS."""
from .generation import generate
from .heads import NextTokenHead, SequenceClassificationHead, pool_sequence
from .config import MambaConfig
from .mamba_lm import MambaBackbone, MambaLM

__all__ = ["MambaLM", "MambaConfig", "MambaBackbone", "generate", "SequenceClassificationHead", "NextTokenHead",
           "pool_sequence"]
