from .interface import selective_scan
from .reference import selective_scan_ref

__all__ = ["selective_scan", "selective_scan_ref"]
