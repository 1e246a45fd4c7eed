"""The Mamba (S6) mixer: mamba_ssm's ``Mamba`` with the same parameter names, shapes and initialisation.

Parallel forward: in_proj -> (x, z); x -> causal depthwise conv + SiLU -> x_proj -> (dt, B, C);
delta = dt_proj.weight @ dt (the bias goes to the scan as ``delta_bias``, softplus inside the scan);
y = selective_scan(x, delta, A = -exp(A_log), B, C, D, z) -> out_proj. In training on the Triton backend
(channels-first), the path from (x, z) to y is one autograd node, ``ops/mamba_inner.py`` (its backward writes the
gradients in place of the separate ops' concatenations and sums).

Recurrent inference: ``allocate_inference_cache`` gives (conv_state, ssm_state); a forward with
``inference_params`` at offset 0 is a prefill that leaves the last states in the cache, a one-token
forward at offset > 0 is ``step()`` (conv update + ``selective_state_update``), and a longer forward at
offset > 0 continues the sequence from the cached states (chunked prefill).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import causal_conv1d, causal_conv1d_update, decode_linear, selective_scan, selective_state_update
from ..ops.backend import records_autograd, resolve_backend
from ..registry import MIXERS


#: whether ``_linear`` of a channels-first view with a gradient to take goes through ``_LayoutKeepingLinear``
#: (True: x's gradient L-contiguous, x's own layout) or the batched matmul's own autograd (False). Benchmarks time
#: both: bench_mamba_layer_layout.py, bench_train_step.py --channels-first-linear off. H200, same run (twelfth
#: session): one 130M-width layer fwd+bwd 24.08 -> 21.75 ms at (64, 2048), 6.25 -> 5.61 ms at (8, 4096); the
#: selective-copying step 104.6 -> 114.2 steps/s CUDA-graphed.
CHANNELS_FIRST_LINEAR_GRAD = True
#: whether ``_project_channels``' batched GEMM with a gradient to take goes through ``_LayoutKeepingLinear`` (x's
#: gradient (batch, L, in) contiguous, x's own layout) or the batched matmul's own autograd, which hands it back
#: transposed. H200, same run (thirteenth session, gpu_check.sh projgrad): one 130M-width layer fwd+bwd 21.65 ->
#: 21.09 ms at (64, 2048), 5.79 -> 5.45 ms at (8, 4096); the 1.4M DNA step 510 -> 486 ms at (1, 2^20), 378 -> 369
#: at (1024, 2^10).
PROJECT_CHANNELS_INPUT_GRAD = True


def _takes_gradient(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a projection of x (batch, L, in) with more than one step is recorded by autograd (the case
    ``_LayoutKeepingLinear`` serves)."""
    return x.shape[1] > 1 and records_autograd(x, weight)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """F.linear of x (batch, L, in) that never copies x.

    F.linear / matmul fold (batch, L) into one matrix dimension; for a transposed view such as
    (batch, in, L).transpose(1, 2) that fold is a full strided copy of x (746 us per call at
    (64, 2048, 1536) bf16 on an H100). A batched matmul reads each (L, in) matrix through its strides instead.
    For such a view with a gradient to take, ``_LayoutKeepingLinear`` also hands x's gradient back in x's own
    layout (L contiguous), where the batched matmul's autograd would return it time-major.
    """
    batch, L, _ = x.shape
    if CHANNELS_FIRST_LINEAR_GRAD and x.stride(1) == 1 and _takes_gradient(x, weight):
        return _LayoutKeepingLinear.apply(x, weight, bias, False)  # batch 1 too: F.linear's is time-major
    if x.stride(0) == x.stride(1) * L or batch == 1 or L == 1:
        return F.linear(x, weight, bias)
    out = torch.bmm(x, weight.t().expand(batch, -1, -1))
    return out + bias if bias is not None else out


