"""Hyena (Poli et al. 2023): an implicit long convolution, and the order-2 Hyena operator ("hyena" in MIXERS).

Implicit filter (:class:`ImplicitFilter`), per channel e and lag l:
``h_e(l) = MLP(z(l))_e * exp(-|delta_e| t_l)`` with ``t_l = l / l_max`` and the positional encoding
``z(l) = [t_l, cos(2 pi f_j t_l), sin(2 pi f_j t_l)]_j`` (f_j = 1e-4 .. bands - 1); the MLP is
Linear -> Sin (learnable frequency) -> Linear -> Sin -> ... -> Linear(order, E), and the exponential
window's decay rates are spread over the channels (fast ones at 30%, slow at 150% of l_max reach 1e-2).
The filter is defined for any lag, so lengths past ``l_max`` (and the recurrent path) need no retraining
of positions; ``l_max`` only sets the time scale.

:class:`HyenaInner`: ``y = h * u + bias * u`` (FFT convolution). Recurrent inference keeps the whole input
history (batch, E, max_seqlen) in the cache: a step costs O(t) at position t (a dot product with the
filter), a chunk is one FFT over the prefix. Hyena has no constant-size state; that is the point of
comparing it with SSMs.

:class:`HyenaOperator` (order 2): in_proj (D -> 3D), a short depthwise causal conv (width 3) over all 3D
channels, split into x0, x1, v; ``y = x0 * (h * (x1 * v) + bias * x1 * v)``; out_proj.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
from torch import nn

from ..registry import MIXERS
from .lti import ShortConv, fft_causal_conv
from .mamba import _linear


class Sin(nn.Module):
    def __init__(self, dim: int, w: float = 1.0, device=None):
        super().__init__()
        self.freq = nn.Parameter(w * torch.ones(1, dim, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.freq * x)


class ImplicitFilter(nn.Module):
    def __init__(self, channels: int, l_max: int = 1024, filter_order: int = 64, bands: int = 4,
                 n_hidden: int = 2, w: float = 1.0, fast_decay_pct: float = 0.3, slow_decay_pct: float = 1.5,
                 target: float = 1e-2, device=None):
        super().__init__()
        if l_max < 1 or filter_order < 1 or bands < 1:
            raise ValueError(f"Hyena filter: l_max, filter_order and bands must be >= 1, got {l_max}, "
                             f"{filter_order}, {bands}")
        self.channels, self.l_max, self.bands = channels, l_max, bands
        self.register_buffer("freqs", torch.linspace(1e-4, bands - 1, bands, device=device), persistent=False)
        layers = [nn.Linear(1 + 2 * bands, filter_order, device=device), Sin(filter_order, w, device)]
        for _ in range(n_hidden):
            layers += [nn.Linear(filter_order, filter_order, device=device), Sin(filter_order, w, device)]
        layers.append(nn.Linear(filter_order, channels, bias=False, device=device))
        self.mlp = nn.Sequential(*layers)
        max_decay, min_decay = math.log(target) / fast_decay_pct, math.log(target) / slow_decay_pct
        self.register_buffer("deltas", torch.linspace(min_decay, max_decay, channels, device=device).abs(),
                             persistent=False)

    def positions(self, start: int, length: int) -> torch.Tensor:
        """(length, 1 + 2 bands): the encoding of lags start .. start + length - 1."""
        t = torch.arange(start, start + length, device=self.deltas.device, dtype=torch.float32)[:, None] / self.l_max
        angle = 2 * math.pi * self.freqs[None, :] * t
        return torch.cat([t, torch.cos(angle), torch.sin(angle)], dim=-1)

    def forward(self, length: int, start: int = 0) -> torch.Tensor:
        """h (E, length) fp32 for lags start .. start + length - 1."""
        z = self.positions(start, length)
        t = z[:, :1]
        h = self.mlp(z.to(self.mlp[0].weight.dtype)).float() * torch.exp(-t * self.deltas[None, :])
        return h.t()


class HyenaInner(nn.Module):
    """Implicit long convolution over E channels plus a per-channel skip (``bias``)."""

    #: a step writes and reads the input history at ``seqlen_offset`` (no CUDA-graph decoding)
    step_reads_offset = True

    def __init__(self, channels: int, l_max: int = 1024, filter_order: int = 64, bands: int = 4,
                 n_hidden: int = 2, w: float = 1.0, device=None, dtype=None):
        super().__init__()
        self.channels = channels
        self.filter = ImplicitFilter(channels, l_max=l_max, filter_order=filter_order, bands=bands,
                                     n_hidden=n_hidden, w=w, device=device)
        self.bias = nn.Parameter(torch.randn(channels, device=device))
        self.bias._no_weight_decay = True
        for sub in self.filter.modules():  # MambaLM's _init_weights must not zero the filter MLP's biases
            if isinstance(sub, nn.Linear) and sub.bias is not None:
                sub.bias._no_reinit = True

    def forward(self, u: torch.Tensor, cache: Optional[Dict[str, torch.Tensor]] = None, offset: int = 0,
                key: str = "history") -> torch.Tensor:
        L = u.shape[-1]
        skip = self.bias.float()[:, None] * u.float()
        if cache is None:
            return (fft_causal_conv(u, self.filter(L)) + skip).to(u.dtype)
        history = cache[key]
        if offset + L > history.shape[-1]:
            raise ValueError(f"Hyena: {L} step(s) at offset {offset} exceed the cache's max_seqlen={history.shape[-1]}")
        history[..., offset:offset + L] = u.to(history.dtype)
        prefix = history[..., :offset + L]
        if L == 1:  # recurrent step: y_t = sum_j h(t - j) u_j, O(t)
            h = self.filter(offset + 1)  # lags 0 .. offset
            y = (prefix.float() * h.flip(-1)).sum(-1, keepdim=True)
        else:
            y = fft_causal_conv(prefix, self.filter(offset + L))[..., offset:]
        return (y + skip).to(u.dtype)

    def allocate(self, batch_size: int, max_seqlen: int, key: str = "history", **kwargs) -> Dict[str, torch.Tensor]:
        return {key: torch.zeros(batch_size, self.channels, max_seqlen, device=self.bias.device, dtype=torch.float32)}


def layer_cache(module: nn.Module, inference_params, batch_size: int):
    """This layer's cache entry (allocated on first use), or None without inference_params."""
    if inference_params is None:
        return None
    if module.layer_idx is None:
        raise ValueError(f"{type(module).__name__}: recurrent inference needs layer_idx (the key of its cache)")
    cache = inference_params.key_value_memory_dict
    if module.layer_idx not in cache:
        cache[module.layer_idx] = module.allocate_inference_cache(batch_size, inference_params.max_seqlen)
    return cache[module.layer_idx]


