"""mamba_ssm's residual block: add -> norm -> mixer (-> add -> norm -> MLP), residual carried separately.

The block takes and returns ``(hidden_states, residual)``: the residual stream is the running sum of
all mixer outputs, and each block first adds the previous mixer's output to it. Keeping it separate
(and in fp32 when ``residual_in_fp32``) lets a bf16 model accumulate 24+ layers without drift, and
matches mamba_ssm's numerics and its fused add+norm kernel.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Mapping, Optional, Tuple, Union

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


# ---------------------------------------------------------------------------------------- building blocks
#: mamba_ssm spells the Mamba mixer ``ssm_cfg={"layer": "Mamba1"}``; MIXERS knows it as "mamba"
MIXER_ALIASES = {"Mamba1": "mamba"}


def mixer_name(name: str) -> str:
    """The MIXERS name for ``name`` (aliases such as mamba_ssm's "Mamba1" resolved)."""
    return MIXER_ALIASES.get(name, name)


def mixer_kwargs(name: str) -> Optional[set]:
    """The constructor keywords the mixer ``name`` takes (None: any). A mixer class may define
    ``accepted_kwargs()`` when its signature forwards ``**kwargs`` (Table 1's mixers pass them to the inner layer)."""
    import inspect

    from .. import modules as _modules  # noqa: F401
    from ..registry import MIXERS

    cls = MIXERS.get(mixer_name(name))
    if hasattr(cls, "accepted_kwargs"):
        return set(cls.accepted_kwargs())
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.name != "self"} - {"d_model", "layer_idx", "device", "dtype"}


def mixer_factory(mixer_cfg: Union[str, Mapping, None], layer_idx: Optional[int] = None,
                  device=None, dtype=None) -> Callable[[int], nn.Module]:
    """``d_model -> mixer module`` for a mixer config: a MIXERS name or ``{"layer": name, **kwargs}``.

    Unknown names fail with the known ones and the closest match; constructor arguments the mixer does
    not take fail with the mixer's name and the offending argument.
    """
    from .. import modules as _modules  # noqa: F401  (registers every built-in mixer)
    from ..registry import MIXERS

    if mixer_cfg is None:
        mixer_cfg = {}
    if isinstance(mixer_cfg, str):
        mixer_cfg = {"layer": mixer_cfg}
    if not isinstance(mixer_cfg, Mapping):
        raise ValueError(f"mixer config must be a name or a mapping with 'layer', got {mixer_cfg!r}")
    kwargs = dict(mixer_cfg)
    name = mixer_name(str(kwargs.pop("layer", "mamba")))
    try:
        cls = MIXERS.get(name)
    except KeyError as err:
        raise ValueError(f"layer {layer_idx}: {err}") from None

    def build(d_model: int) -> nn.Module:
        try:
            return cls(d_model, layer_idx=layer_idx, device=device, dtype=dtype, **kwargs)
        except TypeError as err:
            raise ValueError(f"layer {layer_idx}: mixer {name!r} ({cls.__name__}) rejected its config "
                             f"{kwargs}: {err}") from None

    return build


def build_block(d_model: int, mixer_cfg: Union[str, Mapping, None] = "mamba", layer_idx: Optional[int] = None,
                d_intermediate: int = 0, norm_cls: Optional[Callable[[int], nn.Module]] = None,
                rms_norm: bool = True, norm_epsilon: float = 1e-5, fused_add_norm: bool = False,
                residual_in_fp32: bool = False, device=None, dtype=None) -> Block:
    """One residual Block (norm -> mixer [-> norm -> GatedMLP]) whose mixer comes from MIXERS.

    ``mixer_cfg``: a MIXERS name ("mamba", "s4d", "hyena", "attention", "h3_s4d", ...) or
    ``{"layer": name, **constructor kwargs}``. ``d_intermediate > 0`` adds mamba_ssm's gated MLP.
    This is what MambaLM builds every layer with, and what other backbones (SaShiMi) reuse.
    """
    from .mlp import GatedMLP
    from .norm import LayerNorm

    factory = {"device": device, "dtype": dtype}
    if norm_cls is None:
        norm_cls = partial(RMSNorm if rms_norm else LayerNorm, eps=norm_epsilon, **factory)
    mlp_cls = partial(GatedMLP, hidden_features=d_intermediate, **factory) if d_intermediate > 0 else None
    return Block(d_model, mixer_factory(mixer_cfg, layer_idx, **factory), mlp_cls=mlp_cls, norm_cls=norm_cls,
                 fused_add_norm=fused_add_norm, residual_in_fp32=residual_in_fp32)
