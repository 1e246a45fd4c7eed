"""Numerics only (no nn.Module). Each op is a folder: reference, fast CPU path, Triton kernels, interface."""
from .selective_scan import selective_scan, selective_scan_ref

__all__ = ["selective_scan", "selective_scan_ref"]