class _LayoutKeepingLinear(torch.autograd.Function):
    """x (batch, L, in), any strides -> x @ W^T + bias as one batched GEMM, returned as (batch, L, out) or, with
    ``channels_first``, as (batch, out, L) (W @ x^T) with L contiguous; in the backward x's gradient is formed in
    x's own storage order: W^T @ dout^T written as (batch, in, L) when x is a view of an L-contiguous tensor,
    dout @ W written as (batch, L, in) otherwise.

    The batched matmul's own autograd forms x's gradient in the product's order and hands it back through the
    transpose, so a gradient reached its consumer in the other layout. In the Mamba block on CUDA: x_proj's and
    out_proj's inputs are L-contiguous, and their gradients met the scan's (summed with du with strides; the
    scan's dout, copied to L-contiguous first: ~220 us each, 4 per selective-copying step of ~9.2 ms, H200);
    in_proj's input is the time-major residual stream, and its gradient reached the norm transposed and was
    copied there (~30 ms per DNA step at (1, 2^20, 128) against 12.6 at (1024, 2^10); twelfth session). The weight
    gradient is summed over the batch in fp32 (the expand's autograd sums in the GEMM's dtype)."""

    @staticmethod
    def forward(ctx, x, weight, bias, channels_first):
        ctx.save_for_backward(x, weight)
        ctx.bias_dtype = bias.dtype if bias is not None else None
        ctx.channels_first = channels_first
        batch = x.shape[0]
        if channels_first:
            out = torch.bmm(weight.expand(batch, -1, -1), x.transpose(1, 2))  # (batch, out, L)
        else:
            out = torch.bmm(x, weight.t().expand(batch, -1, -1))  # (batch, L, out)
        ctx.gemm_dtype = out.dtype  # autocast's, or the inputs'
        if bias is None:
            return out
        return out + (bias[:, None] if channels_first else bias)

    @staticmethod
    def backward(ctx, dout):
        x, weight = ctx.saved_tensors
        dtype = ctx.gemm_dtype
        g = dout.to(dtype)
        g = g.transpose(1, 2) if ctx.channels_first else g  # (batch, L, out) either way
        batch = x.shape[0]
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            w = weight.to(dtype)
            if x.stride(1) == 1:  # a view of (batch, in, L) storage: W^T @ dout^T, written L-contiguous
                dx = torch.bmm(w.t().expand(batch, -1, -1), g.transpose(1, 2)).transpose(1, 2)
            else:
                dx = torch.bmm(g, w.expand(batch, -1, -1))
            dx = dx.to(x.dtype)
        acc_dtype = torch.promote_types(dtype, torch.float32)  # fp32 for 16-bit GEMMs, fp64 stays fp64
        if ctx.needs_input_grad[1]:
            dw = torch.sum(torch.bmm(g.transpose(1, 2), x.to(dtype)), 0, dtype=acc_dtype).to(weight.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            db = torch.sum(g, (0, 1), dtype=acc_dtype).to(ctx.bias_dtype)
        return dx, dw, db, None


#: how ``_project_channels`` forms W @ x^T: "mm" = one GEMM over the folded (batch * L) columns, as mamba_ssm
#: does (the result is a (batch, out, L) view with L contiguous); "bmm" = a batched GEMM writing
#: (batch, out, L) contiguous. benchmarks/bench_mamba_layer_layout.py times both: on an H100, one layer
#: (d_model 768, bf16) fwd+bwd 28.8 (bmm) vs 29.5 ms (mm) at (64, 2048), 7.53 vs 7.67 ms at (8, 4096).
PROJECT_CHANNELS = "bmm"

#: whether the channels-first forward computes x_proj channels-first too, (batch, dt_rank + 2N, L) = W @ x_conv,
#: so that dt, B and C are L-contiguous row blocks of one tensor: B / C go to the scan as views (no copy) and dt
#: to dt_proj's batched GEMM as is, and in the backward their gradients are joined along the rows. Off: x_proj
#: time-major, (batch, L, dt_rank + 2N), and B / C copied to (batch, N, L) contiguous (two copies per layer).
#: On (twenty-fifth session, H200, gpu_check.sh xprojcf): the paper's selective-copying step 126.2 -> 132.7
#: steps/s CUDA-graphed (94.9 -> 104.7 eager); the 130M prefill at batch 64 91.1-91.2 -> 90.4-90.9 ms.
X_PROJ_CHANNELS_FIRST = True


def _project_channels(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                      channels_first: bool, chunks: Optional[int] = None):
    """x (batch, L, in) -> (batch, out, L), the layout the scan takes; with ``chunks``, a tuple of that many
    (batch, out / chunks, L) blocks of the output features (``Tensor.chunk``).

    ``channels_first``: computed as W @ x^T, so L is contiguous, as mamba_ssm does; otherwise a transposed
    view of the time-major (batch, L, out) product (the ops take any strides). Neither copies x or the
    result. (``torch.matmul(weight, x.transpose(1, 2))`` would: it folds the batch into the GEMM and then
    makes the transposed result contiguous, a strided copy of the whole output, ~0.9 ms per call at
    (64, 3072, 2048) bf16 on an H100.)
    """
    batch, L, n_in = x.shape
    folded = PROJECT_CHANNELS == "mm" and x.stride(0) == x.stride(1) * L and x.stride(2) == 1
    if not channels_first:
        out = F.linear(x, weight, bias).transpose(1, 2)
    elif not folded and PROJECT_CHANNELS_INPUT_GRAD and _takes_gradient(x, weight):
        out = _LayoutKeepingLinear.apply(x, weight, bias, True)
    else:
        if folded:
            out = torch.mm(weight, x.reshape(batch * L, n_in).t())  # (out, batch * L), one GEMM
            out = out.view(-1, batch, L).transpose(0, 1)  # (batch, out, L), L contiguous
        else:
            out = torch.bmm(weight.expand(batch, -1, -1), x.transpose(1, 2))
        out = out if bias is None else out + bias[:, None]
    return out if chunks is None else out.chunk(chunks, dim=1)


@MIXERS.register("mamba")
class Mamba(nn.Module):
    #: layout handed to the scan: True = (batch, d_inner, L) L-contiguous (in_proj as W @ h^T), False =
    #: time-major views of (batch, L, d_inner); None = channels-first on CUDA, time-major on the CPU
    channels_first: Optional[bool] = None

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2,
        dt_rank: Union[int, str] = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        use_fast_path: bool = True,  # accepted for mamba_ssm compatibility; the backend decides here
        layer_idx: Optional[int] = None,
        scan_backend: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if dt_init not in ("random", "constant"):
            raise ValueError(f"Mamba: dt_init must be 'random' or 'constant', got {dt_init!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"Mamba: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.use_fast_path = use_fast_path
        self.layer_idx = layer_idx
        # One backend name for the scan, the conv and the state update ("auto" | "reference" | "torch" | "triton").
        self.scan_backend = scan_backend
        self.activation = "silu"

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **factory)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias, **factory)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)

        # dt_proj.weight keeps the variance of delta independent of dt_rank.
        dt_init_std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, dt_init_std)
        else:
            nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        # softplus(dt_proj.bias) starts log-uniform in [dt_min, dt_max]: the bias is the inverse softplus.
        dt = torch.exp(torch.rand(self.d_inner, device=device, dtype=torch.float32)
                       * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_init_floor)
        inv_softplus_dt = dt + torch.log(-torch.expm1(-dt))
        with torch.no_grad():
            self.dt_proj.bias.copy_(inv_softplus_dt)
        self.dt_proj.bias._no_reinit = True  # the LM's _init_weights must not zero it

        # S4D-real initialisation: A = -(1, 2, ..., N) for every channel, stored as log(-A) in fp32.
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, dtype=torch.float32, device=device))
        self.D._no_weight_decay = True

        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    # ------------------------------------------------------------------ parallel (and prefill) path
    def forward(self, hidden_states: torch.Tensor, inference_params=None) -> torch.Tensor:
        """hidden_states (batch, L, d_model) -> (batch, L, d_model)."""
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(f"Mamba: hidden_states has shape {tuple(hidden_states.shape)}, "
                             f"expected (batch, L, {self.d_model})")
        batch, seqlen, _ = hidden_states.shape
        conv_state = ssm_state = None
        continuing = False
        if inference_params is not None:
            conv_state, ssm_state = self._states_from_cache(inference_params, batch)
            continuing = inference_params.seqlen_offset > 0
            if continuing and seqlen == 1:
                out, _, _ = self.step(hidden_states, conv_state, ssm_state)
                return out

        # Channels-first (L contiguous) is the layout the Triton scan reads fastest (H100, (64, 1536, 2048)
        # bf16: fwd 2.8 ms vs 5.2 ms time-major, fwd+bwd 18.7 vs 27.4 ms; BENCHMARKS.md), at no extra copy.
        channels_first = hidden_states.is_cuda if self.channels_first is None else self.channels_first
        if inference_params is None and self._inner_applies(hidden_states, channels_first):
            # training: conv, x_proj, dt_proj and the scan as one autograd node (ops/mamba_inner.py)
            xz = _project_channels(hidden_states, self.in_proj.weight, self.in_proj.bias, True)
            A, D, dt_bias = self._ssm_constants()
            from ..ops.mamba_inner import mamba_inner  # imports Triton: only where it runs
            y = mamba_inner(xz, self.conv1d.weight.squeeze(1), self.conv1d.bias, self.x_proj.weight,
                            self.dt_proj.weight, A, D, dt_bias, self.dt_rank, self.d_state)
            return _linear(y.transpose(1, 2), self.out_proj.weight, self.out_proj.bias)
        x, z = _project_channels(hidden_states, self.in_proj.weight, self.in_proj.bias, channels_first,
                                 chunks=2)  # (batch, d_inner, L) each
        conv_weight = self.conv1d.weight.squeeze(1)  # (d_inner, d_conv)
        if continuing:
            # Prepend the previous d_conv - 1 inputs so the convolution runs on across the chunk boundary.
            x_ext = torch.cat([conv_state[:, :, 1:].to(x.dtype), x], dim=-1)
            x_conv = causal_conv1d(x_ext, conv_weight, self.conv1d.bias, self.activation,
                                   backend=self.scan_backend)[..., self.d_conv - 1:]
            new_conv_state = x_ext[..., -self.d_conv:]
        else:
            x_conv = causal_conv1d(x, conv_weight, self.conv1d.bias, self.activation, backend=self.scan_backend)
            # The last d_conv inputs, left-zero-padded when the prompt is shorter than the kernel.
            new_conv_state = F.pad(x, (self.d_conv - seqlen, 0))
        if conv_state is not None:
            conv_state.copy_(new_conv_state)

        sizes = [self.dt_rank, self.d_state, self.d_state]
        if channels_first and X_PROJ_CHANNELS_FIRST:
            x_dbl = _project_channels(x_conv.transpose(1, 2), self.x_proj.weight, None, True)  # (batch, R + 2N, L)
            dt, B, C = torch.split(x_dbl, sizes, dim=1)  # L-contiguous rows, B / C as the scan takes them
            dt = dt.transpose(1, 2)  # (batch, L, dt_rank), the view _project_channels takes
        else:
            x_dbl = _linear(x_conv.transpose(1, 2), self.x_proj.weight)  # (batch, L, dt_rank + 2N)
            dt, B, C = torch.split(x_dbl, sizes, dim=-1)
            B, C = B.transpose(1, 2), C.transpose(1, 2)  # (batch, N, L)
            if channels_first:
                B, C = B.contiguous(), C.contiguous()  # small (N rows); contiguous time rows read faster
        # dt_proj's bias is added inside the scan (delta_bias), as mamba_ssm does
        delta = _project_channels(dt, self.dt_proj.weight, None, channels_first)  # (batch, d_inner, L)
        A, D, dt_bias = self._ssm_constants()
        result = selective_scan(
            x_conv, delta, A, B, C, D,
            z=z, delta_bias=dt_bias, delta_softplus=True,
            return_last_state=ssm_state is not None,
            initial_state=ssm_state if continuing else None,
            backend=self.scan_backend,
        )
        if ssm_state is not None:
            y, last_state = result
            ssm_state.copy_(last_state)
        else:
            y = result
        # Either layout reaches out_proj without a copy: the Triton scan stores y like its inputs, and
        # _linear reads a transposed view through its strides.
        return _linear(y.transpose(1, 2), self.out_proj.weight, self.out_proj.bias)

    def _inner_applies(self, hidden_states: torch.Tensor, channels_first: bool) -> bool:
        """Whether the training forward takes mamba_inner: a gradient to record, the Triton backend, the
        channels-first layout with x_proj channels-first, SiLU, and a shape the scan runs in one launch."""
        batch, seqlen, _ = hidden_states.shape
        if not (channels_first and X_PROJ_CHANNELS_FIRST and self.activation == "silu" and seqlen > 1
                and records_autograd(hidden_states, self.in_proj.weight)
                and resolve_backend("selective_scan", self.scan_backend, hidden_states.is_cuda) == "triton"):
            return False
        from ..ops.mamba_inner import applies
        return applies(batch, self.d_inner, seqlen, hidden_states.device)

    # ------------------------------------------------------------------ recurrent path
    def step(self, hidden_states: torch.Tensor, conv_state: torch.Tensor,
             ssm_state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One token: hidden_states (batch, 1, d_model); the states are updated in place."""
        if hidden_states.dim() != 3 or hidden_states.shape[1] != 1:
            raise ValueError(f"Mamba.step: hidden_states has shape {tuple(hidden_states.shape)}, "
                             f"expected (batch, 1, {self.d_model}); decode one token at a time")
        # Kernels per step: in_proj, conv update, x_proj, state update, out_proj. x / z and dt / B / C are
        # strided views of the projections (no copies: the kernels and cuBLAS take the strides); dt_proj (rank
        # dt_rank), its bias and the softplus run inside the state update (at large batch dt_proj is one GEMM
        # first, or a tensor-core product in the row-block kernel for 16-bit states: selective_state_update's
        # DECODE_DT_PROJ_MAX_BYTES / DECODE_DT_PROJ_ROWS); A / D / the bias in fp32 are cached.
        # The projections: F.linear, or on CUDA the split-K decode kernel where its rule says so (decode_linear).
        proj = "torch" if self.scan_backend in ("torch", "reference") else "auto"
        xz = decode_linear(hidden_states.squeeze(1), self.in_proj.weight, self.in_proj.bias,
                           backend=proj)  # (batch, 2 d_inner)
        x, z = xz[:, :self.d_inner], xz[:, self.d_inner:]
        x = causal_conv1d_update(x, conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias,
                                 self.activation, backend=self.scan_backend)
        x_dbl = decode_linear(x, self.x_proj.weight, backend=proj)  # (batch, dt_rank + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        A, D, dt_bias = self._ssm_constants()
        y = selective_state_update(ssm_state, x, dt, A, B, C, D, z=z, dt_bias=dt_bias, dt_softplus=True,
                                   backend=self.scan_backend, dt_proj_weight=self.dt_proj.weight)
        out = decode_linear(y, self.out_proj.weight, self.out_proj.bias, backend=proj)
        return out.unsqueeze(1), conv_state, ssm_state

    def _ssm_constants(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A = -exp(A_log), D, dt_proj.bias), all fp32, as the scan and the state update take them.

        Under autograd they are computed afresh (gradients flow to the parameters). Without it (decoding,
        prefill under no_grad) they are cached on the module and recomputed only when a parameter's storage
        or version counter changes (an optimizer step, load_state_dict, .to()), so a decode step does not
        relaunch the exp and casts every token. A CUDA graph replays whatever it captured: generation's
        graph cache is keyed on the parameters' versions too, so it is recaptured after such a change.
        """
        A_log, D, dt_bias = params = (self.A_log, self.D, self.dt_proj.bias)
        if records_autograd(*params):
            return -torch.exp(A_log.float()), D.float(), dt_bias.float()
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        cached = self.__dict__.get("_ssm_constants_cache")
        if cached is None or cached[0] != key:
            # No autograd history here: grad is off or no parameter requires it.
            cached = (key, (-torch.exp(A_log.float()), D.float(), dt_bias.float()))
            self.__dict__["_ssm_constants_cache"] = cached  # not a buffer: state_dict keys stay mamba_ssm's
        return cached[1]

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int, dtype: Optional[torch.dtype] = None,
                                 ssm_state_dtype: Optional[torch.dtype] = None,
                                 **kwargs) -> Tuple[torch.Tensor, torch.Tensor]:
        """(conv_state (batch, d_inner, d_conv) in the conv's dtype, ssm_state (batch, d_inner, d_state) in
        ``ssm_state_dtype``, fp32 by default).

        The state size does not depend on max_seqlen: that is the point of an SSM. The updates compute in fp32
        whatever the state's dtype; a bf16 state (what mamba_ssm keeps for a bf16 model) halves the state
        traffic of a decode step at large batch and rounds the state to bf16 after every token.
        """
        device = self.out_proj.weight.device
        conv_dtype = self.conv1d.weight.dtype if dtype is None else dtype
        conv_state = torch.zeros(batch_size, self.d_inner, self.d_conv, device=device, dtype=conv_dtype)
        ssm_state = torch.zeros(batch_size, self.d_inner, self.d_state, device=device,
                                dtype=torch.float32 if ssm_state_dtype is None else ssm_state_dtype)
        return conv_state, ssm_state

    def _states_from_cache(self, inference_params, batch_size: int):
        if self.layer_idx is None:
            raise ValueError("Mamba: recurrent inference needs layer_idx (the key of this layer's cache)")
        cache = inference_params.key_value_memory_dict
        if self.layer_idx not in cache:  # allocated lazily, as mamba_ssm does
            cache[self.layer_idx] = self.allocate_inference_cache(batch_size, inference_params.max_seqlen)
        conv_state, ssm_state = cache[self.layer_idx]
        if conv_state.shape[0] != batch_size:
            raise ValueError(f"Mamba layer {self.layer_idx}: the cache holds batch {conv_state.shape[0]}, "
                             f"the input has batch {batch_size}; allocate the cache for the input's batch")
        return conv_state, ssm_state

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, d_conv={self.d_conv}, "
                f"dt_rank={self.dt_rank}, layer_idx={self.layer_idx}, scan_backend={self.scan_backend!r}")
