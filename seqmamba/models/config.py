"""``MambaConfig``: the fields of mamba_ssm's MambaConfig (``config.json`` of the official checkpoints).

Its own module so that ``mamba_lm`` (the model) and ``pretrained`` (reading and writing checkpoints) both
import it and not each other.

Mixers per layer (seqmamba extension, same field names): ``ssm_cfg["layer"]`` names a mixer in
``seqmamba.registry.MIXERS`` ("mamba" by default; mamba_ssm's "Mamba1" is an alias), the other keys of
``ssm_cfg`` are its constructor arguments. ``ssm_cfg["layer"]`` may also be a list of ``n_layer`` entries,
each a name or a dict ``{"layer": name, **kwargs}`` whose kwargs override the shared ones. Layers in
``attn_layer_idx`` get the "attention" mixer with ``attn_cfg``, as in mamba_ssm.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List

__all__ = ["MambaConfig", "CONFIG_FIELDS"]


@dataclass
class MambaConfig:
    """mamba_ssm's MambaConfig fields, plus ``norm_epsilon``."""

    d_model: int = 768
    n_layer: int = 24
    vocab_size: int = 50277
    d_intermediate: int = 0
    ssm_cfg: Dict[str, Any] = field(default_factory=dict)
    attn_layer_idx: List[int] = field(default_factory=list)
    attn_cfg: Dict[str, Any] = field(default_factory=dict)
    rms_norm: bool = True
    residual_in_fp32: bool = True
    fused_add_norm: bool = False
    pad_vocab_size_multiple: int = 8
    tie_embeddings: bool = True
    norm_epsilon: float = 1e-5


CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(MambaConfig))
