"""Baseline mixers for the Mamba paper's Table 1 (selective copying): architecture x inner layer.

Inner layers (channels-first (B, E, L) -> (B, E, L), each with a per-channel skip D):

* ``s4d``   diagonal LTI SSM, FFT convolution in training (:class:`seqmamba.modules.lti.S4DInner`);
* ``hyena`` implicit long convolution (:class:`seqmamba.modules.hyena.HyenaInner`);
* ``s6``    the selective SSM: dt, B, C computed from the input (x_proj, dt_proj), ``seqmamba.ops.selective_scan``.

Architectures around an inner layer of width E = expand * d_model (``GatedMixer``):

* ``nogate``  in_proj (D -> E) -> inner -> [activation] -> out_proj: the inner layer alone, with the projections
              and, with ``activation="gelu"`` (or "silu"), a pointwise nonlinearity after it, as in S4's own block.
              Without one the mixer is linear, and with an LTI inner layer (S4D, Hyena) the whole model is linear
              up to its norms: every marker of selective copying then sees the same history one step shifted, so
              it cannot pick "the j-th data token" (at best the most frequent one at every marker; REPRODUCTION.md);
* ``h3``      in_proj (D -> 3E) = q, k, v; k -> short causal conv (H3's shift SSM, width ``d_conv``);
              y = q * inner(k * v) -> out_proj (H3 with head dimension 1);
* ``mamba``   in_proj (D -> 2E) = x, z; x -> short causal conv -> SiLU -> inner; y = inner(x) * SiLU(z)
              -> out_proj (the Mamba block; ``mamba_s6`` is Mamba's math with its own parameter names; use
              "mamba" for mamba_ssm's names and kernels).

MIXERS names: ``<arch>_<inner>``, nine in all ("nogate_s4d", "h3_s6", "mamba_hyena", ...). Keyword
arguments other than ``expand`` / ``d_conv`` go to the inner layer (``d_state``, ``init``, ``l_max``, ...).

Also registered: "s4d", the S4D layer of Gu et al. as a mixer (S4D over d_model channels -> GELU ->
Linear(D, 2D) -> GLU). Table 1's "S4" rows use S4D, the diagonal S4 that S4 reduces to in practice.

Every mixer here runs chunked: with ``inference_params`` a forward at offset > 0 continues from the
cached states (one token = a recurrent step), equal to one parallel pass (tests/test_mixers_*.py).
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import selective_scan
from ..registry import MIXERS
from .hyena import HyenaInner, layer_cache
from .lti import S4DInner, ShortConv
from .mamba import _linear, _project_channels

ARCHS = ("nogate", "h3", "mamba")
INNERS = ("s4d", "hyena", "s6")
ACTIVATIONS = {"gelu": F.gelu, "silu": F.silu}  # the nogate architecture's optional nonlinearity


class S6Inner(nn.Module):
    """The selective SSM over E channels (Mamba's x_proj / dt_proj / A_log / D, without conv and gate)."""

    def __init__(self, channels: int, d_state: int = 16, dt_rank: int = 0, dt_min: float = 1e-3,
                 dt_max: float = 1e-1, dt_init_floor: float = 1e-4, scan_backend: str = "auto", device=None,
                 dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"S6: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.channels, self.d_state = channels, d_state
        self.dt_rank = dt_rank if dt_rank > 0 else math.ceil(channels / 32)
        self.scan_backend = scan_backend
        self.x_proj = nn.Linear(channels, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, channels, bias=True, **factory)
        std = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(channels, device=device) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.dt_proj.bias._no_reinit = True
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32, device=device)
                                            ).repeat(channels, 1))
        self.D = nn.Parameter(torch.ones(channels, device=device))
        self.A_log._no_weight_decay = self.D._no_weight_decay = True

    def forward(self, u: torch.Tensor, cache: Optional[Dict[str, torch.Tensor]] = None, offset: int = 0,
                key: str = "ssm") -> torch.Tensor:
        # An L-contiguous u (what GatedMixer hands over on CUDA, and what a conv / gate product is) gets delta, B
        # and C L-contiguous too, as the Mamba layer does: the layout the Triton scan reads fastest.
        channels_first = u.stride(-1) == 1 and u.shape[-1] > 1
        x_dbl = _linear(u.transpose(1, 2), self.x_proj.weight)  # (B, L, R + 2N), u read through its strides
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        # (B, E, L); the bias goes into the scan
        delta = _project_channels(dt, self.dt_proj.weight, None, channels_first)
        B, C = B.transpose(1, 2), C.transpose(1, 2)  # (B, N, L)
        if channels_first:
            B, C = B.contiguous(), C.contiguous()  # N rows: small
        result = selective_scan(u, delta, -torch.exp(self.A_log.float()), B, C,
                                self.D.float(), delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
                                return_last_state=cache is not None,
                                initial_state=cache[key] if cache is not None and offset > 0 else None,
                                backend=self.scan_backend)
        if cache is None:
            return result
        y, last = result
        cache[key].copy_(last)
        return y

    def allocate(self, batch_size: int, key: str = "ssm", **kwargs) -> Dict[str, torch.Tensor]:
        return {key: torch.zeros(batch_size, self.channels, self.d_state, device=self.A_log.device,
                                 dtype=torch.float32)}


