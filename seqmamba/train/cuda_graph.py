"""The training step replayed from CUDA graphs (``trainer.cuda_graph``).

A small model spends an eager training step launching kernels, not running them: the paper's
induction-heads model (74K parameters, batch 8 x 256) runs a few hundred small kernels per step, each
launched from Python. Captured once into CUDA graphs, the step is a copy of the batch into static
buffers and two graph launches.

Two graphs per batch shape, so that the trainer's contract holds unchanged: a non-finite loss or
gradient norm stops the run *before* the optimizer applies it.

1. ``forward_backward``: forward under autocast, backward, gradient clipping; leaves the loss, the
   task's metrics and the gradient norm in static tensors.
2. ``update``: the optimizer step (Adam/AdamW with ``capturable=True`` and the learning rate as a
   device tensor, so the schedule's ``fill_`` reaches the captured kernels).

With a fused Adam / AdamW (the default on CUDA) the host does not wait for each step: the first graph
also sets a device flag when the loss or the gradient norm is not finite, the captured optimizer step
reads it (the fused kernels' ``found_inf``, as under a GradScaler) and leaves the weights, moments and
step count as they were, and the host checks each step's values one step later (:meth:`record` /
:meth:`settle`), before it launches the next update. So the contract holds without a host round trip
between the two graphs, where the GPU idled: the paper's selective-copying step (compiled) went from
132.6-132.8 to 141.7-142.5 steps/s on an H200 (``bench_train_step.py --graph-check sync`` / ``deferred``).

The trainer runs :data:`WARMUP_STEPS` ordinary eager steps on a side stream first (kernels compiled,
the optimizer's state created, allocator warmed), then captures; a new batch shape (sequence-length
warmup) captures again. Checkpoints store a plain optimizer state (float learning rate, the
optimizer's own ``capturable`` flag), so they load into eager or CPU runs.

What cannot be captured is refused with the reason (``trainer.cuda_graph=true``) or silently left
eager (``auto``): a CPU device, several processes (DDP), gradient accumulation, fp16 loss scaling.

With ``trainer.compile=true`` the captured step runs the compiled model (Inductor's fused kernels, the
scan and the conv as opaque custom ops): its warmup steps compile the forward and the backward, and the
capture records the compiled kernels, so a replay runs them without Dynamo's guards or any Python.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import torch
from torch import nn

#: eager steps before the capture (the PyTorch recipe: warm up on a side stream, then capture)
WARMUP_STEPS = 3
#: whether a graphed step's loss and gradient norm are checked one step late with the update skipping itself on
#: the device (True; needs a fused Adam / AdamW), or read by the host between the two graphs (False).
#: bench_train_step.py --graph-check times both.
DEFERRED_CHECK = True


def unsupported_reason(*, device: torch.device, world_size: int, grad_accum_steps: int,
                       autocast_dtype: Optional[torch.dtype]) -> Optional[str]:
    """Why this run's step cannot be graph-captured, or None when it can."""
    if device.type != "cuda":
        return f"it needs a CUDA device (this run is on {device})"
    if world_size > 1:
        return f"it runs in one process only (this run has {world_size}; DDP's gradient hooks are not captured)"
    if grad_accum_steps > 1:
        return f"it needs trainer.grad_accum_steps=1 (got {grad_accum_steps})"
    if autocast_dtype == torch.float16:
        return "fp16 loss scaling checks the gradients on the host every step; use precision=bf16 or fp32"
    return None


def _structure_copy(dst: Any, src: Any) -> None:
    """Copy a (nested tuple / list / dict) batch of tensors into same-shaped device buffers."""
    if isinstance(dst, torch.Tensor):
        dst.copy_(src, non_blocking=True)
    elif isinstance(dst, (tuple, list)):
        for d, s in zip(dst, src):
            _structure_copy(d, s)
    elif isinstance(dst, dict):
        for key in dst:
            _structure_copy(dst[key], src[key])


