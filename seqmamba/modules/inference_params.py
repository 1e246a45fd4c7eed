"""The decoding cache handed down through a model during recurrent inference (mamba_ssm's InferenceParams)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict


@dataclass
class InferenceParams:
    """Where decoding stands and the per-layer states.

    ``key_value_memory_dict[layer_idx]`` holds a layer's cache; for a Mamba layer the tuple
    ``(conv_state (batch, d_inner, d_conv), ssm_state (batch, d_inner, d_state) fp32)``.
    ``seqlen_offset`` is the number of tokens already consumed: 0 means the next forward is a prefill,
    > 0 means the model continues from the cached states. Whoever drives the model advances it.
    """

    max_seqlen: int
    max_batch_size: int
    seqlen_offset: int = 0
    batch_size_offset: int = 0
    key_value_memory_dict: Dict[Any, Any] = field(default_factory=dict)
    lengths_per_sample: Any = None

    @classmethod
    def allocated_for(cls, model, batch_size: int, max_seqlen: int, dtype=None, **cache_kwargs) -> "InferenceParams":
        """At offset 0 with every layer's states from ``model.allocate_inference_cache`` (``cache_kwargs`` go to it,
        e.g. ``ssm_state_dtype`` for the Mamba layers)."""
        return cls(max_seqlen=max_seqlen, max_batch_size=batch_size,
                   key_value_memory_dict=model.allocate_inference_cache(batch_size, max_seqlen, dtype=dtype,
                                                                        **cache_kwargs))

    def reset(self, max_seqlen: int, max_batch_size: int) -> None:
        """Start a new sequence on the same (already allocated) states."""
        self.max_seqlen = max_seqlen
        self.max_batch_size = max_batch_size
        self.seqlen_offset = 0
        if self.lengths_per_sample is not None:
            self.lengths_per_sample.zero_()
