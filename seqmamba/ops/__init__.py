"""Numerics only (no nn.Module). Each op is a folder: reference, fast CPU path, Triton kernels, interface."""
from .causal_conv1d import causal_conv1d, causal_conv1d_update
from .decode_linear import decode_linear
from .layer_norm import layer_norm_fn, rms_norm_fn
from .selective_scan import selective_scan, selective_scan_ref
from .selective_state_update import selective_state_update

__all__ = ["selective_scan", "selective_scan_ref", "selective_state_update", "causal_conv1d", "causal_conv1d_update",
           "decode_linear", "layer_norm_fn", "rms_norm_fn"]
