"""MambaLM: token embedding -> residual blocks (each layer's mixer from MIXERS, Mamba by default) ->
final norm -> tied LM head. Hidden states: ``features()``; per-block activation checkpointing:
``set_activation_checkpointing()``; chunked inference: :mod:`seqmamba.models.chunked`.

A drop-in for mamba_ssm's ``MambaLMHeadModel``: the same config fields, vocabulary padding, weight
initialisation and state_dict keys (``backbone.embedding.weight``, ``backbone.layers.{i}.mixer.*``,
``backbone.layers.{i}.norm.weight``, ``backbone.norm_f.weight``, ``lm_head.weight``), so an official
checkpoint loads with no key mapping (see :mod:`seqmamba.models.pretrained`).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import warnings
from functools import partial
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..modules import InferenceParams, LayerNorm, RMSNorm
from ..modules.block import build_block, mixer_kwargs, mixer_name
from ..modules.norm import add_norm
from ..registry import BACKBONES
from . import pretrained
from .config import CONFIG_FIELDS, MambaConfig


#: Token tables of at most this many rows take their weight gradient on CUDA as one GEMM, onehot(ids)^T @ grad,
#: instead of PyTorch's embedding backward (a sort of every token id, then a segmented sum into the rows): in the
#: paper's selective-copying step all 263K tokens of a batch land in 16 rows, 0.5 ms of its ~10 ms (fifth session's
#: profile). 0 turns it off. H200, same run (``bench_train_step.py --embedding-gemm-rows 0 / 64``, eleventh
#: session): selective copying 66.1 -> 79.1 steps/s eager, 97.3 -> 100.2 CUDA-graphed. fp32 GEMM (TF32 is not
#: enabled by the toolkit): the rows equal the sorted sum's to fp32 rounding (tests/test_mamba_lm.py).
EMBEDDING_GEMM_MAX_ROWS = 64


class _OneHotGradEmbedding(torch.autograd.Function):
    """F.embedding(ids, weight) whose weight gradient is onehot(ids)^T @ grad: one GEMM over the tokens (fixed
    summation order, no atomics, nothing that syncs the host, so a CUDA graph captures it)."""

    @staticmethod
    def forward(ctx, ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.rows = weight.shape[0]
        return nn.functional.embedding(ids, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (ids,) = ctx.saved_tensors
        flat = grad.reshape(-1, grad.shape[-1])
        rows = torch.arange(ctx.rows, device=ids.device)
        onehot = (ids.reshape(1, -1) == rows[:, None]).to(flat.dtype)  # (rows, tokens)
        return None, onehot @ flat


def embed_tokens(embedding: nn.Embedding, input_ids: torch.Tensor, max_rows: Optional[int] = None) -> torch.Tensor:
    """``embedding(input_ids)``; with a weight gradient to compute on CUDA and at most ``max_rows`` rows
    (default EMBEDDING_GEMM_MAX_ROWS) through _OneHotGradEmbedding."""
    max_rows = EMBEDDING_GEMM_MAX_ROWS if max_rows is None else max_rows
    weight = embedding.weight
    if (0 < weight.shape[0] <= max_rows and weight.is_cuda and weight.requires_grad and torch.is_grad_enabled()
            and embedding.padding_idx is None and embedding.max_norm is None):
        return _OneHotGradEmbedding.apply(input_ids, weight)
    return embedding(input_ids)


def _init_weights(module: nn.Module, n_layer: int, initializer_range: float = 0.02,
                  rescale_prenorm_residual: bool = True, n_residuals_per_layer: int = 1) -> None:
    """mamba_ssm's ``_init_weights``, applied to every submodule.

    Linear biases start at zero (except dt_proj.bias, marked ``_no_reinit``), embeddings N(0, 0.02).
    The output projections that write into the residual stream are re-drawn and scaled by
    1/sqrt(n_residuals_per_layer * n_layer) (GPT-2's scheme), so the stream's variance does not grow with depth.
    """
    if isinstance(module, nn.Linear):
        if module.bias is not None and not getattr(module.bias, "_no_reinit", False):
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=initializer_range)
    if rescale_prenorm_residual:
        for name, p in module.named_parameters():
            if name in ("out_proj.weight", "fc2.weight"):
                nn.init.kaiming_uniform_(p, a=math.sqrt(5))
                with torch.no_grad():
                    p /= math.sqrt(n_residuals_per_layer * n_layer)


def layer_mixer_cfgs(n_layer: int, ssm_cfg: Optional[Mapping] = None, attn_layer_idx=(),
                     attn_cfg: Optional[Mapping] = None) -> List[Dict[str, Any]]:
    """One mixer config ``{"layer": MIXERS name, **kwargs}`` per layer (rules in :mod:`.config`).

    Keys of a per-layer entry go to that layer and must be ones its mixer takes. Shared ``ssm_cfg`` keys
    go to every layer whose mixer takes them (so ``d_conv`` / ``expand`` from the model config do not
    break an "s4d" layer); a shared key no registered mixer takes is an error (a typo), one that no
    layer of this model takes is dropped with a warning.
    """
    from ..registry import MIXERS

    shared = dict(ssm_cfg or {})
    layer = shared.pop("layer", "mamba")
    if isinstance(layer, (list, tuple)):
        if len(layer) != n_layer:
            raise ValueError(f"MambaLM: ssm_cfg['layer'] lists {len(layer)} mixers but n_layer={n_layer}")
        entries = list(layer)
    else:
        entries = [layer] * n_layer
    cfgs, used = [], set()
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"layer": entry}
        elif not isinstance(entry, Mapping):
            raise ValueError(f"MambaLM: ssm_cfg['layer'][{i}] must be a mixer name or a mapping, got {entry!r}")
        entry = dict(entry)
        name = mixer_name(str(entry.pop("layer", "mamba")))
        if name not in MIXERS:
            try:
                MIXERS.get(name)
            except KeyError as err:  # unknown: the known names and the closest one
                raise ValueError(f"MambaLM layer {i}: {err}") from None
        accepted = mixer_kwargs(name)
        take = {k: v for k, v in shared.items() if accepted is None or k in accepted}
        used |= set(take)
        cfgs.append({**take, **entry, "layer": name})
    for i in attn_layer_idx or ():
        if not isinstance(i, int) or not 0 <= i < n_layer:
            raise ValueError(f"MambaLM: attn_layer_idx has {i!r}; expected layer indices in [0, {n_layer})")
        cfgs[i] = {"layer": "attention", **dict(attn_cfg or {})}
    unused = sorted(set(shared) - used)
    if unused:
        known = set()
        for name in MIXERS.names():
            known |= mixer_kwargs(name) or set()
        typos = [k for k in unused if k not in known]
        if typos:
            close = {k: difflib.get_close_matches(k, sorted(known), n=1) for k in typos}
            hints = "; ".join(f"{k!r}" + (f" (did you mean {c[0]!r}?)" if c else "") for k, c in close.items())
            raise ValueError(f"MambaLM: ssm_cfg key(s) {hints} are taken by no mixer")
        warnings.warn(f"MambaLM: ssm_cfg key(s) {unused} are taken by none of this model's mixers "
                      f"({sorted({c['layer'] for c in cfgs})}); ignored")
    return cfgs


class MambaBackbone(nn.Module):
    """mamba_ssm's MixerModel: embedding + blocks + norm_f. ``forward(input_ids) -> hidden (batch, L, d_model)``.

    Each layer's mixer is built from ``seqmamba.registry.MIXERS`` (:func:`layer_mixer_cfgs`). Use
    :meth:`MambaLM.features` from outside; this module's forward is its implementation.
    """

    def __init__(self, d_model: int, n_layer: int, vocab_size: int, d_intermediate: int = 0,
                 ssm_cfg: Optional[Mapping] = None, norm_epsilon: float = 1e-5, rms_norm: bool = True,
                 fused_add_norm: bool = False, residual_in_fp32: bool = True, attn_layer_idx=(),
                 attn_cfg: Optional[Mapping] = None, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.residual_in_fp32 = residual_in_fp32
        self.fused_add_norm = fused_add_norm
        self.activation_checkpointing = False
        self.embedding = nn.Embedding(vocab_size, d_model, **factory)
        norm_cls = partial(RMSNorm if rms_norm else LayerNorm, eps=norm_epsilon, **factory)
        self.mixer_cfgs = layer_mixer_cfgs(n_layer, ssm_cfg, attn_layer_idx, attn_cfg)
        self.layers = nn.ModuleList(
            build_block(d_model, cfg, layer_idx=i, d_intermediate=d_intermediate, norm_cls=norm_cls,
                        fused_add_norm=fused_add_norm, residual_in_fp32=residual_in_fp32, **factory)
            for i, cfg in enumerate(self.mixer_cfgs)
        )
        self.norm_f = norm_cls(d_model)

    def forward(self, input_ids: torch.Tensor, inference_params=None, num_last_tokens: int = 0,
                **mixer_kwargs) -> torch.Tensor:
        """(batch, L) ids -> final-norm features (batch, L, d_model); with ``num_last_tokens`` > 0 only the last
        that many positions go through the final add + norm (a prompt's forward needs the last one)."""
        hidden_states = embed_tokens(self.embedding, input_ids)
        residual = None
        recompute = self.activation_checkpointing and inference_params is None and torch.is_grad_enabled()
        for layer in self.layers:
            if recompute:
                # Non-reentrant: works with residual=None at the first block, keyword arguments and
                # inputs that do not require grad; each block's activations are recomputed in backward.
                hidden_states, residual = checkpoint(layer, hidden_states, residual, use_reentrant=False,
                                                     **mixer_kwargs)
            else:
                hidden_states, residual = layer(hidden_states, residual, inference_params=inference_params,
                                                **mixer_kwargs)
        if num_last_tokens > 0:
            hidden_states = hidden_states[:, -num_last_tokens:]
            residual = residual[:, -num_last_tokens:] if residual is not None else None
        return add_norm(hidden_states, residual, self.norm_f, prenorm=False, residual_in_fp32=self.residual_in_fp32,
                        fused=self.fused_add_norm)

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int, dtype=None, **kwargs):
        return {i: layer.allocate_inference_cache(batch_size, max_seqlen, dtype=dtype, **kwargs)
                for i, layer in enumerate(self.layers)}


@BACKBONES.register("mamba_lm")
class MambaLM(nn.Module):
    """Mamba language model, mamba_ssm's MambaLMHeadModel.

    ``MambaLM(d_model=..., n_layer=..., vocab_size=..., ssm_cfg={...})``, ``MambaLM(MambaConfig(...))`` or
    ``MambaLM.from_config(dict_or_dataclass)``. ``forward(input_ids (batch, L)) -> logits (batch, L,
    padded_vocab)``; ``features(input_ids)`` gives the (batch, L, d_model) hidden states for other heads.
    Each layer's mixer comes from MIXERS (``ssm_cfg["layer"]``, a name or a per-layer list; see
    :mod:`seqmamba.models.config`).
    """

    def __init__(self, d_model: Union[int, MambaConfig] = 768, n_layer: int = 24, vocab_size: int = 50277,
                 ssm_cfg: Optional[Mapping] = None, rms_norm: bool = True, residual_in_fp32: bool = True,
                 fused_add_norm: bool = False, pad_vocab_size_multiple: int = 8, tie_embeddings: bool = True,
                 initializer_cfg: Optional[Mapping] = None, device=None, dtype=None, d_intermediate: int = 0,
                 attn_layer_idx: Optional[List[int]] = None, attn_cfg: Optional[Mapping] = None,
                 norm_epsilon: float = 1e-5):
        super().__init__()
        if isinstance(d_model, MambaConfig):  # mamba_ssm style: MambaLMHeadModel(config)
            config = dataclasses.replace(d_model)
        else:
            config = MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=vocab_size, d_intermediate=d_intermediate,
                                 ssm_cfg=dict(ssm_cfg or {}), attn_layer_idx=list(attn_layer_idx or []),
                                 attn_cfg=dict(attn_cfg or {}), rms_norm=rms_norm, residual_in_fp32=residual_in_fp32,
                                 fused_add_norm=fused_add_norm, pad_vocab_size_multiple=pad_vocab_size_multiple,
                                 tie_embeddings=tie_embeddings, norm_epsilon=norm_epsilon)
        _validate_config(config)
        self.config = config
        self.vocab_size = config.vocab_size
        self.padded_vocab_size = _padded_vocab_size(config.vocab_size, config.pad_vocab_size_multiple)
        factory = {"device": device, "dtype": dtype}
        self.backbone = MambaBackbone(config.d_model, config.n_layer, self.padded_vocab_size,
                                      d_intermediate=config.d_intermediate, ssm_cfg=config.ssm_cfg,
                                      norm_epsilon=config.norm_epsilon, rms_norm=config.rms_norm,
                                      fused_add_norm=config.fused_add_norm,
                                      residual_in_fp32=config.residual_in_fp32,
                                      attn_layer_idx=config.attn_layer_idx, attn_cfg=config.attn_cfg, **factory)
        self.lm_head = nn.Linear(config.d_model, self.padded_vocab_size, bias=False, **factory)
        init_kwargs = dict(initializer_cfg or {})
        init_kwargs.setdefault("n_residuals_per_layer", 1 if config.d_intermediate == 0 else 2)
        self.apply(partial(_init_weights, n_layer=config.n_layer, **init_kwargs))
        self.tie_weights()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: Union[Mapping, MambaConfig, Any], **kwargs) -> "MambaLM":
        """Build from a dict (or OmegaConf DictConfig) or a dataclass with MambaConfig's field names.

        Extra keyword arguments (``device``, ``dtype``, ``initializer_cfg``) pass to the constructor.
        Unknown fields fail with the list of them and the accepted ones.
        """
        if dataclasses.is_dataclass(config) and not isinstance(config, type):
            config = dataclasses.asdict(config)
        if not isinstance(config, Mapping):
            raise TypeError(f"MambaLM.from_config: expected a mapping or a dataclass, got {type(config).__name__}")
        config = {k: _plain(v) for k, v in config.items()}
        unknown = sorted(set(config) - set(CONFIG_FIELDS) - {"initializer_cfg"})
        if unknown:
            raise ValueError(f"MambaLM.from_config: unknown field(s) {unknown}; accepted: {list(CONFIG_FIELDS)}")
        return cls(**config, **kwargs)

    @classmethod
    def from_pretrained(cls, path, device=None, dtype=None, strict: bool = True) -> "MambaLM":
        """Load a local directory holding config.json + model.safetensors or pytorch_model.bin
        (mamba_ssm's official layout or the transformers "-hf" layout)."""
        return pretrained.load_pretrained(cls, path, device=device, dtype=dtype, strict=strict)

    def save_pretrained(self, path, safe_serialization: bool = True) -> None:
        """Write config.json + model.safetensors (or pytorch_model.bin) in mamba_ssm's official layout."""
        pretrained.save_pretrained(self, path, safe_serialization=safe_serialization)

    def set_scan_backend(self, backend: str) -> "MambaLM":
        """Force the ops backend of every layer that uses seqmamba.ops ("auto" | "reference" | "torch" | "triton")."""
        for module in self.modules():
            if hasattr(module, "scan_backend"):
                module.scan_backend = backend
        return self

    def set_activation_checkpointing(self, enabled: bool = True) -> "MambaLM":
        """Recompute each block's activations in backward (torch.utils.checkpoint, non-reentrant) instead of
        storing them: memory per block drops to its input, at the cost of a second forward per block.
        Only in training passes (no inference cache, grad enabled); gradients equal the plain model's."""
        self.backbone.activation_checkpointing = bool(enabled)
        return self

    def tie_weights(self) -> None:
        if self.config.tie_embeddings:
            self.lm_head.weight = self.backbone.embedding.weight

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids: torch.Tensor, position_ids=None, inference_params=None, num_last_tokens: int = 0,
                **mixer_kwargs) -> torch.Tensor:
        """input_ids (batch, L) long -> logits (batch, L, padded_vocab), or the last ``num_last_tokens``
        positions only. Hidden states: :meth:`features`.

        ``position_ids`` is accepted and ignored (mamba_ssm's signature). With ``inference_params`` the
        per-layer states are read from and written to its cache (see :class:`InferenceParams`).
        """
        hidden_states = self.features(input_ids, inference_params=inference_params, num_last_tokens=num_last_tokens,
                                      **mixer_kwargs)
        return self.lm_head(hidden_states)

    def features(self, input_ids: torch.Tensor, inference_params=None, num_last_tokens: int = 0,
                 **mixer_kwargs) -> torch.Tensor:
        """The one way to get hidden states: the final-norm features (batch, L, d_model), or of the last
        ``num_last_tokens`` positions only (the others skip the final add + norm).

        With ``inference_params`` the layers continue from (and update) the cached states, so
        consecutive chunks give the same features as one pass (:mod:`seqmamba.models.chunked`).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"MambaLM: input_ids has shape {tuple(input_ids.shape)}, expected (batch, L)")
        if inference_params is not None:
            _check_cache_capacity(inference_params, input_ids.shape)
        return self.backbone(input_ids, inference_params=inference_params, num_last_tokens=num_last_tokens,
                             **mixer_kwargs)

    # ------------------------------------------------------------------ recurrent inference
    def allocate_inference_cache(self, batch_size: int, max_seqlen: int, dtype=None, **kwargs) -> Dict[int, Any]:
        """{layer_idx: (conv_state, ssm_state)}, as mamba_ssm's ``allocate_inference_cache``."""
        return self.backbone.allocate_inference_cache(batch_size, max_seqlen, dtype=dtype, **kwargs)

    def new_inference_params(self, batch_size: int, max_seqlen: int, dtype=None, **cache_kwargs) -> InferenceParams:
        """An :class:`InferenceParams` at offset 0 with every layer's states allocated (``cache_kwargs``: e.g.
        ``ssm_state_dtype``, see :meth:`seqmamba.modules.mamba.Mamba.allocate_inference_cache`)."""
        return InferenceParams.allocated_for(self, batch_size, max_seqlen, dtype, **cache_kwargs)

    def prefill(self, input_ids: torch.Tensor, inference_params: InferenceParams) -> torch.Tensor:
        """Consume a prompt (batch, L) through the parallel scan, leaving the last states in the cache.
        Returns the last position's logits (batch, padded_vocab). Does not advance ``seqlen_offset``."""
        return self.forward(input_ids, inference_params=inference_params, num_last_tokens=1)[:, -1]

    def step(self, input_ids: torch.Tensor, inference_params: InferenceParams) -> torch.Tensor:
        """One token per row: input_ids (batch,) or (batch, 1) -> logits (batch, padded_vocab).
        The states advance in place; ``seqlen_offset`` is left to the caller (so the step can be graph-captured)."""
        if input_ids.dim() == 1:
            input_ids = input_ids[:, None]
        if input_ids.shape[1] != 1:
            raise ValueError(f"MambaLM.step: input_ids has shape {tuple(input_ids.shape)}, expected (batch,) or (batch, 1)")
        return self.forward(input_ids, inference_params=inference_params, num_last_tokens=1)[:, -1]

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
        """Sample a continuation; see :func:`seqmamba.models.generation.generate` for the options."""
        from .generation import generate

        kwargs.setdefault("vocab_size", self.vocab_size)
        return generate(self, input_ids, max_new_tokens, **kwargs)


def _padded_vocab_size(vocab_size: int, multiple: int) -> int:
    if multiple is None or multiple <= 1:
        return vocab_size
    return (vocab_size + multiple - 1) // multiple * multiple


def _validate_config(config: MambaConfig) -> None:
    for name in ("d_model", "n_layer", "vocab_size"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"MambaLM: {name} must be a positive int, got {value!r}")
    if config.d_intermediate < 0:
        raise ValueError(f"MambaLM: d_intermediate must be >= 0, got {config.d_intermediate}")


def _check_cache_capacity(inference_params, input_shape) -> None:
    batch, seqlen = input_shape
    end = inference_params.seqlen_offset + seqlen
    if end > inference_params.max_seqlen:
        raise ValueError(f"MambaLM: {seqlen} token(s) at offset {inference_params.seqlen_offset} need a cache of "
                         f"{end} positions, but it was allocated for max_seqlen={inference_params.max_seqlen}")
    if batch > inference_params.max_batch_size:
        raise ValueError(f"MambaLM: input batch {batch} exceeds the cache's max_batch_size="
                         f"{inference_params.max_batch_size}")


def _plain(value):
    """OmegaConf containers -> plain dict/list without importing OmegaConf."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value
