"""Seeds and generator states: seed everything, capture / restore states for checkpoints.

States are stored as tensors and primitive containers so that checkpoints holding them load with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import random
from typing import Any, Dict, Iterator, Mapping

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and every CUDA device)."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices


def capture_rng_state() -> Dict[str, Any]:
    """Python, numpy, torch-CPU and (current device's) CUDA generator states."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    cuda_ready = torch.cuda.is_available() and torch.cuda.is_initialized()
    return {
        "python": random.getstate(),  # (version, tuple of ints, None | float)
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if cuda_ready else None,
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npst = state["numpy"]
    keys = npst["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state((npst["kind"], keys, npst["pos"], npst["has_gauss"], npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


@contextlib.contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Run a block without disturbing any global generator (evaluation must not change training)."""
    saved = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(saved)
