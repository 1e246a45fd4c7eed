"""Building blocks of the baseline mixers: FFT convolution, a short causal conv with state, and the S4D
diagonal LTI SSM (Gu et al. 2022, "On the Parameterization and Initialization of Diagonal State Space Models").

Inner layers map channels-first ``u (batch, E, L) -> y (batch, E, L)``. Each takes an optional ``cache``
(a dict of tensors from ``allocate(batch, max_seqlen)``) and the position ``offset`` of ``u``'s first
step: with a cache, offset 0 starts from the zero state, offset > 0 continues from the cached one, and
the cache is updated in place, so chunks of any length (1 = a recurrent step) equal one parallel pass.

S4D: per channel, M diagonal modes ``x_k = dA x_{k-1} + dB u_k``, ``y_k = f * Re(C x_k) + D u_k`` with
ZOH discretisation ``dA = exp(dt A)``, ``dB = (exp(dt A) - 1) / A`` (B = 1, folded into C). Complex modes
come in conjugate pairs (only one of each stored, f = 2); real modes have f = 1. Training computes the
kernel ``K_l = f Re(sum_m C_m dB_m dA_m^l)`` for the sequence length and convolves by FFT; inference runs
the recurrence (or, for a chunk, the kernel plus the decaying contribution of the carried state).
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..ops import causal_conv1d

S4D_INITS = ("lin", "inv", "real")


def fft_size(n: int) -> int:
    """The smallest m >= n whose prime factors are all 2, 3, 5 or 7: the lengths cuFFT and pocketfft transform
    with their fast radix kernels. Others fall back to Bluestein's algorithm: 2 x 4112 = 8224 = 2^5 x 257 (the
    paper's selective copying) took 171 ms against 75 ms for 8232 = 2^3 x 3 x 7^3 (rfft + irfft of (16, 128, .)
    on 2 CPU cores)."""
    best = 1 << max(n - 1, 0).bit_length()  # the next power of two: always a candidate
    p7 = 1
    while p7 < best:
        p5 = p7
        while p5 < best:
            p3 = p5
            while p3 < best:
                m = p3
                while m < n:
                    m *= 2
                best = min(best, m)
                p3 *= 3
            p5 *= 5
        p7 *= 7
    return best


def fft_causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """y[..., t] = sum_{j <= t} k[..., t - j] u[..., j] for u (B, E, L), k (E, L), by FFT in fp32 (zero-padded
    to at least 2L, so there is no circular wrap-around, and to a length with small prime factors: fft_size).
    Returns fp32."""
    L = u.shape[-1]
    n = fft_size(2 * L)
    u_f = torch.fft.rfft(u.float(), n=n)
    k_f = torch.fft.rfft(k.float(), n=n)
    return torch.fft.irfft(u_f * k_f, n=n)[..., :L]


def direct_causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The O(L^2) reference of :func:`fft_causal_conv` (float64 sums)."""
    L = u.shape[-1]
    u64, k64 = u.double(), k.double()
    y = torch.zeros_like(u64)
    for t in range(L):
        y[..., t] = (u64[..., :t + 1] * k64[..., :t + 1].flip(-1)).sum(-1)
    return y


class ShortConv(nn.Module):
    """Depthwise causal conv of width ``kernel_size`` over (B, C, L), its last inputs kept as the state."""

    def __init__(self, channels: int, kernel_size: int = 4, bias: bool = True, device=None, dtype=None):
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"ShortConv: kernel_size must be >= 1, got {kernel_size}")
        self.channels, self.kernel_size = channels, kernel_size
        self.conv1d = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=bias, device=device,
                                dtype=dtype)

    def forward(self, x: torch.Tensor, cache: Optional[Dict[str, torch.Tensor]] = None, offset: int = 0,
                key: str = "conv") -> torch.Tensor:
        # seqmamba.ops.causal_conv1d: the Mamba layer's conv (Triton on CUDA, any strides, no padded copy of x;
        # cuDNN's grouped conv1d needed the zero-padded input and is slow in backward at long L)
        K = self.kernel_size
        weight = self.conv1d.weight.squeeze(1)  # (C, K)
        continuing = cache is not None and offset > 0
        if continuing:  # the previous K - 1 inputs run the conv on across the chunk boundary
            x_ext = torch.cat([cache[key].to(x.dtype), x], dim=-1)
            y = causal_conv1d(x_ext, weight, self.conv1d.bias)[..., K - 1:]
        else:
            y = causal_conv1d(x, weight, self.conv1d.bias)
        if cache is not None and K > 1:
            recent = x_ext if continuing else F.pad(x, (K - 1, 0))
            cache[key].copy_(recent[..., -(K - 1):])
        return y

    def allocate(self, batch_size: int, key: str = "conv", dtype=None) -> Dict[str, torch.Tensor]:
        w = self.conv1d.weight
        return {key: torch.zeros(batch_size, self.channels, max(self.kernel_size - 1, 0), device=w.device,
                                 dtype=w.dtype if dtype is None else dtype)}


