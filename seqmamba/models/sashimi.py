"""SaShiMi: a multi-scale U-Net of residual sequence blocks for raw audio (Goel et al. 2022; Mamba paper 4.4).

Levels, for pooling factors [4, 4] and width D (doubled by every pooling, ``expand`` = 2)::

    tokens -> embed -> down stage (n blocks, D)   ---------------------------skip---+
                        DownPool /4 -> down stage (n blocks, 2D)  ---skip--+        |
                                     DownPool /4 -> center (n blocks, 4D)  |        |
                                     UpPool x4 (shifted) ------------------+-> up stage (n, 2D)
                        UpPool x4 (shifted) ----------------------------------------+-> up stage (n, D)
                                                                               -> head -> logits

- DownPool: the p samples of a block reshaped into one vector (p * H) and projected to H * expand.
- UpPool: a projection to p * H, reshaped back to p samples, and shifted right by one coarse step (p
  samples, zeros in front). The coarse step j summarises samples j*p .. j*p+p-1; after the shift it
  feeds samples (j+1)*p .. (j+2)*p-1, all later than its inputs, so the whole network stays causal.
- A stage is ``n`` residual blocks (pre-norm, mamba_ssm's Block via ``build_block``) and a final norm;
  its mixer is the MIXERS name ``mixer`` (``center_mixer`` for the center stage): "mamba" by default,
  "attention", "s4d", "hyena", ... for Table 5's outer / center variants.

Recurrent inference (``step``): one sample per call. The finest level runs every sample; level k runs
once every prod(pool[:k]) samples, when its input block is complete, and then refills the up-pool
buffer that the level above reads during its next block. So the cost per sample is O(1) (amortised
sum over levels: n * (1 + 1/4 + 1/16 + ...) block steps), independent of the sequence length. The
outputs equal the parallel forward's (tests/test_sashimi.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..modules import InferenceParams, RMSNorm
from ..modules.norm import add_norm
from ..registry import BACKBONES


class Stage(nn.Module):
    """``n_layers`` residual blocks at width ``d`` and a final norm; ``n_layers = 0`` is the identity.

    Blocks come from :func:`seqmamba.modules.block.build_block`: the mixer is a MIXERS name ("mamba",
    "attention", "s4d", "hyena", ...) with its constructor arguments ``mixer_cfg``.
    """

    def __init__(self, d: int, n_layers: int, mixer: str = "mamba", mixer_cfg: Optional[Mapping] = None,
                 mlp_expand: float = 0, residual_in_fp32: bool = True, fused_add_norm: bool = False):
        super().__init__()
        from ..modules.block import build_block

        layer_cfg = {"layer": mixer, **dict(mixer_cfg or {})}
        self.residual_in_fp32, self.fused_add_norm = residual_in_fp32, fused_add_norm
        self.layers = nn.ModuleList(
            build_block(d, layer_cfg, layer_idx=i, d_intermediate=int(mlp_expand * d), fused_add_norm=fused_add_norm,
                        residual_in_fp32=residual_in_fp32)
            for i in range(n_layers))
        self.norm_f = RMSNorm(d) if n_layers else None

    def forward(self, x: torch.Tensor, inference_params=None) -> torch.Tensor:
        if not self.layers:
            return x
        residual = None
        for layer in self.layers:
            x, residual = layer(x, residual, inference_params=inference_params)
        return add_norm(x, residual, self.norm_f, prenorm=False, residual_in_fp32=self.residual_in_fp32,
                        fused=self.fused_add_norm)

    def new_step_state(self, batch_size: int, max_seqlen: int, dtype=None) -> InferenceParams:
        """States for this stage's steps: ``max_seqlen`` steps at this stage's rate (attention caches need it)."""
        return InferenceParams(max_seqlen=max(1, max_seqlen), max_batch_size=batch_size,
                               key_value_memory_dict={i: layer.allocate_inference_cache(batch_size, max(1, max_seqlen),
                                                                                       dtype=dtype)
                                                      for i, layer in enumerate(self.layers)})

    def step(self, x: torch.Tensor, state: InferenceParams) -> torch.Tensor:
        """One step: x (B, d) -> (B, d); the first call is a one-token prefill, later ones recurrent steps."""
        out = self(x[:, None], inference_params=state)[:, 0]
        state.seqlen_offset += 1
        return out


class DownPool(nn.Module):
    """(B, L, d_in) -> (B, L / p, d_out): each block of p samples flattened and projected."""

    def __init__(self, d_in: int, d_out: int, pool: int):
        super().__init__()
        self.pool = pool
        self.linear = nn.Linear(d_in * pool, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, d = x.shape
        return self.linear(x.reshape(batch, length // self.pool, self.pool * d))


class UpPool(nn.Module):
    """(B, Lc, d_in) -> (B, Lc * p, d_out), shifted right by one coarse step (p samples) to stay causal."""

    def __init__(self, d_in: int, d_out: int, pool: int):
        super().__init__()
        self.pool, self.d_out = pool, d_out
        self.linear = nn.Linear(d_in, d_out * pool)

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """Unshifted: (B, Lc, d_in) -> (B, Lc, p, d_out); coarse step j's contribution to its p samples."""
        return self.linear(x).unflatten(-1, (self.pool, self.d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pad(self.expand(x)[:, :-1], (0, 0, 0, 0, 1, 0))  # coarse step j feeds block j + 1
        return y.flatten(1, 2)


@dataclass
class SaShiMiCache:
    """Recurrent state of a SaShiMi: position, per-stage block states and the pooling buffers."""

    batch_size: int
    position: int = 0
    down: List[InferenceParams] = field(default_factory=list)
    up: List[InferenceParams] = field(default_factory=list)
    center: Optional[InferenceParams] = None
    pool_in: List[torch.Tensor] = field(default_factory=list)  # level k's down outputs of the current block
    pool_out: List[torch.Tensor] = field(default_factory=list)  # level k's up-pool inputs for the current block


@BACKBONES.register("sashimi")
class SaShiMi(nn.Module):
    """SaShiMi U-Net language model over audio sample classes (see the module docstring).

    ``forward(input_ids (B, L)) -> logits (B, L, vocab_size)``; ``features`` gives the hidden states
    (B, L, d_model) before the head. L need not be a multiple of prod(pool): the input is right-padded
    internally (causality makes the padding invisible to the real positions).
    """

    def __init__(self, vocab_size: int = 256, d_model: int = 64, n_layers: int = 8,
                 pool: Sequence[int] = (4, 4), expand: int = 2, mixer: str = "mamba",
                 center_mixer: Optional[str] = None, mixer_cfg: Optional[Mapping] = None,
                 center_mixer_cfg: Optional[Mapping] = None,
                 mlp_expand: float = 0, residual_in_fp32: bool = True, fused_add_norm: bool = False,
                 center_layers: Optional[int] = None):
        super().__init__()
        pool = [int(p) for p in pool]
        if any(p < 1 for p in pool):
            raise ValueError(f"SaShiMi: pooling factors must be >= 1, got {pool}")
        if n_layers < 0 or expand < 1 or d_model < 1:
            raise ValueError(f"SaShiMi: need n_layers >= 0, expand >= 1, d_model >= 1; got "
                             f"{n_layers}, {expand}, {d_model}")
        self.vocab_size, self.d_model, self.pool, self.expand = int(vocab_size), int(d_model), pool, int(expand)
        self.frame = math.prod(pool)
        stage = partial(Stage, n_layers=n_layers, mixer=mixer, mixer_cfg=mixer_cfg, mlp_expand=mlp_expand,
                        residual_in_fp32=residual_in_fp32, fused_add_norm=fused_add_norm)
        widths = [d_model * expand ** k for k in range(len(pool) + 1)]
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.down = nn.ModuleList(stage(widths[k]) for k in range(len(pool)))
        self.down_pool = nn.ModuleList(DownPool(widths[k], widths[k + 1], p) for k, p in enumerate(pool))
        center_kwargs = {"n_layers": n_layers if center_layers is None else center_layers}
        if center_mixer and center_mixer != mixer:  # another mixer takes its own constructor arguments
            center_kwargs.update(mixer=center_mixer, mixer_cfg=center_mixer_cfg or {})
        elif center_mixer_cfg is not None:
            center_kwargs["mixer_cfg"] = center_mixer_cfg
        self.center = stage(widths[-1], **center_kwargs)
        self.up_pool = nn.ModuleList(UpPool(widths[k + 1], widths[k], p) for k, p in enumerate(pool))
        self.up = nn.ModuleList(stage(widths[k]) for k in range(len(pool)))
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        nn.init.normal_(self.embedding.weight, std=0.02)

    # ------------------------------------------------------------------ parallel
    def features(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.dim() != 2:
            raise ValueError(f"SaShiMi: input_ids has shape {tuple(input_ids.shape)}, expected (batch, L)")
        length = input_ids.shape[1]
        padded = F.pad(input_ids, (0, (-length) % self.frame))
        x = self.embedding(padded)
        skips = []
        for stage, pool in zip(self.down, self.down_pool):
            x = stage(x)
            skips.append(x)
            x = pool(x)
        x = self.center(x)
        for k in reversed(range(len(self.pool))):
            x = self.up[k](self.up_pool[k](x) + skips[k])
        return x[:, :length]

    def forward(self, input_ids: torch.Tensor, num_last_tokens: int = 0, **_ignored) -> torch.Tensor:
        hidden = self.features(input_ids)
        if num_last_tokens > 0:
            hidden = hidden[:, -num_last_tokens:]
        return self.lm_head(hidden)

    # ------------------------------------------------------------------ recurrent
    def allocate_inference_cache(self, batch_size: int, max_seqlen: int = 16000, dtype=None, **kwargs) -> SaShiMiCache:
        """A fresh recurrent state. With Mamba (or other recurrent) mixers its size does not depend on
        ``max_seqlen``; attention mixers keep a key/value cache of ``max_seqlen`` / rate entries per level."""
        weight = self.lm_head.weight
        dtype = dtype or weight.dtype
        widths = [self.d_model * self.expand ** k for k in range(len(self.pool))]
        rates = [math.prod(self.pool[:k]) for k in range(len(self.pool) + 1)]  # samples per step of level k
        return SaShiMiCache(
            batch_size=batch_size,
            down=[s.new_step_state(batch_size, -(-max_seqlen // rates[k])) for k, s in enumerate(self.down)],
            up=[s.new_step_state(batch_size, -(-max_seqlen // rates[k])) for k, s in enumerate(self.up)],
            center=self.center.new_step_state(batch_size, -(-max_seqlen // rates[-1])),
            pool_in=[torch.zeros(batch_size, p, w, device=weight.device, dtype=dtype) for p, w in zip(self.pool, widths)],
            pool_out=[torch.zeros(batch_size, p, w, device=weight.device, dtype=dtype) for p, w in zip(self.pool, widths)])

    def _step_level(self, level: int, x: torch.Tensor, cache: SaShiMiCache, t: int) -> torch.Tensor:
        """Level ``level``'s up-path output at its time ``t`` for input ``x`` (B, H_level)."""
        if level == len(self.pool):
            return self.center.step(x, cache.center)
        p = self.pool[level]
        s = self.down[level].step(x, cache.down[level])
        phase = t % p
        upsampled = cache.pool_out[level][:, phase]  # from the previous coarse step (zeros in the first block)
        cache.pool_in[level][:, phase] = s
        if phase == p - 1:  # the block is complete: one step of the coarser level
            coarse = self.down_pool[level].linear(cache.pool_in[level].flatten(1))
            y = self._step_level(level + 1, coarse, cache, t // p)
            cache.pool_out[level] = self.up_pool[level].expand(y[:, None])[:, 0]
        return self.up[level].step(upsampled + s, cache.up[level])

    def step(self, input_ids: torch.Tensor, inference_params) -> torch.Tensor:
        """One sample per row: input_ids (B,) or (B, 1) -> logits (B, vocab_size) for the next sample.

        ``inference_params``: a :class:`SaShiMiCache` from ``allocate_inference_cache``, or an
        InferenceParams holding one (``InferenceParams.allocated_for(model, ...)``, as the shared
        generation loop makes), whose ``seqlen_offset`` must equal the cache's position.
        """
        cache = inference_params
        if isinstance(inference_params, InferenceParams):
            cache = inference_params.key_value_memory_dict
            if inference_params.seqlen_offset != cache.position:
                raise ValueError(f"SaShiMi.step: seqlen_offset {inference_params.seqlen_offset} != the cache's "
                                 f"position {cache.position}; SaShiMi consumes prompts one sample at a time")
        if not isinstance(cache, SaShiMiCache):
            raise TypeError(f"SaShiMi.step needs a SaShiMiCache (allocate_inference_cache), got {type(cache).__name__}")
        if input_ids.dim() == 2:
            if input_ids.shape[1] != 1:
                raise ValueError(f"SaShiMi.step: input_ids has shape {tuple(input_ids.shape)}, expected (B,) or (B, 1)")
            input_ids = input_ids[:, 0]
        if input_ids.shape[0] != cache.batch_size:
            raise ValueError(f"SaShiMi.step: batch {input_ids.shape[0]} but the cache holds {cache.batch_size}")
        hidden = self._step_level(0, self.embedding(input_ids), cache, cache.position)
        cache.position += 1
        return self.lm_head(hidden)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, cg: bool = False, **kwargs) -> torch.Tensor:
        """Sample continuations with :func:`seqmamba.models.generation.generate` (prompt consumed one sample
        at a time). ``cg`` is accepted and ignored: the levels run on different steps, so one captured
        graph cannot replay every step."""
        from .generation import generate

        kwargs.setdefault("vocab_size", self.vocab_size)
        return generate(self, input_ids, max_new_tokens, cg=False, **kwargs)
