from .interface import causal_conv1d, causal_conv1d_update, causal_conv1d_x_proj, conv_x_proj_fuses
from .reference import causal_conv1d_ref, causal_conv1d_update_ref

__all__ = ["causal_conv1d", "causal_conv1d_update", "causal_conv1d_x_proj", "conv_x_proj_fuses", "causal_conv1d_ref",
           "causal_conv1d_update_ref"]
