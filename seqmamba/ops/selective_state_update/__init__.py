from .interface import selective_state_update
from .reference import selective_state_update_ref

__all__ = ["selective_state_update", "selective_state_update_ref"]
