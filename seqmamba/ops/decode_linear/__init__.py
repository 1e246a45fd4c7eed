from .interface import decode_linear

__all__ = ["decode_linear"]
