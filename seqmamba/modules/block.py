"""mamba_ssm's residual block: add -> norm -> mixer (-> add -> norm -> MLP), residual carried separately.

The block takes and returns ``(hidden_states, residual)``: the residual stream is the running sum of
all mixer outputs, and each block first adds the previous mixer's output to it. Keeping it separate
(and in fp32 when ``residual_in_fp32``) lets a bf16 model accumulate 24+ layers without drift, and
matches mamba_ssm's numerics and its fused add+norm kernel.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import nn

from .norm import RMSNorm, add_norm


class Block(nn.Module):
    def __init__(self, dim: int, mixer_cls: Callable[[int], nn.Module], mlp_cls: Optional[Callable] = None,
                 norm_cls: Callable[[int], nn.Module] = RMSNorm, fused_add_norm: bool = False,
                 residual_in_fp32: bool = False):
        super().__init__()
        # fused_add_norm: on CUDA the add + norm is one Triton kernel (the unfused path stays for the CPU).
        self.fused_add_norm = fused_add_norm
        self.residual_in_fp32 = residual_in_fp32
        self.norm = norm_cls(dim)
        self.mixer = mixer_cls(dim)
        if mlp_cls is not None:
            self.norm2 = norm_cls(dim)
            self.mlp = mlp_cls(dim)
        else:
            self.mlp = None

    def _add_norm(self, hidden_states, residual, norm):
        return add_norm(hidden_states, residual, norm, prenorm=True, residual_in_fp32=self.residual_in_fp32,
                        fused=self.fused_add_norm)

    def forward(self, hidden_states: torch.Tensor, residual: Optional[torch.Tensor] = None,
                inference_params=None, **mixer_kwargs) -> Tuple[torch.Tensor, torch.Tensor]:
        """hidden_states: the previous block's mixer output (or the embedding); residual: None at the first block."""
        hidden_states, residual = self._add_norm(hidden_states, residual, self.norm)
        hidden_states = self.mixer(hidden_states, inference_params=inference_params, **mixer_kwargs)
        if self.mlp is not None:
            hidden_states, residual = self._add_norm(hidden_states, residual, self.norm2)
            hidden_states = self.mlp(hidden_states)
        return hidden_states, residual

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int, dtype=None, **kwargs):
        return self.mixer.allocate_inference_cache(batch_size, max_seqlen, dtype=dtype, **kwargs)