def _mark_no_reinit(module: nn.Module) -> None:
    """Keep the inner layers' own bias initialisation under MambaLM's _init_weights (which zeroes Linear biases)."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear) and sub.bias is not None:
            sub.bias._no_reinit = True


def build_inner(kind: str, channels: int, device=None, dtype=None, **kwargs) -> nn.Module:
    if kind == "s4d":
        inner = S4DInner(channels, device=device, **kwargs)
    elif kind == "hyena":
        inner = HyenaInner(channels, device=device, **kwargs)
    elif kind == "s6":
        inner = S6Inner(channels, device=device, dtype=dtype, **kwargs)
    else:
        raise ValueError(f"inner layer must be one of {INNERS}, got {kind!r}")
    _mark_no_reinit(inner)
    return inner


class GatedMixer(nn.Module):
    """One of Table 1's architectures around an inner layer; subclasses fix ``arch`` and ``inner_kind``.

    Layout as in the Mamba layer: on CUDA in_proj is computed as W @ h^T, so the inner layer gets (B, E, L) with L
    contiguous (the scan's and the FFT's fast layout) and out_proj reads y through its strides; on the CPU and for
    one-token steps the projections stay time-major. ``channels_first`` (class or instance attribute) overrides.
    """

    arch: str = "mamba"
    inner_kind: str = "s6"
    channels_first: Optional[bool] = None

    def __init__(self, d_model: int, expand: float = 2, d_conv: int = 4, layer_idx: Optional[int] = None,
                 device=None, dtype=None, activation: Optional[str] = None, **inner_kwargs):
        super().__init__()
        if self.arch not in ARCHS:
            raise ValueError(f"architecture must be one of {ARCHS}, got {self.arch!r}")
        if activation is not None and (self.arch != "nogate" or activation not in ACTIVATIONS):
            raise ValueError(f"{type(self).__name__}: activation={activation!r}: only the nogate architecture takes "
                             f"one (h3 / mamba fix their own), and it must be one of {sorted(ACTIVATIONS)}")
        self.activation = activation
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.layer_idx = d_model, layer_idx
        self.d_inner = E = int(expand * d_model)
        n_in = {"nogate": 1, "h3": 3, "mamba": 2}[self.arch]
        self.in_proj = nn.Linear(d_model, n_in * E, bias=False, **factory)
        self.conv = ShortConv(E, d_conv, **factory) if self.arch != "nogate" else None
        self.inner = build_inner(self.inner_kind, E, **factory, **inner_kwargs)
        self.out_proj = nn.Linear(E, d_model, bias=False, **factory)

    @classmethod
    def accepted_kwargs(cls):
        import inspect

        inner_cls = {"s4d": S4DInner, "hyena": HyenaInner, "s6": S6Inner}[cls.inner_kind]
        inner = set(inspect.signature(inner_cls.__init__).parameters) - {"self", "channels", "device", "dtype"}
        return inner | {"expand", "d_conv"} | ({"activation"} if cls.arch == "nogate" else set())

    def forward(self, hidden_states: torch.Tensor, inference_params=None, **kwargs) -> torch.Tensor:
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(f"{type(self).__name__}: hidden_states has shape {tuple(hidden_states.shape)}, "
                             f"expected (batch, L, {self.d_model})")
        cache = layer_cache(self, inference_params, hidden_states.shape[0])
        offset = inference_params.seqlen_offset if inference_params is not None else 0
        if self.channels_first is None:  # one token (a decode step) stays one GEMM, not a GEMV per sequence
            channels_first = hidden_states.is_cuda and hidden_states.shape[1] > 1
        else:
            channels_first = self.channels_first
        xs = _project_channels(hidden_states, self.in_proj.weight, self.in_proj.bias, channels_first,
                               chunks=self.in_proj.weight.shape[0] // self.d_inner)  # (B, E, L) each
        if self.arch == "nogate":
            y = self.inner(xs[0], cache, offset)
            if self.activation is not None:
                y = ACTIVATIONS[self.activation](y)
        elif self.arch == "h3":
            q, k, v = xs
            y = q * self.inner(self.conv(k, cache, offset) * v, cache, offset)
        else:
            x, z = xs
            y = self.inner(F.silu(self.conv(x, cache, offset)), cache, offset) * F.silu(z)
        return _linear(y.transpose(1, 2), self.out_proj.weight, self.out_proj.bias)

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int, dtype=None, **kwargs):
        cache = self.inner.allocate(batch_size, max_seqlen=max_seqlen)
        if self.conv is not None:
            cache.update(self.conv.allocate(batch_size, dtype=dtype))
        return cache

    def extra_repr(self) -> str:
        act = f", activation={self.activation!r}" if self.activation is not None else ""
        return f"arch={self.arch!r}, inner={self.inner_kind!r}, d_model={self.d_model}, d_inner={self.d_inner}{act}"


for _arch in ARCHS:
    for _inner in INNERS:
        _name = f"{_arch}_{_inner}"
        _cls = type(f"{_arch.capitalize()}{_inner.upper()}Mixer", (GatedMixer,),
                    {"arch": _arch, "inner_kind": _inner, "__module__": __name__,
                     "__doc__": f"Table 1's {_arch!r} architecture around the {_inner!r} inner layer."})
        globals()[_cls.__name__] = _cls
        MIXERS.register(_name)(_cls)


@MIXERS.register("s4d")
class S4DLayer(nn.Module):
    """The S4D layer as a mixer: S4D over d_model channels (with skip D) -> GELU -> Linear(D, 2D) -> GLU."""

    def __init__(self, d_model: int, d_state: int = 64, init: str = "lin", dt_min: float = 1e-3,
                 dt_max: float = 1e-1, layer_idx: Optional[int] = None, device=None, dtype=None):
        super().__init__()
        self.d_model, self.layer_idx = d_model, layer_idx
        self.inner = S4DInner(d_model, d_state=d_state, init=init, dt_min=dt_min, dt_max=dt_max, device=device)
        self.out_proj = nn.Linear(d_model, 2 * d_model, device=device, dtype=dtype)

    def forward(self, hidden_states: torch.Tensor, inference_params=None, **kwargs) -> torch.Tensor:
        cache = layer_cache(self, inference_params, hidden_states.shape[0])
        offset = inference_params.seqlen_offset if inference_params is not None else 0
        y = F.gelu(self.inner(hidden_states.transpose(1, 2), cache, offset)).transpose(1, 2)
        return F.glu(_linear(y, self.out_proj.weight, self.out_proj.bias), dim=-1)  # no copy of the transpose

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int, dtype=None, **kwargs):
        return self.inner.allocate(batch_size)
