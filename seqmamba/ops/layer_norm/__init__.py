from .interface import layer_norm_fn, rms_norm_fn
from .reference import layer_norm_ref, rms_norm_ref

__all__ = ["layer_norm_fn", "rms_norm_fn", "layer_norm_ref", "rms_norm_ref"]