@MIXERS.register("hyena")
class HyenaOperator(nn.Module):
    def __init__(self, d_model: int, l_max: int = 1024, filter_order: int = 64, bands: int = 4,
                 n_hidden: int = 2, short_filter_order: int = 3, w: float = 1.0, layer_idx: Optional[int] = None,
                 device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.layer_idx = d_model, layer_idx
        self.in_proj = nn.Linear(d_model, 3 * d_model, **factory)
        self.short_conv = ShortConv(3 * d_model, short_filter_order, **factory)
        self.inner = HyenaInner(d_model, l_max=l_max, filter_order=filter_order, bands=bands, n_hidden=n_hidden,
                                w=w, device=device)
        self.out_proj = nn.Linear(d_model, d_model, **factory)

    def forward(self, hidden_states: torch.Tensor, inference_params=None, **kwargs) -> torch.Tensor:
        cache = layer_cache(self, inference_params, hidden_states.shape[0])
        offset = inference_params.seqlen_offset if inference_params is not None else 0
        u = self.short_conv(self.in_proj(hidden_states).transpose(1, 2), cache, offset)
        x0, x1, v = u.split(self.d_model, dim=1)
        y = x0 * self.inner(x1 * v, cache, offset)
        return _linear(y.transpose(1, 2), self.out_proj.weight, self.out_proj.bias)  # no copy of the transpose

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int, dtype=None, **kwargs):
        return {**self.short_conv.allocate(batch_size, dtype=dtype), **self.inner.allocate(batch_size, max_seqlen)}
