"""Data parallelism as a setting: process-group set-up from torchrun's environment, rank-0 helpers.

Launch with ``torchrun --nproc_per_node=K ...``; torchrun sets RANK, WORLD_SIZE and LOCAL_RANK and
:func:`init_distributed` reads them. Without those variables everything here is a no-op for a
single process, so the trainer has one code path. Backend: NCCL for CUDA, gloo for the CPU.

Typical use (the CLI does this)::

    env = init_distributed("cpu")                       # idempotent
    run_dir = broadcast_object(make_run_dir() if env.is_rank0 else None)
    ...
    destroy_distributed()                               # once, at the end of the process
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_rank0(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer (as torchrun sets it)") from None


def env_from_torchrun() -> DistEnv:
    """Rank, world size and local rank from torchrun's environment variables (defaults: one process)."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is outside [0, WORLD_SIZE={world_size})")
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank)


def current_env() -> DistEnv:
    """The environment of the live process group, or of torchrun's variables if none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", dist.get_rank()))
    return env_from_torchrun()


def backend_for(device_type: str) -> str:
    if device_type == "cuda":
        return "nccl"
    if device_type == "cpu":
        return "gloo"
    raise ValueError(f"no distributed backend for device type {device_type!r}; expected 'cpu' or 'cuda'")


def init_distributed(device_type: str = "cpu", timeout_s: float = 1800.0) -> DistEnv:
    """Initialise the default process group when torchrun launched more than one process.

    Idempotent: a second call (e.g. the CLI first, then the Trainer) returns the same environment.
    On CUDA each process is pinned to ``cuda:LOCAL_RANK`` before NCCL starts.
    """
    env = env_from_torchrun()
    if not env.is_distributed:
        return env
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={env.world_size} but this torch build has no torch.distributed")
    if dist.is_initialized():
        return current_env()
    if device_type == "cuda":
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(
        backend=backend_for(device_type),
        rank=env.rank,
        world_size=env.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return env


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_rank0() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _collective_device() -> torch.device:
    """NCCL only moves CUDA tensors; gloo only CPU ones."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank (e.g. a run directory chosen by rank 0)."""
    if not is_distributed():
        return obj
    box: List[Any] = [obj if get_rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=_collective_device())
    return box[0]


def all_gather_object(obj: Any) -> List[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sums(values: Mapping[str, float]) -> Dict[str, float]:
    """Sum each named value over ranks (float64). Every rank must pass the same keys; they are
    reduced in sorted order so dict insertion order does not matter."""
    if not is_distributed():
        return {k: float(v) for k, v in values.items()}
    keys = sorted(values)
    packed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return dict(zip(keys, packed.tolist()))


def all_reduce_tensor_sums(values: Mapping[str, torch.Tensor], device: Optional[torch.device] = None
                           ) -> Dict[str, torch.Tensor]:
    """Sum named tensors (scalars or vectors) over ranks, in float64, with one all_reduce.

    A rank may lack keys (it got no batch of a small set): the key names and shapes are agreed first
    (one small object gather), missing entries count as zeros. Returns tensors on ``device`` (or the
    values' device); single process: the values unchanged."""
    if not is_distributed():
        return dict(values)
    shapes = {k: tuple(torch.as_tensor(v).shape) for k, v in values.items()}
    agreed: Dict[str, tuple] = {}
    for theirs in all_gather_object(shapes):
        for key, shape in theirs.items():
            if agreed.setdefault(key, shape) != shape:
                raise ValueError(f"eval sums {key!r} differ in shape across ranks: {agreed[key]} and {shape}")
    keys = sorted(agreed)
    out_device = device or next((torch.as_tensor(v).device for v in values.values()), torch.device("cpu"))
    comm = _collective_device()
    flat = [torch.as_tensor(values[k]).to(comm, torch.float64).reshape(-1) if k in values
            else torch.zeros(int(torch.Size(agreed[k]).numel()), dtype=torch.float64, device=comm) for k in keys]
    sizes = [t.numel() for t in flat]
    packed = torch.cat(flat) if flat else torch.zeros(0, dtype=torch.float64, device=comm)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return {k: part.reshape(agreed[k]).to(out_device) for k, part in zip(keys, packed.split(sizes))}


def wrap_ddp(model: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel around ``model`` when there is more than one process, else ``model``."""
    if not is_distributed():
        return model
    device_ids: Optional[List[int]] = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DDP and/or torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def destroy_distributed() -> None:
    """Tear the default process group down (safe to call when none exists).

    All ranks meet at a barrier first: a rank that tears gloo down while a peer is still finishing its last
    collective can make that peer abort at exit ("terminate called without an active exception", seen in
    about one 2-process run in six here). Under torchrun a rank that died takes the others down with it, so
    the barrier cannot wait forever; if it fails (a peer already gone), the group is still destroyed."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        except Exception:  # noqa: BLE001 - tearing down anyway
            pass
        dist.destroy_process_group()