def batch_signature(batch: Any, leaf_values: bool = True) -> Any:
    """What a captured graph is specialised to: the shapes and dtypes of a batch's tensors and
    (``leaf_values``) the values of its other leaves, which a replay cannot change."""
    if isinstance(batch, torch.Tensor):
        return (tuple(batch.shape), batch.dtype)
    if isinstance(batch, (tuple, list)):
        return tuple(batch_signature(b, leaf_values) for b in batch)
    if isinstance(batch, dict):
        return tuple((k, batch_signature(v, leaf_values)) for k, v in sorted(batch.items()))
    return batch if leaf_values else type(batch).__name__


class GraphedTrainStep:
    """Capture and replay one training step; see the module docstring.

    ``training_step(model, batch) -> (loss, metrics)`` and ``move_to(batch, device)`` are the task's.
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                 training_step: Callable[[nn.Module, Any], Tuple[torch.Tensor, Dict[str, torch.Tensor]]],
                 move_to: Callable[[Any, torch.device], Any], autocast: Callable[[], Any], grad_clip: float,
                 device: torch.device):
        self.model, self.optimizer, self.device = model, optimizer, device
        self.training_step, self.move_to, self.autocast = training_step, move_to, autocast
        self.max_norm = grad_clip if grad_clip > 0 else float("inf")
        self.params = [p for p in model.parameters() if p.requires_grad]
        # the optimizer's own flags, written back into checkpoints
        self._plain_capturable = [group.get("capturable", False) for group in optimizer.param_groups]
        self._signature: Any = None
        self._graphs: Optional[Tuple[torch.cuda.CUDAGraph, torch.cuda.CUDAGraph]] = None
        self._static_batch: Any = None
        self.loss: Optional[torch.Tensor] = None
        self.metrics: Dict[str, torch.Tensor] = {}
        self.grad_norm: Optional[torch.Tensor] = None
        self.captures = 0
        self.replays = 0
        self._make_optimizer_capturable()
        #: whether the captured update skips a non-finite step on the device (see the module docstring)
        self.skips_nonfinite = DEFERRED_CHECK and skips_nonfinite_on_device(optimizer)
        self._values: Optional[torch.Tensor] = None  # (loss, grad norm, lr), written by each forward_backward
        self._found_inf: Optional[torch.Tensor] = None  # 1.0 where the step must not be applied
        self._host_slots: List[Tuple[torch.Tensor, Any]] = []  # (pinned values, the event after their copy)
        self._pending: Deque[Tuple[int, torch.Tensor, Any]] = deque()

    # -- optimizer ------------------------------------------------------------------------------
    def _make_optimizer_capturable(self) -> None:
        for group in self.optimizer.param_groups:
            if "capturable" in group:
                group["capturable"] = True
            if not isinstance(group["lr"], torch.Tensor):
                group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=self.device)
        for param, state in self.optimizer.state.items():  # non-fused Adam keeps its step count on the host
            step = state.get("step")
            if isinstance(step, torch.Tensor) and step.device != param.device:
                state["step"] = step.to(param.device, dtype=torch.float32)

    def current_lr(self) -> torch.Tensor:
        return self.optimizer.param_groups[0]["lr"]

    def plain_optimizer_state(self, state: Dict[str, Any]) -> Dict[str, Any]:
        """An optimizer ``state_dict()`` as an eager run writes it: float lr, the original flags."""
        for group, capturable in zip(state["param_groups"], self._plain_capturable):
            if isinstance(group.get("lr"), torch.Tensor):
                group["lr"] = float(group["lr"])
            if "capturable" in group:
                group["capturable"] = capturable
        return state

    @staticmethod
    def plain_scheduler_state(state: Dict[str, Any]) -> Dict[str, Any]:
        """A scheduler ``state_dict()`` with its last learning rates as floats (they alias the
        optimizer's device tensors while the graphs run)."""
        if "_last_lr" in state:
            state["_last_lr"] = [float(v) for v in state["_last_lr"]]
        return state

    # -- capture --------------------------------------------------------------------------------
    def _capture(self, batch: Any, signature: Any) -> None:
        self._graphs = None  # a new shape: the old graphs and their memory pool go
        self._static_batch = self.move_to(batch, self.device)
        torch.cuda.synchronize(self.device)
        pool = torch.cuda.graph_pool_handle()  # shared by this capture's two graphs
        # gradients are created by the captured backward (in the graph's pool) and then overwritten
        # by every replay; nothing outside may replace them afterwards
        self.optimizer.zero_grad(set_to_none=True)
        forward_backward, update = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        # thread_local: the data prefetcher may pin host memory on its own thread meanwhile, which
        # the default "global" mode counts as an error in the capture
        with torch.cuda.graph(forward_backward, pool=pool, capture_error_mode="thread_local"):
            with self.autocast():
                loss, metrics = self.training_step(self.model, self._static_batch)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
            self.loss = loss.detach().float()
            self.metrics = {k: v.detach() for k, v in metrics.items()}
            self.grad_norm = grad_norm.detach()
            self._values = torch.stack([self.loss, self.grad_norm.float(), self.current_lr().float()])
            self._found_inf = (~torch.isfinite(self._values[:2]).all()).float()
        with torch.cuda.graph(update, pool=pool, capture_error_mode="thread_local"):
            if self.skips_nonfinite:  # read by the fused kernels; set for this capture only (eager steps run
                self.optimizer.found_inf = self._found_inf  # between captures, and must not see it)
            try:
                self.optimizer.step()
            finally:
                self.optimizer.__dict__.pop("found_inf", None)
        self._graphs = (forward_backward, update)
        self._signature = signature
        self.captures += 1

    def forward_backward(self, batch: Any, signature: Any) -> None:
        """Replay forward + backward + clipping on ``batch`` (host or device tensors) whose
        ``batch_signature`` is ``signature`` (captured again when it differs from the last capture's); the
        results are in :attr:`loss`, :attr:`metrics`, :attr:`grad_norm` until the next call."""
        if self._graphs is None or signature != self._signature:
            self._capture(batch, signature)
        _structure_copy(self._static_batch, batch)
        self._graphs[0].replay()
        self.replays += 1

    def record(self, step: int) -> None:
        """After a ``forward_backward`` replay: copy its (loss, grad norm, lr) to pinned host memory without
        waiting; :meth:`settle` reads them once the copy is done."""
        if not self._host_slots:  # at most two steps are pending (settle keeps one): two slots, used in turn
            self._host_slots = [(torch.empty(3, dtype=torch.float32, pin_memory=True), torch.cuda.Event())
                                for _ in range(2)]
        slot, done = self._host_slots[self.replays % 2]
        slot.copy_(self._values, non_blocking=True)
        done.record()
        self._pending.append((step, slot, done))

    def settle(self, keep_latest: bool = False) -> List[Tuple[int, float, float, float]]:
        """(step, loss, grad norm, lr) of each recorded step, oldest first, waiting for their copies; with
        ``keep_latest`` the newest recorded step stays pending (its graph may still be running)."""
        settled = []
        while len(self._pending) > (1 if keep_latest else 0):
            step, slot, done = self._pending.popleft()
            done.synchronize()
            settled.append((step, *slot.tolist()))
        return settled

    def update(self) -> None:
        """Replay the optimizer step (after the host has checked the loss and gradient norm).

        A replay writes the parameters (and the optimizer's state) without PyTorch seeing an in-place op,
        so their version counters are bumped here by hand: caches keyed on them (the Mamba layer's
        A = -exp(A_log) outside autograd, generation's decode graphs) would otherwise keep serving the
        weights of the first evaluation (what the in-run evals of selective copying showed: val loss
        5.4 while the same weights, loaded afresh, score 1.54)."""
        self._graphs[1].replay()
        torch.autograd.graph.increment_version(self.params)


def skips_nonfinite_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` can skip a step on a device flag (``found_inf``): the fused Adam / AdamW
    (every param group fused), as a GradScaler uses them."""
    return (getattr(optimizer, "_step_supports_amp_scaling", False) and bool(optimizer.param_groups)
            and all(group.get("fused") for group in optimizer.param_groups))

