"""Whole networks built from seqmamba.modules, registered in seqmamba.registry.BACKBONES / HEADS.

Hidden states: ``model.features(input_ids, inference_params=None) -> (batch, L, d_model)``;
longer than memory: :func:`chunked_features` / :func:`chunked_logits` (``seqmamba.models.chunked``).
"""
from .chunked import chunked_features, chunked_logits, iter_chunked_features
from .config import MambaConfig
from .generation import generate
from .heads import NextTokenHead, SequenceClassificationHead, pool_sequence
from .mamba_lm import MambaBackbone, MambaLM

__all__ = ["MambaLM", "MambaConfig", "MambaBackbone", "generate", "SequenceClassificationHead", "NextTokenHead",
           "pool_sequence", "chunked_features", "chunked_logits", "iter_chunked_features"]