class S4DInner(nn.Module):
    """S4D over E channels with ``d_state`` N: N / 2 complex modes ("lin" / "inv" init) or N real ones ("real").

    Parameters: ``log_dt`` (E,), ``A_real_log`` (E, M) with Re(A) = -exp(A_real_log), ``A_imag`` (E, M)
    (complex inits), ``C`` (E, M, 2) = (re, im) (complex) or (E, M) (real), ``D`` (E,).
    """

    def __init__(self, channels: int, d_state: int = 64, init: str = "lin", dt_min: float = 1e-3,
                 dt_max: float = 1e-1, device=None, dtype=None):
        super().__init__()
        if init not in S4D_INITS:
            raise ValueError(f"S4D: init must be one of {S4D_INITS}, got {init!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"S4D: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        complex_modes = init != "real"
        if complex_modes and d_state % 2:
            raise ValueError(f"S4D: init={init!r} uses conjugate pairs, so d_state must be even, got {d_state}")
        M = d_state // 2 if complex_modes else d_state
        self.channels, self.d_state, self.init, self.modes, self.complex_modes = channels, d_state, init, M, complex_modes
        f32 = {"device": device, "dtype": torch.float32}
        self.log_dt = nn.Parameter(torch.rand(channels, **f32) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        n = torch.arange(M, **f32)
        if init == "real":  # S4D-Real: A = -(n + 1)
            self.A_real_log = nn.Parameter(torch.log(n + 1).repeat(channels, 1))
            self.A_imag = None
            self.C = nn.Parameter(torch.randn(channels, M, **f32))
        else:  # S4D-Lin: -1/2 + i pi n; S4D-Inv: -1/2 + i N / pi (N / (2n + 1) - 1)
            imag = math.pi * n if init == "lin" else d_state / math.pi * (d_state / (2 * n + 1) - 1)
            self.A_real_log = nn.Parameter(torch.full((channels, M), math.log(0.5), **f32))
            self.A_imag = nn.Parameter(imag.repeat(channels, 1))
            # Variance 1/2 per component: E|C|^2 = 1, as S4D's complex normal.
            self.C = nn.Parameter(torch.randn(channels, M, 2, **f32) * math.sqrt(0.5))
        self.D = nn.Parameter(torch.randn(channels, **f32))
        for p in (self.log_dt, self.A_real_log, self.A_imag, self.D):
            if p is not None:
                p._no_weight_decay = True
                p._no_reinit = True

    # -------------------------------------------------------------- discretisation
    def discrete(self):
        """(dA (E, M), dB (E, M), C (E, M), factor) in complex64 (ZOH)."""
        A = self._A()
        if self.complex_modes:
            C = torch.view_as_complex(self.C.float().contiguous())
            factor = 2.0
        else:
            C = torch.complex(self.C.float(), torch.zeros_like(self.C.float()))
            factor = 1.0
        dA = torch.exp(torch.exp(self.log_dt.float())[:, None] * A)
        dB = (dA - 1) / A
        return dA, dB, C, factor

    #: lags per block of the kernel's Vandermonde product: a block holds (E, M, kernel_block) complex
    #: powers, and under autograd each block is recomputed in backward (torch.utils.checkpoint), so the
    #: kernel of a 2^20 sequence never holds (E, M, L) at once
    kernel_block: int = 4096

    def kernel(self, L: int) -> torch.Tensor:
        """K (E, L) fp32: ``K_l = f Re(sum_m C_m dB_m dA_m^l)``, through exp(l * dt A) (Vandermonde)."""
        dA, dB, C, factor = self.discrete()
        dtA = torch.exp(self.log_dt.float())[:, None] * self._A()  # log dA, without a complex log's branch cut
        CdB = C * dB

        def block(CdB: torch.Tensor, dtA: torch.Tensor, start: int, n: int) -> torch.Tensor:
            lags = torch.arange(n, device=dtA.device, dtype=torch.float32)
            powers = torch.exp(dtA[..., None] * lags)  # (E, M, n)
            return factor * torch.einsum("em,eml->el", CdB * torch.exp(dtA * start), powers).real

        if L <= self.kernel_block:
            return block(CdB, dtA, 0, L)
        grad = torch.is_grad_enabled() and (CdB.requires_grad or dtA.requires_grad)
        parts = []
        for start in range(0, L, self.kernel_block):
            n = min(self.kernel_block, L - start)
            parts.append(checkpoint(block, CdB, dtA, start, n, use_reentrant=False) if grad
                         else block(CdB, dtA, start, n))
        return torch.cat(parts, dim=-1)

    def _A(self) -> torch.Tensor:
        A_re = -torch.exp(self.A_real_log.float())
        return torch.complex(A_re, self.A_imag.float() if self.complex_modes else torch.zeros_like(A_re))

    # -------------------------------------------------------------- forward
    def forward(self, u: torch.Tensor, cache: Optional[Dict[str, torch.Tensor]] = None, offset: int = 0,
                key: str = "ssm") -> torch.Tensor:
        """u (B, E, L) -> y (B, E, L) in u's dtype (computed in fp32 / complex64)."""
        L = u.shape[-1]
        if cache is not None and offset > 0 and L == 1:  # recurrent inference: O(M) per step
            return self.step(u[..., 0], cache[key])[..., None]
        y = fft_causal_conv(u, self.kernel(L)) + self.D.float()[:, None] * u.float()
        if cache is not None:
            y = y + self._carry(u, cache, key, offset)
        return y.to(u.dtype)

    def _carry(self, u: torch.Tensor, cache: Dict[str, torch.Tensor], key: str, offset: int) -> torch.Tensor:
        """The carried state's contribution to this chunk's outputs (0 at offset 0), and the state after
        the chunk written into ``cache[key]``; in blocks of ``kernel_block`` lags (no (E, M, L) tensor)."""
        _, dB, C, factor = self.discrete()
        state = cache[key] if offset > 0 else None
        L = u.shape[-1]
        log_dA = self._A() * torch.exp(self.log_dt.float())[:, None]  # dt A = log dA
        u_c = u.float().to(torch.complex64)
        carried, new_state = [], torch.zeros_like(cache[key])
        for start in range(0, L, self.kernel_block):
            t = torch.arange(start, min(start + self.kernel_block, L), device=u.device, dtype=torch.float32)
            if state is not None:  # y_k += f Re(sum_m C_m dA_m^(k+1) s_m)
                decay = torch.exp(log_dA[..., None] * (t + 1))  # (E, M, block)
                carried.append(factor * torch.einsum("em,bem,eml->bel", C, state, decay).real)
            # s_L = dA^L s + sum_j dA^(L-1-j) dB u_j
            weights = dB[..., None] * torch.exp(log_dA[..., None] * (L - 1 - t))
            new_state = new_state + torch.einsum("eml,bel->bem", weights, u_c[..., start:start + t.numel()])
        if state is not None:
            new_state = new_state + torch.exp(log_dA * L) * state
        cache[key].copy_(new_state)
        return torch.cat(carried, dim=-1) if carried else torch.zeros((), device=u.device)

    def step(self, u: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """One step: u (B, E) -> y (B, E); ``state`` (B, E, M) complex64 updated in place."""
        dA, dB, C, factor = self.discrete()
        state.copy_(dA * state + dB * u.float()[..., None])
        return (factor * (C * state).sum(-1).real + self.D.float() * u.float()).to(u.dtype)

    def allocate(self, batch_size: int, key: str = "ssm", **kwargs) -> Dict[str, torch.Tensor]:
        return {key: torch.zeros(batch_size, self.channels, self.modes, dtype=torch.complex64,
                                 device=self.log_dt.device)}

    def extra_repr(self) -> str:
        return f"channels={self.channels}, d_state={self.d_state}, init={self.init!r}"


def s4d_recurrence_ref(u: torch.Tensor, dA: torch.Tensor, dB: torch.Tensor, C: torch.Tensor, D: torch.Tensor,
                       factor: float, state: Optional[torch.Tensor] = None):
    """The plain recurrence in complex128, one step at a time: (y (B, E, L) float64, last state (B, E, M))."""
    batch, E, L = u.shape
    dA, dB, C = dA.to(torch.complex128), dB.to(torch.complex128), C.to(torch.complex128)
    x = torch.zeros(batch, E, dA.shape[1], dtype=torch.complex128) if state is None else state.to(torch.complex128)
    ys = []
    for k in range(L):
        x = dA * x + dB * u[:, :, k, None].double()
        ys.append(factor * (C * x).sum(-1).real + D.double() * u[:, :, k].double())
    return torch.stack(ys, dim=-1), x
