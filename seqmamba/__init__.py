"""seqmamba: selective state space models (Mamba) for synthetic tasks, DNA and raw audio."""
__version__ = "0.1.0"
