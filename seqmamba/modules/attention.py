"""Causal multi-head self-attention as a mixer ("attention" in MIXERS), mamba_ssm's ``MHA`` names.

``in_proj`` (d_model -> (num_heads + 2 * num_heads_kv) * head_dim) gives q, k, v; torch's
``scaled_dot_product_attention`` (flash / memory-efficient kernels where available) does the causal
softmax; ``out_proj`` maps back. Grouped-query attention: ``num_heads_kv`` divides ``num_heads``.

Recurrent inference keeps a KV cache ``(batch, max_seqlen, 2, num_heads_kv, head_dim)``: a forward at
offset 0 is a prefill that writes the first L keys/values, a forward at offset o > 0 (one token =
``step``, or a longer chunk) writes positions o .. o+L-1 and attends to 0 .. o+L-1. Unlike an SSM, the
cache grows with the sequence: ``max_seqlen`` positions are allocated.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import MIXERS


@MIXERS.register("attention")
class CausalSelfAttention(nn.Module):
    #: a step writes and reads the KV cache at ``seqlen_offset`` (no CUDA-graph decoding)
    step_reads_offset = True

    @classmethod
    def accepted_kwargs(cls):
        """Keys taken from a shared ``ssm_cfg`` (mamba_ssm's MHA conv / MLP options only when given explicitly)."""
        return {"num_heads", "num_heads_kv", "head_dim", "qkv_proj_bias", "out_proj_bias", "softmax_scale", "causal",
                "rotary_emb_dim", "rotary_emb_base", "rotary_emb_interleaved"}

    def __init__(self, d_model: int, num_heads: int = 8, num_heads_kv: Optional[int] = None,
                 head_dim: Optional[int] = None, qkv_proj_bias: bool = True, out_proj_bias: bool = True,
                 softmax_scale: Optional[float] = None, causal: bool = True, rotary_emb_dim: int = 0,
                 d_conv: int = 0, mlp_dim: int = 0, rotary_emb_base: float = 10000.0,
                 rotary_emb_interleaved: bool = False, layer_idx: Optional[int] = None, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if not causal:
            raise ValueError("attention mixer: causal=False is not supported in a causal LM; use causal=True")
        for name, value in (("rotary_emb_dim", rotary_emb_dim), ("d_conv", d_conv), ("mlp_dim", mlp_dim)):
            if value:
                raise ValueError(f"attention mixer: {name}={value} is not supported; use {name}=0")
        num_heads_kv = num_heads if num_heads_kv is None else num_heads_kv
        if num_heads < 1 or num_heads_kv < 1 or num_heads % num_heads_kv:
            raise ValueError(f"attention mixer: need num_heads_kv dividing num_heads, got {num_heads_kv}, {num_heads}")
        if head_dim is None:
            if d_model % num_heads:
                raise ValueError(f"attention mixer: d_model={d_model} is not divisible by num_heads={num_heads}; "
                                 "set head_dim")
            head_dim = d_model // num_heads
        self.d_model, self.num_heads, self.num_heads_kv, self.head_dim = d_model, num_heads, num_heads_kv, head_dim
        self.softmax_scale = softmax_scale
        self.layer_idx = layer_idx
        self.in_proj = nn.Linear(d_model, (num_heads + 2 * num_heads_kv) * head_dim, bias=qkv_proj_bias, **factory)
        self.out_proj = nn.Linear(num_heads * head_dim, d_model, bias=out_proj_bias, **factory)

    def _qkv(self, x: torch.Tensor):
        batch, L, _ = x.shape
        qkv = self.in_proj(x)
        q, kv = qkv.split([self.num_heads * self.head_dim, 2 * self.num_heads_kv * self.head_dim], dim=-1)
        return q.view(batch, L, self.num_heads, self.head_dim), kv.view(batch, L, 2, self.num_heads_kv, self.head_dim)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offset: int) -> torch.Tensor:
        """q (B, L, H, d) at positions offset.., k / v (B, offset + L, Hkv, d) -> (B, L, H * d)."""
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, len, d)
        if self.num_heads_kv != self.num_heads:
            rep = self.num_heads // self.num_heads_kv
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        L, S = q.shape[2], k.shape[2]
        if offset == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.softmax_scale)
        else:  # query i sits at position offset + i and sees keys 0 .. offset + i
            mask = torch.arange(S, device=q.device)[None, :] <= (offset + torch.arange(L, device=q.device))[:, None]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.softmax_scale)
        return y.transpose(1, 2).flatten(2)

    def forward(self, hidden_states: torch.Tensor, inference_params=None, **kwargs) -> torch.Tensor:
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(f"attention mixer: hidden_states has shape {tuple(hidden_states.shape)}, "
                             f"expected (batch, L, {self.d_model})")
        q, kv = self._qkv(hidden_states)
        if inference_params is None:
            return self.out_proj(self._attend(q, kv[:, :, 0], kv[:, :, 1], 0))
        cache = _layer_cache(self, inference_params, hidden_states.shape[0])
        offset, L = inference_params.seqlen_offset, hidden_states.shape[1]
        cache[:, offset:offset + L] = kv.to(cache.dtype)
        past = cache[:, :offset + L].to(q.dtype)
        return self.out_proj(self._attend(q, past[:, :, 0], past[:, :, 1], offset))

    def step(self, hidden_states: torch.Tensor, kv_cache: torch.Tensor, offset: int) -> torch.Tensor:
        """One token (batch, 1, d_model) at position ``offset``; its key / value are written into ``kv_cache``."""
        q, kv = self._qkv(hidden_states)
        kv_cache[:, offset:offset + 1] = kv.to(kv_cache.dtype)
        past = kv_cache[:, :offset + 1].to(q.dtype)
        return self.out_proj(self._attend(q, past[:, :, 0], past[:, :, 1], offset))

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int, dtype=None, **kwargs) -> torch.Tensor:
        dtype = self.out_proj.weight.dtype if dtype is None else dtype
        return torch.zeros(batch_size, max_seqlen, 2, self.num_heads_kv, self.head_dim, dtype=dtype,
                           device=self.out_proj.weight.device)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, num_heads={self.num_heads}, num_heads_kv={self.num_heads_kv}, "
                f"head_dim={self.head_dim}, layer_idx={self.layer_idx}")


def _layer_cache(module: nn.Module, inference_params, batch_size: int):
    """This layer's entry of the inference cache, allocated on first use."""
    if module.layer_idx is None:
        raise ValueError(f"{type(module).__name__}: recurrent inference needs layer_idx (the key of this layer's cache)")
    cache = inference_params.key_value_memory_dict
    if module.layer_idx not in cache:
        cache[module.layer_idx] = module.allocate_inference_cache(batch_size, inference_params.max_seqlen)
    return cache[module.layer_idx]
